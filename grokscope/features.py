"""Hidden-layer features of a checkpoint series: the activations of every sample at every step.

Shared by ``grokscope probe`` (which stores them, one file per checkpoint) and ``grokscope
measure`` (which uses stored features where they exist and computes the rest in memory with the
same code). The model and the inputs are put on the device once per series; per checkpoint only
the weights change, so the cost of a checkpoint is one read of its weights plus one forward pass
over all samples in batches. The same forward pass gives the model's own output, from which
train/test loss and accuracy follow where that output is class logits over the labels.

Rows of every feature matrix follow ``features/samples.safetensors`` (labels, split: 0 train /
1 test, index).

Layers are named by *layer specs*: ``NAME`` (the output of module ``NAME``), ``NAME:input`` (its
input), either followed by ``@POS`` to choose a token position of a sequence output
``(B, T, C)``: ``@-1`` the last token (where a grokking transformer reads its answer), ``@0``
the first (a ViT's CLS token, its usual readout), ``@all`` every position flattened into
``(B, T*C)``, ``@mean`` the mean over positions. A sequence output without ``@`` takes the last
position. A convolutional map ``(B, C, H, W)`` (any output with two or more axes after the
channels) has no token axis: it is flattened in its own ``(C, H, W)`` order, or averaged over
its positions into ``(B, C)`` with ``@mean`` (global average pooling). The spec as written is
the features file's tensor name, and the file's metadata says what was taken
(``grokscope.positions``: ``-1``, ``all``, ``mean``, ``flattened (16, 4, 4)``, ``mean over (4, 4)``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from grokscope import formats
from grokscope.errors import GrokscopeError
from grokscope.loading import Checkpoint, load_state, transformers_names

# All of a p = 97 task (9409 samples) in one batch, so nothing is copied; a width-4096 layer of
# a full batch is 256 MiB in float32, small enough for any GPU.
DEFAULT_BATCH_SIZE = 16384
STORED_MODES = ("prefer", "never", "only")
INPUT_SUFFIX = ":input"
POSITION_MARK = "@"
ALL_POSITIONS = "all"
MEAN_POSITIONS = "mean"
# Elementwise functions that may stand between two layers that follow each other (balancedness).
_ACTIVATIONS = (
    lambda a: a, torch.relu, torch.nn.functional.gelu, lambda a: torch.nn.functional.gelu(a, approximate="tanh"),
    torch.nn.functional.silu, torch.tanh, torch.sigmoid,
)


# --- samples -------------------------------------------------------------------------------


@dataclass
class Samples:
    """Which sample each feature row is: its label, its split and its place in the task."""

    labels: np.ndarray  # (n,) int64
    split: np.ndarray  # (n,) uint8: 0 train, 1 test
    index: np.ndarray  # (n,) int64: position in the task's enumeration of samples

    def __len__(self) -> int:
        return len(self.labels)

    def same_as(self, other: "Samples") -> bool:
        return all(np.array_equal(a, b) for a, b in (
            (self.labels, other.labels), (self.split, other.split), (self.index, other.index)))

    @classmethod
    def enumerate(cls, labels, split) -> "Samples":
        """Samples in their natural order: row i is sample i."""
        labels = np.asarray(labels, dtype=np.int64)
        return cls(labels, np.asarray(split, dtype=np.uint8), np.arange(len(labels), dtype=np.int64))


def save_samples(folder: Path, samples: Samples, force: bool = False) -> bool:
    """Write ``folder/samples.safetensors`` unless an identical one is there; True if written.

    An existing file that differs means stored features follow other rows: refused without ``force``.
    """
    path = Path(folder) / formats.features.SAMPLES_FILE
    if path.is_file() and not force:
        if Samples(**formats.features.load_samples_file(path)).same_as(samples):
            return False
        raise GrokscopeError(
            f"{path}: lists other samples than this series' data; pass --force to recompute every features file"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    formats.features.save_samples(path, samples.labels, samples.split, samples.index)
    return True


# --- layer specs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSpec:
    """A parsed ``--layer`` value: ``NAME[:input][@POS]`` (see the module docstring)."""

    key: str
    module: str
    is_input: bool
    position: int | str | None  # an index, "all", or None: the last position of a sequence

    @classmethod
    def parse(cls, text: str) -> "LayerSpec":
        key = text.strip()
        name, mark, position_text = key.partition(POSITION_MARK)
        position: int | str | None = None
        if mark:
            if position_text in (ALL_POSITIONS, MEAN_POSITIONS):
                position = position_text
            else:
                try:
                    position = int(position_text)
                except ValueError:
                    raise GrokscopeError(
                        f"--layer {key}: cannot read position {position_text!r}; use @-1 (last token), @0, @all or @mean"
                    ) from None
        is_input = name.endswith(INPUT_SUFFIX)
        module = name.removesuffix(INPUT_SUFFIX)
        if not module:
            raise GrokscopeError(f"--layer {key}: names no module")
        return cls(key, module, is_input, position)


def select_position(value: torch.Tensor, spec: LayerSpec) -> tuple[torch.Tensor, str]:
    """The (B, units) matrix of a captured activation, and what was taken ("none" for a (B, C)
    output, "all", "mean" or the index of a sequence, "flattened (C, H, W)" or "mean over (H, W)"
    of a convolutional map)."""
    if value.ndim <= 2:
        if spec.position not in (None, ALL_POSITIONS):
            raise GrokscopeError(
                f"--layer {spec.key}: the layer's output {tuple(value.shape)} has no token axis; drop '@{spec.position}'"
            )
        return value.reshape(len(value), -1), "none"
    if value.ndim >= 4:
        return _map_features(value, spec)
    if spec.position == ALL_POSITIONS:
        return value.reshape(len(value), -1), ALL_POSITIONS  # (B, T*C)
    if spec.position == MEAN_POSITIONS:
        return value.mean(dim=1), MEAN_POSITIONS  # (B, C)
    position = -1 if spec.position is None else spec.position
    length = value.shape[1]
    if not -length <= position < length:
        raise GrokscopeError(
            f"--layer {spec.key}: position {position} is out of range for {length} tokens (use -{length}..{length - 1})"
        )
    return value[:, position].reshape(len(value), -1), str(position)  # (B, C)


def _map_features(value: torch.Tensor, spec: LayerSpec) -> tuple[torch.Tensor, str]:
    """A (B, C, H, W) map (or (B, C, D, H, W)): flattened, or averaged over its positions."""
    spatial = tuple(value.shape[2:])
    if spec.position == MEAN_POSITIONS:
        return value.mean(dim=tuple(range(2, value.ndim))), f"mean over {spatial}"  # (B, C)
    if spec.position in (None, ALL_POSITIONS):
        return value.reshape(len(value), -1), f"flattened {tuple(value.shape[1:])}"  # (B, C*H*W)
    raise GrokscopeError(
        f"--layer {spec.key}: the layer's output {tuple(value.shape)} is a (B, C, H, W) map with no token axis; "
        f"drop '@{spec.position}' to flatten it, or use @mean to average over its positions"
    )


# --- the extractor -------------------------------------------------------------------------


@dataclass
class Activations:
    """One forward pass over every sample: ``layers`` key -> (n, units) on the device, and
    ``evaluation`` (train/test loss and accuracy) when the output is class logits over the labels."""

    layers: dict[str, torch.Tensor]
    evaluation: dict[str, float] | None = None


class Extractor:
    """A model and all its inputs on the device; maps a state dict to feature matrices.

    ``capture(batch)`` runs the model on one batch and returns (activations by key, the model's
    output); the extractor keeps ``keys`` (input to output), takes each key's token position,
    flattens to (batch, units) and stacks the batches. ``penultimate`` names the layer that feeds
    the output layer. With ``labels`` and ``split`` (tensors on the device) it also scores the
    output: cross-entropy and accuracy per split where the output is class logits.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, capture: Callable, keys: list[str],
                 penultimate: str, batch_size: int = DEFAULT_BATCH_SIZE, *,
                 labels: torch.Tensor | None = None, split: torch.Tensor | None = None):
        if batch_size < 1:
            raise GrokscopeError(f"--batch-size: must be positive, got {batch_size}")
        self.model = model.eval()
        self.x = x  # (n, ...) on the device, in the compute dtype (integer inputs stay integer)
        self.capture = capture
        self.keys = list(keys)
        self.specs = {key: LayerSpec.parse(key) for key in self.keys}
        self.penultimate = penultimate
        self.batch_size = batch_size
        self.labels, self.split = labels, split
        self.positions: dict[str, str] = {}  # key -> position taken, known after the first pass

    @property
    def n_samples(self) -> int:
        return len(self.x)

    @torch.no_grad()
    def load(self, state: dict) -> None:
        """Copy a state dict into the model's parameters (on the device, in its dtype)."""
        fitted = fit_state(self.model, state)
        try:
            self.model.load_state_dict(fitted, strict=True)
        except RuntimeError as exc:
            raise GrokscopeError(f"the weights do not fit the model ({_mismatch(self.model, fitted, exc)})") from None

    @torch.no_grad()
    def features(self) -> Activations:
        """Activations of the loaded weights, and the evaluation of the model's output."""
        n = self.n_samples
        out: dict[str, torch.Tensor] = {}
        storages: set[int] = set()
        scores = _Scores(self.labels, self.split)
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            try:
                captured, output = self.capture(self.x[start:stop])
            except GrokscopeError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. --data whose shape the model cannot take
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise GrokscopeError(f"the forward pass failed ({type(exc).__name__}: {message})") from None
            for key in self.keys:
                if key not in captured:
                    raise GrokscopeError(f"layer {key!r} was not reached by the forward pass")
                value, taken = select_position(captured[key], self.specs[key])  # (B, units)
                self.positions[key] = taken
                if start == 0 and stop == n:
                    # One module's output is often the next one's input: keep the matrices distinct.
                    storage = value.untyped_storage().data_ptr()
                    out[key] = value.clone() if storage in storages else value
                    storages.add(storage)
                    continue
                if key not in out:
                    out[key] = value.new_empty((n, value.shape[1]))  # (n, units)
                out[key][start:stop] = value
            scores.add(output_logits(output, self._answer_position()), start, stop)
        return Activations(out, scores.result())

    def _answer_position(self) -> int:
        position = self.specs[self.penultimate].position if self.penultimate in self.specs else None
        return position if isinstance(position, int) else -1

    def __call__(self, state: dict) -> Activations:
        self.load(state)
        return self.features()


