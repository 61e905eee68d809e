"""Hidden-layer features of a checkpoint series: the activations of every sample at every step.

Shared by ``grokscope probe`` (which stores them, one file per checkpoint) and ``grokscope
measure`` (which uses stored features where they exist and computes the rest in memory with the
same code). The model and the inputs are put on the device once per series; per checkpoint only
the weights change, so the cost of a checkpoint is one read of its weights plus one forward pass
over all samples in batches.

Rows of every feature matrix follow the task's enumeration of samples, the order recorded in
``features/samples.safetensors`` (labels, split: 0 train / 1 test, index).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from grokscope import store
from grokscope.errors import GrokscopeError
from grokscope.series import Checkpoint, load_state, run_checkpoints

# All of a p = 97 task (9409 samples) in one batch, so nothing is copied; a width-4096 layer of
# a full batch is 256 MiB in float32, small enough for any GPU.
DEFAULT_BATCH_SIZE = 16384
STORED_MODES = ("prefer", "never", "only")
INPUT_SUFFIX = ":input"


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


def load_samples(run_dir: Path) -> Samples:
    """The rows of a run's features: from ``features/samples.safetensors``, else rebuilt from run.json."""
    path = store.samples_path(run_dir)
    if path.is_file():
        return Samples(**store.load_samples_file(path))
    dataset = run_dataset(run_dir)
    return Samples.enumerate(dataset.y, dataset.split)


