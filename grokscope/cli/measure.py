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

  grokscope measure runs/add-p97 --metric o-info --ties index -o authors.parquet   # the authors' order-dependent ranks

  grokscope measure runs/add-p97 --metric rnc1 --format csv | head

  grokscope measure ckpts/ --metric weights        # another tool's series: weights need no probe

  grokscope probe ckpts/ --model net.py:build --data d.npz | grokscope measure - --metric all

  grokscope measure runs/ --metric complexity --workers 2        # DeMoss et al.'s complexity curve

  grokscope measure runs/add-p97 --metric complexity --tolerance 0.01,0.03,0.1,0.3,1 --steps every:10

Families: collapse (within_var, between_var, nc1, rnc1, rnc1_sup, nc1_papyan, nc2_*, nc3, nc4),
hsic (nhsic_x, nhsic_y; hsic_* or cka_* with --hsic-estimator), o-info (synergy, redundancy), weights (weight_norm, param_norm,
balancedness, spectral_entropy, effective_rank, stable_rank), grokking (memorization_step,
generalization_step, grokking_gap), complexity (complexity in bits, complexity_tau,
complexity_bin_size, complexity_loss, complexity_bound, complexity_rank, ...), or all. A metric name computes its family and reports that
metric. Runs that were never probed get their features computed in memory. Checkpoints already
measured with the same settings are skipped unless --force.
"""


def measure(
    inputs: List[str] = typer.Argument(..., help="Runs, checkpoint series (probed, for every family but weights), folders of them, files that probe printed, or - to read paths from stdin."),
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
    hsic_passes: int = typer.Option(3, "--hsic-passes", help="hsic: passes over the samples, each in a new random order; value = their mean, value_sd = their spread (the authors make 3)."),
    hsic_order: str = typer.Option("shuffled", "--hsic-order", help="hsic: shuffled (seeded by --seed, as the authors' loader) or stored (batches follow the stored sample order)."),
    bins: int = typer.Option(10, "--bins", help="o-info: Ward clusters of neurons."),
    variables: str = typer.Option("neurons", "--variables", help="o-info: neurons (authors' code) or bins (paper's text)."),
    min_size: int = typer.Option(2, "--min-size", help="o-info: smallest multiplet, in bins."),
    max_size: Optional[int] = typer.Option(None, "--max-size", help="o-info: largest multiplet, in bins (default all)."),
    search: str = typer.Option("auto", "--search", help="o-info: auto, exhaustive, greedy or annealing."),
    per_size: bool = typer.Option(False, "--per-size", help="o-info: also the extremes of every multiplet size."),
    ties: str = typer.Option("random", "--ties", help="o-info: order of tied activations (ReLU zeros): random (mean over --tie-draws orders), average (exact mean covariance) or index (row order, the authors'; order-dependent)."),
    tie_draws: int = typer.Option(10, "--tie-draws", help="o-info: random tie orders each reported multiplet is evaluated on; value = their mean (random ties), value_sd = their spread."),
    seed: int = typer.Option(0, "--seed", help="o-info: seed of the random tie orders and annealing; hsic: of the batch shuffles."),
    units: str = typer.Option("bits", "--units", help="o-info: bits or nats."),
    bias_correction: bool = typer.Option(True, "--bias-correction/--no-bias-correction", help="o-info: Ince et al.'s entropy bias correction."),
    threshold: float = typer.Option(0.99, "--threshold", help="grokking: the accuracy that counts as reached."),
    tolerance: str = typer.Option("0.1", "--tolerance", help="complexity: loss increase allowed to the coarse-grained network; a list ('0.01,0.1,1') gives a rate-distortion curve."),
    compressor: str = typer.Option("bz2", "--compressor", help="complexity: bz2 (the authors') or lzma."),
    workers: int = typer.Option(1, "--workers", "-j", help="Measure checkpoints in N parallel processes."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    allow_global: Optional[List[str]] = typer.Option(None, "--allow-global", help="Let pickled checkpoints hold this class (module.Name, repeatable); only for files you trust."),
    force: bool = typer.Option(False, "--force", help="Recompute checkpoints already measured."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr; only paths on stdout."),
) -> None:
    """Compute measures over checkpoint series into tidy Parquet tables (measures/<family>.parquet)."""
    from grokscope import measuring, store
    from grokscope.series import find_series, parse_steps, trust_globals

    output = Output(quiet=quiet)
    if fmt is not None and fmt not in ("csv", "json"):
        raise GrokscopeError(f"--format: unknown format {fmt!r}; known: csv, json")
    if workers < 1:
        raise GrokscopeError(f"--workers: must be at least 1, got {workers}")
    for option, value, allowed in (("--split", split, ("train", "test", "both")),
                                   ("--hsic-split", hsic_split, ("train", "test", "both")),
                                   ("--hsic-estimator", hsic_estimator, ("nocco", "hsic", "cka")),
                                   ("--hsic-bandwidth", hsic_bandwidth, ("fixed", "median")),
                                   ("--hsic-order", hsic_order, ("shuffled", "stored")),
                                   ("--variables", variables, ("neurons", "bins")),
                                   ("--search", search, ("auto", "exhaustive", "greedy", "annealing")),
                                   ("--ties", ties, ("random", "average", "index")),
                                   ("--units", units, ("bits", "nats"))):
        if value not in allowed:
            raise GrokscopeError(f"{option}: unknown value {value!r}; known: {', '.join(allowed)}")
    for option, value, least in (("--hsic-passes", hsic_passes, 1), ("--hsic-batch-size", hsic_batch_size, 0),
                                 ("--tie-draws", tie_draws, 1 if ties == "random" else 0), ("--bins", bins, 1)):
        if value < least:
            raise GrokscopeError(f"{option}: must be at least {least}, got {value}"
                                 + (" (--ties random averages over the draws)" if option == "--tie-draws" else ""))
    if hsic_batch_size == 1:
        raise GrokscopeError("--hsic-batch-size: a batch needs at least 2 samples (0 for the full sample)")
    if not hsic_sigma > 0:
        raise GrokscopeError(f"--hsic-sigma: must be positive, got {hsic_sigma}")
    wanted = measuring.resolve_metrics(metric)
    estimators = {m.split("_")[0] for m in wanted.get("hsic") or ()}
    named = {"nhsic": "nocco", "hsic": "hsic", "cka": "cka"}
    if len(estimators) > 1:
        raise GrokscopeError(f"--metric: {', '.join(sorted(wanted['hsic']))} need different estimators; ask for one at a time")
    if estimators and hsic_estimator == "nocco":
        hsic_estimator = named[estimators.pop()]  # --metric cka_x implies --hsic-estimator cka
    from grokscope.sweep import parse_values

    tolerances = tuple(parse_values("--tolerance", tolerance, float))
    if not all(0 <= t < float("inf") for t in tolerances):
        raise GrokscopeError(f"--tolerance: every value must be a finite number >= 0, got {tolerance!r}")
    if compressor not in ("bz2", "lzma"):
        raise GrokscopeError(f"--compressor: unknown {compressor!r}; known: bz2, lzma")
    options = measuring.MeasureOptions(
        split=split, layers=tuple(layer) if layer else None, hsic_split=hsic_split,
        hsic_batch_size=hsic_batch_size or None, hsic_sigma=hsic_sigma, hsic_bandwidth=hsic_bandwidth,
        hsic_estimator=hsic_estimator, hsic_passes=hsic_passes, hsic_shuffle=hsic_order == "shuffled",
        bins=bins, variables=variables, min_size=min_size, max_size=max_size, search=search,
        per_size=per_size, ties=ties, tie_draws=tie_draws, seed=seed, units=units, bias_correction=bias_correction,
        threshold=threshold, tolerance=tolerances, compressor=compressor,
    )
    if out_table is not None:
        if out_table.suffix != ".parquet":
            raise GrokscopeError(f"--output: {out_table} must end in .parquet")
        if not out_table.parent.is_dir():
            raise GrokscopeError(f"--output: folder {out_table.parent} does not exist")
    selection = parse_steps(steps)
    trust_globals(allow_global or [])
    plans = [measuring.plan_series(found, wanted, options, selection.select, force) for found in find_series(inputs)]

    failures: set[str] = set()
    tables: dict[Path, dict[str, object]] = {}
    with output.progress() as bar:
        task = bar.add_task("measure", total=sum(plan.n_steps for plan in plans))
        for plan in plans:
            root = plan.series.root
            bar.update(task, description=plan.columns["run"])
            try:
                rows, problems = _measure_series(plan, options, workers, device, lambda n: bar.advance(task, n))
            except GrokscopeError as exc:
                raise GrokscopeError(str(exc) if str(root) in str(exc) else f"{root}: {exc}") from None
            for kind, message in dict.fromkeys(problems):  # a bad checkpoint is named once
                (output.error if kind == "error" else output.warn)(message)
                if kind == "error":
                    failures.add(message)
            home = plan.series.home
            tables[home] = {}
            for family in wanted:
                table = measuring.finish_table(plan.columns, family, rows.get(family, []), options,
                                               plan.existing[family])
                if rows.get(family):  # unchanged tables are not rewritten
                    path = store.measures_path(home, family)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    store.write_table(path, table)
                tables[home][family] = table

    _report(output, wanted, tables, out_table, fmt)
    if failures:
        output.error(f"{len(failures)} checkpoint(s) could not be measured (see above)")
        raise typer.Exit(1)


def _measure_series(plan, options, workers: int, device: str, advance):
    """Rows per family of one series, and the problems met (see measuring.measure_steps)."""
    from grokscope import measuring

    series = plan.series
    rows: dict[str, list[dict]] = {family: [] for family in plan.todo}
    problems: list[tuple[str, str]] = []
    if plan.todo.get("grokking"):
        rows["grokking"], problems = measuring.grokking_table_rows(series, options)
        advance(0)
    feature_todo = {f: s for f, s in plan.todo.items() if f in measuring.FEATURE_FAMILIES and s}
    feature_steps = sorted(set().union(*feature_todo.values())) if feature_todo else []
    if plan.todo.get("weights"):
        rows["weights"], weight_problems = measuring.weight_rows(series, plan.todo["weights"])
        problems += weight_problems
        advance(len([s for s in plan.todo["weights"] if s not in set(feature_steps)]))
    if plan.todo.get("complexity"):
        counted = set(feature_steps) | set(plan.todo.get("weights", []))
        rows["complexity"] = _complexity_rows(plan, options, workers, device, problems,
                                              lambda steps: advance(len([s for s in steps if s not in counted])))
    if not feature_steps:
        return rows, problems
    if workers == 1:
        found, found_problems = measuring.measure_steps(series, feature_todo, options, device,
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
            futures[pool.submit(measuring.measure_steps, series, todo, options, device, threads)] = len(part)
        for future in as_completed(futures):
            found, found_problems = future.result()
            _merge(rows, problems, found, found_problems)
            advance(futures[future])
    return rows, problems


def _complexity_rows(plan, options, workers: int, device: str, problems: list, advance) -> list[dict]:
    """The complexity family's rows of one series, its checkpoints shared among ``workers`` processes."""
    from grokscope import measuring

    series, steps = plan.series, plan.todo["complexity"]
    if workers == 1:
        found, found_problems = measuring.complexity_rows(series, steps, options, device)
        problems.extend(found_problems)
        advance(steps)
        return found

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    rows = []
    threads = measuring.default_threads(workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(measuring.complexity_rows, series, part, options, device, threads): part
                   for part in measuring.chunk(steps, workers * 4)}
        for future in as_completed(futures):
            found, found_problems = future.result()
            rows += found
            problems.extend(found_problems)
            advance(futures[future])
    return rows


def _merge(rows, problems, found, found_problems) -> None:
    for family, new in found.items():
        rows.setdefault(family, []).extend(new)
    problems.extend(found_problems)


def _report(output: Output, wanted, tables, out_table: Optional[Path], fmt: Optional[str]) -> None:
    """Print what was written (paths), or the rows themselves (--format), or the combined table (-o)."""
    import pandas as pd

    from grokscope import store

    if out_table is None and fmt is None:
        for home, families in tables.items():
            for family, table in families.items():
                if len(table):
                    output.result(store.measures_path(home, family))
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
