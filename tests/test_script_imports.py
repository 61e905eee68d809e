"""The benchmarks and examples name only what grokscope has: every ``from grokscope... import X``
they write, at module level or inside a function, resolves.

No test runs the benchmarks (they print timings, and take minutes), so a room moved or renamed
in the package would break them silently: benchmarks/llc.py and benchmarks/spectra.py imported
a ``grokscope.store`` that a reorganisation had split, and failed at their first line.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted([*ROOT.glob("benchmarks/*.py"), *ROOT.glob("examples/**/*.py")])


def _grokscope_imports(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, module, name) of every grokscope import in ``path``; name None for ``import m``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "grokscope":
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, None) for alias in node.names if alias.name.split(".")[0] == "grokscope"]
    return found


def test_the_scripts_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in SCRIPTS}
    assert {"benchmarks/llc.py", "benchmarks/spectra.py", "benchmarks/scale.py"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_grokscope_import_of_a_script_resolves(script):
    missing = []
    for line, module_name, name in _grokscope_imports(script):
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing.append(f"line {line}: {module_name} ({exc})")
            continue
        if name is None or name == "*" or hasattr(module, name):
            continue
        try:  # a submodule not imported by its package's __init__
            importlib.import_module(f"{module_name}.{name}")
        except ImportError:
            missing.append(f"line {line}: {name} from {module_name}")
    assert not missing, f"{script.name}: " + "; ".join(missing)


def test_the_import_reader_sees_imports_inside_functions(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("import os\nfrom grokscope import formats\n\ndef f():\n    from grokscope.gone import thing\n"
                      "    import grokscope.also_gone\n")
    assert _grokscope_imports(script) == [(2, "grokscope", "formats"), (5, "grokscope.gone", "thing"),
                                          (6, "grokscope.also_gone", None)]
