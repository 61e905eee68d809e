"""Mistakes caught before start-up: the paths and option values a command can check without
torch, pandas or plotnine, so a typo costs a fraction of a second instead of the imports.

The library functions check the same things again (they are called from Python too); these
checks only answer sooner. Each raises GrokscopeError naming the path or option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from grokscope.errors import GrokscopeError, did_you_mean


def paths_exist(paths: Iterable[str]) -> None:
    """Every named path exists (``-``, the paths on stdin, is checked as they arrive)."""
    from grokscope.formats.inputs import STDIN

    for raw in paths:
        if raw != STDIN and not Path(raw).exists():
            raise GrokscopeError(f"{raw}: no such file or directory")


def device_name(device: str) -> None:
    """``--device`` is auto, cpu, cuda or cuda:N (whether CUDA is there is torch's to say later)."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise GrokscopeError(f"--device: unknown device {device!r}{did_you_mean(device, ('auto', 'cpu', 'cuda'))}; "
                             "use auto, cpu or cuda")


def choice(option: str, value: str, known: Iterable[str]) -> None:
    """``value`` is one of ``known``, else one line with the close ones and all of them."""
    known = tuple(known)
    if value not in known:
        raise GrokscopeError(f"{option}: unknown value {value!r}{did_you_mean(value, known)}; known: {', '.join(known)}")


def factory_spec(spec: str | None) -> None:
    """``--model file.py:factory``: the file exists and defines the factory at its top level
    (read, not run: running it would import torch). A module's factory is checked on import."""
    if spec is None:
        return
    module_name, sep, attribute = spec.rpartition(":")
    if not sep or not module_name or not attribute:
        raise GrokscopeError(f"--model: expected package.module:factory or file.py:factory, got {spec!r}")
    if not module_name.endswith(".py"):
        return
    path = Path(module_name)
    if not path.is_file():
        raise GrokscopeError(f"--model: {path} is not a file")
    names = _top_level_names(path)
    if names is not None and attribute.split(".")[0] not in names:
        raise GrokscopeError(f"--model: {module_name} has no {attribute!r}{did_you_mean(attribute, sorted(names))}")


def _top_level_names(path: Path) -> set[str] | None:
    """The names a Python file binds at its top level, or None when they cannot be told without
    running it (a syntax error is its import's to report, a star import may bring any name)."""
    import ast

    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return None
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            if node.name == "*":
                return None
            names.add((node.asname or node.name).split(".")[0])
    return names


def file_exists(option: str, path: Path | None) -> None:
    if path is not None and not path.is_file():
        raise GrokscopeError(f"{option}: {path} is not a file")


def before_probe(paths, *, model, data, steps, device, dtype, storage) -> None:
    """What probe can tell is wrong before it imports torch."""
    from grokscope.discovery import parse_steps
    from grokscope.formats.features import STORAGE_DTYPES
    from grokscope.pipeline.probe import DTYPES

    paths_exist(paths)
    factory_spec(model)
    file_exists("--data", data)
    parse_steps(steps)
    device_name(device)
    choice("--dtype", dtype, DTYPES)
    choice("--storage", storage, STORAGE_DTYPES)


def before_measure(paths, metrics, *, steps, device, choices: dict) -> None:
    """What measure can tell is wrong before it imports torch: paths, metric names, named values."""
    from grokscope.discovery import parse_steps
    from grokscope.families import resolve_metrics
    from grokscope.pipeline.measure import CHOICES

    paths_exist(paths)
    resolve_metrics(metrics)
    parse_steps(steps)
    device_name(device)
    for option, value in choices.items():
        choice(option, value, CHOICES[option])