class _Scores:
    """Cross-entropy and accuracy per split, summed over batches (logits are never stacked:
    a language model's vocabulary times every sample would not fit)."""

    def __init__(self, labels: torch.Tensor | None, split: torch.Tensor | None):
        self.labels, self.split = labels, split
        self.sums: dict[int, list[float]] = {}
        self.valid = labels is not None and split is not None

    def add(self, logits: torch.Tensor | None, start: int, stop: int) -> None:
        if not self.valid:
            return
        labels = self.labels[start:stop]
        if logits is None or logits.ndim != 2 or len(logits) != len(labels) or logits.shape[1] <= int(labels.max()):
            self.valid = False  # not class logits over these labels
            return
        logits = logits.double()
        losses = torch.nn.functional.cross_entropy(logits, labels, reduction="none")  # (B,)
        correct = (logits.argmax(dim=1) == labels).double()  # (B,)
        split = self.split[start:stop]
        for code in torch.unique(split).tolist():
            mask = split == code
            total = self.sums.setdefault(int(code), [0.0, 0.0, 0])
            total[0] += float(losses[mask].sum())
            total[1] += float(correct[mask].sum())
            total[2] += int(mask.sum())

    def result(self) -> dict[str, float] | None:
        if not self.valid or not self.sums:
            return None
        names = {0: "train", 1: "test"}
        evaluation = {}
        for code, (loss, correct, count) in sorted(self.sums.items()):
            evaluation[f"{names[code]}_loss"] = loss / count
            evaluation[f"{names[code]}_acc"] = correct / count
        return evaluation


