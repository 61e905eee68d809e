"""Loading a checkpoint's weights safely, and what a loaded checkpoint holds (a state dict, nested
or not; a whole series in one file).

Pickled files (``.pt``, ``.pth``, ``.bin``, ``.ckpt``) are only ever read with
``torch.load(..., weights_only=True)``, which refuses any object that is not a tensor or a plain
container: a checkpoint file can never run code on the reader's machine. A legitimate checkpoint
that holds another object (Lightning's ``argparse.Namespace`` hyperparameters) is refused with
that object's name, and :func:`trust_globals` (``--allow-global NAME``) is the explicit opt-in.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from grokscope.errors import GrokscopeError
from grokscope.formats import dcp
from grokscope.formats.steps import WEIGHT_SUFFIXES
from grokscope.checkpoint_contents import NESTED_STATE_KEYS, nested_state, series_in_file
from grokscope.formats.tensors import read_whole, tensors_from_bytes

PICKLE_SUFFIXES = (".pth.tar", ".pt", ".pth", ".bin", ".ckpt")
# Inside a checkpoint-N/ folder, the model's weights under the names common tools give them.
_PREFERRED_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth", "model.bin")
# Files beside the weights in a Hugging Face Trainer checkpoint that are not the model.
NOT_MODEL = re.compile(r"^(optimizer|scheduler|scaler|rng_state|training_args|trainer_state)")
_SHARD = re.compile(r"-\d+-of-\d+\.")
# Prefixes that wrappers add to every parameter name: torch.compile and DistributedDataParallel.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")
# Keys under which training loops commonly nest the model's state dict in a larger checkpoint.
# Keys under which a checkpoint dict records its own step (nanoGPT: iter_num; Lightning: global_step).


@dataclass(frozen=True, order=True)
class Checkpoint:
    """One checkpoint: its step and where it lives (a weight file, a ``checkpoint-N/`` folder, or
    entry ``member`` of a file that holds a whole series)."""

    step: int
    path: Path
    member: int | None = None


def is_weight_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(WEIGHT_SUFFIXES) and not path.name.startswith(".")


def holds_weights(folder: Path) -> bool:
    """Whether a folder is one checkpoint: model weights inside, or a DCP checkpoint."""
    folder = Path(folder)
    return folder.is_dir() and (dcp.is_dcp_folder(folder) or any(
        is_weight_file(p) and not NOT_MODEL.match(p.name) for p in folder.iterdir()))


# --- loading weights -----------------------------------------------------------------------


def weight_files(checkpoint: Checkpoint) -> list[Path]:
    """The file(s) holding a checkpoint's model weights (several for a sharded checkpoint)."""
    path = checkpoint.path
    if path.is_file():
        return [path]
    for name in _PREFERRED_WEIGHTS:
        if (path / name).is_file():
            return [path / name]
    candidates = sorted(p for p in path.iterdir() if is_weight_file(p) and not NOT_MODEL.match(p.name))
    if len(candidates) == 1:
        return candidates
    if candidates and all(_SHARD.search(p.name) for p in candidates):
        return candidates
    if not candidates:
        raise GrokscopeError(f"{path}: no model weights inside (looked for {', '.join(_PREFERRED_WEIGHTS)}, *.safetensors, *.pt)")
    raise GrokscopeError(
        f"{path}: several weight files and none named model.safetensors ({', '.join(p.name for p in candidates)})"
    )


def load_state(checkpoint: Checkpoint, device="cpu") -> dict:
    """A checkpoint's state dict (tensors on ``device``), wrapper prefixes stripped.

    safetensors files are read with ``safe_open``; pickled files only with
    ``torch.load(..., weights_only=True)``. A checkpoint saved as a dict that nests the model's
    state (``{"model": ..., "optimizer": ..., "step": ...}``, Lightning's ``state_dict``) is
    unwrapped; an entry of a file holding a whole series is picked by ``checkpoint.member``.
    Tensors that share storage (tied weights saved twice) keep sharing it.
    """
    if checkpoint.member is not None:
        entries = series_in_file(load_pickled_cached(checkpoint.path))
        if entries is None or checkpoint.member >= len(entries):
            raise GrokscopeError(f"{checkpoint.path}: no longer holds checkpoint {checkpoint.member} of its series")
        state = _unwrap_state(entries[checkpoint.member][1], checkpoint.path)
        return strip_wrapper_prefixes(_to_device(state, device))
    if dcp.is_dcp_folder(checkpoint.path):
        return strip_wrapper_prefixes(_load_dcp(checkpoint.path, device))
    state: dict = {}
    for path in weight_files(checkpoint):
        state.update(_load_file(path, device))
    return strip_wrapper_prefixes(state)


