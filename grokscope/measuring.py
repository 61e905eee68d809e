"""Map the measure families over checkpoint series (grokscope runs and other tools') into tidy tables.

One row per value: ``run, step, metric, value, split, layer``, the columns a family needs, the
run's hyperparameters, and ``params`` (the family's options as JSON), which is how an existing
table tells whether a checkpoint was already measured with the same settings.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from grokscope import store
from grokscope.errors import GrokscopeError
from grokscope.series import Series

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
}
FAMILY_ALIASES = {"o-info": "oinfo", "o_info": "oinfo", "nc": "collapse", "nhsic": "hsic"}
FEATURE_FAMILIES = ("collapse", "hsic", "oinfo")
CHECKPOINT_FAMILIES = ("weights", "complexity")  # read the weights only, never features
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
        found = oinfo_search(
            features[layer][train], n_bins=options.bins, variables=options.variables, min_size=options.min_size,
            max_size=options.max_size, search=options.search, per_size=options.per_size, ties=options.ties,
            tie_draws=options.tie_draws, seed=options.seed, units=options.units,
            bias_correction=options.bias_correction,
        )
        rows += [{**row, "split": "train", "layer": layer} for row in found]
    return rows


def nan_rows(family: str, layers: list[str], options: MeasureOptions) -> list[dict]:
    """Placeholder rows for a diverged checkpoint: NaN values rather than no rows or a crash."""
    splits = {"collapse": options.split, "hsic": options.hsic_split, "oinfo": "train"}[family]
    metrics = FAMILY_METRICS[family]
    if family == "hsic":
        prefix = "nhsic" if options.hsic_estimator == "nocco" else options.hsic_estimator
        metrics = (f"{prefix}_x", f"{prefix}_y")
    return [{"metric": m, "value": math.nan, "split": SPLIT_NAMES[code], "layer": layer}
            for layer in layers for code in SPLITS[splits] for m in metrics]


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


def measure_steps(series: Series, steps: dict[str, list[int]], options: MeasureOptions, device: str = "cpu",
                  threads: int | None = None, on_step: Callable[[int], None] | None = None,
                  ) -> tuple[dict[str, list[dict]], list[tuple[str, str]]]:
    """Rows of the feature families at the given steps of one series, and problems met.

    Problems are ("error", message) for a checkpoint that could not be read (it is skipped) and
    ("warning", message) for one whose features are not finite (its values are NaN).

    ``steps`` maps a family to the steps it still needs. Runs in a worker process with
    ``--workers``, so it takes and returns plain data only.
    """
    from grokscope.context import SeriesContext, iter_features
    from grokscope.features import resolve_device

    if threads:
        torch.set_num_threads(threads)
    context = SeriesContext.open(series)
    rows: dict[str, list[dict]] = {family: [] for family in steps}
    problems: list[tuple[str, str]] = []
    all_steps = sorted(set().union(*steps.values())) if steps else []
    if not all_steps:
        return rows, problems
    layers = list(options.layers) if options.layers else [_penultimate(context)]
    samples = context.samples()
    torch_device = resolve_device(device)
    labels = torch.from_numpy(samples.labels).to(torch_device)
    split = torch.from_numpy(samples.split).to(torch_device)
    references, inputs = None, None
    if "hsic" in steps:
        inputs = torch.from_numpy(hsic_inputs(context.inputs())).to(torch_device)
        references = hsic_references(inputs, labels, split, options)

    def on_error(step, error):
        problems.append(("error", str(error)))

    features_dir = series.features_dir
    for item in iter_features(context, all_steps, layers=layers, device=torch_device, on_error=on_error):
        for layer in layers:
            if item.layers[layer].shape[0] != len(samples):
                raise GrokscopeError(
                    f"{features_dir / store.step_file_name(item.step)}: {item.layers[layer].shape[0]} rows in "
                    f"{layer}, but {features_dir / store.SAMPLES_FILE} lists {len(samples)} samples"
                )
        finite = all(_finite(item.layers[layer]) for layer in layers)
        if not finite:
            problems.append(("warning", f"{series.root} step {item.step}: features are not finite (diverged?); "
                                        "its values are NaN"))
        for family, wanted in steps.items():
            if item.step not in wanted:
                continue
            if not finite:
                new = nan_rows(family, layers, options)
            elif family == "collapse":
                weight = context.output_weight(item.state) if item.checkpoint is not None else None
                new = collapse_rows(item.layers, labels, split, layers, weight, item.penultimate, options)
            elif family == "hsic":
                new = hsic_rows(item.layers, references, split, layers, options, inputs, labels)
            else:
                new = oinfo_rows(item.layers, split, layers, options)
            rows[family] += [{"step": item.step, **row} for row in new]
        if on_step is not None:
            on_step(item.step)
    return rows, problems


def _penultimate(context) -> str:
    if not context.can_compute:
        files = store.list_features(context.series.home)
        if files:  # features stored by an older probe, which wrote no record
            return store.features_header(files[-1][1])[2]
    return context.layer_keys()[1]  # a series never probed: raises, naming the probe command


def weight_rows(series: Series, steps: list[int]) -> tuple[list[dict], list[tuple[str, str]]]:
    """Weight measures of the given steps, straight from the checkpoints: no data needed."""
    from grokscope.context import SeriesContext
    from grokscope.measures.weights import weight_measures
    from grokscope.series import load_state

    layout = SeriesContext.open(series).weight_layout()
    rows, problems = [], []
    checkpoints = {c.step: c for c in series.checkpoints}
    for step in steps:
        try:
            state = load_state(checkpoints[step])
        except GrokscopeError as exc:
            problems.append(("error", str(exc)))
            continue
        measured = weight_measures(layout.fit(state), parameters=layout.groups, pairs=layout.pairs)
        rows += [{"step": step, "split": None, **row} for row in measured]
    return rows, problems


def complexity_rows(series: Series, steps: list[int], options: MeasureOptions, device: str = "cpu",
                    threads: int | None = None) -> tuple[list[dict], list[tuple[str, str]]]:
    """Rows of the complexity family (DeMoss et al.) at the given steps of one series, and problems met.

    The model and the training set come from the series (a run's run.json, another series' probe
    record); the loss is the run's own training loss (cross-entropy for another tool's series) over
    the whole training split, on the model's output read as class logits. Runs in a worker
    process with ``--workers``.
    """
    from grokscope.context import SeriesContext
    from grokscope.features import inputs_on, output_logits, parameter_groups, resolve_device
    from grokscope.measures.complexity import model_error, model_loss, rate_distortion
    from grokscope.series import load_state

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
    rows, problems = [], []
    for step in steps:
        try:
            state = layout.fit(load_state(checkpoints[step], device=torch_device))
        except GrokscopeError as exc:
            problems.append(("error", str(exc)))
            continue
        results = rate_distortion(state, loss, options.tolerance, compressor=options.compressor, error=error,
                                  names=names)
        if any(math.isnan(r.bits) for r in results):
            problems.append(("warning", f"{series.root} step {step}: weights or loss not finite (diverged?); "
                                        "its complexity is NaN"))
        rows += [{"step": step, **row} for row in complexity_result_rows(results, len(targets))]
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


# --- per series ----------------------------------------------------------------------------


@dataclass
class SeriesPlan:
    series: Series
    columns: dict  # run name and hyperparameters, repeated on every row
    existing: dict[str, pd.DataFrame]
    todo: dict[str, list[int]]  # family -> steps still to measure

    @property
    def n_steps(self) -> int:
        """Checkpoints to visit (the grokking family reads the history only)."""
        return len(set().union(*(s for f, s in self.todo.items() if f != "grokking")))


def plan_series(series: Series, families: Iterable[str], options: MeasureOptions,
                select: Callable[[list[int]], list[int]], force: bool) -> SeriesPlan:
    """What is already measured with the same parameters, and what remains."""
    from grokscope.context import SeriesContext

    context = SeriesContext.open(series)
    checkpoint_steps = [c.step for c in series.checkpoints]
    feature_steps = [s for s, _ in store.list_features(series.home)]
    if options.layers:
        context.layer_keys(options.layers)  # an unknown --layer fails before any work
    needs_model = any(f == "complexity" for f in families) or (any(f in FEATURE_FAMILIES for f in families)
                                                                and not feature_steps)
    if needs_model and not context.can_compute:
        context.layer_keys()  # raises: names the series and the probe command to run
    existing: dict[str, pd.DataFrame] = {}
    todo: dict[str, list[int]] = {}
    for family in families:
        path = store.measures_path(series.home, family)
        table = store.read_table(path) if path.is_file() and not force else None
        params = options.params(family)
        if table is not None and "params" in table and len(table) and (table["params"] != params).any():
            table = None  # measured with other settings: recompute every step rather than mix them
        existing[family] = table if table is not None else pd.DataFrame()
        if family == "grokking":
            todo[family] = [] if len(existing[family]) else [-1]
            continue
        available = checkpoint_steps if family in CHECKPOINT_FAMILIES else sorted(set(checkpoint_steps) | set(feature_steps))
        if series.selected is not None:
            available = [s for s in available if s in series.selected]
        done = set(existing[family]["step"]) if len(existing[family]) else set()
        todo[family] = [s for s in select(available) if s not in done]
    return SeriesPlan(series, context.columns, existing, todo)


def finish_table(columns: dict, family: str, rows: list[dict], options: MeasureOptions,
                 existing: pd.DataFrame) -> pd.DataFrame:
    """New rows in the table format, merged with what was there, sorted by step."""
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
    table = pd.concat([t for t in (existing, new) if len(t)], ignore_index=True) if len(existing) else new
    if not len(table):
        return table
    front = ["run", "step", "metric", "value", "split", "layer"]
    table = table[front + [c for c in table.columns if c not in front]]
    return table.sort_values(["step", "metric"], kind="stable").reset_index(drop=True)


def grokking_table_rows(series: Series, options: MeasureOptions) -> tuple[list[dict], list[tuple[str, str]]]:
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
            [("warning", warning)]
    return grokking_rows(history, threshold=options.threshold), []


def default_threads(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def chunk(steps: list[int], n_chunks: int) -> list[list[int]]:
    n_chunks = max(1, min(n_chunks, len(steps)))
    return [list(part) for part in np.array_split(np.asarray(steps, dtype=np.int64), n_chunks) if len(part)]
