"""Map the measure families over checkpoint series (grokscope runs and other tools') into tidy tables.

One row per value: ``run, step, metric, value, split, layer``, the columns a family needs, the
run's hyperparameters, and ``params`` (the family's options as JSON), which is how an existing
table tells whether a checkpoint was already measured with the same settings.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import torch

from grokscope import formats
from grokscope.errors import GrokscopeError
from grokscope.discovery import Series

FAMILY_METRICS = {
    "collapse": ("within_var", "between_var", "nc1", "rnc1", "rnc1_sup", "nc1_papyan", "nc2_equinorm",
                 "nc2_equiangularity", "nc2_cond", "nc3", "nc4"),
    "hsic": ("nhsic_x", "nhsic_y", "hsic_x", "hsic_y", "cka_x", "cka_y"),
    "weights": ("weight_norm", "param_norm", "balancedness", "spectral_entropy", "effective_rank", "stable_rank"),
    "grokking": ("memorization_step", "generalization_step", "grokking_gap"),
    "oinfo": ("synergy", "redundancy"),
    # spectral_entropy / effective_rank are the weights family's too (same values, same SVDs as
    # the coarse-graining); a bare --metric spectral_entropy still means the cheap weights family.
    "complexity": ("complexity", "complexity_raw", "complexity_tau", "complexity_bin_size", "complexity_loss",
                   "complexity_reference_loss", "complexity_error", "complexity_bound", "complexity_rank",
                   "spectral_entropy", "effective_rank"),
    "fourier": ("fourier_norm", "fourier_gini", "key_frequency", "restricted_loss", "excluded_loss"),
}
FAMILY_ALIASES = {"o-info": "oinfo", "o_info": "oinfo", "nc": "collapse", "nhsic": "hsic"}
FEATURE_FAMILIES = ("collapse", "hsic", "oinfo")
SPLITS = {"train": (0,), "test": (1,), "both": (0, 1)}
SPLIT_NAMES = {0: "train", 1: "test"}


@dataclass(frozen=True)
class MeasureOptions:
    # collapse: both splits, because the paper's argument is about held-out within-class variance
    # while the authors' code measures the training split only.
    split: str = "both"
    # None: the penultimate layer, the one every seed paper measures.
    layers: tuple[str, ...] | None = None
    # hsic: the authors estimate on the test split in minibatches of 100 of a shuffled loader,
    # three passes; shuffling (seeded by `seed`) makes the value independent of the stored order.
    hsic_split: str = "test"
    hsic_batch_size: int | None = 100
    hsic_passes: int = 3
    hsic_shuffle: bool = True
    hsic_sigma: float = 5.0
    hsic_bandwidth: str = "fixed"
    # nocco is the seed paper's normalised HSIC; hsic (biased, Gretton et al.) and cka are the
    # other estimators readers compare it with.
    hsic_estimator: str = "nocco"
    # oinfo: Clauw et al.'s 10 Ward bins of the training activations, neurons as variables.
    bins: int = 10
    variables: str = "neurons"
    min_size: int = 2
    max_size: int | None = None
    search: str = "auto"
    per_size: bool = False
    # ReLU features are ~40-50% tied zeros: the mean over 10 random orders of them, and their
    # spread (docs/oinfo.md has the comparison that chose it over "average" and "index").
    ties: str = "random"
    tie_draws: int = 10
    # seeds o-info's random tie orders and annealing, and hsic's batch shuffles.
    seed: int = 0
    units: str = "bits"
    bias_correction: bool = True
    # grokking: the accuracy that counts as "reached".
    threshold: float = 0.99
    # complexity: the loss increase the coarse-grained network may cost (nats of training loss;
    # DeMoss et al. log 2^-4 ... 4), one value per curve; bz2 is the authors' compressor.
    tolerance: tuple[float, ...] = (0.1,)
    compressor: str = "bz2"
    # fourier: None reads the key frequencies off the run's last checkpoint, as Nanda et al. fix
    # them from the trained model; give them to pin them.
    key_frequencies: tuple[int, ...] | None = None

    def params(self, family: str) -> str:
        """The options that shape a family's values, as the JSON stored beside them."""
        fields = {
            "collapse": ("split", "layers"),
            "hsic": ("hsic_split", "hsic_batch_size", "hsic_sigma", "hsic_bandwidth", "hsic_estimator",
                     "hsic_passes", "hsic_shuffle", "seed", "layers"),
            "oinfo": ("bins", "variables", "min_size", "max_size", "search", "per_size", "ties", "tie_draws",
                      "seed", "units", "bias_correction", "layers"),
            "weights": (),
            "grokking": ("threshold",),
            "complexity": ("tolerance", "compressor"),
            "fourier": ("key_frequencies",),
        }[family]
        return json.dumps({f: getattr(self, f) for f in fields}, sort_keys=True)


