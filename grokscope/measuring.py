"""Map the measure families over a run's checkpoint series into tidy tables.

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
from grokscope.config import RunConfig, hyperparameters
from grokscope.errors import GrokscopeError

FAMILY_METRICS = {
    "collapse": ("within_var", "between_var", "nc1", "rnc1", "rnc1_sup", "nc1_papyan", "nc2_equinorm",
                 "nc2_equiangularity", "nc2_cond", "nc3", "nc4"),
    "hsic": ("nhsic_x", "nhsic_y", "hsic_x", "hsic_y", "cka_x", "cka_y"),
    "weights": ("weight_norm", "param_norm", "balancedness", "spectral_entropy", "effective_rank", "stable_rank"),
    "grokking": ("memorization_step", "generalization_step", "grokking_gap"),
    "oinfo": ("synergy", "redundancy"),
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
    # hsic: the authors estimate on the test split in minibatches of 100.
    hsic_split: str = "test"
    hsic_batch_size: int | None = 100
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
    ties: str = "random"
    seed: int = 0
    units: str = "bits"
    bias_correction: bool = True
    # grokking: the accuracy that counts as "reached".
    threshold: float = 0.99
    # fourier: None reads the key frequencies off the run's last checkpoint, as Nanda et al. fix
    # them from the trained model; give them to pin them.
    key_frequencies: tuple[int, ...] | None = None

    def params(self, family: str) -> str:
        """The options that shape a family's values, as the JSON stored beside them."""
        fields = {
            "collapse": ("split", "layers"),
            "hsic": ("hsic_split", "hsic_batch_size", "hsic_sigma", "hsic_bandwidth", "hsic_estimator", "layers"),
            "oinfo": ("bins", "variables", "min_size", "max_size", "search", "per_size", "ties", "seed",
                      "units", "bias_correction", "layers"),
            "weights": (),
            "grokking": ("threshold",),
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


@dataclass
class RunContext:
    """What every family needs of a run, read once."""

    run_dir: Path
    config: RunConfig
    columns: dict  # run name and hyperparameters, repeated on every row

    @classmethod
    def open(cls, run_dir: Path) -> "RunContext":
        config = store.read_run(run_dir)
        return cls(Path(run_dir), config, {"run": config.name, **hyperparameters(config)})

    @property
    def output_weight_key(self) -> str:
        from grokscope.model import output_weight_key

        return output_weight_key(self.config.model)


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
        references[code] = hsic_reference(inputs[mask], labels[mask], sigma=options.hsic_sigma,
                                          batch_size=options.hsic_batch_size, bandwidth=options.hsic_bandwidth)
    return references


def hsic_rows(features, references: dict[int, object], split: torch.Tensor, layers: list[str],
              options: MeasureOptions, inputs: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    from grokscope.measures.hsic import cka, hsic, hsic_measures

    plain = {"hsic": hsic, "cka": cka}
    rows = []
    for code, reference in references.items():
        mask = split == code
        for layer in layers:
            t = features[layer][mask]
            if options.hsic_estimator == "nocco":
                values = hsic_measures(t, reference)
            else:
                estimate = plain[options.hsic_estimator]
                kwargs = dict(sigma=options.hsic_sigma, batch_size=options.hsic_batch_size,
                              bandwidth=options.hsic_bandwidth)
                values = {f"{options.hsic_estimator}_x": estimate(t, inputs[mask], **kwargs),
                          f"{options.hsic_estimator}_y": estimate(t, labels[mask], **kwargs)}
            rows += [{"metric": k, "value": v, "split": SPLIT_NAMES[code], "layer": layer} for k, v in values.items()]
    return rows


def oinfo_rows(features, split: torch.Tensor, layers: list[str], options: MeasureOptions) -> list[dict]:
    from grokscope.measures.multiplets import oinfo_search

    rows = []
    train = split == 0
    for layer in layers:
        found = oinfo_search(
            features[layer][train], n_bins=options.bins, variables=options.variables, min_size=options.min_size,
            max_size=options.max_size, search=options.search, per_size=options.per_size, ties=options.ties,
            seed=options.seed, units=options.units, bias_correction=options.bias_correction,
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


def measure_steps(run_dir: Path, steps: dict[str, list[int]], options: MeasureOptions, device: str = "cpu",
                  threads: int | None = None, on_step: Callable[[int], None] | None = None,
                  ) -> tuple[dict[str, list[dict]], list[tuple[str, str]]]:
    """Rows of the feature families at the given steps of one run, and problems met.

    Problems are ("error", message) for a checkpoint that could not be read (it is skipped) and
    ("warning", message) for one whose features are not finite (its values are NaN).

    ``steps`` maps a family to the steps it still needs. Runs in a worker process with
    ``--workers``, so it takes and returns plain data only.
    """
    from grokscope.features import iter_run_features, load_samples, resolve_device, run_dataset, run_layer_keys

    if threads:
        torch.set_num_threads(threads)
    context = RunContext.open(run_dir)
    rows: dict[str, list[dict]] = {family: [] for family in steps}
    problems: list[tuple[str, str]] = []
    all_steps = sorted(set().union(*steps.values())) if steps else []
    if not all_steps:
        return rows, problems
    keys, penultimate = run_layer_keys(run_dir, options.layers)
    layers = list(options.layers) if options.layers else [penultimate]
    samples = load_samples(run_dir)
    torch_device = resolve_device(device)
    labels = torch.from_numpy(samples.labels).to(torch_device)
    split = torch.from_numpy(samples.split).to(torch_device)
    references, inputs = None, None
    if "hsic" in steps:
        # Through features' rebuild, so a split that no longer matches run.json is caught here too.
        inputs = torch.from_numpy(run_dataset(run_dir).x[samples.index]).to(torch_device)
        references = hsic_references(inputs, labels, split, options)

    def on_error(step, error):
        problems.append(("error", str(error)))

    for item in iter_run_features(run_dir, all_steps, layers=layers, device=torch_device, on_error=on_error):
        for layer in layers:
            if item.layers[layer].shape[0] != len(samples):
                raise GrokscopeError(
                    f"{store.features_path(run_dir, item.step)}: {item.layers[layer].shape[0]} rows in {layer}, "
                    f"but {store.samples_path(run_dir)} lists {len(samples)} samples"
                )
        finite = all(_finite(item.layers[layer]) for layer in layers)
        if not finite:
            problems.append(("warning", f"{run_dir} step {item.step}: features are not finite (diverged?); its values are NaN"))
        for family, wanted in steps.items():
            if item.step not in wanted:
                continue
            if not finite:
                new = nan_rows(family, layers, options)
            elif family == "collapse":
                weight = item.state.get(context.output_weight_key)
                new = collapse_rows(item.layers, labels, split, layers, weight, item.penultimate, options)
            elif family == "hsic":
                new = hsic_rows(item.layers, references, split, layers, options, inputs, labels)
            else:
                new = oinfo_rows(item.layers, split, layers, options)
            rows[family] += [{"step": item.step, **row} for row in new]
        if on_step is not None:
            on_step(item.step)
    return rows, problems


def weight_rows(run_dir: Path, steps: list[int]) -> tuple[list[dict], list[tuple[str, str]]]:
    from grokscope.measures.weights import weight_measures
    from grokscope.series import load_state, run_checkpoints

    rows, problems = [], []
    checkpoints = {c.step: c for c in run_checkpoints(run_dir)}
    for step in steps:
        try:
            state = load_state(checkpoints[step])
        except GrokscopeError as exc:
            problems.append(("error", str(exc)))
            continue
        rows += [{"step": step, "split": None, **row} for row in weight_measures(state)]
    return rows, problems


FOURIER_SIGNS = {"add": 1, "sub": -1}


def _fourier_matrices(state: dict, config: RunConfig) -> dict[str, torch.Tensor]:
    """Parameter name -> (p, d) matrix whose row x belongs to residue x: the embedding (for the
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


def fourier_rows(run_dir: Path, steps: list[int], options: MeasureOptions, device: str = "cpu"
                 ) -> tuple[list[dict], list[tuple[str, str]]]:
    """Rows of the fourier family at ``steps`` of a grokscope run on modular arithmetic, and problems.

    Per checkpoint: ``fourier_norm`` (one row per frequency, column ``frequency``) and
    ``fourier_gini`` of the embedding and of the output layer (layer = parameter name),
    ``key_frequency`` (one row per key frequency), and ``restricted_loss`` / ``excluded_loss`` on
    train and test (add and sub only). See :mod:`grokscope.measures.fourier`.
    """
    from grokscope.config import MODULAR_OPS
    from grokscope.features import DEFAULT_BATCH_SIZE, resolve_device, run_dataset
    from grokscope.measures import fourier
    from grokscope.model import build_model
    from grokscope.series import load_state, run_checkpoints

    config = store.read_run(run_dir)
    task = config.task
    nan_losses = [{"metric": m, "value": math.nan, "split": s} for m in ("restricted_loss", "excluded_loss")
                  for s in ("train", "test")]
    if task.name not in MODULAR_OPS:
        return ([{"step": step, **row} for step in steps for row in nan_losses],
                [("warning", f"{run_dir}: fourier measures need a modular-arithmetic task, not {task.name}; values are NaN")])
    torch_device = resolve_device(device)
    p, sign = task.p, FOURIER_SIGNS.get(task.name)
    checkpoints = {c.step: c for c in run_checkpoints(run_dir)}
    problems: list[tuple[str, str]] = []
    if sign is None:
        problems.append(("warning", f"{run_dir}: restricted and excluded loss are defined for add and sub, "
                                    f"not {task.name}; their values are NaN"))

    key = list(options.key_frequencies) if options.key_frequencies else None
    if key and max(key) > p // 2:
        raise GrokscopeError(f"--key-frequencies: {run_dir} has p = {p}, whose frequencies run 1..{p // 2}")
    if key is None and checkpoints:
        last = checkpoints[max(checkpoints)]
        try:
            embedding = next(iter(_fourier_matrices(load_state(last, torch_device), config).values()))
            key = fourier.key_frequencies(fourier.frequency_norms(embedding))
        except GrokscopeError as exc:
            problems.append(("error", str(exc)))
        if not key:
            problems.append(("warning", f"{last.path}: no key frequencies in the embedding; "
                                        "restricted and excluded loss are NaN"))
    dataset = run_dataset(run_dir)
    labels = torch.from_numpy(dataset.y).to(torch_device)  # (N,)
    split = torch.from_numpy(dataset.split).to(torch_device)  # (N,)
    x = torch.from_numpy(dataset.x).to(torch_device)  # (N, 2p)
    model = build_model(dataset.input_dim, dataset.n_classes, config.model, config.seed).to(torch_device).eval()

    rows: list[dict] = []
    for step in steps:
        try:
            state = load_state(checkpoints[step], torch_device)
            model.load_state_dict(state)
        except (GrokscopeError, KeyError, RuntimeError) as exc:
            problems.append(("error", str(exc) if isinstance(exc, GrokscopeError) else f"{run_dir} step {step}: {exc}"))
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
            new += nan_losses
        else:
            with torch.no_grad():
                logits = torch.cat([model(x[i:i + DEFAULT_BATCH_SIZE])
                                    for i in range(0, len(x), DEFAULT_BATCH_SIZE)])  # (p^2, p)
            losses = fourier.fourier_losses(logits, labels, split, p, key, sign)
            new += [{"metric": metric, "value": losses[metric][s], "split": s}
                    for metric in ("restricted_loss", "excluded_loss") for s in ("train", "test")]
            if not torch.isfinite(logits).all():
                problems.append(("warning", f"{run_dir} step {step}: logits are not finite (diverged?)"))
        rows += [{"step": step, **row} for row in new]
    return rows, problems


# --- per run -------------------------------------------------------------------------------


@dataclass
class RunPlan:
    context: RunContext
    existing: dict[str, pd.DataFrame]
    todo: dict[str, list[int]]  # family -> steps still to measure

    @property
    def n_steps(self) -> int:
        """Checkpoints to visit (the grokking family reads the history only)."""
        return len(set().union(*(s for f, s in self.todo.items() if f != "grokking")))


def plan_run(run_dir: Path, families: Iterable[str], options: MeasureOptions, select: Callable[[list[int]], list[int]],
             force: bool) -> RunPlan:
    """What is already measured with the same parameters, and what remains."""
    from grokscope.features import run_layer_keys

    context = RunContext.open(run_dir)
    checkpoint_steps = [s for s, _ in store.list_checkpoints(run_dir)]
    feature_steps = [s for s, _ in store.list_features(run_dir)]
    if options.layers:
        run_layer_keys(run_dir, options.layers)  # an unknown --layer fails before any work
    existing: dict[str, pd.DataFrame] = {}
    todo: dict[str, list[int]] = {}
    for family in families:
        path = store.measures_path(run_dir, family)
        table = store.read_table(path) if path.is_file() and not force else None
        params = options.params(family)
        if table is not None and "params" in table and len(table) and (table["params"] != params).any():
            table = None  # measured with other settings: recompute every step rather than mix them
        existing[family] = table if table is not None else pd.DataFrame()
        if family == "grokking":
            todo[family] = [] if len(existing[family]) else [-1]
            continue
        # The weight-only families read checkpoints, never stored features.
        available = checkpoint_steps if family in ("weights", "fourier") else sorted(set(checkpoint_steps) | set(feature_steps))
        done = set(existing[family]["step"]) if len(existing[family]) else set()
        todo[family] = [s for s in select(available) if s not in done]
    return RunPlan(context, existing, todo)


def finish_table(context: RunContext, family: str, rows: list[dict], options: MeasureOptions,
                 existing: pd.DataFrame) -> pd.DataFrame:
    """New rows in the table format, merged with what was there, sorted by step."""
    new = pd.DataFrame(rows)
    if len(new):
        for column in ("split", "layer"):
            if column not in new:
                new[column] = None
        for column, value in context.columns.items():
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


def grokking_table_rows(run_dir: Path, options: MeasureOptions) -> list[dict]:
    from grokscope.measures.grokking import grokking_rows

    return grokking_rows(store.read_history(run_dir), threshold=options.threshold)


def default_threads(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def chunk(steps: list[int], n_chunks: int) -> list[list[int]]:
    n_chunks = max(1, min(n_chunks, len(steps)))
    return [list(part) for part in np.array_split(np.asarray(steps, dtype=np.int64), n_chunks) if len(part)]

