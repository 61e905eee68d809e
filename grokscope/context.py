"""Everything the commands need to know about one checkpoint series, in one place.

A :class:`SeriesContext` answers, for a grokscope run and a series written by another tool
alike: the series' name and hyperparameter columns, its model (untrained, to load checkpoints
into), its data and samples, which layers to extract and which one is penultimate, the output
layer's weight (for NC3/NC4), which weights are parameters and which layers follow each other
(for the weight measures), and its training history.

A run answers from ``run.json``. Another tool's series answers from ``features/probe.json``,
written by ``grokscope probe --model ... --data ...``: the model (a factory, or a Hugging Face
``config.json``), the data file and its SHA-256 (a changed file is refused by name, as a run's
changed split is), the layers and the allowed pickle globals. Without a record, a series can
still be measured where no model is needed (``weights``) and plotted from its logged history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from grokscope import fingerprints, formats
from grokscope.devices import resolve_device
from grokscope.discovery import Series, find_series
from grokscope.errors import GrokscopeError
from grokscope.features import (
    DEFAULT_BATCH_SIZE,
    STORED_MODES,
    CheckpointFeatures,
    Extractor,
    Samples,
    compute_checkpoint,
    holds_layers,
    inputs_on,
    stored_features,
    user_extractor,
)
from grokscope.layers import LayerSpec, user_layer_keys
from grokscope.loading import transformers_config, trust_globals
from grokscope.state_dicts import fit_state, linear_chains, parameter_aliases, parameter_groups

# Samples run through the model to find which layers follow each other.
_CHAIN_SAMPLES = 8


@dataclass
class SeriesContext:
    series: Series
    config: object | None = None  # RunConfig of a grokscope run
    record: dict | None = None  # features/probe.json of another tool's series
    _data: tuple | None = field(default=None, repr=False)

    # --- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, series: Series) -> "SeriesContext":
        """The context of a series: from run.json for a run, from its probe record otherwise."""
        if series.is_run:
            return cls(series, config=formats.run.read_run(series.root))
        path = formats.features.probe_record_path(series.features_dir)
        record = formats.features.read_probe_record(path) if path.is_file() else None
        if record and record.get("allow_globals"):
            trust_globals(record["allow_globals"])
        return cls(series, record=record)

    # --- identity --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name if self.config is not None else self.series.name

    @property
    def columns(self) -> dict:
        """The run's name and hyperparameters, repeated on every row of its tables."""
        if self.config is None:
            return {"run": self.name}
        from grokscope.config import hyperparameters

        return {"run": self.name, **hyperparameters(self.config)}

    @property
    def can_compute(self) -> bool:
        """Whether features can be computed (a run, or a probed series)."""
        return self.config is not None or self.record is not None

    def _require_probe(self) -> None:
        if not self.can_compute:
            raise GrokscopeError(
                f"{self.series.root}: not a grokscope run and never probed; run "
                f"`grokscope probe {self.series.root} --model MODULE:FACTORY --data DATA.npz` first"
            )

    # --- model and data --------------------------------------------------------------------

    def model(self) -> nn.Module:
        """A fresh (untrained) instance of the series' model, on the CPU."""
        if self.config is not None:
            from grokscope.model import build_model

            dataset = self.dataset()
            return build_model(dataset.input_dim, dataset.n_classes, self.config.model, self.config.seed)
        self._require_probe()
        source = self.record["model"]
        from grokscope.user_models import build_transformers_model, build_user_model

        if "factory" in source:
            return build_user_model(source["factory"])
        return build_transformers_model(Path(source["transformers"]))

    def dataset(self):
        """A run's task data rebuilt from run.json, its split checked against the recorded digest."""
        if self._data is None:
            from grokscope.tasks import load_task

            dataset = load_task(self.config.task)
            digest = formats.run.read_run_config(self.series.root).get("split_sha256")
            if digest is not None and dataset.split_digest() != digest:
                raise GrokscopeError(
                    f"{self.series.root}: the rebuilt train/test split does not match run.json's split_sha256 "
                    f"({dataset.split_digest()} vs {digest}); a different NumPy or data file?"
                )
            self._data = (dataset,)
        return self._data[0]

    def data(self) -> tuple[np.ndarray, Samples]:
        """(inputs, samples) in the order of the task's enumeration (runs) or of the data file."""
        if self.config is not None:
            dataset = self.dataset()
            return dataset.x, Samples.enumerate(dataset.y, dataset.split)
        self._require_probe()
        if self._data is None:
            from grokscope.user_models import load_data

            source = self.record["data"]
            path = Path(source["path"])
            if not path.is_file():
                raise GrokscopeError(f"{path}: the data file {self.series.root} was probed with is gone")
            digest = formats.features.file_digest(path)
            if digest != source["sha256"]:
                raise GrokscopeError(
                    f"{path}: changed since {self.series.root} was probed (sha256 {digest}, recorded "
                    f"{source['sha256']}); probe again with --force"
                )
            self._data = load_data(path)
        return self._data

    def data_fingerprint(self) -> str | None:
        """SHA-256 (16 hex) of a run's task and split digest (run.json), or of another series' data
        file digest (probe.json); None without either. Recorded in features files (:mod:`grokscope.fingerprints`)."""
        import hashlib
        import json

        if self.config is not None:
            stored = formats.run.read_run_config(self.series.root)
            what = {"task": stored.get("task"), "split_sha256": stored.get("split_sha256")}
        elif self.record is not None:
            what = {"data": self.record["data"].get("sha256")}
        else:
            return None
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]

    def samples(self) -> Samples:
        """The rows of the series' features: ``features/samples.safetensors``, else the data's."""
        path = self.series.features_dir / formats.features.SAMPLES_FILE
        if path.is_file():
            return Samples(**formats.features.load_samples_file(path))
        return self.data()[1]

    def inputs(self) -> np.ndarray:
        """The model inputs of every feature row, in the order of :meth:`samples`."""
        x, _ = self.data()
        return x[self.samples().index]

    # --- layers ----------------------------------------------------------------------------

    def layer_keys(self, layers: Iterable[str] | None = None) -> tuple[list[str], str]:
        """(keys input to output, penultimate key): ``layers`` (default: every hidden layer of a
        run, the probed layers of another series) and always the penultimate one."""
        if self.config is not None:
            from grokscope.model import feature_keys, penultimate_key

            known = feature_keys(self.config.model)
            penultimate = penultimate_key(self.config.model)
            if layers is None:
                return known, penultimate
            wanted = set(layers) | {penultimate}
            unknown = sorted(wanted - set(known))
            if unknown:
                raise GrokscopeError(f"--layer: {self.series.root} has no layer {unknown[0]!r}; its layers: {', '.join(known)}")
            return [k for k in known if k in wanted], penultimate
        self._require_probe()
        recorded, penultimate = self.record["layers"], self.record["penultimate"]
        if layers is None:
            return list(recorded), penultimate
        wanted = list(dict.fromkeys([*layers, penultimate]))
        stored = set(recorded) | set(self._stored_layer_keys())
        unknown = [k for k in wanted if k not in stored]
        if unknown:
            return user_layer_keys(self.model(), wanted, penultimate)  # validates the names
        return [k for k in recorded if k in wanted] + [k for k in wanted if k not in recorded], penultimate

    def _stored_layer_keys(self) -> list[str]:
        files = formats.features.list_features(self.series.home)
        if not files:
            return []
        try:
            return formats.features.features_header(files[-1][1])[1]
        except GrokscopeError:
            return []

    def extractor(self, layers: Iterable[str] | None = None, *, device="cpu", dtype: torch.dtype = torch.float32,
                  batch_size: int = DEFAULT_BATCH_SIZE, max_memory: int | str | None = None) -> Extractor:
        """Model and inputs on the device, ready to map a checkpoint's state to features (and to
        score the model's output against the labels), in batches of at most ``batch_size``
        samples whose activations fit ``max_memory`` (:func:`grokscope.memory.memory_budget`)."""
        from grokscope.memory import memory_budget

        budget = memory_budget(max_memory)
        keys, penultimate = self.layer_keys(layers)
        device = resolve_device(device)
        x, samples = self.data()
        if self.config is None:
            return user_extractor(self.model(), x, keys, device=device, batch_size=batch_size, dtype=dtype,
                                  penultimate=penultimate, samples=samples, max_memory=budget)
        model = self.model().to(device=device)  # the Extractor casts it to the dtype
        labels = torch.from_numpy(samples.labels).to(device)
        split = torch.from_numpy(samples.split).to(device)
        return Extractor(model, inputs_on(x, device, dtype), model.hidden_features, keys, penultimate, batch_size,
                         labels=labels, split=split, max_memory=budget, dtype=dtype)

    def answer_position(self) -> int:
        """The token position whose output is read as the answer: the penultimate layer's chosen
        position where it chose one, else the last."""
        if self.record is None:
            return -1
        position = LayerSpec.parse(self.record["penultimate"]).position
        return position if isinstance(position, int) else -1

    # --- weights ---------------------------------------------------------------------------

    def output_weight(self, state: dict) -> torch.Tensor | None:
        """The weight of the layer the penultimate features feed (NC3/NC4), or None if unknown."""
        if self.config is not None:
            from grokscope.model import output_weight_key

            return state.get(output_weight_key(self.config.model))
        if self.record is None:
            return None
        spec = LayerSpec.parse(self.record["penultimate"])
        if not spec.is_input:
            return None
        names = [f"{spec.module}.weight"]
        model = self._model_or_none()
        if model is not None:
            names += list(parameter_aliases(model).get(names[0], ()))
        weight = next((state[n] for n in names if n in state), None)
        return weight if weight is not None and weight.ndim == 2 else None

    def weight_layout(self) -> "WeightLayout":
        """What the weight measures need to know of the model (see :class:`WeightLayout`)."""
        model = self._model_or_none()
        if model is None:
            return WeightLayout()
        try:
            x, _ = self.data()
        except GrokscopeError:
            return WeightLayout(model, parameter_groups(model))
        batch = inputs_on(x[:_CHAIN_SAMPLES], torch.device("cpu"), torch.float32)
        return WeightLayout(model, parameter_groups(model), linear_chains(model.eval(), batch))

    def _model_or_none(self) -> nn.Module | None:
        if not self.can_compute:
            checkpoint = self.series.checkpoints[0] if self.series.checkpoints else None
            config = transformers_config(checkpoint) if checkpoint is not None else None
            if config is None:
                return None
            try:
                from grokscope.user_models import build_transformers_model

                return build_transformers_model(config)
            except GrokscopeError:
                return None
        return self.model()

    # --- history ---------------------------------------------------------------------------

    def history(self):
        """The series' training history (step, train_loss, train_acc, test_loss, test_acc, ...):
        a run's history.parquet; for another tool's series, what probe computed from the model's
        output and what the tool logged (see :mod:`grokscope.logs`). None when there is none."""
        from grokscope import logs

        if self.series.is_run:
            path = self.series.root / formats.run.HISTORY_FILE
            return formats.run.read_history(self.series.root) if path.is_file() else None
        return logs.series_history(self.series)


