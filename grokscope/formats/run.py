"""A grokscope run's files: run.json, history.parquet, resume.safetensors and checkpoints/.

Heavy libraries (torch, safetensors) are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import re
import types
import typing
from pathlib import Path

from grokscope.errors import GrokscopeError
from grokscope.formats.atomic import clean_stale_temporaries, is_temporary, write_text
from grokscope.formats.steps import parse_step, step_file_name
from grokscope.formats.tables import read_table, write_table
from grokscope.formats.tensors import FORMAT_SCHEMA, load_tensors, save_tensors

RUN_SCHEMA = "grokscope.run/1"
RUN_FILE = "run.json"
HISTORY_FILE = "history.parquet"
RESUME_FILE = "resume.safetensors"
CHECKPOINTS_DIR = "checkpoints"


def write_run_config(run_dir: Path, config: dict) -> None:
    import platform
    from datetime import datetime, timezone

    import torch

    from grokscope.version import __version__

    document = {"schema": RUN_SCHEMA, **config}
    document.setdefault("grokscope_version", __version__)
    document.setdefault("torch_version", torch.__version__)
    document.setdefault("python_version", platform.python_version())
    document.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_text(Path(run_dir) / RUN_FILE, json.dumps(document, indent=2) + "\n")


def read_run_config(run_dir: Path) -> dict:
    path = Path(run_dir) / RUN_FILE
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise GrokscopeError(f"{run_dir}: not a grokscope run (no {RUN_FILE})") from None
    except (OSError, ValueError) as exc:
        raise GrokscopeError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise GrokscopeError(f"{path}: holds a JSON {type(document).__name__}, not an object")
    if document.get("schema") != RUN_SCHEMA:
        raise GrokscopeError(f"{path}: schema {document.get('schema')!r}, expected {RUN_SCHEMA!r}")
    return document


def read_run(run_dir: Path):
    """The run's :class:`~grokscope.config.RunConfig`, rebuilt from its run.json."""
    from grokscope.config import RunConfig

    path = Path(run_dir) / RUN_FILE
    document = read_run_config(run_dir)
    check_schema(path, document, RunConfig)
    try:
        config = RunConfig.from_dict(document)
    except (KeyError, TypeError) as exc:
        raise GrokscopeError(f"{path}: lacks a valid {exc} entry") from None
    try:
        config.validate()
    except GrokscopeError as exc:  # a range: said by the option that sets the key
        raise GrokscopeError(f"{path}: holds a setting train would refuse: {exc}") from None
    return config


def check_schema(path: Path, document: dict, kind, prefix: str = "") -> None:
    """Every entry of ``document`` that the dataclass ``kind`` (a config) has a field for is of
    the field's type, and every field without a default is there; else one line naming the key."""
    import dataclasses

    hints = typing.get_type_hints(kind)
    for field in dataclasses.fields(kind):
        key = f"{prefix}{field.name}"
        if field.name not in document:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING \
                    or not prefix and field.name in ("name", "seed", "task", "model", "optim", "schedule"):
                raise GrokscopeError(f"{path}: lacks the {key!r} entry")
            continue
        value, hint = document[field.name], hints[field.name]
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        if value is None and type(None) in allowed:
            continue
        nested = next((t for t in allowed if dataclasses.is_dataclass(t)), None)
        if nested is not None:
            if not isinstance(value, dict):
                raise GrokscopeError(f"{path}: {key!r} is {_json_type(value)}, not an object")
            check_schema(path, value, nested, f"{key}.")
        elif not any(_is_of(value, t) for t in allowed if t is not type(None)):
            wanted = " or ".join(_JSON_NAMES.get(typing.get_origin(t) or t, str(t)) for t in allowed)
            raise GrokscopeError(f"{path}: {key!r} is {json.dumps(value)}, not {wanted}")


_JSON_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list of integers",
               type(None): "null"}


def _is_of(value, hint) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(_is_of(item, hint.__args__[0]) for item in value)
    return isinstance(value, hint)


def _json_type(value) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), repr(value))


