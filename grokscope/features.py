"""Hidden-layer features of a checkpoint series: the activations of every sample at every step.

Shared by ``grokscope probe`` (which stores them, one file per checkpoint) and ``grokscope
measure`` (which uses stored features where they exist and computes the rest in memory with the
same code). The model and the inputs are put on the device once per series; per checkpoint only
the weights change, so the cost of a checkpoint is one read of its weights plus one forward pass
over all samples in batches. The same forward pass gives the model's own output, from which
train/test loss and accuracy follow where that output is class logits over the labels.

Rows of every feature matrix follow ``features/samples.safetensors`` (labels, split: 0 train /
1 test, index). Layers are named by layer specs (:mod:`grokscope.layers`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from grokscope import formats
from grokscope.devices import resolve_device
from grokscope.errors import GrokscopeError
from grokscope.layers import LayerSpec, select_position, user_layer_keys
from grokscope.loading import Checkpoint, load_state, load_state_and_digest
from grokscope.precision import HALF_DTYPES, hold_matmul_weights_in, weights_dtype
from grokscope.state_dicts import describe_mismatch, fit_state

# All of a p = 97 task (9409 samples) in one batch, so nothing is copied; a width-4096 layer of
# a full batch is 256 MiB in float32, small enough for any GPU.
DEFAULT_BATCH_SIZE = 16384
STORED_MODES = ("prefer", "never", "only")


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
                 labels: torch.Tensor | None = None, split: torch.Tensor | None = None,
                 max_memory: int | None = None, dtype: torch.dtype = torch.float32):
        if batch_size < 1:
            raise GrokscopeError(f"--batch-size: must be positive, got {batch_size}")
        self.model = model.to(dtype=weights_dtype(dtype)).eval()
        self.x = x  # (n, ...) on the device, in the compute dtype (integer inputs stay integer)
        self.capture = capture
        self.keys = list(keys)
        self.specs = {key: LayerSpec.parse(key) for key in self.keys}
        self.penultimate = penultimate
        self.batch_size = batch_size
        # Bytes of activations one batch may take (None: batches of batch_size whatever they cost).
        self.max_memory = max_memory
        self._batch: int | None = None  # the batch size, once the footprint is measured
        self.labels, self.split = labels, split
        self.positions: dict[str, str] = {}  # key -> position taken, known after the first pass
        self.autocast = dtype if dtype in HALF_DTYPES else None  # mixed precision (weights_dtype)
        if self.autocast is not None:
            hold_matmul_weights_in(self.model, self.autocast)

    def _run(self, batch: torch.Tensor):
        with torch.autocast(self.x.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            return self.capture(batch)

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
            raise GrokscopeError(f"the weights do not fit the model ({describe_mismatch(self.model, fitted, exc)})") from None

    def samples_per_batch(self) -> int:
        """``batch_size``, or fewer where a batch's activations would exceed ``max_memory``
        (the footprint per sample measured once, on the first few samples)."""
        if self._batch is None:
            self._batch = self.batch_size
            if self.max_memory is not None and self.n_samples:
                from grokscope.memory import measure_footprint

                footprint = self._guarded(lambda: measure_footprint(self._run, self.x))
                self._batch = footprint.batch_size(self.max_memory, self.batch_size)
        return self._batch

    @staticmethod
    def _guarded(forward):
        try:
            return forward()
        except GrokscopeError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. --data whose shape the model cannot take
            from grokscope.memory import is_allocation_failure

            if is_allocation_failure(exc):
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise GrokscopeError(f"the forward pass failed ({type(exc).__name__}: {message})") from None

    @torch.no_grad()
    def features(self) -> Activations:
        """Activations of the loaded weights, and the evaluation of the model's output; the
        model runs on batches of :meth:`samples_per_batch` samples, the features are stacked
        into one (n, units) matrix per layer."""
        n = self.n_samples
        out: dict[str, torch.Tensor] = {}
        storages: set[int] = set()
        scores = _Scores(self.labels, self.split)
        size = self.samples_per_batch()
        for start in range(0, n, size):
            stop = min(start + size, n)
            captured, output = self._guarded(lambda: self._run(self.x[start:stop]))
            for key in self.keys:
                if key not in captured:
                    raise GrokscopeError(f"layer {key!r} was not reached by the forward pass")
                value, taken = select_position(captured[key], self.specs[key])  # (B, units)
                value = value.to(weights_dtype(value.dtype))  # a half-precision product, kept as float32
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


def inputs_on(x: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    # Integer inputs are token ids for an embedding; only real-valued inputs take the compute dtype.
    return tensor.to(weights_dtype(dtype)) if tensor.is_floating_point() else tensor



def user_extractor(model: nn.Module, x: np.ndarray, layers: Iterable[str] | None = None, *, device="cpu",
                   batch_size: int = DEFAULT_BATCH_SIZE, dtype: torch.dtype = torch.float32,
                   penultimate: str | None = None, samples: Samples | None = None,
                   max_memory: int | None = None) -> Extractor:
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
    model = model.to(device=device)  # the Extractor casts it to the dtype
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
                     labels=labels, split=split, max_memory=max_memory, dtype=dtype)


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
    the output is class logits. ``source``: SHA-256 of the checkpoint the features were computed
    from, or the one the stored file records (:mod:`grokscope.fingerprints`).
    """

    step: int
    layers: dict[str, torch.Tensor]
    penultimate: str
    checkpoint: Checkpoint | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    from_store: bool = False
    _state: dict | None = field(default=None, repr=False)
    evaluation: dict[str, float] | None = None
    source: str | None = None

    @property
    def state(self) -> dict:
        if self._state is None:
            if self.checkpoint is None:
                raise GrokscopeError(f"step {self.step}: features are stored but the checkpoint is gone")
            self._state = load_state(self.checkpoint, self.device)
        return self._state


def compute_checkpoint(extractor: Extractor, checkpoint: Checkpoint, device) -> CheckpointFeatures:
    """Features of one checkpoint, computed; errors name the checkpoint."""
    from grokscope.memory import allocation_message, is_allocation_failure

    state, digest = load_state_and_digest(checkpoint, device)
    try:
        activations = extractor(state)
    except GrokscopeError as exc:
        raise GrokscopeError(f"{checkpoint.path}: {exc}") from None
    except (MemoryError, RuntimeError) as exc:
        if not is_allocation_failure(exc):
            raise
        raise GrokscopeError(f"{checkpoint.path}: {allocation_message('features', exc, '--max-memory')}") from None
    return CheckpointFeatures(checkpoint.step, activations.layers, extractor.penultimate, checkpoint, device, False,
                              state, activations.evaluation, digest)


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