@dataclass
class WeightLayout:
    """A series' model as the weight measures see it: which state entries are parameters (groups
    of tied names) and which layers follow each other in the forward pass. All None when the
    series has no model: parameters are then told from buffers by name, and no pairs are known."""

    model: nn.Module | None = None
    groups: list[tuple[str, ...]] | None = None
    pairs: list[tuple[str, str]] | None = None

    def fit(self, state: dict) -> dict:
        """A checkpoint's state under the model's names (prefixes such as Lightning's ``model.``)."""
        return state if self.model is None else fit_state(self.model, state)


# --- features of a series, checkpoint by checkpoint ----------------------------------------


def open_series(path) -> SeriesContext:
    """The context of the one series a path names (a run, a series folder or file, a home)."""
    found = find_series([str(path)])
    if len(found) != 1:
        raise GrokscopeError(f"{path}: names {len(found)} series, expected one")
    return SeriesContext.open(found[0])


def iter_features(source, steps: Iterable[int] | None = None, *, layers: Iterable[str] | None = None,
                  device="cpu", batch_size: int = DEFAULT_BATCH_SIZE, dtype: torch.dtype = torch.float32,
                  stored: str = "prefer", max_memory: int | str | None = None,
                  on_error: Callable[[int, GrokscopeError], None] | None = None) -> Iterator[CheckpointFeatures]:
    """The features of a series, checkpoint by checkpoint in step order.

    Parameters
    ----------
    source : a :class:`SeriesContext`, or a path naming one series (a run, a series folder, a home).
    steps : the steps wanted; default every step with a checkpoint or stored features.
    layers : layer keys wanted; the penultimate layer is always included. Default: every hidden
        layer of a run, the probed layers of another tool's series.
    device : "cpu", "cuda", "auto" or a torch.device; features (and ``state``) land there.
    batch_size : samples per forward pass, at most.
    max_memory : bytes (or ``512M``) one forward pass's activations may take (:mod:`grokscope.memory`).
    dtype : compute and return dtype; float32 or float64 for rank-based estimators (half precision ties).
    stored : "prefer" reads ``features/step-*.safetensors`` where they hold the wanted layers and
        computes the rest in memory; "never" always computes; "only" never computes.
    on_error : called with (step, error) for a checkpoint that cannot be read (then skipped), else raised.

    Yields
    ------
    CheckpointFeatures with ``.step``, ``.layers`` (key -> (n, units) on ``device``),
    ``.penultimate``, ``.state`` (read lazily for stored features) and ``.evaluation`` (computed
    features); the model and inputs are built on the device once, at the first computed checkpoint.
    """
    if stored not in STORED_MODES:
        raise GrokscopeError(f"stored: must be one of {', '.join(STORED_MODES)}, got {stored!r}")
    context = source if isinstance(source, SeriesContext) else open_series(source)
    series = context.series
    device = resolve_device(device)
    stored_keys = context._stored_layer_keys()
    if layers is None and not context.can_compute and stored_keys:
        keys = stored_keys  # features stored by an older probe: take them as they are
    else:
        keys, _ = context.layer_keys(layers)
    checkpoints = {c.step: c for c in series.checkpoints}
    feature_files = dict(formats.features.list_features(series.home)) if stored != "never" else {}
    wanted = sorted(set(checkpoints) | set(feature_files) if steps is None else {int(s) for s in steps})
    extractor: Extractor | None = None
    data: list | None = None  # the series' data fingerprint, once a stored file needs it
    for step in wanted:
        path = feature_files.get(step)
        use_stored = path is not None and holds_layers(path, keys)
        if not use_stored and extractor is None and stored != "only" and step in checkpoints:
            # Series-level problems (a changed split or data file) are raised here, not per checkpoint.
            extractor = context.extractor(keys, device=device, batch_size=batch_size, dtype=dtype,
                                          max_memory=max_memory)
        try:
            if use_stored:
                if data is None:
                    data = [context.data_fingerprint()]
                problem = fingerprints.mismatch(path, step, checkpoints.get(step), data[0])
                if problem is not None:
                    raise GrokscopeError(f"{path}: {problem}; probe {series.root} again")
                _, tensors, penultimate = stored_features(path, keys, device=device, dtype=dtype)
                item = CheckpointFeatures(step, tensors, penultimate, checkpoints.get(step), device, True,
                                          source=fingerprints.recorded_source(path))
            elif stored == "only":
                raise GrokscopeError(f"{series.root}: no stored features with layers {', '.join(keys)} for step {step}")
            elif step not in checkpoints:
                if path is not None:
                    formats.features.features_header(path)  # an unreadable features file: raises, naming it
                raise GrokscopeError(f"{series.root}: no checkpoint for step {step}")
            else:
                item = compute_checkpoint(extractor, checkpoints[step], device)
        except GrokscopeError as exc:
            if on_error is None:
                raise
            on_error(step, exc)
            continue
        yield item
