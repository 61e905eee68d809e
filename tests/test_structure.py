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


def _imports(name: str, path: Path, modules) -> set[str]:
    """The modules of ``modules`` that module ``name`` (at ``path``) imports anywhere in its
    source. ``from P import x`` counts as importing ``P.x`` when that is a module, else ``P``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    found.add(f"{base}.{alias.name}")
                elif base in modules:
                    found.add(base)
    return found


GRAPH = {name: _imports(name, path, MODULES) for name, path in MODULES.items()}


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


def _under(name: str, *prefixes: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def test_the_numerics_import_only_numerics():
    impure = {name: sorted(m for m in targets if not _under(m, "grokscope.measures", "grokscope.errors"))
              for name, targets in GRAPH.items() if _under(name, "grokscope.measures")}
    assert {name: found for name, found in impure.items() if found} == {}


# The floors of docs/development.md's map, ground up: a room imports its own floor or below.
FLOORS = [
    ("errors", "version", "measures", "reproducibility", "worker_signals", "precision", "interrupts"),
    ("config", "formats", "devices", "sweep", "dask_cluster"),
    ("checkpoint_contents", "loading", "discovery", "scanning", "stored_steps", "tasks", "model", "masking",
     "subnet_controls", "layers", "state_dicts", "execution", "memory"),
    ("features", "fingerprints", "user_models", "logs", "training"),
    ("context",),
    ("families",),
    ("pipeline", "early_windows", "plotting"),
    ("prediction", "subnet", "notebook", "reporting", "exporting"),
    ("",),  # the package itself: its names
    ("cli",),
    ("__main__",),
]


def _floor(name: str) -> int | None:
    room = name.removeprefix("grokscope").removeprefix(".").split(".")[0]
    return next((level for level, rooms in enumerate(FLOORS) if room in rooms), None)


def test_every_room_is_on_a_floor_and_imports_none_above_it():
    assert sorted(name for name in MODULES if _floor(name) is None) == []
    upward = {name: sorted(m for m in targets if _floor(m) > _floor(name)) for name, targets in GRAPH.items()}
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


def test_the_import_reader_sees_every_kind_of_import(tmp_path):
    (tmp_path / "pkg").mkdir()
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg import b\nfrom pkg.c import NAME\n",
        "pkg/b.py": "def f():\n    import pkg.a\n",
        "pkg/c.py": "from . import b\nfrom .b import f\nNAME = 1\n",
        "pkg/d.py": "from pkg import NAME_IN_INIT\nimport os\n",
    }
    for relative, text in files.items():
        (tmp_path / relative).write_text(text)
    modules = {"pkg": tmp_path / "pkg/__init__.py", **{f"pkg.{m}": tmp_path / f"pkg/{m}.py" for m in "abcd"}}
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph["pkg.a"] == {"pkg.b", "pkg.c"}  # a submodule by `from`, a name of a module
    assert graph["pkg.b"] == {"pkg.a"}  # inside a function
    assert graph["pkg.c"] == {"pkg.b"}  # relative
    assert graph["pkg.d"] == {"pkg"}  # a name of the package itself; nothing outside it
    assert _cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]  # a -> b -> a, and a -> c -> b -> a
    assert _cycles({"x": {"y"}, "y": set()}) == [] and _cycles({"x": {"x"}}) == [["x"]]