def is_unfinished_start(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds only what ``train`` writes before its first commit.

    That is run.json, history.parquet, checkpoints and grokscope's temporaries, but no
    resume.safetensors: a run killed (or stopped by a full disk) in its first writes, which a
    rerun may start over. Anything else in the folder means it is not ours to clear.
    """
    run_dir = Path(run_dir)
    if (run_dir / RESUME_FILE).exists():
        return False
    for entry in run_dir.iterdir():
        if entry.name in (RUN_FILE, HISTORY_FILE) and entry.is_file() and not entry.is_symlink():
            continue
        if is_temporary(entry.name) and not entry.is_dir():
            continue
        if entry.name == CHECKPOINTS_DIR and entry.is_dir() and not entry.is_symlink():
            if all(
                (parse_step(e.name) is not None and e.name == step_file_name(parse_step(e.name)))
                or is_temporary(e.name)
                for e in entry.iterdir()
            ):
                continue
        return False
    return True


def clear_unfinished_start(run_dir: Path) -> None:
    """Delete the checkpoints, history and dead writers' temporaries of an unfinished start."""
    run_dir = Path(run_dir)
    folder = run_dir / CHECKPOINTS_DIR
    for _, path in list_checkpoints(run_dir):
        path.unlink()
    (run_dir / HISTORY_FILE).unlink(missing_ok=True)
    clean_stale_temporaries(run_dir)
    if folder.is_dir():
        clean_stale_temporaries(folder)


def is_run_dir(path: Path) -> bool:
    return (Path(path) / RUN_FILE).is_file()


def run_name(run_dir: Path) -> str:
    return read_run_config(run_dir).get("name") or Path(run_dir).name


def read_history(run_dir: Path):
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        raise GrokscopeError(f"{run_dir}: no {HISTORY_FILE} (was the run trained by grokscope?)")
    return read_table(path).sort_values("step", kind="stable").reset_index(drop=True)


def write_history(run_dir: Path, history) -> None:
    write_table(Path(run_dir) / HISTORY_FILE, history)


# --- resume state --------------------------------------------------------------------------

RESUME_STEP_KEY = "grokscope.step"


def save_resume_state(run_dir: Path, step: int, tensors: dict) -> None:
    """resume.safetensors: the optimizer state after ``step`` updates (the run's commit point)."""
    save_tensors(Path(run_dir) / RESUME_FILE, tensors, {RESUME_STEP_KEY: str(step)})


def resume_step(run_dir: Path) -> int | None:
    """The step resume.safetensors describes, without reading its tensors; None if there is none."""
    from safetensors import safe_open

    path = Path(run_dir) / RESUME_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - a corrupt file is the user's data
        raise GrokscopeError(f"{path}: not a readable safetensors file ({exc})") from None
    return _step_of(path, metadata)


def load_resume_state(run_dir: Path) -> tuple[int, dict]:
    """(step, tensors) of resume.safetensors."""
    path = Path(run_dir) / RESUME_FILE
    tensors, metadata = load_tensors(path)
    return _step_of(path, metadata), tensors


def _step_of(path: Path, metadata: dict[str, str]) -> int:
    raw = metadata.get(RESUME_STEP_KEY)
    if raw is None:
        raise GrokscopeError(f"{path}: has no {RESUME_STEP_KEY!r} metadata (not written by grokscope train)")
    if not re.fullmatch(r"[0-9]+", raw):
        raise GrokscopeError(f"{path}: {RESUME_STEP_KEY!r} is {raw!r}, not a step number")
    return int(raw)


# --- checkpoints ---------------------------------------------------------------------------


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / step_file_name(step)


def save_checkpoint(run_dir: Path, step: int, state: dict) -> Path:
    path = checkpoint_path(run_dir, step)
    metadata = {"format": "pt", "grokscope.schema": FORMAT_SCHEMA, "grokscope.step": str(step)}
    save_tensors(path, state, metadata)
    return path


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every grokscope checkpoint of a run, sorted numerically by step."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue  # temporary files of an interrupted write
        step = parse_step(entry.name)
        if step is not None and entry.suffix == ".safetensors":
            found.append((step, entry))
    return sorted(found)


def load_checkpoint(path: Path) -> dict:
    state, _ = load_tensors(path)
    return state
