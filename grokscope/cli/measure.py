"""Measure checkpoint series: neural collapse, nHSIC, O-information, weight and grokking measures."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from grokscope.cli.output import Output
from grokscope.errors import GrokscopeError

EPILOG = """\
Examples:

  grokscope measure runs/add-p97 --metric collapse,hsic     # measures/collapse.parquet, hsic.parquet

  grokscope measure runs/ --metric all --workers 2 -o all.parquet   # every run below runs/, one table

  grokscope measure runs/add-p97 --metric o-info --steps every:4 --per-size

  grokscope measure runs/add-p97 --metric rnc1 --format csv | head

  grokscope measure runs/add-p113-transformer --metric fourier --key-frequencies 14,35,41,42,52

Families: collapse (within_var, between_var, nc1, rnc1, rnc1_sup, nc1_papyan, nc2_*, nc3, nc4),
hsic (nhsic_x, nhsic_y; hsic_* or cka_* with --hsic-estimator), o-info (synergy, redundancy), weights (weight_norm, param_norm,
balancedness, spectral_entropy, effective_rank, stable_rank), grokking (memorization_step,
generalization_step, grokking_gap), fourier (modular arithmetic: fourier_norm, fourier_gini,
key_frequency, restricted_loss, excluded_loss; Nanda et al. 2023), or all. A metric name
computes its family and reports that metric. Runs that were never probed get their features
computed in memory. Checkpoints already measured with the same settings are skipped unless
--force.
"""


def measure(
    inputs: List[str] = typer.Argument(..., help="Run directories, folders of runs, or - to read paths from stdin."),
    metric: List[str] = typer.Option(["collapse"], "--metric", "-m", help="Families or metric names, comma-separated or repeated."),
    out_table: Optional[Path] = typer.Option(None, "--output", "-o", help="Write one combined Parquet table here (and print only its path)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="csv or json: write the rows to stdout instead of paths."),
    steps: Optional[str] = typer.Option(None, "--steps", help="Checkpoints to measure: '1200', '0-1000', '2000-', 'every:5' (default all)."),
    split: str = typer.Option("both", "--split", help="collapse: train, test or both."),
    layer: Optional[List[str]] = typer.Option(None, "--layer", help="Feature keys to measure (default: the penultimate layer)."),
    hsic_split: str = typer.Option("test", "--hsic-split", help="hsic: the split to estimate on (the authors use test)."),
    hsic_batch_size: int = typer.Option(100, "--hsic-batch-size", help="hsic: minibatch size; 0 for the full sample."),
    hsic_sigma: float = typer.Option(5.0, "--hsic-sigma", help="hsic: Gaussian kernel width (scaled by the feature dimension)."),
    hsic_bandwidth: str = typer.Option("fixed", "--hsic-bandwidth", help="hsic: fixed (sigma) or median heuristic."),
    hsic_estimator: str = typer.Option("nocco", "--hsic-estimator", help="hsic: nocco (normalised HSIC, nhsic_*), hsic (biased HSIC, hsic_*) or cka (cka_*)."),
    bins: int = typer.Option(10, "--bins", help="o-info: Ward clusters of neurons."),
    variables: str = typer.Option("neurons", "--variables", help="o-info: neurons (authors' code) or bins (paper's text)."),
    min_size: int = typer.Option(2, "--min-size", help="o-info: smallest multiplet, in bins."),
    max_size: Optional[int] = typer.Option(None, "--max-size", help="o-info: largest multiplet, in bins (default all)."),
    search: str = typer.Option("auto", "--search", help="o-info: auto, exhaustive, greedy or annealing."),
    per_size: bool = typer.Option(False, "--per-size", help="o-info: also the extremes of every multiplet size."),
    ties: str = typer.Option("random", "--ties", help="o-info: break rank ties at random (seeded) or by index."),
    seed: int = typer.Option(0, "--seed", help="o-info: seed of tie-breaking and annealing."),
    units: str = typer.Option("bits", "--units", help="o-info: bits or nats."),
    bias_correction: bool = typer.Option(True, "--bias-correction/--no-bias-correction", help="o-info: Ince et al.'s entropy bias correction."),
    threshold: float = typer.Option(0.99, "--threshold", help="grokking: the accuracy that counts as reached."),
    key_frequencies: Optional[str] = typer.Option(None, "--key-frequencies", help="fourier: the key frequencies, e.g. 14,35,41 (default: read off each run's last checkpoint)."),
    workers: int = typer.Option(1, "--workers", "-j", help="Measure checkpoints in N parallel processes."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    force: bool = typer.Option(False, "--force", help="Recompute checkpoints already measured."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr; only paths on stdout."),
) -> None:
    """Compute measures over checkpoint series into tidy Parquet tables (measures/<family>.parquet)."""
    from grokscope import measuring, store
    from grokscope.series import parse_steps

    output = Output(quiet=quiet)
    if fmt is not None and fmt not in ("csv", "json"):
        raise GrokscopeError(f"--format: unknown format {fmt!r}; known: csv, json")
    if workers < 1:
        raise GrokscopeError(f"--workers: must be at least 1, got {workers}")
    for option, value, allowed in (("--split", split, ("train", "test", "both")),
                                   ("--hsic-split", hsic_split, ("train", "test", "both")),
                                   ("--hsic-estimator", hsic_estimator, ("nocco", "hsic", "cka"))):
        if value not in allowed:
            raise GrokscopeError(f"{option}: unknown split {value!r}; known: {', '.join(allowed)}")
    wanted = measuring.resolve_metrics(metric)
    estimators = {m.split("_")[0] for m in wanted.get("hsic") or ()}
    named = {"nhsic": "nocco", "hsic": "hsic", "cka": "cka"}
    if len(estimators) > 1:
        raise GrokscopeError(f"--metric: {', '.join(sorted(wanted['hsic']))} need different estimators; ask for one at a time")
    if estimators and hsic_estimator == "nocco":
        hsic_estimator = named[estimators.pop()]  # --metric cka_x implies --hsic-estimator cka
    options = measuring.MeasureOptions(
        split=split, layers=tuple(layer) if layer else None, hsic_split=hsic_split,
        hsic_batch_size=hsic_batch_size or None, hsic_sigma=hsic_sigma, hsic_bandwidth=hsic_bandwidth,
        hsic_estimator=hsic_estimator,
        bins=bins, variables=variables, min_size=min_size, max_size=max_size, search=search,
        per_size=per_size, ties=ties, seed=seed, units=units, bias_correction=bias_correction,
        threshold=threshold, key_frequencies=_key_frequencies(key_frequencies),
    )
    if out_table is not None:
        if out_table.suffix != ".parquet":
            raise GrokscopeError(f"--output: {out_table} must end in .parquet")
        if not out_table.parent.is_dir():
            raise GrokscopeError(f"--output: folder {out_table.parent} does not exist")
    selection = parse_steps(steps)
    runs = store.find_runs(inputs)
    plans = [measuring.plan_run(run, wanted, options, selection.select, force) for run in runs]

    failures: set[str] = set()
    tables: dict[Path, dict[str, object]] = {}
    with output.progress() as bar:
        task = bar.add_task("measure", total=sum(plan.n_steps for plan in plans))
        for plan in plans:
            run_dir = plan.context.run_dir
            bar.update(task, description=plan.context.config.name)
            try:
                rows, problems = _measure_run(plan, options, workers, device, lambda n: bar.advance(task, n))
            except GrokscopeError as exc:
                raise GrokscopeError(str(exc) if str(run_dir) in str(exc) else f"{run_dir}: {exc}") from None
            for kind, message in dict.fromkeys(problems):  # a bad checkpoint is named once
                (output.error if kind == "error" else output.warn)(message)
                if kind == "error":
                    failures.add(message)
            tables[run_dir] = {}
            for family in wanted:
                table = measuring.finish_table(plan.context, family, rows.get(family, []), options,
                                               plan.existing[family])
                if rows.get(family):  # unchanged tables are not rewritten
                    path = store.measures_path(run_dir, family)
                    path.parent.mkdir(exist_ok=True)
                    store.write_table(path, table)
                tables[run_dir][family] = table

    _report(output, wanted, tables, out_table, fmt)
    if failures:
        output.error(f"{len(failures)} checkpoint(s) could not be measured (see above)")
        raise typer.Exit(1)


def _measure_run(plan, options, workers: int, device: str, advance):
    """Rows per family of one run, and the problems met (see measuring.measure_steps)."""
    from grokscope import measuring

    run_dir = plan.context.run_dir
    rows: dict[str, list[dict]] = {family: [] for family in plan.todo}
    problems: list[tuple[str, str]] = []
    if plan.todo.get("grokking"):
        rows["grokking"] = measuring.grokking_table_rows(run_dir, options)
        advance(0)
    feature_todo = {f: s for f, s in plan.todo.items() if f in measuring.FEATURE_FAMILIES and s}
    feature_steps = sorted(set().union(*feature_todo.values())) if feature_todo else []
    if plan.todo.get("weights"):
        rows["weights"], problems = measuring.weight_rows(run_dir, plan.todo["weights"])
        advance(len([s for s in plan.todo["weights"] if s not in set(feature_steps)]))
    if plan.todo.get("fourier"):
        rows["fourier"], fourier_problems = measuring.fourier_rows(run_dir, plan.todo["fourier"], options, device)
        problems += fourier_problems
        done = set(feature_steps) | set(plan.todo.get("weights") or ())
        advance(len([s for s in plan.todo["fourier"] if s not in done]))
    if not feature_steps:
        return rows, problems
    if workers == 1:
        found, found_problems = measuring.measure_steps(run_dir, feature_todo, options, device,
                                                        on_step=lambda step: advance(1))
        _merge(rows, problems, found, found_problems)
        return rows, problems

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = measuring.default_threads(workers)
    # spawn, not fork: a forked torch with live thread pools can deadlock.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {}
        for part in measuring.chunk(feature_steps, workers * 4):
            part_set = set(int(s) for s in part)
            todo = {f: [s for s in steps if s in part_set] for f, steps in feature_todo.items()}
            futures[pool.submit(measuring.measure_steps, run_dir, todo, options, device, threads)] = len(part)
        for future in as_completed(futures):
            found, found_problems = future.result()
            _merge(rows, problems, found, found_problems)
            advance(futures[future])
    return rows, problems


def _key_frequencies(text: Optional[str]) -> Optional[tuple[int, ...]]:
    if text is None:
        return None
    from grokscope.sweep import parse_values

    values = parse_values("--key-frequencies", text, int)
    if any(k < 1 for k in values):
        raise GrokscopeError(f"--key-frequencies: frequencies are positive integers, got {text!r}")
    return tuple(sorted(values))


def _merge(rows, problems, found, found_problems) -> None:
    for family, new in found.items():
        rows.setdefault(family, []).extend(new)
    problems.extend(found_problems)


def _report(output: Output, wanted, tables, out_table: Optional[Path], fmt: Optional[str]) -> None:
    """Print what was written (paths), or the rows themselves (--format), or the combined table (-o)."""
    import pandas as pd

    from grokscope import store

    if out_table is None and fmt is None:
        for run_dir, families in tables.items():
            for family, table in families.items():
                if len(table):
                    output.result(store.measures_path(run_dir, family))
        return
    selected = []
    for families in tables.values():
        for family, table in families.items():
            if len(table) and wanted[family] is not None:
                table = table[table["metric"].isin(wanted[family])]
            if len(table):
                selected.append(table)
    combined = pd.concat(selected, ignore_index=True) if selected else pd.DataFrame()
    if out_table is not None:
        store.write_table(out_table, combined)
        output.result(out_table)
    if fmt is not None:
        output.rows(combined, fmt)
