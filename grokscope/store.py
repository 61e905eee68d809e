"""Every on-disk format grokscope reads or writes (schema 1 of ../shared/DESIGN.md).

The only module that knows file names and layouts. Writes are atomic: a temporary file in the
same folder, then ``os.replace``, so a killed process never leaves a truncated file under a real
name. Heavy libraries (torch, pandas, safetensors) are imported inside the functions that need
them so that importing this module stays cheap for the CLI.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Iterable, Iterator

from grokscope.errors import GrokscopeError

RUN_SCHEMA = "grokscope.run/1"
FORMAT_SCHEMA = "1"
STEP_DIGITS = 8

RUN_FILE = "run.json"
HISTORY_FILE = "history.parquet"
RESUME_FILE = "resume.safetensors"
CHECKPOINTS_DIR = "checkpoints"
FEATURES_DIR = "features"
MEASURES_DIR = "measures"
SAMPLES_FILE = "samples.safetensors"
PROBE_RECORD_FILE = "probe.json"
PROBE_SCHEMA = "grokscope.probe/1"

# grokscope's own names, then other tools' (DESIGN.md: "Series written by other tools are read too").
_STEP_PATTERNS = [
    re.compile(r"^step-(\d+)\.safetensors$"),
    re.compile(r"^checkpoint[-_](\d+)$"),
    re.compile(r"^(?:model[-_])?step[-_]?(\d+)(?:\.(?:safetensors|pt|pth|bin))?$"),
]


def step_file_name(step: int) -> str:
    return f"step-{step:0{STEP_DIGITS}d}.safetensors"


def parse_step(name: str) -> int | None:
    """The training step encoded in a checkpoint's file or folder name, or None."""
    for pattern in _STEP_PATTERNS:
        match = pattern.match(name)
        if match:
            return int(match.group(1))
    return None


# --- atomic writes -------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else delete it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_table(path: Path, table) -> None:
    """Write a pandas DataFrame as Parquet, atomically."""
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


def read_table(path: Path):
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise GrokscopeError(f"{path}: no such table")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - unreadable input is reported, not raised as a bug
        raise GrokscopeError(f"{path}: not a readable Parquet table ({type(exc).__name__})") from None


def save_tensors(path: Path, tensors: dict, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=metadata)


def load_tensors(path: Path, keys: Iterable[str] | None = None) -> tuple[dict, dict[str, str]]:
    """Tensors (all, or just ``keys``) and metadata of a safetensors file, read lazily."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            wanted = list(handle.keys()) if keys is None else list(keys)
            missing = [k for k in wanted if k not in handle.keys()]
            if missing:
                raise GrokscopeError(f"{path}: has no tensor {missing[0]!r}")
            return {k: handle.get_tensor(k) for k in wanted}, dict(handle.metadata() or {})
    except GrokscopeError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated / corrupt files are the user's data
        raise GrokscopeError(f"{path}: not a readable safetensors file ({exc})") from None


# --- runs ----------------------------------------------------------------------------------


def write_run_config(run_dir: Path, config: dict) -> None:
    import platform
    from datetime import datetime, timezone

    import torch

    from grokscope import __version__

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
    if document.get("schema") != RUN_SCHEMA:
        raise GrokscopeError(f"{path}: schema {document.get('schema')!r}, expected {RUN_SCHEMA!r}")
    return document


def read_run(run_dir: Path):
    """The run's :class:`~grokscope.config.RunConfig`, rebuilt from its run.json."""
    from grokscope.config import RunConfig

    try:
        return RunConfig.from_dict(read_run_config(run_dir))
    except (KeyError, TypeError) as exc:
        raise GrokscopeError(f"{Path(run_dir) / RUN_FILE}: lacks a valid {exc} entry") from None


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


# --- features ------------------------------------------------------------------------------


def features_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / FEATURES_DIR / step_file_name(step)


def samples_path(run_dir: Path) -> Path:
    return Path(run_dir) / FEATURES_DIR / SAMPLES_FILE


def list_features(run_dir: Path) -> list[tuple[int, Path]]:
    folder = Path(run_dir) / FEATURES_DIR
    if not folder.is_dir():
        return []
    found = [
        (parse_step(p.name), p)
        for p in folder.glob("step-*.safetensors")
        if parse_step(p.name) is not None
    ]
    return sorted(found)