def resolve_metrics(names: Iterable[str]) -> dict[str, set[str] | None]:
    """Family -> wanted metric names (None = all of them), from ``--metric`` values."""
    wanted: dict[str, set[str] | None] = {}
    for raw in names:
        for name in (n.strip() for n in raw.split(",") if n.strip()):
            family = FAMILY_ALIASES.get(name, name)
            if family == "all":
                wanted.update(dict.fromkeys(FAMILY_METRICS))
            elif family in FAMILY_METRICS:
                wanted[family] = None
            else:
                owner = next((f for f, metrics in FAMILY_METRICS.items() if name in metrics), None)
                if owner is None:
                    known = ", ".join(list(FAMILY_METRICS) + ["o-info", "all"])
                    metrics = ", ".join(m for ms in FAMILY_METRICS.values() for m in ms)
                    raise GrokscopeError(f"--metric: unknown {name!r}; families: {known}; metrics: {metrics}")
                if wanted.get(owner, set()) is not None:
                    wanted.setdefault(owner, set()).add(name)
    if not wanted:
        raise GrokscopeError("--metric: name at least one family or metric")
    return wanted


# Families that ``--metric all`` brings only to the series they apply to: fourier needs a
# grokscope run on modular arithmetic (its task and p). Named on their own, they give NaN rows
# with the reason instead, so that asking for them is never silently ignored.
WHERE_THEY_APPLY = ("fourier",)


def only_through_all(names: Iterable[str]) -> set[str]:
    """The families of :data:`WHERE_THEY_APPLY` that ``--metric`` values ask for only through "all"."""
    named = {FAMILY_ALIASES.get(n.strip(), n.strip()) for raw in names for n in raw.split(",") if n.strip()}
    if "all" not in named:
        return set()
    by_metric = {f for f, metrics in FAMILY_METRICS.items() if named & set(metrics)}
    return {f for f in WHERE_THEY_APPLY if f not in named and f not in by_metric}


def _applies(family: str, context) -> bool:
    from grokscope.config import MODULAR_OPS

    if family == "fourier":
        return context.config is not None and context.config.task.name in MODULAR_OPS
    return True


# --- per checkpoint ------------------------------------------------------------------------


def _finite(tensor: torch.Tensor) -> bool:
    return bool(torch.isfinite(tensor).all())


def collapse_rows(features, labels: torch.Tensor, split: torch.Tensor, layers: list[str], output_weight,
                  penultimate: str, options: MeasureOptions) -> list[dict]:
    from grokscope.measures.collapse import collapse_measures

    rows = []
    for layer in layers:
        for code in SPLITS[options.split]:
            mask = split == code
            if not bool(mask.any()):
                continue
            weight = output_weight if layer == penultimate else None
            values = collapse_measures(features[layer][mask], labels[mask], weight)
            rows += [{"metric": k, "value": v, "split": SPLIT_NAMES[code], "layer": layer} for k, v in values.items()]
    return rows


def _hsic_batching(options: MeasureOptions) -> dict:
    return dict(sigma=options.hsic_sigma, batch_size=options.hsic_batch_size, bandwidth=options.hsic_bandwidth,
                passes=options.hsic_passes, seed=options.seed if options.hsic_shuffle else None)


def hsic_references(inputs: torch.Tensor, labels: torch.Tensor, split: torch.Tensor,
                    options: MeasureOptions) -> dict[int, object]:
    """Split code -> the nHSIC reference of its samples (inputs and labels), built once per run:
    they do not change between checkpoints, so each checkpoint computes only its own kernel."""
    from grokscope.measures.hsic import hsic_reference

    references = {}
    for code in SPLITS[options.hsic_split]:
        mask = split == code
        if options.hsic_estimator != "nocco":
            references[code] = None  # the plain estimators have no reusable operators
            continue
        references[code] = hsic_reference(inputs[mask], labels[mask], **_hsic_batching(options))
    return references


