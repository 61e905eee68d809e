"""Models and data brought by the user for another tool's series: a factory (``--model``), a
Hugging Face ``config.json``, an .npz of inputs and labels (``--data``)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
from torch import nn

from grokscope.errors import GrokscopeError, did_you_mean
from grokscope.features import Samples


def build_user_model(spec: str) -> nn.Module:
    """Call ``package.module:factory`` (or ``path/to/file.py:factory``) and check it gives an nn.Module.

    A file's folder goes on the import path, so the factory can import the user's training code
    beside it; a module is imported from the current folder, as with ``python -m``.
    """
    module_name, sep, attribute = spec.rpartition(":")
    if not sep or not module_name or not attribute:
        raise GrokscopeError(f"--model: expected package.module:factory or file.py:factory, got {spec!r}")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise GrokscopeError(f"--model: {path} is not a file")
            folder = str(path.resolve().parent)
            if folder not in sys.path:
                sys.path.insert(0, folder)
            module_spec = importlib.util.spec_from_file_location(f"grokscope_user_model_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(module_name)
    except GrokscopeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's module failed; say where, keep it one line
        raise GrokscopeError(f"--model: importing {module_name} failed ({type(exc).__name__}: {exc})") from None
    factory = module
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            names = [n for n in dir(module) if not n.startswith("_")]
            raise GrokscopeError(f"--model: {module_name} has no {attribute!r}{did_you_mean(attribute, names)}")
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001
        raise GrokscopeError(f"--model: {spec}() failed ({type(exc).__name__}: {exc})") from None
    if not isinstance(model, nn.Module):
        raise GrokscopeError(f"--model: {spec}() returned {type(model).__name__}, not a torch.nn.Module")
    return model


def build_transformers_model(config_path: Path) -> nn.Module:
    """The architecture a Hugging Face ``config.json`` describes (its ``architectures[0]``),
    untrained, built offline with ``transformers`` (the optional extra ``grokscope[hf]``)."""
    import json
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
    try:
        import transformers
    except ImportError:
        raise GrokscopeError(
            f"{config_path}: building this model needs the transformers package "
            "(pip install 'grokscope[hf]'), or pass --model with a factory"
        ) from None
    transformers.logging.set_verbosity_error()  # its warnings about unused config fields are noise here
    architecture = json.loads(Path(config_path).read_text())["architectures"][0]
    cls = getattr(transformers, architecture, None)
    if cls is None:
        raise GrokscopeError(f"{config_path}: transformers has no architecture {architecture!r}; pass --model")
    try:
        config = transformers.AutoConfig.from_pretrained(str(Path(config_path).parent))
        for name in ("activation_function", "hidden_act"):
            if getattr(config, name, None) == "gelu_new":
                # The same tanh approximation as one fused kernel instead of five element-wise
                # ones: GPT-2's forward pass takes a fifth less CPU (values equal to ~1e-6).
                setattr(config, name, "gelu_pytorch_tanh")
        return cls(config)
    except Exception as exc:  # noqa: BLE001 - a config this transformers cannot read
        raise GrokscopeError(f"{config_path}: transformers could not build {architecture} ({exc})") from None


def load_data(path: Path) -> tuple[np.ndarray, Samples]:
    """Inputs and samples from an .npz with ``X`` (any shape, first axis = samples), integer ``y``
    and optionally ``split`` (0 train, 1 test; without it every sample counts as training data)."""
    path = Path(path)
    if not path.is_file():
        raise GrokscopeError(f"--data: {path} is not a file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except Exception as exc:  # noqa: BLE001
        raise GrokscopeError(f"--data: {path} is not a readable .npz file ({exc})") from None
    if "X" not in arrays or "y" not in arrays:
        raise GrokscopeError(f"--data: {path} must hold arrays 'X' and 'y', found {sorted(arrays)}")
    x, y = arrays["X"], arrays["y"]
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise GrokscopeError(f"--data: {path}: 'y' must be 1-D integer labels, one per row of 'X'")
    split = arrays.get("split", np.zeros(len(y), dtype=np.uint8))
    if split.shape != y.shape or not set(np.unique(split)) <= {0, 1}:
        raise GrokscopeError(f"--data: {path}: 'split' must be 0 (train) / 1 (test), one per row")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.int64)
    elif not np.issubdtype(x.dtype, np.floating):
        raise GrokscopeError(f"--data: {path}: 'X' must be numbers, got dtype {x.dtype}")
    return x, Samples.enumerate(y, split)

