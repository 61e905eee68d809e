"""A series' features: features/step-*.safetensors, features/samples.safetensors and
features/probe.json (how a series written by another tool was probed).

Heavy libraries (torch, safetensors) are imported inside the functions that need them.
"""

from __future__ import annotations

import json
from pathlib import Path

from grokscope.errors import GrokscopeError
from grokscope.formats.atomic import write_text
from grokscope.formats.steps import parse_step, step_file_name
from grokscope.formats.tensors import FORMAT_SCHEMA, load_tensors, save_tensors

FEATURES_DIR = "features"
SAMPLES_FILE = "samples.safetensors"
PROBE_RECORD_FILE = "probe.json"
PROBE_SCHEMA = "grokscope.probe/1"


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


# Features files hold float32 matrices (DESIGN.md). float16 halves their size and is only ever
# written on request (probe --storage float16); such files say so in this metadata key.
STORAGE_DTYPES = ("float32", "float16")
STORAGE_KEY = "grokscope.storage_dtype"


def save_features(path: Path, step: int, layers: dict, penultimate: str, extra: dict | None = None,
                  storage: str = "float32") -> None:
    """A features file: one matrix per layer (insertion order = input to output), float32 unless
    ``storage="float16"`` (recorded as ``grokscope.storage_dtype``)."""
    import torch

    if storage not in STORAGE_DTYPES:
        raise GrokscopeError(f"storage: unknown dtype {storage!r}; known: {', '.join(STORAGE_DTYPES)}")
    metadata = {
        "format": "pt",
        "grokscope.schema": FORMAT_SCHEMA,
        "grokscope.step": str(step),
        "grokscope.layers": json.dumps(list(layers)),
        "grokscope.penultimate": penultimate,
        **(extra or {}),
    }
    if storage != "float32":
        metadata[STORAGE_KEY] = storage
    dtype = getattr(torch, storage)
    save_tensors(path, {k: v.to(dtype) for k, v in layers.items()}, metadata)


def features_storage(metadata: dict[str, str]) -> str:
    """The dtype a features file's matrices are stored in (float32 unless its metadata says)."""
    return metadata.get(STORAGE_KEY, "float32")


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

    from grokscope.version import __version__

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