def _spread(per_pass) -> tuple[float, float]:
    """Mean and standard deviation (n - 1 denominator; NaN for one draw) of per-draw values."""
    values = np.asarray(per_pass, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan


def hsic_rows(features, references: dict[int, object], split: torch.Tensor, layers: list[str],
              options: MeasureOptions, inputs: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    """One row per measure; ``value`` is the mean over the passes, ``value_sd`` their standard
    deviation, ``draws`` the number of passes."""
    from grokscope.measures.hsic import cka, hsic, hsic_measures

    plain = {"hsic": hsic, "cka": cka}
    rows = []
    for code, reference in references.items():
        mask = split == code
        for layer in layers:
            t = features[layer][mask]
            if options.hsic_estimator == "nocco":
                per_pass = hsic_measures(t, reference, per_pass=True)
            else:
                estimate = plain[options.hsic_estimator]
                kwargs = dict(_hsic_batching(options), per_pass=True)
                per_pass = {f"{options.hsic_estimator}_x": estimate(t, inputs[mask], **kwargs),
                            f"{options.hsic_estimator}_y": estimate(t, labels[mask], **kwargs)}
            for metric, values in per_pass.items():
                value, sd = _spread(values)
                rows.append({"metric": metric, "value": value, "split": SPLIT_NAMES[code], "layer": layer,
                             "value_sd": sd, "draws": len(values)})
    return rows


def oinfo_rows(features, split: torch.Tensor, layers: list[str], options: MeasureOptions) -> list[dict]:
    from grokscope.measures.multiplets import oinfo_search

    rows = []
    train = split == 0
    for layer in layers:
        try:
            found = oinfo_search(
                features[layer][train], n_bins=options.bins, variables=options.variables, min_size=options.min_size,
                max_size=options.max_size, search=options.search, per_size=options.per_size, ties=options.ties,
                tie_draws=options.tie_draws, seed=options.seed, units=options.units, bias_correction=options.bias_correction,
            )
        except GrokscopeError as exc:
            raise GrokscopeError(oinfo_option_names(str(exc))) from None
        rows += [{**row, "split": "train", "layer": layer} for row in found]
    return rows


# oinfo_search's parameters and the measure options that set them, so its messages name options.
_OINFO_OPTIONS = {"n_bins": "--bins", "min_size": "--min-size", "max_size": "--max-size",
                  "tie_draws": "--tie-draws", "variables": "--variables", "search": "--search", "ties": "--ties",
                  "units": "--units", "features": "o-info"}


def oinfo_option_names(message: str) -> str:
    """An o-info message with its parameter names replaced by the options that set them
    (``min_size`` -> ``--min-size``); a plain word (``search``) only where it leads the message."""
    message = re.sub(r"\b(n_bins|min_size|max_size|tie_draws)\b", lambda m: _OINFO_OPTIONS[m.group(1)], message)
    head, colon, rest = message.partition(": ")
    return f"{_OINFO_OPTIONS[head]}{colon}{rest}" if colon and head in _OINFO_OPTIONS else message


def nan_rows(family: str, layers: list[str], options: MeasureOptions) -> list[dict]:
    """Placeholder rows for a checkpoint where a family could not be computed (non-finite features,
    a singular covariance, ...): NaN values rather than no rows, a crash or the loss of the others."""
    splits = {"collapse": options.split, "hsic": options.hsic_split, "oinfo": "train"}[family]
    metrics = FAMILY_METRICS[family]
    if family == "hsic":
        prefix = "nhsic" if options.hsic_estimator == "nocco" else options.hsic_estimator
        metrics = (f"{prefix}_x", f"{prefix}_y")
    extra = {"scope": "overall"} if family == "oinfo" else {}
    return [{"metric": m, "value": math.nan, "split": SPLIT_NAMES[code], "layer": layer, **extra}
            for layer in layers for code in SPLITS[splits] for m in metrics]


@dataclass(frozen=True)
class Problem:
    """Something met while measuring a series, for the command to report.

    ``kind``: "error", a checkpoint or file that could not be read (that step has no rows and the
    command exits 1); "warning", a message as it is; "nan", ``family`` (None: every family) could
    not be computed at ``step`` because of ``message`` (its rows are NaN; reported once per
    reason, with the steps it hit).
    """

    kind: str
    message: str
    family: str | None = None
    step: int | None = None

    @classmethod
    def of(cls, item) -> "Problem":
        """A Problem, also from the ``(kind, message)`` pairs that row functions return."""
        return item if isinstance(item, Problem) else cls(*item)


# Names of the families in messages (the --metric spelling).
FAMILY_LABELS = {"oinfo": "o-info"}


def describe_nan(root, family: str | None, reason: str, steps: list[int]) -> str:
    """One warning for every step where a family could not be computed for the same reason."""
    shown = ", ".join(str(s) for s in steps[:5]) + (f" and {len(steps) - 5} more" if len(steps) > 5 else "")
    what = "every measure is" if family is None else f"{FAMILY_LABELS.get(family, family)} is"
    return f"{root}: {what} NaN at step{'s' if len(steps) > 1 else ''} {shown}: {reason}"


def hsic_inputs(x: np.ndarray) -> np.ndarray:
    """Model inputs as nHSIC's X: real inputs flattened to (n, d); integer inputs (token ids) one-hot
    encoded per position and concatenated, (n, T * V), so that the Gaussian kernel compares which
    tokens are equal rather than how far apart their ids are."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        return x.reshape(len(x), -1)
    tokens = x.reshape(len(x), -1)  # (n, T)
    if tokens.min() < 0:
        raise GrokscopeError("hsic: integer inputs must be non-negative token ids")
    vocabulary = int(tokens.max()) + 1
    one_hot = np.zeros((len(tokens), tokens.shape[1], vocabulary), dtype=np.float32)  # (n, T, V)
    np.put_along_axis(one_hot, tokens[:, :, None], 1.0, axis=2)
    return one_hot.reshape(len(tokens), -1)


def _check_classes(series: Series, labels: torch.Tensor, split: torch.Tensor, options: MeasureOptions) -> None:
    """Neural collapse compares classes: a split with samples of one class only is the data's
    problem, said once for the series rather than as NaN at every checkpoint."""
    for code in SPLITS[options.split]:
        mask = split == code
        if bool(mask.any()):
            n_classes = int(torch.unique(labels[mask]).numel())
            if n_classes < 2:
                raise GrokscopeError(f"{series.root}: neural-collapse measures need at least two classes, found "
                                     f"{n_classes} in the {SPLIT_NAMES[code]} split")


def measure_steps(series: Series, steps: dict[str, list[int]], options: MeasureOptions, device: str = "cpu",
                  threads: int | None = None,
                  on_step: Callable[[int, dict[str, list[dict]]], None] | None = None,
                  ) -> tuple[dict[str, list[dict]], list[Problem]]:
    """Rows of the feature families at the given steps of one series, and the problems met.

    ``steps`` maps a family to the steps it still needs. A checkpoint or features file that
    cannot be read, or whose row count differs from the samples', is an "error" problem and its
    step is skipped; a family that cannot be computed at a step (on one layer) gives NaN rows
    there and a "nan" problem with the reason; the other families and layers keep their values.
    Problems of the series as a whole (a changed data split, one class only) raise.

    With ``on_step(step, rows)`` each step's rows (family -> rows) are handed over as soon as
    they are computed, and not returned; without it they are returned at the end. Runs in a
    worker process with ``--workers``, so it takes and returns plain data only.
    """
    from grokscope.context import SeriesContext, iter_features
    from grokscope.features import resolve_device

    if threads:
        torch.set_num_threads(threads)
    context = SeriesContext.open(series)
    rows: dict[str, list[dict]] = {family: [] for family in steps}
    problems: list[Problem] = []
    all_steps = sorted(set().union(*steps.values())) if steps else []
    if not all_steps:
        return rows, problems
    layers = list(options.layers) if options.layers else [_penultimate(context)]
    samples = context.samples()
    torch_device = resolve_device(device)
    labels = torch.from_numpy(samples.labels).to(torch_device)
    split = torch.from_numpy(samples.split).to(torch_device)
    if "collapse" in steps:
        _check_classes(series, labels, split, options)
    references, inputs = None, None
    if "hsic" in steps:
        inputs = torch.from_numpy(hsic_inputs(context.inputs())).to(torch_device)
        references = hsic_references(inputs, labels, split, options)

    def on_error(step, error):
        problems.append(Problem("error", str(error), step=step))

    def family_rows(family: str, item, layer: str) -> list[dict]:
        if family == "collapse":
            try:
                weight = context.output_weight(item.state) if item.checkpoint is not None else None
            except GrokscopeError as exc:
                # Stored features of a checkpoint that is no longer readable: everything but the
                # measures of the output layer (NC3, NC4), which are NaN, and the file is named.
                problems.append(Problem("error", str(exc), step=item.step))
                rows = collapse_rows(item.layers, labels, split, [layer], None, item.penultimate, options)
                if layer == item.penultimate:
                    rows += [{**row, "metric": m, "value": math.nan} for row in rows if row["metric"] == "rnc1"
                             for m in ("nc3", "nc4")]
                return rows
            return collapse_rows(item.layers, labels, split, [layer], weight, item.penultimate, options)
        if family == "hsic":
            return hsic_rows(item.layers, references, split, [layer], options, inputs, labels)
        return oinfo_rows(item.layers, split, [layer], options)

    for item in iter_features(context, all_steps, layers=layers, device=torch_device, on_error=on_error):
        wrong = next((layer for layer in layers if item.layers[layer].shape[0] != len(samples)), None)
        if wrong is not None:
            source = series.features_dir / formats.steps.step_file_name(item.step) if item.from_store else item.checkpoint.path
            problems.append(Problem("error", (
                f"{source}: {item.layers[wrong].shape[0]} rows in {wrong}, but {_samples_source(series)} lists "
                f"{len(samples)} samples; probe it again with --force"), step=item.step))
            continue
        finite = {layer: _finite(item.layers[layer]) for layer in layers}
        if not all(finite.values()):
            problems.append(Problem("nan", "features are not finite (diverged?)", None, item.step))
        found: dict[str, list[dict]] = {}
        for family, wanted in steps.items():
            if item.step not in wanted:
                continue
            new = []
            for layer in layers:
                if not finite[layer]:
                    new += nan_rows(family, [layer], options)
                    continue
                try:
                    new += family_rows(family, item, layer)
                except (GrokscopeError, torch.linalg.LinAlgError) as exc:
                    new += nan_rows(family, [layer], options)
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    problems.append(Problem("nan", f"{layer}: {reason}" if len(layers) > 1 else reason,
                                            family, item.step))
            found[family] = [{"step": item.step, **row} for row in new]
        if on_step is not None:
            on_step(item.step, found)
        else:
            for family, new in found.items():
                rows[family] += new
    return rows, problems


def _samples_source(series: Series) -> Path | str:
    path = series.features_dir / formats.features.SAMPLES_FILE
    return path if path.is_file() else f"{series.root}'s data"


def _penultimate(context) -> str:
    if not context.can_compute:
        files = formats.features.list_features(context.series.home)
        if files:  # features stored by an older probe, which wrote no record
            return formats.features.features_header(files[-1][1])[2]
    return context.layer_keys()[1]  # a series never probed: raises, naming the probe command


def iter_weight_rows(series: Series, steps: list[int], options: MeasureOptions | None = None, device: str = "cpu",
                     threads: int | None = None) -> Iterator[tuple[int, list[dict], list[Problem]]]:
    """(step, rows, problems) of the weight measures, checkpoint by checkpoint: no data needed
    (``options``, ``device`` and ``threads`` are those of every checkpoint family, unused here).

    A checkpoint that cannot be read, or that holds another architecture than the series' (other
    parameter names or shapes than the model's; for a series without a model, than its first
    checkpoint's), is an "error" problem and has no rows.
    """
    from grokscope.context import SeriesContext
    from grokscope.measures.weights import weight_measures
    from grokscope.loading import load_state

    layout = SeriesContext.open(series).weight_layout()
    checkpoints = {c.step: c for c in series.checkpoints}
    reference = _reference_shapes(layout, series)
    for step in steps:
        try:
            state = layout.fit(load_state(checkpoints[step]))
            _check_architecture(checkpoints[step], state, reference)
        except GrokscopeError as exc:
            yield step, [], [Problem("error", str(exc), step=step)]
            continue
        measured = weight_measures(state, parameters=layout.groups, pairs=layout.pairs)
        yield step, [{"step": step, "split": None, **row} for row in measured], []


def weight_rows(series: Series, steps: list[int]) -> tuple[list[dict], list[Problem]]:
    """Weight measures of the given steps, straight from the checkpoints (see :func:`iter_weight_rows`)."""
    rows, problems = [], []
    for _, new, found in iter_weight_rows(series, steps):
        rows += new
        problems += found
    return rows, problems


def iter_complexity_rows(series: Series, steps: list[int], options: MeasureOptions, device: str = "cpu",
                         threads: int | None = None) -> Iterator[tuple[int, list[dict], list[Problem]]]:
    """(step, rows, problems) of the complexity family (DeMoss et al.), checkpoint by checkpoint.

    The model and the training set come from the series (a run's run.json, another series' probe
    record); the loss is the run's own training loss (cross-entropy for another tool's series) over
    the whole training split, on the model's output read as class logits. Runs in a worker
    process with ``--workers``.
    """
    from grokscope.context import SeriesContext
    from grokscope.features import inputs_on, output_logits, parameter_groups, resolve_device
    from grokscope.measures.complexity import model_error, model_loss, rate_distortion
    from grokscope.loading import load_state

    if threads:
        torch.set_num_threads(threads)
    context = SeriesContext.open(series)
    layout = context.weight_layout()
    model = layout.model
    if model is None:
        context.layer_keys()  # raises: never probed, and how to probe
    x, samples = context.data()
    torch_device = resolve_device(device)
    train = samples.split == 0
    inputs = inputs_on(x[train], torch_device, torch.float32)  # (n, ...)
    targets = torch.from_numpy(samples.labels[train]).to(torch_device)  # (n,)
    model = model.to(torch_device).eval()
    names = [group[0] for group in parameter_groups(model)]  # buffers are not part of the description
    if context.config is not None:
        from grokscope.training import loss_fn

        criterion = lambda logits, y: loss_fn(logits, y, context.config)  # noqa: E731
    else:
        criterion = torch.nn.functional.cross_entropy
    readout = lambda output: output_logits(output, context.answer_position())  # noqa: E731
    loss = model_loss(model, inputs, targets, criterion, readout=readout)
    error = model_error(model, inputs, targets, readout=readout)
    checkpoints = {c.step: c for c in series.checkpoints}
    reference = _reference_shapes(layout, series)
    for step in steps:
        try:
            state = layout.fit(load_state(checkpoints[step], device=torch_device))
            _check_architecture(checkpoints[step], state, reference)
        except GrokscopeError as exc:
            yield step, [], [Problem("error", str(exc), step=step)]
            continue
        results = rate_distortion(state, loss, options.tolerance, compressor=options.compressor, error=error,
                                  names=names)
        found = []
        if any(math.isnan(r.bits) for r in results):
            found.append(Problem("nan", "weights or loss not finite (diverged?)", "complexity", step))
        yield step, [{"step": step, **row} for row in complexity_result_rows(results, len(targets))], found


def checkpoint_rows(family: str, series: Series, steps: list[int], options: MeasureOptions, device: str = "cpu",
                    threads: int | None = None) -> tuple[list[dict], list[Problem]]:
    """The rows of one of :data:`CHECKPOINT_FAMILIES` at the given steps, and the problems met:
    what a worker's task returns."""
    rows, problems = [], []
    for _, new, found in CHECKPOINT_FAMILIES[family](series, steps, options, device, threads):
        rows += new
        problems += found
    return rows, problems


def complexity_result_rows(results, n_train: int) -> list[dict]:
    """Tidy rows of :func:`grokscope.measures.complexity.rate_distortion` results: per tolerance
    (a ``tolerance`` column) the size, its (tau, bin), losses, error, bound and per-matrix ranks;
    once, the spectral entropy and effective rank of every matrix."""
    from grokscope.measures.complexity import generalisation_bound

    rows = []
    for result in results:
        scalars = {
            "complexity": result.bits, "complexity_raw": result.raw_bits, "complexity_tau": result.tau,
            "complexity_bin_size": result.bin_size, "complexity_loss": result.loss,
            "complexity_reference_loss": result.original_loss, "complexity_error": result.error,
            "complexity_bound": generalisation_bound(result.bits, result.error, n_train),
        }
        rows += [{"metric": k, "value": v, "layer": None, "tolerance": result.tolerance} for k, v in scalars.items()]
        rows += [{"metric": "complexity_rank", "value": float(rank), "layer": name, "tolerance": result.tolerance}
                 for name, rank in result.ranks.items()]
    for name, summary in (results[0].spectra if results else {}).items():
        rows += [{"metric": k, "value": summary[k], "layer": name, "tolerance": None}
                 for k in ("spectral_entropy", "effective_rank")]
    return rows


FOURIER_SIGNS = {"add": 1, "sub": -1}


def _fourier_matrices(state: dict, config) -> dict[str, torch.Tensor]:
    """Parameter name -> (p, d) matrix of a run (``config``: its RunConfig) whose row x belongs to
    residue x: the embedding (for the
    MLP, the first layer's columns on the one-hots of a and of b, side by side) and the output
    layer (row c reads out answer c)."""
    from grokscope.model import output_weight_key

    p = config.task.p
    if config.model.kind == "transformer":
        matrices = {"embed.weight": state["embed.weight"][:p]}  # (p, d_model): "=" left out
    else:
        first = state["layers.0.weight"]  # (width, 2p)
        matrices = {"layers.0.weight": torch.cat([first[:, :p].T, first[:, p:2 * p].T], dim=1)}  # (p, 2 width)
    output = output_weight_key(config.model)
    matrices[output] = state[output]  # (p, units)
    return matrices


_FOURIER_NAN_LOSSES = [{"metric": m, "value": math.nan, "split": s}
                       for m in ("restricted_loss", "excluded_loss") for s in ("train", "test")]


def iter_fourier_rows(series: Series, steps: list[int], options: MeasureOptions, device: str = "cpu",
                      threads: int | None = None) -> Iterator[tuple[int, list[dict], list[Problem]]]:
    """(step, rows, problems) of the fourier family (Nanda et al. 2023), checkpoint by checkpoint.

    Per checkpoint of a grokscope run on modular arithmetic: ``fourier_norm`` (one row per
    frequency, column ``frequency``) and ``fourier_gini`` of the embedding and of the output layer
    (layer = parameter name), ``key_frequency`` (one row per key frequency), and
    ``restricted_loss`` / ``excluded_loss`` on train and test (add and sub only; NaN otherwise).
    Another tool's series, or a run on another task, has NaN losses and a "nan" problem: the
    family needs the run's task and p. See :mod:`grokscope.measures.fourier`.
    """
    from grokscope.config import MODULAR_OPS
    from grokscope.context import SeriesContext
    from grokscope.features import DEFAULT_BATCH_SIZE, resolve_device
    from grokscope.measures import fourier
    from grokscope.loading import load_state

    if threads:
        torch.set_num_threads(threads)
    context = SeriesContext.open(series)
    config = context.config
    if config is None or config.task.name not in MODULAR_OPS:
        reason = (f"it needs a grokscope run on modular arithmetic, and {series.root} is another tool's series"
                  if config is None else f"it needs a modular-arithmetic task, not {config.task.name}")
        for step in steps:
            yield step, [{"step": step, **row} for row in _FOURIER_NAN_LOSSES], [Problem("nan", reason, "fourier", step)]
        return
    torch_device = resolve_device(device)
    p, sign = config.task.p, FOURIER_SIGNS.get(config.task.name)
    checkpoints = {c.step: c for c in series.checkpoints}
    setup: list[Problem] = []  # reported once, with the first checkpoint
    key = list(options.key_frequencies) if options.key_frequencies else None
    if key and max(key) > p // 2:
        raise GrokscopeError(f"--key-frequencies: {series.root} has p = {p}, whose frequencies run 1..{p // 2}")
    if key is None and checkpoints:
        last = checkpoints[max(checkpoints)]
        try:
            embedding = next(iter(_fourier_matrices(load_state(last, torch_device), config).values()))
            key = fourier.key_frequencies(fourier.frequency_norms(embedding))
        except GrokscopeError as exc:
            setup.append(Problem("error", str(exc)))
        if not key:
            setup.append(Problem("warning", f"{last.path}: no key frequencies in the embedding; "
                                            "restricted and excluded loss are NaN"))
    if sign is None:
        setup.append(Problem("warning", f"{series.root}: restricted and excluded loss are defined for add and "
                                        f"sub, not {config.task.name}; their values are NaN"))
    dataset = context.dataset()
    labels = torch.from_numpy(dataset.y).to(torch_device)  # (N,)
    split = torch.from_numpy(dataset.split).to(torch_device)  # (N,)
    x = torch.from_numpy(dataset.x).to(torch_device)  # (N, 2p)
    model = context.model().to(torch_device).eval()
    for step in steps:
        found, setup = setup, []
        try:
            state = load_state(checkpoints[step], torch_device)
            model.load_state_dict(state)
        except (GrokscopeError, KeyError, RuntimeError) as exc:
            message = str(exc) if isinstance(exc, GrokscopeError) else f"{checkpoints[step].path}: {exc}"
            yield step, [], found + [Problem("error", message, step=step)]
            continue
        new = []
        for name, matrix in _fourier_matrices(state, config).items():
            norms = fourier.frequency_norms(matrix)
            new += [{"metric": "fourier_norm", "value": float(v), "layer": name, "frequency": k}
                    for k, v in zip(fourier.frequencies(p), norms)]
            new.append({"metric": "fourier_gini", "value": fourier.gini(norms) if np.isfinite(norms).all() else math.nan,
                        "layer": name})
        new += [{"metric": "key_frequency", "value": float(k), "frequency": k} for k in key or []]
        if sign is None or not key:
            new += _FOURIER_NAN_LOSSES
        else:
            with torch.no_grad():
                logits = torch.cat([model(x[i:i + DEFAULT_BATCH_SIZE])
                                    for i in range(0, len(x), DEFAULT_BATCH_SIZE)])  # (p^2, p)
            losses = fourier.fourier_losses(logits, labels, split, p, key, sign)
            new += [{"metric": metric, "value": losses[metric][s], "split": s}
                    for metric in ("restricted_loss", "excluded_loss") for s in ("train", "test")]
            if not torch.isfinite(logits).all():
                found.append(Problem("nan", "logits are not finite (diverged?)", "fourier", step))
        yield step, [{"step": step, **row} for row in new], found


# Families measured checkpoint by checkpoint from the weights, never from features (complexity
# and fourier also run the model on the data): family -> a function (series, steps, options, device) yielding
# (step, rows, problems) per checkpoint, so that every row is saved as it comes (see SeriesTables).
CHECKPOINT_FAMILIES: dict[str, Callable[..., Iterator[tuple[int, list[dict], list[Problem]]]]] = {
    "weights": iter_weight_rows,
    "complexity": iter_complexity_rows,
    "fourier": iter_fourier_rows,
}


def _reference_shapes(layout, series: Series) -> tuple[str, dict[str, tuple]] | None:
    """(what it is, name -> shape) that every checkpoint of the series must match: the model's
    parameters when the series has a model, else its first readable checkpoint's."""
    from grokscope.loading import load_state

    if layout.model is not None:
        return "the series' model", {k: tuple(v.shape) for k, v in layout.model.state_dict().items()}
    for checkpoint in series.checkpoints:
        try:
            state = load_state(checkpoint)
        except GrokscopeError:
            continue
        return f"its first checkpoint (step {checkpoint.step})", {
            k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    return None


def _check_architecture(checkpoint, state: dict, reference) -> None:
    if reference is None:
        return
    what, shapes = reference
    have = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    missing = sorted(set(shapes) - set(have))
    if missing and what.startswith("its first"):
        missing = []  # a foreign series' checkpoints may differ in optional extras; shapes decide
    extra = sorted(set(have) - set(shapes))
    differs = sorted(k for k in set(have) & set(shapes) if have[k] != shapes[k])
    if differs:
        name = differs[0]
        detail = f"{name} is {list(have[name])}, {what} has {list(shapes[name])}"
    elif missing:
        detail = f"it lacks {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    elif extra and not what.startswith("its first"):
        detail = f"it has {extra[0]}, which {what} lacks"
    else:
        return
    raise GrokscopeError(f"{checkpoint.path}: another architecture than the series' ({detail}); skipped")


# --- per series ----------------------------------------------------------------------------


@dataclass
class SeriesPlan:
    series: Series
    columns: dict  # run name and hyperparameters, repeated on every row
    existing: dict[str, pd.DataFrame]  # what the home's tables hold, measured with the same settings
    todo: dict[str, list[int]]  # family -> steps still to measure
    chosen: dict[str, list[int]] = field(default_factory=dict)  # family -> steps asked for

    @property
    def n_steps(self) -> int:
        """Checkpoints to visit (the grokking family reads the history only)."""
        return len(set().union(*(s for f, s in self.todo.items() if f != "grokking")))


def plan_series(series: Series, families: Iterable[str], options: MeasureOptions,
                select: Callable[[list[int]], list[int]], force: bool, where_applicable: Iterable[str] = ()
                ) -> SeriesPlan:
    """What is already measured with the same parameters, and what remains.

    A table in the home that is not a measure table is refused by name (nothing is merged into
    it); one measured with other settings counts as empty (its rows are replaced, not mixed).
    ``where_applicable``: families left out of the plan for a series they do not apply to (see
    :data:`WHERE_THEY_APPLY`).
    """
    from grokscope.context import SeriesContext

    context = SeriesContext.open(series)
    families = [f for f in families if f not in set(where_applicable) or _applies(f, context)]
    checkpoint_steps = [c.step for c in series.checkpoints]
    feature_steps = [s for s, _ in formats.features.list_features(series.home)]
    if options.layers:
        context.layer_keys(options.layers)  # an unknown --layer fails before any work
    needs_model = any(f == "complexity" for f in families) or (any(f in FEATURE_FAMILIES for f in families)
                                                                and not feature_steps)
    if needs_model and not context.can_compute:
        context.layer_keys()  # raises: names the series and the probe command to run
    existing: dict[str, pd.DataFrame] = {}
    todo: dict[str, list[int]] = {}
    chosen: dict[str, list[int]] = {}
    for family in families:
        path = formats.tables.measures_path(series.home, family)
        table = formats.tables.read_measure_table(path) if path.is_file() else None
        existing[family] = table if table is not None and _same_params(table, options.params(family)) \
            else pd.DataFrame()
        if family in SERIES_FAMILIES:
            chosen[family] = []
            todo[family] = [] if len(existing[family]) and not force else [-1]
            continue
        available = checkpoint_steps if family in CHECKPOINT_FAMILIES else \
            sorted(set(checkpoint_steps) | set(feature_steps))
        if series.selected is not None:
            available = [s for s in available if s in series.selected]
        done = set(existing[family]["step"]) if len(existing[family]) and not force else set()
        chosen[family] = select(available)
        todo[family] = [s for s in chosen[family] if s not in done]
    return SeriesPlan(series, context.columns, existing, todo, chosen)


# Families with one set of rows per series (from its history), replaced whole when measured again.
SERIES_FAMILIES = ("grokking",)


def _same_params(table: pd.DataFrame, params: str) -> bool:
    return not len(table) or ("params" in table and bool((table["params"] == params).all()))


def finish_table(columns: dict, family: str, rows: list[dict], options: MeasureOptions,
                 existing: pd.DataFrame) -> pd.DataFrame:
    """New rows in the table format, merged with ``existing`` (a table of the same series), sorted by
    step: rows of ``existing`` at the steps of the new rows are replaced, and all of it when it
    was measured with other settings or the family has one set of rows per series."""
    new = pd.DataFrame(rows)
    if len(new):
        for column in ("split", "layer"):
            if column not in new:
                new[column] = None
        for column, value in columns.items():
            new[column] = value
        new["params"] = options.params(family)
        new["step"] = new["step"].astype("int64")
        new["value"] = new["value"].astype("float64")
    if len(existing) and len(new):
        if family in SERIES_FAMILIES or not _same_params(existing, options.params(family)):
            existing = existing.iloc[0:0]
        else:
            existing = existing[~existing["step"].isin(set(new["step"]))]
    table = pd.concat([t for t in (existing, new) if len(t)], ignore_index=True) if len(existing) else new
    if not len(table):
        return table
    front = ["run", "step", "metric", "value", "split", "layer"]
    table = table[front + [c for c in table.columns if c not in front]]
    return table.sort_values(["step", "metric"], kind="stable").reset_index(drop=True)


SAVE_EVERY_ENV = "GROKSCOPE_SAVE_EVERY"
# A measure killed outright (SIGKILL, a scheduler's limit) loses at most this much work; each save
# rewrites the series' tables, which costs milliseconds (benchmarks/measure.py: table_saves).
DEFAULT_SAVE_EVERY_S = 30.0


def save_every() -> float:
    """Seconds between saves of a series' tables while it is measured (``GROKSCOPE_SAVE_EVERY``)."""
    from grokscope.config import seconds_from_env

    return seconds_from_env(SAVE_EVERY_ENV, DEFAULT_SAVE_EVERY_S)


class SeriesTables:
    """The measure tables of one series while it is measured.

    New rows are kept in memory and saved into ``HOME/measures/<family>.parquet`` every
    :func:`save_every` seconds, when the series is done, and when the command is interrupted, so a
    killed measure keeps what it had saved and the next one computes only the rest. A save takes
    the table's lock (:func:`grokscope.formats.atomic.table_lock`), reads the table as it is on disk now
    (another process may have added steps), puts this process's rows in place of the same steps
    and writes it atomically: two processes measuring the same series both keep their rows.
    Its cost is one table write per family, whatever the number of checkpoints since the last.

    With ``write=False`` (``-o``, ``--format``) nothing is written into the home; :meth:`table`
    gives what the table would hold.
    """

    def __init__(self, plan: SeriesPlan, options: MeasureOptions, *, write: bool = True,
                 every: float | None = None, on_wait: Callable[[str], None] | None = None):
        self.plan, self.options, self.write = plan, options, write
        self.every = save_every() if every is None else every
        self.on_wait = on_wait
        self.rows: dict[str, list[dict]] = {family: [] for family in plan.existing}
        self.unsaved: set[str] = set()
        self.saved: list[Path] = []
        self._last_save = time.monotonic()

    def add(self, family: str, rows: list[dict]) -> None:
        if rows:
            self.rows[family] += rows
            self.unsaved.add(family)

    def save_if_due(self) -> None:
        if self.unsaved and time.monotonic() - self._last_save >= self.every:
            self.save()

    def save(self) -> None:
        """Write every table with unsaved rows (nothing without ``write``)."""
        self._last_save = time.monotonic()
        if not self.write:
            self.unsaved.clear()
            return
        for family in sorted(self.unsaved):
            path = formats.tables.measures_path(self.plan.series.home, family)
            path.parent.mkdir(parents=True, exist_ok=True)
            with formats.atomic.table_lock(path, self.on_wait):
                on_disk = formats.tables.read_measure_table(path) if path.is_file() else pd.DataFrame()
                formats.tables.write_table(path, finish_table(self.plan.columns, family, self.rows[family], self.options,
                                                     on_disk))
            self.unsaved.discard(family)
            if path not in self.saved:
                self.saved.append(path)

    def table(self, family: str) -> pd.DataFrame:
        """The family's rows at the steps asked for: what was there, with this process's rows."""
        table = finish_table(self.plan.columns, family, self.rows[family], self.options, self.plan.existing[family])
        if len(table) and family not in SERIES_FAMILIES:
            table = table[table["step"].isin(set(self.plan.chosen.get(family, [])))].reset_index(drop=True)
        return table


def grokking_table_rows(series: Series, options: MeasureOptions) -> tuple[list[dict], list[Problem]]:
    """The grokking family from the series' history, or NaN rows and a warning where the history
    lacks train or test accuracy."""
    from grokscope.context import SeriesContext
    from grokscope.measures.grokking import METRICS, grokking_rows

    history = SeriesContext.open(series).history()
    missing = [c for c in ("train_acc", "test_acc") if history is None or c not in history.columns]
    if not missing:
        history = history.dropna(subset=["train_acc", "test_acc"], how="all")
    if missing or history.empty:
        last = max((c.step for c in series.checkpoints), default=0)
        why = "no history" if history is None else f"its history has no {' or '.join(missing) or 'accuracy'}"
        warning = (f"{series.root}: grokking steps unknown ({why}; probe the series with --data to compute "
                   "train/test accuracy from the model's output)")
        return [{"step": last, "metric": m, "value": math.nan, "split": None, "layer": None} for m in METRICS], \
            [Problem("warning", warning)]
    return grokking_rows(history, threshold=options.threshold), []


def chunk(steps: list[int], n_chunks: int) -> list[list[int]]:
    n_chunks = max(1, min(n_chunks, len(steps)))
    return [list(part) for part in np.array_split(np.asarray(steps, dtype=np.int64), n_chunks) if len(part)]