def save_samples(path: Path, labels, split, index) -> None:
    """features/samples.safetensors: labels int64, split uint8 (0 train, 1 test), index int64."""
    import torch

    tensors = {
        "labels": torch.as_tensor(labels, dtype=torch.int64),
        "split": torch.as_tensor(split, dtype=torch.uint8),
        "index": torch.as_tensor(index, dtype=torch.int64),
    }
    save_tensors(path, tensors, {"format": "pt", "grokscope.schema": FORMAT_SCHEMA})


def load_samples_file(path: Path) -> dict:
    """labels, split and index of a samples.safetensors file, as numpy arrays."""
    tensors, _ = load_tensors(path, ["labels", "split", "index"])
    return {key: value.numpy() for key, value in tensors.items()}


def save_features(path: Path, step: int, layers: dict, penultimate: str, extra: dict | None = None) -> None:
    """A features file: one float32 matrix per layer (insertion order = input to output)."""
    import torch

    metadata = {
        "format": "pt",
        "grokscope.schema": FORMAT_SCHEMA,
        "grokscope.step": str(step),
        "grokscope.layers": json.dumps(list(layers)),
        "grokscope.penultimate": penultimate,
        **(extra or {}),
    }
    save_tensors(path, {k: v.to(torch.float32) for k, v in layers.items()}, metadata)


def features_metadata(path: Path) -> dict[str, str]:
    """The metadata of a features file (all strings), without reading its data."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign files are the user's data
        raise GrokscopeError(f"{path}: not a readable grokscope features file ({type(exc).__name__})") from None


def features_header(path: Path) -> tuple[int, list[str], str]:
    """(step, layer keys input to output, penultimate key) of a features file, without its data."""
    metadata = features_metadata(path)
    try:
        return int(metadata["grokscope.step"]), json.loads(metadata["grokscope.layers"]), metadata["grokscope.penultimate"]
    except (KeyError, ValueError, TypeError) as exc:
        raise GrokscopeError(f"{path}: not a readable grokscope features file ({type(exc).__name__})") from None


# --- how a series was probed ---------------------------------------------------------------


def probe_record_path(features_dir: Path) -> Path:
    return Path(features_dir) / PROBE_RECORD_FILE


def write_probe_record(features_dir: Path, record: dict) -> None:
    """features/probe.json: how a series written by another tool was probed (model, data and its
    SHA-256, layers), so that measure, plot and report need no flags repeated."""
    from datetime import datetime, timezone

    from grokscope import __version__

    document = {"schema": PROBE_SCHEMA, **record, "grokscope_version": __version__,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_text(probe_record_path(features_dir), json.dumps(document, indent=2) + "\n")


def read_probe_record(path: Path) -> dict:
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise GrokscopeError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("schema") != PROBE_SCHEMA:
        raise GrokscopeError(f"{path}: not a grokscope probe record (schema {PROBE_SCHEMA!r})")
    for key in ("series", "layers", "penultimate"):
        if key not in document:
            raise GrokscopeError(f"{path}: lacks its {key!r} entry")
    return document


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (hex, first 16 digits, as run.json's split digest)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


# --- measures ------------------------------------------------------------------------------


def measures_path(run_dir: Path, family: str) -> Path:
    return Path(run_dir) / MEASURES_DIR / f"{family}.parquet"


def read_measures(run_dir: Path, families: Iterable[str] | None = None):
    """All measure tables of a run concatenated (an empty frame if it has none)."""
    import pandas as pd

    folder = Path(run_dir) / MEASURES_DIR
    paths = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if families is not None:
        wanted = set(families)
        paths = [p for p in paths if p.stem in wanted]
    tables = [read_table(p) for p in paths]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


# --- inputs --------------------------------------------------------------------------------


def expand_inputs(paths: Iterable[str]) -> list[Path]:
    """Command-line paths, with ``-`` replaced by the paths on standard input (one per line)."""
    expanded: list[Path] = []
    for raw in paths:
        if raw == "-":
            expanded.extend(Path(line.strip()) for line in sys.stdin if line.strip())
        else:
            expanded.append(Path(raw))
    for path in expanded:
        if not path.exists():
            raise GrokscopeError(f"{path}: no such file or directory")
    return expanded