def output_logits(output, position: int = -1) -> torch.Tensor | None:
    """The model's output as (B, classes) logits, or None: a tensor, the first element of a
    tuple, or a Hugging Face output's ``logits``; a sequence output gives the token at ``position``."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not torch.is_tensor(output):
        output = getattr(output, "logits", None) if not isinstance(output, dict) else output.get("logits")
    if not torch.is_tensor(output) or not output.is_floating_point():
        return None
    if output.ndim == 3:
        length = output.shape[1]
        return output[:, position] if -length <= position < length else None  # (B, V)
    return output if output.ndim == 2 else None


def _mismatch(model: nn.Module, state: dict, exc: Exception) -> str:
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
    if not parts:  # same names, so the shapes differ
        lines = [l.strip() for l in str(exc).splitlines() if "size mismatch" in l]
        parts.append(lines[0] if lines else str(exc).splitlines()[0])
    return "; ".join(parts)


# --- fitting a state dict to a model -------------------------------------------------------


def fit_state(model: nn.Module, state: dict) -> dict:
    """``state`` renamed and completed to load strictly into ``model``.

    - Names that transformers renames when loading (its conversion mapping) are renamed.
    - A prefix that the checkpoint adds or lacks (Lightning's ``model.`` for a LightningModule
      attribute, a wrapper's) is found by the best match of names, and removed or added.
    - A tied parameter saved once (GPT-2's ``lm_head.weight`` = ``transformer.wte.weight``) is
      filled from the name it was saved under.
    - Constant buffers the checkpoint lacks (causal masks that newer library versions no longer
      save) keep the model's own; masks the model no longer has are dropped.
    Anything else that does not match is left for ``load_state_dict`` to report.
    """
    expected = model.state_dict()
    # Prefixes first (transformers' patterns are anchored at the model's names), then again after renaming.
    state = _best_prefix(transformers_names(model, _best_prefix(state, set(expected))), set(expected))
    fitted = dict(state)
    aliases = parameter_aliases(model)
    buffers = {name for name, _ in model.named_buffers()}
    for name in expected:
        if name in fitted:
            continue
        saved = next((a for a in aliases.get(name, ()) if a in fitted), None)
        if saved is not None:
            fitted[name] = fitted[saved]
        elif name in buffers and _is_constant_buffer(name):
            fitted[name] = expected[name]
    for name in list(fitted):
        if name not in expected and _is_constant_buffer(name):
            del fitted[name]
    return fitted


def _is_constant_buffer(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return last in ("mask", "IGNORE", "masked_bias") or name.endswith("attn.bias")


def _best_prefix(state: dict, expected: set[str]) -> dict:
    if set(state) & expected == set(state) or not state:
        return state
    strip = {""} | {k.split(".", 1)[0] + "." for k in state if "." in k}
    add = {""} | {k.split(".", 1)[0] + "." for k in expected if "." in k}
    best, best_overlap = state, len(set(state) & expected)
    for removed in strip:
        for added in add:
            renamed = {added + k.removeprefix(removed): v for k, v in state.items() if k.startswith(removed)}
            overlap = len(set(renamed) & expected)
            if overlap > best_overlap:
                best, best_overlap = renamed, overlap
    return best


def parameter_aliases(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """Parameter name -> the other names of the same (tied) parameter."""
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return {name: tuple(n for n in names if n != name) for names in groups.values() for name in names}


def parameter_groups(model: nn.Module) -> list[tuple[str, ...]]:
    """The model's parameters, each as the tuple of its names (several when tied), in
    registration order: what the weight measures count, once each."""
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return [tuple(names) for names in groups.values()]


@torch.no_grad()
def linear_chains(model: nn.Module, x: torch.Tensor) -> list[tuple[str, str]]:
    """Pairs (A.weight, B.weight) of nn.Linear layers where B's input is A's output through an
    elementwise activation (identity, ReLU, GELU, SiLU, tanh, sigmoid): layers that follow each
    other in the forward pass, found by running ``x`` (a few samples) through the model."""
    linears = {module: name for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    records: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    hooks = [module.register_forward_hook(
        lambda module, args, output, name=name: records.append((name, args[0], output)))
        for module, name in linears.items()]
    try:
        model(x)
    except Exception:  # noqa: BLE001 - no chains known is the honest answer for an odd model
        return []
    finally:
        for hook in hooks:
            hook.remove()
    pairs = []
    for (name_a, _, output_a), (name_b, input_b, _) in zip(records, records[1:]):
        if output_a.shape == input_b.shape and any(
                torch.allclose(f(output_a), input_b, rtol=1e-5, atol=1e-6) for f in _ACTIVATIONS):
            pairs.append((f"{name_a}.weight", f"{name_b}.weight"))
    return list(dict.fromkeys(pairs))


def resolve_device(device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    from grokscope.training import resolve_device as resolve

    return resolve(str(device))


def inputs_on(x: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    # Integer inputs are token ids for an embedding; only real-valued inputs take the compute dtype.
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


# --- models and data brought by the user ---------------------------------------------------


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
            raise GrokscopeError(f"--model: {module_name} has no {attribute!r}")
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


def default_layer(model: nn.Module) -> str:
    """The input of the model's last nn.Linear: the representation its readout sees."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise GrokscopeError("--layer: the model has no nn.Linear layer; name the layer(s) to probe with --layer")
    return linears[-1] + INPUT_SUFFIX


def user_layer_keys(model: nn.Module, layers: Iterable[str] | None = None,
                    penultimate: str | None = None, sample: np.ndarray | None = None) -> tuple[list[str], str]:
    """(keys input to output, penultimate key) to capture from any model; see :func:`user_extractor`.

    The penultimate layer is ``penultimate`` if given, else the input of the last nn.Linear,
    else the last of ``layers``, else (given ``sample``, a few inputs) the input of whatever
    produces the logits (:func:`grokscope.readout.readout_input`), named in a warning.
    """
    modules = dict(model.named_modules())
    order = {name: i for i, name in enumerate(modules)}
    wanted = list(dict.fromkeys(spec.strip() for spec in layers or []))
    if penultimate is None:
        try:
            penultimate = default_layer(model)
        except GrokscopeError:
            if not wanted and sample is None:
                raise
            if wanted:
                penultimate = wanted[-1]
            else:
                import warnings

                from grokscope.errors import GrokscopeWarning
                from grokscope.readout import readout_input

                penultimate, why = readout_input(model, sample)
                warnings.warn(GrokscopeWarning(
                    f"--layer: the model has no nn.Linear; probing {penultimate} ({why}) as the penultimate layer; "
                    "name others with --layer"), stacklevel=2)
    if penultimate not in wanted:
        wanted.append(penultimate)
    specs = {key: LayerSpec.parse(key) for key in wanted}
    for key, spec in specs.items():
        if spec.module not in modules or spec.module == "":
            close = [n for n in modules if n and (spec.module in n or n in spec.module)][:6] or list(modules)[1:8]
            raise GrokscopeError(f"--layer {key}: the model has no module {spec.module!r}; "
                                 f"modules with similar names: {', '.join(close)}")
    keys = sorted(wanted, key=lambda k: (order[specs[k].module], not specs[k].is_input, k))
    return keys, penultimate


def user_extractor(model: nn.Module, x: np.ndarray, layers: Iterable[str] | None = None, *, device="cpu",
                   batch_size: int = DEFAULT_BATCH_SIZE, dtype: torch.dtype = torch.float32,
                   penultimate: str | None = None, samples: Samples | None = None) -> Extractor:
    """An extractor for any model, with forward hooks on the named modules.

    ``NAME`` captures the output of module ``NAME``, ``NAME:input`` its input, ``@POS`` a token
    position (module docstring). A module that returns a tuple (GPT-2 blocks, attention) gives its
    first element. The penultimate layer is the input of the last nn.Linear and is always
    captured; without one, the last of ``layers``. Keys are ordered as the modules are registered
    (input to output for sequential models), a module's input before its output. With
    ``samples``, the model's output is scored against the labels (:class:`Extractor`).
    """
    keys, penultimate = user_layer_keys(model, layers, penultimate)
    device = resolve_device(device)
    model = model.to(device=device, dtype=dtype)
    modules = dict(model.named_modules())
    specs = {key: LayerSpec.parse(key) for key in keys}

    captured: dict[str, torch.Tensor] = {}

    def hook_for(key: str):
        def keep(value, what: str):
            if isinstance(value, (tuple, list)) and value and torch.is_tensor(value[0]):
                value = value[0]
            if not torch.is_tensor(value):
                raise GrokscopeError(f"--layer {key}: the module's {what} is a {type(value).__name__}, not a tensor")
            captured[key] = value

        if specs[key].is_input:
            return lambda module, args, kwargs: keep(args[0] if args else next(iter(kwargs.values()), None), "input")
        return lambda module, args, output: keep(output, "output")

    for key in keys:
        module = modules[specs[key].module]
        if specs[key].is_input:
            module.register_forward_pre_hook(hook_for(key), with_kwargs=True)
        else:
            module.register_forward_hook(hook_for(key))

    def capture(batch: torch.Tensor):
        captured.clear()
        output = model(batch)
        return dict(captured), output

    labels, split = _label_tensors(samples, device)
    return Extractor(model, inputs_on(x, device, dtype), capture, keys, penultimate, batch_size,
                     labels=labels, split=split)


def _label_tensors(samples: Samples | None, device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if samples is None:
        return None, None
    return torch.from_numpy(samples.labels).to(device), torch.from_numpy(samples.split).to(device)


# --- per checkpoint ------------------------------------------------------------------------


@dataclass
class CheckpointFeatures:
    """The features of one checkpoint.

    ``layers``: key -> (n, units) tensor on the device, rows as in the series' samples.
    ``state``: the checkpoint's state dict (tensors on the device), read on first access when the
    features came from a stored file, so measures that need no weights cost no extra read.
    ``evaluation``: train/test loss and accuracy of the model's output, when computed here and
    the output is class logits.
    """

    step: int
    layers: dict[str, torch.Tensor]
    penultimate: str
    checkpoint: Checkpoint | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    from_store: bool = False
    _state: dict | None = field(default=None, repr=False)
    evaluation: dict[str, float] | None = None

    @property
    def state(self) -> dict:
        if self._state is None:
            if self.checkpoint is None:
                raise GrokscopeError(f"step {self.step}: features are stored but the checkpoint is gone")
            self._state = load_state(self.checkpoint, self.device)
        return self._state


def compute_checkpoint(extractor: Extractor, checkpoint: Checkpoint, device) -> CheckpointFeatures:
    """Features of one checkpoint, computed; errors name the checkpoint."""
    state = load_state(checkpoint, device)
    try:
        activations = extractor(state)
    except GrokscopeError as exc:
        raise GrokscopeError(f"{checkpoint.path}: {exc}") from None
    return CheckpointFeatures(checkpoint.step, activations.layers, extractor.penultimate, checkpoint, device, False,
                              state, activations.evaluation)


def stored_features(path: Path, keys: Iterable[str] | None = None, *, device="cpu",
                    dtype: torch.dtype = torch.float32) -> tuple[int, dict[str, torch.Tensor], str]:
    """(step, layers, penultimate) of a features file; ``keys`` default to all its layers."""
    step, stored_keys, penultimate = formats.features.features_header(path)
    wanted = stored_keys if keys is None else [k for k in stored_keys if k in set(keys)]
    tensors, metadata = formats.tensors.load_tensors(path, wanted)
    storage = formats.features.features_storage(metadata)
    for key in wanted:
        if str(tensors[key].dtype).removeprefix("torch.") != storage:
            raise GrokscopeError(f"{path}: layer {key!r} is stored as {str(tensors[key].dtype).removeprefix('torch.')}, "
                                 f"but the file's metadata says {storage}")
    return step, {k: tensors[k].to(device=device, dtype=dtype) for k in wanted}, penultimate


def holds_layers(path: Path, keys: Iterable[str]) -> bool:
    """Whether a features file exists, is readable and holds every one of ``keys``."""
    if not Path(path).is_file():
        return False
    try:
        _, stored_keys, _ = formats.features.features_header(path)
    except GrokscopeError:
        return False
    return set(keys) <= set(stored_keys)