def _load_dcp(folder: Path, device) -> dict:
    """A DCP checkpoint's model state: the tensors under the first of the usual nesting keys
    (``{"model": ..., "optimizer": ...}``), else every tensor entry."""
    metadata = dcp.read_metadata(folder)
    nested = next((key for key in NESTED_STATE_KEYS if key in dcp.tensor_roots(metadata)), None)
    state = dcp.load_tensors(folder, (nested,) if nested else (), device, metadata)
    if not state:
        raise GrokscopeError(f"{folder}: a DCP checkpoint holding no tensors")
    return state


def load_state_and_digest(checkpoint: Checkpoint, device="cpu") -> tuple[dict, str]:
    """:func:`load_state` and :func:`checkpoint_digest` from one read of each weight file (into
    memory, hashed; safetensors tensors are views of those bytes)."""
    if checkpoint.member is not None or dcp.is_dcp_folder(checkpoint.path):
        return load_state(checkpoint, device), checkpoint_digest(checkpoint)
    import hashlib
    import io

    digest = hashlib.sha256()
    state: dict = {}
    for path in weight_files(checkpoint):
        data = read_whole(path)
        digest.update(data)
        if path.name.endswith(".safetensors"):
            try:
                state.update(_to_device(tensors_from_bytes(data, path), device))
            except GrokscopeError:  # the library's own reading, for its own message (or a layout ours lacks)
                state.update(_load_safetensors(path, device))
        else:
            state.update(_unwrap_state(_load_pickled(io.BytesIO(data), device, path), path))
    return strip_wrapper_prefixes(state), digest.hexdigest()[:16]


def checkpoint_digest(checkpoint: Checkpoint) -> str:
    """SHA-256 (first 16 hex digits) of the bytes of a checkpoint's weight files, in order; an
    entry of a whole-series file adds its index to the file's digest; a DCP folder is every file
    in it, by name."""
    import hashlib

    if checkpoint.member is not None:
        paths = [checkpoint.path]
    elif dcp.is_dcp_folder(checkpoint.path):
        paths = sorted(p for p in Path(checkpoint.path).iterdir() if p.is_file())
    else:
        paths = weight_files(checkpoint)
    digest = hashlib.sha256()
    for path in paths:
        try:
            with open(path, "rb") as handle:
                while block := handle.read(1 << 22):
                    digest.update(block)
        except OSError as exc:
            raise GrokscopeError(f"{path}: cannot be read ({exc.strerror})") from None
    digest.update(f"#{checkpoint.member}".encode() if checkpoint.member is not None else b"")
    return digest.hexdigest()[:16]


def _to_device(state: dict, device) -> dict:
    import torch

    if torch.device(device).type == "cpu":
        return dict(state)
    moved: dict = {}
    by_storage: dict[tuple, object] = {}
    for key, value in state.items():
        # Keep tied tensors tied on the device (one copy, as in the file).
        identity = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape), value.stride())
        if identity not in by_storage:
            by_storage[identity] = value.to(device)
        moved[key] = by_storage[identity]
    return moved


def _load_file(path: Path, device) -> dict:
    if path.name.endswith(".safetensors"):
        return _load_safetensors(path, device)
    return _unwrap_state(_load_pickled(path, device), path)


def _load_safetensors(path: Path, device) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # noqa: BLE001 - a truncated or corrupt file is the user's data
        raise GrokscopeError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None


def _load_pickled(path, device, name: Path | None = None):
    """``path``: a file's path, or its bytes as a file object (then ``name`` is its path)."""
    import pickle

    import torch

    source, path = path, name if name is not None else path
    try:
        return torch.load(source, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_global(str(exc))
        if refused:
            raise GrokscopeError(
                f"{path}: refused: holds a {refused} object, and grokscope loads pickled checkpoints only "
                f"with weights_only=True; if you trust this file, pass --allow-global {refused}"
            ) from None
        if "weights_only" in str(exc):
            raise GrokscopeError(
                f"{path}: refused: holds objects other than tensors, and grokscope loads pickled "
                "checkpoints only with weights_only=True (re-save the state_dict, or use safetensors)"
            ) from None
        raise GrokscopeError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - truncated zip, wrong format, ...
        raise GrokscopeError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})") from None


