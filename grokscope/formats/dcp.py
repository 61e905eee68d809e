"""torch.distributed.checkpoint (DCP) folders, as FSDP and torchtitan save them: ``.metadata``
(a pickle describing every entry) beside ``__<rank>_<n>.distcp`` data files.

Read in one process, without a process group. torch's own reader unpickles ``.metadata`` with
plain ``pickle.load`` and non-tensor entries with ``weights_only=False``; here ``.metadata`` is
read by an unpickler that only builds DCP's metadata classes (and torch sizes and dtypes), and
only tensor entries are loaded (torch reads those with ``weights_only=True``), so a checkpoint
folder cannot run code on the reader's machine.
"""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path

from grokscope.errors import GrokscopeError

METADATA_FILE = ".metadata"
DATA_SUFFIX = ".distcp"
# What DCP's .metadata pickle names: its metadata dataclasses, the storage record, and torch's
# sizes, dtypes and layouts. Nothing else is built.
_METADATA_MODULE = "torch.distributed.checkpoint.metadata"
_ALLOWED = {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("collections", "OrderedDict"),
    ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"), ("pathlib", "PureWindowsPath"),
}


def is_dcp_folder(path: Path) -> bool:
    """Whether ``path`` is a DCP checkpoint folder (``.metadata`` and ``*.distcp`` inside)."""
    path = Path(path)
    return path.is_dir() and (path / METADATA_FILE).is_file() and any(
        p.name.endswith(DATA_SUFFIX) for p in path.iterdir())


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        import torch

        allowed = module == _METADATA_MODULE or (module, name) in _ALLOWED or (
            module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.layout, torch.memory_format)))
        if not allowed:
            raise pickle.UnpicklingError(f"{module}.{name} is not DCP metadata")
        return super().find_class(module, name)


def read_metadata(folder: Path):
    """The ``Metadata`` of a DCP folder, unpickled with only DCP's own classes allowed."""
    path = Path(folder) / METADATA_FILE
    try:
        with open(path, "rb") as handle:
            return _MetadataUnpickler(handle).load()
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign .metadata is the user's file
        raise GrokscopeError(f"{path}: not readable DCP metadata ({type(exc).__name__}: {exc}); grokscope builds "
                             "nothing but DCP's own metadata classes from it: save the checkpoint again with "
                             "torch.distributed.checkpoint.save") from None


def entry_paths(metadata) -> dict[str, tuple]:
    """Flat key -> the path of keys it had in the saved (nested) state dict."""
    planner_data = getattr(metadata, "planner_data", None) or {}
    return {key: tuple(planner_data.get(key, (key,))) for key in metadata.state_dict_metadata}


def load_tensors(folder: Path, prefix: tuple = (), device="cpu", metadata=None) -> dict:
    """The tensor entries of a DCP folder whose saved path starts with ``prefix`` (``("model",)``
    for ``{"model": model.state_dict(), "optimizer": ...}``), keyed by the rest of the path
    joined with dots: a state dict."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    folder = Path(folder)
    metadata = read_metadata(folder) if metadata is None else metadata

    class Reader(dcp.FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            return metadata

    wanted = {}
    for key, path in entry_paths(metadata).items():
        entry = metadata.state_dict_metadata[key]
        if isinstance(entry, TensorStorageMetadata) and path[: len(prefix)] == tuple(prefix):
            wanted[key] = torch.empty(tuple(entry.size), dtype=entry.properties.dtype, device=device)
    if not wanted:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no process group: loading in a single process" is the intent
            dcp.load(wanted, storage_reader=Reader(str(folder)), no_dist=True)
    except Exception as exc:  # noqa: BLE001 - missing or truncated data files
        raise GrokscopeError(f"{folder}: not a readable DCP checkpoint ({type(exc).__name__}: {exc})") from None
    paths = entry_paths(metadata)
    return {".".join(str(part) for part in paths[key][len(prefix):]): tensor for key, tensor in wanted.items()}


def tensor_roots(metadata) -> set:
    """The top-level keys of the saved state dict under which tensors lie."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    return {path[0] for key, path in entry_paths(metadata).items()
            if isinstance(metadata.state_dict_metadata[key], TensorStorageMetadata) and len(path) > 1}


def top_level_names(metadata) -> set:
    """The top-level keys of the saved state dict (``model``, ``optimizer``, ``step`` ...)."""
    return {path[0] for path in entry_paths(metadata).values()}


def scalar_entry(folder: Path, metadata, name: str):
    """A top-level non-tensor entry (``"step": 500``), read with ``weights_only=True``; None if
    absent, stored with a transform (compression), or not a plain value."""
    import torch
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex

    entry = metadata.state_dict_metadata.get(name)
    if not isinstance(entry, BytesStorageMetadata):
        return None
    info = (metadata.storage_data or {}).get(MetadataIndex(name))
    if info is None or getattr(info, "transform_descriptors", None):
        return None
    try:
        with open(Path(folder) / info.relative_path, "rb") as handle:
            handle.seek(info.offset)
            return torch.load(io.BytesIO(handle.read(info.length)), weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable extra entry is no step, not an error
        return None
