"""safetensors files: written atomically with canonical bytes, read lazily.

safetensors is imported inside the functions that need it, so importing this module stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from grokscope.errors import GrokscopeError
from grokscope.formats.atomic import atomic_path

# The "grokscope.schema" every safetensors file grokscope writes records (DESIGN.md, schema 1).
FORMAT_SCHEMA = "1"


def save_tensors(path: Path, tensors: dict, metadata: dict[str, str]) -> None:
    from safetensors.torch import save

    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    # Serialised in memory and written by us: safetensors' own save_file makes a second, 0600
    # temporary of its own, which ignores the umask and which a kill would leave behind.
    data = _canonical_header(save(contiguous, metadata=metadata))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _canonical_header(data: bytes) -> bytes:
    """safetensors bytes with the JSON header's keys sorted: the library orders them differently
    in every process, and a rerun after a kill must write the same bytes as an unbroken run."""
    length = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + length]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the data section starts 8-byte aligned, as the format pads it
    return len(header).to_bytes(8, "little") + header + data[8 + length:]


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


def read_whole(path: Path) -> bytearray:
    """A file's bytes in one writable buffer, read once (tensors can be views of it)."""
    import os

    try:
        with open(path, "rb", buffering=0) as handle:
            data = bytearray(os.fstat(handle.fileno()).st_size)
            view, done = memoryview(data), 0
            while done < len(data):
                read = handle.readinto(view[done:])
                if not read:
                    raise GrokscopeError(f"{path}: shrank while it was read")
                done += read
    except OSError as exc:
        raise GrokscopeError(f"{path}: cannot be read ({exc.strerror})") from None
    return data


_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
           "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def tensors_from_bytes(data: bytearray, path: Path) -> dict:
    """The tensors of a safetensors file already read into ``data``, as views of it (no copy:
    the caller has hashed the same bytes). Entries at the same offsets stay one tensor."""
    import torch

    try:
        length = int.from_bytes(data[:8], "little")
        header = json.loads(bytes(data[8:8 + length]))
        header.pop("__metadata__", None)
        start = 8 + length
        tensors, views = {}, {}
        for name, entry in header.items():
            begin, end = entry["data_offsets"]
            if not 0 <= begin <= end <= len(data) - start:
                raise ValueError(f"tensor {name!r} lies outside the file")
            dtype = getattr(torch, _DTYPES[entry["dtype"]])
            key = (begin, end, entry["dtype"], tuple(entry["shape"]))
            if key not in views:
                flat = torch.frombuffer(data, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=start + begin) \
                    if end > begin else torch.empty(0, dtype=dtype)
                views[key] = flat.reshape(entry["shape"])
            tensors[name] = views[key]
        return tensors
    except Exception as exc:  # noqa: BLE001 - a truncated or corrupt file is the user's data
        raise GrokscopeError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