@functools.lru_cache(maxsize=2)
def _load_pickled_cached_key(path: str, mtime_ns: int, size: int):
    import torch

    try:
        # Memory-mapped: looking for a stored step reads the pickle, not every tensor's bytes.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - an old (non-zip) file, or one to refuse: the full read says why
        return _load_pickled(Path(path), "cpu")


def load_pickled_cached(path: Path):
    """A pickled file on the CPU, read once per (path, modification time, size): discovery and
    every checkpoint of a single-file series share one read."""
    stat = Path(path).stat()
    return _load_pickled_cached_key(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


def _refused_global(message: str) -> str | None:
    # torch: "Unsupported global: GLOBAL argparse.Namespace was not an allowed global by default."
    match = re.search(r"GLOBAL ([\w.]+)", message)
    return match.group(1) if match else None


def trust_globals(names: Iterable[str]) -> None:
    """Let ``weights_only`` loading accept the named classes (``--allow-global module.Name``).

    An explicit opt-in for checkpoints the user trusts: the classes are imported and handed to
    ``torch.serialization.add_safe_globals`` for this process.
    """
    import importlib

    import torch

    allowed = []
    for name in names:
        module_name, _, attribute = name.rpartition(".")
        try:
            allowed.append(getattr(importlib.import_module(module_name), attribute))
        except (ImportError, AttributeError, ValueError):
            raise GrokscopeError(f"--allow-global: cannot import {name!r} (expected module.Name)") from None
    if allowed:
        torch.serialization.add_safe_globals(allowed)
        _load_pickled_cached_key.cache_clear()


def _unwrap_state(loaded, path: Path) -> dict:
    import torch

    state = nested_state(loaded)
    if state is not None:
        return state
    if isinstance(loaded, dict):
        # A state dict saved together with non-tensor extras at the top level: keep the tensors.
        tensors = {k: v for k, v in loaded.items() if torch.is_tensor(v)}
        if tensors:
            return tensors
    if series_in_file(loaded) is not None:
        raise GrokscopeError(f"{path}: holds a whole series; name the file itself, not one of its steps")
    raise GrokscopeError(f"{path}: holds no state dict (a dict of tensor names to tensors)")


def strip_wrapper_prefixes(state: dict) -> dict:
    """Parameter names without the ``_orig_mod.`` (torch.compile) and ``module.`` (DDP) prefixes."""
    stripped = {}
    for key, value in state.items():
        name = key
        while name.startswith(_WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        stripped[name] = value
    return stripped


def transformers_names(model, state: dict) -> dict:
    """``state`` under the names of a ``transformers`` model, renamed as ``from_pretrained`` does.

    transformers 5 renamed modules of several architectures (ViT's
    ``vit.encoder.layer.0.attention.attention.key`` is ``vit.layers.0.attention.k_proj``,
    GPT-NeoX's ``embed_out`` is ``lm_head``) and converts the names found on disk only while
    loading, with the model's conversion mapping: the same mapping renames here. Names already
    the model's stay; a key that transformers would merge or split with others (fused
    projections) keeps its name, and the mismatch is reported when it is loaded. Any other model
    gets ``state`` back unchanged.
    """
    if not type(model).__module__.startswith("transformers."):
        return state
    from transformers import PreTrainedModel

    expected = model.state_dict()
    if not isinstance(model, PreTrainedModel) or set(state) <= set(expected):
        return state
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    conversions = get_model_conversion_mapping(model)
    renamings = [c for c in conversions if isinstance(c, WeightRenaming)]
    converters = [c for c in conversions if isinstance(c, WeightConverter)]
    renamed = {}
    for key, value in state.items():
        name, merged_by = rename_source_key(key, renamings, converters, model.base_model_prefix, expected)
        renamed[key if merged_by is not None else name] = value
    return renamed


def transformers_config(checkpoint: Checkpoint) -> Path | None:
    """The ``config.json`` a Hugging Face checkpoint folder carries, if any: an absolute path
    that keeps its symlinks (in the Hub cache the file links into ``blobs/``, where no model
    folder is)."""
    folder = checkpoint.path if checkpoint.path.is_dir() else checkpoint.path.parent
    path = Path(os.path.abspath(folder / "config.json"))
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return path if isinstance(document, dict) and document.get("architectures") else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