def save_samples(folder: Path, samples: Samples, force: bool = False) -> bool:
    """Write ``folder/samples.safetensors`` unless an identical one is there; True if written.

    An existing file that differs means stored features follow other rows: refused without ``force``.
    """
    path = Path(folder) / store.SAMPLES_FILE
    if path.is_file() and not force:
        if Samples(**store.load_samples_file(path)).same_as(samples):
            return False
        raise GrokscopeError(
            f"{path}: lists other samples than this series' data; pass --force to recompute every features file"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    store.save_samples(path, samples.labels, samples.split, samples.index)
    return True


# --- the extractor -------------------------------------------------------------------------


class Extractor:
    """A model and all its inputs on the device; maps a state dict to feature matrices.

    ``capture(batch)`` runs the model on one batch and returns the activations by key; the
    extractor keeps ``keys`` (input to output), flattens each to (batch, units) and stacks the
    batches. ``penultimate`` names the layer that feeds the output layer.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, capture: Callable, keys: list[str],
                 penultimate: str, batch_size: int = DEFAULT_BATCH_SIZE):
        if batch_size < 1:
            raise GrokscopeError(f"--batch-size: must be positive, got {batch_size}")
        self.model = model.eval()
        self.x = x  # (n, ...) on the device, in the compute dtype (integer inputs stay integer)
        self.capture = capture
        self.keys = list(keys)
        self.penultimate = penultimate
        self.batch_size = batch_size

    @property
    def n_samples(self) -> int:
        return len(self.x)

    @torch.no_grad()
    def load(self, state: dict) -> None:
        """Copy a state dict into the model's parameters (on the device, in its dtype)."""
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise GrokscopeError(f"the weights do not fit the model ({_mismatch(self.model, state, exc)})") from None

    @torch.no_grad()
    def features(self) -> dict[str, torch.Tensor]:
        """Activations of the loaded weights: key -> (n, units) on the device."""
        n = self.n_samples
        out: dict[str, torch.Tensor] = {}
        storages: set[int] = set()
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            try:
                captured = self.capture(self.x[start:stop])
            except GrokscopeError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. --data whose shape the model cannot take
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise GrokscopeError(f"the forward pass failed ({type(exc).__name__}: {message})") from None
            for key in self.keys:
                if key not in captured:
                    raise GrokscopeError(f"layer {key!r} was not reached by the forward pass")
                value = captured[key].reshape(stop - start, -1)  # (B, units)
                if start == 0 and stop == n:
                    # One module's output is often the next one's input: keep the matrices distinct.
                    storage = value.untyped_storage().data_ptr()
                    out[key] = value.clone() if storage in storages else value
                    storages.add(storage)
                    continue
                if key not in out:
                    out[key] = value.new_empty((n, value.shape[1]))  # (n, units)
                out[key][start:stop] = value
        return out

    def __call__(self, state: dict) -> dict[str, torch.Tensor]:
        self.load(state)
        return self.features()


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


def resolve_device(device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    from grokscope.training import resolve_device as resolve

    return resolve(str(device))


def _inputs(x: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    # Integer inputs are token ids for an embedding; only real-valued inputs take the compute dtype.
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


# --- grokscope runs ------------------------------------------------------------------------


def _run_config(run_dir: Path):
    return store.read_run(run_dir), store.read_run_config(run_dir).get("split_sha256")


def run_dataset(run_dir: Path):
    """The run's task data (inputs, labels, split) rebuilt from run.json, the split checked."""
    run_dir = Path(run_dir)
    return _rebuild_dataset(run_dir, _run_config(run_dir))


def _rebuild_dataset(run_dir: Path, config_and_digest):
    from grokscope.tasks import load_task

    config, digest = config_and_digest
    dataset = load_task(config.task)
    if digest is not None and dataset.split_digest() != digest:
        raise GrokscopeError(
            f"{run_dir}: the rebuilt train/test split does not match run.json's split_sha256 "
            f"({dataset.split_digest()} vs {digest}); a different NumPy or data file?"
        )
    return dataset


def run_layer_keys(run_dir: Path, layers: Iterable[str] | None = None) -> tuple[list[str], str]:
    """(keys input to output, penultimate key) of a run: ``layers`` (default all hidden) + penultimate."""
    from grokscope.model import feature_keys, penultimate_key

    config, _ = _run_config(Path(run_dir))
    known = feature_keys(config.model)
    penultimate = penultimate_key(config.model)
    if layers is None:
        return known, penultimate
    wanted = set(layers) | {penultimate}
    unknown = sorted(wanted - set(known))
    if unknown:
        raise GrokscopeError(f"--layer: {run_dir} has no layer {unknown[0]!r}; its layers: {', '.join(known)}")
    return [k for k in known if k in wanted], penultimate


def run_extractor(run_dir: Path, *, layers: Iterable[str] | None = None, device="cpu",
                  batch_size: int = DEFAULT_BATCH_SIZE, dtype: torch.dtype = torch.float32) -> tuple[Extractor, Samples]:
    """The extractor of a grokscope run, rebuilt from run.json (split checked), and its samples."""
    from grokscope.model import build_model

    run_dir = Path(run_dir)
    config_and_digest = _run_config(run_dir)
    config = config_and_digest[0]
    dataset = _rebuild_dataset(run_dir, config_and_digest)
    keys, penultimate = run_layer_keys(run_dir, layers)
    device = resolve_device(device)
    model = build_model(dataset.input_dim, dataset.n_classes, config.model, config.seed).to(device=device, dtype=dtype)

    def capture(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return model.hidden_features(batch)[0]

    extractor = Extractor(model, _inputs(dataset.x, device, dtype), capture, keys, penultimate, batch_size)
    return extractor, Samples.enumerate(dataset.y, dataset.split)


# --- models and data brought by the user ---------------------------------------------------


def build_user_model(spec: str) -> nn.Module:
    """Call ``package.module:factory`` (or ``path/to/file.py:factory``) and check it gives an nn.Module."""
    module_name, sep, attribute = spec.rpartition(":")
    if not sep or not module_name or not attribute:
        raise GrokscopeError(f"--model: expected package.module:factory or file.py:factory, got {spec!r}")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise GrokscopeError(f"--model: {path} is not a file")
            module_spec = importlib.util.spec_from_file_location(f"grokscope_user_model_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            # Like `python -m`: modules in the current folder are importable.
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


def user_layer_keys(model: nn.Module, layers: Iterable[str] | None = None) -> tuple[list[str], str]:
    """(keys input to output, penultimate key) to capture from any model; see :func:`user_extractor`."""
    modules = dict(model.named_modules())
    order = {name: i for i, name in enumerate(modules)}
    wanted = list(dict.fromkeys(layers or []))
    try:
        penultimate = default_layer(model)
    except GrokscopeError:
        if not wanted:
            raise
        penultimate = wanted[-1]
    if penultimate not in wanted:
        wanted.append(penultimate)
    for key in wanted:
        name = key.removesuffix(INPUT_SUFFIX)
        if name not in modules or name == "":
            known = ", ".join(n for n in list(modules)[1:12])
            raise GrokscopeError(f"--layer: the model has no module {name!r}; some of its modules: {known}")
    keys = sorted(wanted, key=lambda k: (order[k.removesuffix(INPUT_SUFFIX)], not k.endswith(INPUT_SUFFIX)))
    return keys, penultimate


def user_extractor(model: nn.Module, x: np.ndarray, layers: Iterable[str] | None = None, *, device="cpu",
                   batch_size: int = DEFAULT_BATCH_SIZE, dtype: torch.dtype = torch.float32) -> Extractor:
    """An extractor for any model, with forward hooks on the named modules.

    ``NAME`` captures the output of module ``NAME``, ``NAME:input`` its input. The penultimate
    layer is the input of the last nn.Linear and is always captured; without one, the last of
    ``layers``. Keys are ordered as the modules are registered (input to output for sequential
    models), a module's input before its output.
    """
    keys, penultimate = user_layer_keys(model, layers)
    device = resolve_device(device)
    model = model.to(device=device, dtype=dtype)
    modules = dict(model.named_modules())

    captured: dict[str, torch.Tensor] = {}

    def hook_for(key: str):
        def keep(value, what: str):
            if not torch.is_tensor(value):
                raise GrokscopeError(f"--layer {key}: the module's {what} is a {type(value).__name__}, not a tensor")
            captured[key] = value

        if key.endswith(INPUT_SUFFIX):
            return lambda module, args: keep(args[0] if len(args) == 1 else args, "input")
        return lambda module, args, output: keep(output, "output")

    for key in keys:
        module = modules[key.removesuffix(INPUT_SUFFIX)]
        if key.endswith(INPUT_SUFFIX):
            module.register_forward_pre_hook(hook_for(key))
        else:
            module.register_forward_hook(hook_for(key))

    def capture(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        captured.clear()
        model(batch)
        return dict(captured)

    return Extractor(model, _inputs(x, device, dtype), capture, keys, penultimate, batch_size)


# --- per checkpoint ------------------------------------------------------------------------


@dataclass
class CheckpointFeatures:
    """The features of one checkpoint.

    ``layers``: key -> (n, units) tensor on the device, rows as in :func:`load_samples`.
    ``state``: the checkpoint's state dict (tensors on the device), read on first access when the
    features came from a stored file, so measures that need no weights cost no extra read.
    """

    step: int
    layers: dict[str, torch.Tensor]
    penultimate: str
    checkpoint: Checkpoint | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    from_store: bool = False
    _state: dict | None = field(default=None, repr=False)

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
        layers = extractor(state)
    except GrokscopeError as exc:
        raise GrokscopeError(f"{checkpoint.path}: {exc}") from None
    return CheckpointFeatures(checkpoint.step, layers, extractor.penultimate, checkpoint, device, False, state)


def stored_features(path: Path, keys: Iterable[str] | None = None, *, device="cpu",
                    dtype: torch.dtype = torch.float32) -> tuple[int, dict[str, torch.Tensor], str]:
    """(step, layers, penultimate) of a features file; ``keys`` default to all its layers."""
    step, stored_keys, penultimate = store.features_header(path)
    wanted = stored_keys if keys is None else [k for k in stored_keys if k in set(keys)]
    tensors, _ = store.load_tensors(path, wanted)
    return step, {k: tensors[k].to(device=device, dtype=dtype) for k in wanted}, penultimate


def holds_layers(path: Path, keys: Iterable[str]) -> bool:
    """Whether a features file exists, is readable and holds every one of ``keys``."""
    if not Path(path).is_file():
        return False
    try:
        _, stored_keys, _ = store.features_header(path)
    except GrokscopeError:
        return False
    return set(keys) <= set(stored_keys)


def iter_run_features(run_dir: Path, steps: Iterable[int] | None = None, *, layers: Iterable[str] | None = None,
                      device="cpu", batch_size: int = DEFAULT_BATCH_SIZE, dtype: torch.dtype = torch.float32,
                      stored: str = "prefer",
                      on_error: Callable[[int, GrokscopeError], None] | None = None) -> Iterator[CheckpointFeatures]:
    """The features of a grokscope run, checkpoint by checkpoint in step order.

    Parameters
    ----------
    run_dir : a grokscope run directory.
    steps : the steps wanted; default every step with a checkpoint or stored features.
    layers : hidden-layer keys wanted (``layers.i``); the penultimate layer is always included.
        Default: every hidden layer.
    device : "cpu", "cuda", "auto" or a torch.device; features (and ``state``) land there.
    batch_size : samples per forward pass.
    dtype : compute and return dtype. Keep float32 (or float64) for rank-based estimators: half
        precision quantises activations into ties.
    stored : "prefer" reads ``features/step-*.safetensors`` where they hold the wanted layers and
        computes the rest in memory; "never" always computes; "only" never computes.
    on_error : called with (step, error) for a checkpoint that cannot be read, which is then
        skipped; without it the error is raised. Errors name the file.

    Yields
    ------
    CheckpointFeatures with ``.step``, ``.layers`` (key -> (n, units) on ``device``),
    ``.penultimate`` and ``.state`` (the checkpoint's state dict, read lazily for stored
    features). The model and the inputs are built on the device once, at the first computed
    checkpoint.
    """
    if stored not in STORED_MODES:
        raise GrokscopeError(f"stored: must be one of {', '.join(STORED_MODES)}, got {stored!r}")
    run_dir = Path(run_dir)
    device = resolve_device(device)
    keys, _ = run_layer_keys(run_dir, layers)
    checkpoints = {c.step: c for c in run_checkpoints(run_dir)}
    feature_files = dict(store.list_features(run_dir)) if stored != "never" else {}
    if steps is None:
        wanted = sorted(set(checkpoints) | (set(feature_files) if stored != "never" else set()))
    else:
        wanted = sorted(set(int(s) for s in steps))
    extractor: Extractor | None = None
    for step in wanted:
        path = feature_files.get(step)
        use_stored = path is not None and holds_layers(path, keys)
        if not use_stored and extractor is None and stored != "only" and step in checkpoints:
            # Run-level problems (a changed split) are raised here, not reported per checkpoint.
            extractor, _ = run_extractor(run_dir, layers=keys, device=device, batch_size=batch_size, dtype=dtype)
        try:
            if use_stored:
                _, tensors, penultimate = stored_features(path, keys, device=device, dtype=dtype)
                item = CheckpointFeatures(step, tensors, penultimate, checkpoints.get(step), device, True)
            elif stored == "only":
                raise GrokscopeError(f"{run_dir}: no stored features with layers {', '.join(keys)} for step {step}")
            elif step not in checkpoints:
                raise GrokscopeError(f"{run_dir}: no checkpoint for step {step}")
            else:
                item = compute_checkpoint(extractor, checkpoints[step], device)
        except GrokscopeError as exc:
            if on_error is None:
                raise
            on_error(step, exc)
            continue
        yield item
