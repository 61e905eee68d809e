"""The shape of the house (docs/development.md): room sizes and which room may import which.

Read from the source with ``ast``, so nothing is imported. An import counts wherever it is
written, at module level or inside a function: a function-level import is still a dependency,
and a cycle through one is still a cycle (it only postpones the moment it bites).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "grokscope"
MAX_LINES = 400
MAX_CLI_LINES = 150
# Numerics rooms still over the limit that other steps of issue 20 split (measures/ is theirs);
# each leaves this list when it is split.
BEING_SPLIT = {"grokscope/measures/oinfo.py", "grokscope/measures/multiplets.py", "grokscope/measures/early_synergy.py"}
# The console entry point sits above the CLI: it is what starts it.
ENTRY_POINT = "grokscope.__main__"
# The analyses of commands that figures must not depend on (they depend on the figures' tables).
COMMAND_ANALYSES = ("grokscope.prediction", "grokscope.subnet")


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package is its __init__.py)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The grokscope modules that ``name`` imports anywhere in its source. ``from P import x``
    counts as importing ``P.x`` when that is a module, else ``P``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    found.add(f"{base}.{alias.name}")
                elif base in MODULES:
                    found.add(base)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def test_no_module_over_400_lines():
    long = {_relative(p): n for p in MODULES.values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES and _relative(p) not in BEING_SPLIT}
    assert long == {}


def test_no_cli_file_over_150_lines():
    long = {_relative(p): n for name, p in MODULES.items()
            if name.startswith("grokscope.cli") and (n := len(p.read_text().splitlines())) > MAX_CLI_LINES}
    assert long == {}


def test_only_the_cli_imports_the_cli():
    upward = {name: sorted(m for m in targets if m == "grokscope.cli" or m.startswith("grokscope.cli."))
              for name, targets in GRAPH.items()
              if not (name == "grokscope.cli" or name.startswith("grokscope.cli.")) and name != ENTRY_POINT}
    assert {name: found for name, found in upward.items() if found} == {}


def test_figures_do_not_import_a_commands_analysis():
    upward = {name: sorted(m for m in targets if m in COMMAND_ANALYSES)
              for name, targets in GRAPH.items() if name.startswith("grokscope.plotting")}
    assert {name: found for name, found in upward.items() if found} == {}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), and modules importing
    themselves."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    # Two modules, one importing the other only inside a function: still a cycle.
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    import a\n")
    graph = {}
    for name in ("a", "b"):
        tree = ast.parse((tmp_path / f"{name}.py").read_text())
        graph[name] = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert _cycles(graph) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_reader_sees_function_level_and_from_imports():
    # A known edge of each kind in the real package: module level, and a submodule by `from`.
    assert "grokscope.errors" in GRAPH["grokscope.cli.output"]
    assert all(target in MODULES for targets in GRAPH.values() for target in targets)
