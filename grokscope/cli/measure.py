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

  grokscope measure runs/ --metric o-info,collapse --scheduler tcp://head:8786   # on a Dask cluster (docs/scaling.md)

  grokscope measure runs/add-p97 --metric complexity --tolerance 0.01,0.03,0.1,0.3,1 --steps every:10

  grokscope measure runs/add-p113-transformer --metric fourier --key-frequencies 14,35,41,42,52

Families: collapse (within_var, between_var, nc1, rnc1, rnc1_sup, nc1_papyan, nc2_*, nc3, nc4),
hsic (nhsic_x, nhsic_y; hsic_* or cka_* with --hsic-estimator), o-info (synergy, redundancy), weights (weight_norm, param_norm,
balancedness, spectral_entropy, effective_rank, stable_rank), grokking (memorization_step,
generalization_step, grokking_gap), complexity (complexity in bits, complexity_tau,
complexity_bin_size, complexity_loss, complexity_bound, complexity_rank, ...), fourier
(modular arithmetic: fourier_norm, fourier_gini, key_frequency, restricted_loss, excluded_loss;
Nanda et al. 2023), or all. A metric name computes its family and reports that
metric. Runs that were never probed get their features computed in memory. Checkpoints already
measured with the same settings are skipped unless --force. Tables are saved as measuring goes
(every 30 s, GROKSCOPE_SAVE_EVERY; and on Ctrl-C): a rerun computes only the rest. -o and
--format write nothing into the runs. See docs/measure.md.
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
    key_frequencies: Optional[str] = typer.Option(None, "--key-frequencies", help="fourier: the key frequencies, e.g. 14,35,41 (default: read off each run's last checkpoint)."),
    workers: int = typer.Option(1, "--workers", "-j", help="Measure checkpoints in N local worker processes (a local Dask cluster when Dask is installed)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Measure on an existing Dask scheduler, e.g. tcp://head:8786 (or set GROKSCOPE_SCHEDULER); see docs/scaling.md."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads per task (default: the cores shared among the workers, fewer on a busy machine)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    allow_global: Optional[List[str]] = typer.Option(None, "--allow-global", help="Let pickled checkpoints hold this class (module.Name, repeatable); only for files you trust."),
    force: bool = typer.Option(False, "--force", help="Recompute checkpoints already measured."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr; only paths on stdout."),
) -> None:
    """Compute measures over checkpoint series into tidy Parquet tables (measures/<family>.parquet)."""
    from grokscope import formats, measuring
    from grokscope.discovery import iter_series, parse_steps
    from grokscope.loading import trust_globals

    output = Output(quiet=quiet)
    if fmt is not None and fmt not in ("csv", "json"):
        raise GrokscopeError(f"--format: unknown format {fmt!r}; known: csv, json")
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
    if min_size < 2:
        raise GrokscopeError(f"--min-size: a multiplet has at least 2 bins, got {min_size}")
    if max_size is not None and not min_size <= max_size <= bins:
        raise GrokscopeError(f"--max-size: must lie between --min-size ({min_size}) and --bins ({bins}), got {max_size}")
    wanted = measuring.resolve_metrics(metric)
    optional = measuring.only_through_all(metric)
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
        key_frequencies=_key_frequencies(key_frequencies),
    )
    if out_table is not None:
        if out_table.suffix != ".parquet":
            raise GrokscopeError(f"--output: {out_table} must end in .parquet")
        if not out_table.parent.is_dir():
            raise GrokscopeError(f"--output: folder {out_table.parent} does not exist")
    selection = parse_steps(steps)
    trust_globals(allow_global or [])
    # -o and --format write nothing into the series' homes (which may be read-only): they only
    # read what is already measured there.
    write_homes = out_table is None and fmt is None
    every = measuring.save_every()

    from grokscope import execution

    failures: set[str] = set()
    failed_series: list[str] = []
    results: dict[Path, measuring.SeriesTables] = {}
    printed: set[Path] = set()
    inputs = formats.inputs.InputPaths(inputs)
    with execution.open_executor(workers, scheduler, threads) as executor, output.progress() as bar:
        task = bar.add_task("measure", total=0)
        total = 0

        def finish(plan, tables, problems, error: Optional[str] = None) -> None:
            """A series is done: save, report, print its tables' paths."""
            root = plan.series.root
            tables.save()
            if error is not None:
                # The series as a whole cannot be measured (changed split, one class): said once,
                # the other series go on, and what it had measured is kept.
                message = error if str(root) in error else f"{root}: {error}"
                output.error(message)
                failed_series.append(message)
                return
            failures.update(_report_problems(output, root, problems))
            for family in wanted if write_homes else ():
                path = formats.tables.measures_path(plan.series.home, family)
                if path.is_file() and path not in printed:  # measured now or before: the next command's input
                    printed.add(path)
                    output.result(path)
            results[plan.series.home] = _merged_results(results.get(plan.series.home), tables)

        for batch in iter_series(inputs):
            plans = [measuring.plan_series(found, wanted, options, selection.select, force, optional)
                     for found in batch]
            total += sum(plan.n_steps for plan in plans)
            bar.update(task, total=total)
            open_tables = [measuring.SeriesTables(
                plan, options, write=write_homes, every=every,
                on_wait=lambda holder, path=plan.series.root: output.warn(
                    f"{path}: waiting for {holder} to finish updating its measure tables")) for plan in plans]
            try:
                if executor.in_process:
                    for plan, tables in zip(plans, open_tables):
                        bar.update(task, description=plan.columns["run"])
                        try:
                            problems = _measure_series(plan, options, executor, device,
                                                       lambda n: bar.advance(task, n), tables)
                        except GrokscopeError as exc:
                            finish(plan, tables, [], str(exc))
                            continue
                        finish(plan, tables, problems)
                else:
                    bar.update(task, description=f"measure on {executor.description}")
                    _measure_batch(plans, open_tables, options, executor, device, lambda n: bar.advance(task, n),
                                   finish, failures, output)
            except BaseException:
                for tables in open_tables:
                    tables.save()  # Ctrl-C: keep what was measured; the next run computes the rest
                raise

    if not write_homes:
        _write_combined(output, wanted, results, out_table, fmt)
    if failed_series:
        raise typer.Exit(2)
    if failures:
        output.info(f"measure: {len(failures)} checkpoint(s) could not be measured (see above)")
        raise typer.Exit(1)


def _measure_series(plan, options, executor, device: str, advance, tables) -> list:
    """Measure one series in this process into ``tables`` (saved as it goes, checkpoint by
    checkpoint); return the problems met."""
    from grokscope import execution, measuring

    execution.set_threads(executor.threads.per_task)
    series = plan.series
    problems = _measure_here(plan, options, tables, advance)
    problems += _checkpoint_families(plan, _pooled_checkpoint_families(plan), options, device, tables,
                                     set(_feature_todo(plan)[1]), advance)
    feature_todo, feature_steps = _feature_todo(plan)
    if not feature_steps:
        return problems

    def on_step(step, found):
        for family, rows in found.items():
            tables.add(family, rows)
        advance(1)
        tables.save_if_due()

    _, found = measuring.measure_steps(series, feature_todo, options, device, on_step=on_step)
    return problems + found


# Checkpoint families that run the model (seconds per checkpoint, and the --device) and are
# shared out among workers; the others (weights) take milliseconds and stay in the command's process.
POOLED_CHECKPOINT_FAMILIES = ("complexity", "fourier")


def _pooled_checkpoint_families(plan) -> list[str]:
    return [f for f in POOLED_CHECKPOINT_FAMILIES if plan.todo.get(f)]


def _feature_todo(plan):
    """(family -> steps, every step) of the feature families still to measure."""
    from grokscope import measuring

    todo = {f: s for f, s in plan.todo.items() if f in measuring.FEATURE_FAMILIES and s}
    return todo, sorted(set().union(*todo.values())) if todo else []


def _measure_here(plan, options, tables, advance) -> list:
    """The families measured in the command's process whatever the executor: grokking (from the
    history) and the cheap checkpoint families (weights). Returns the problems met."""
    from grokscope import measuring

    series = plan.series
    problems: list = []
    if plan.todo.get("grokking"):
        rows, found = measuring.grokking_table_rows(series, options)
        tables.add("grokking", rows)
        problems += [measuring.Problem.of(p) for p in found]
        advance(0)
    counted = set(_feature_todo(plan)[1]) | {s for f in _pooled_checkpoint_families(plan) for s in plan.todo[f]}
    cheap = [f for f in measuring.CHECKPOINT_FAMILIES if plan.todo.get(f) and f not in POOLED_CHECKPOINT_FAMILIES]
    return problems + _checkpoint_families(plan, cheap, options, "cpu", tables, counted, advance)


def _checkpoint_families(plan, families, options, device: str, tables, counted: set, advance) -> list:
    """Measure ``families`` (of CHECKPOINT_FAMILIES) in this process, checkpoint by checkpoint,
    into ``tables``; a checkpoint advances the bar once, whichever family visits it (``counted``:
    the steps already counted). Returns the problems met."""
    from grokscope import measuring

    problems: list = []
    for family in families:
        for step, rows, found in measuring.CHECKPOINT_FAMILIES[family](plan.series, plan.todo[family], options, device):
            tables.add(family, rows)
            problems += [measuring.Problem.of(p) for p in found]
            if step not in counted:
                counted.add(step)
                advance(1)
            tables.save_if_due()
    return problems


def _measure_batch(plans, open_tables, options, executor, device: str, advance, finish, failures: set,
                   output: Output) -> None:
    """Measure the series of one batch on the executor's workers: tasks of consecutive
    checkpoints of one series (each loads the model and data once), all series' tasks at once so
    that every worker has work. Rows come back to this process, which adds them to the series'
    tables (saved as they go) and finishes a series when its last task is in."""
    import math

    from grokscope import measuring
    from grokscope.execution import Task, failure_message

    # A few tasks per worker balance uneven checkpoints; more would repeat the loading.
    per_series = max(1, math.ceil(4 * executor.slots / max(1, len(plans))))
    tasks: list[Task] = []
    state = []
    for index, (plan, tables) in enumerate(zip(plans, open_tables)):
        root = plan.series.root
        problems = _measure_here(plan, options, tables, advance)
        feature_todo, feature_steps = _feature_todo(plan)
        for part in measuring.chunk(feature_steps, per_series) if feature_steps else []:
            part_set = set(int(s) for s in part)
            todo = {f: [s for s in steps if s in part_set] for f, steps in feature_todo.items()}
            tasks.append(Task(measuring.measure_steps, (plan.series, todo, options, device), weight=len(part),
                              label=f"{root} (steps {part[0]}-{part[-1]})", tag=(index, "features", part)))
        for family in _pooled_checkpoint_families(plan):
            for part in measuring.chunk(plan.todo[family], per_series):
                tasks.append(Task(measuring.checkpoint_rows, (family, plan.series, part, options, device),
                                  label=f"{root} ({family}, steps {part[0]}-{part[-1]})", tag=(index, family, part)))
        state.append({"problems": problems, "counted": set(feature_steps), "left": 0, "error": None})
    for task in tasks:
        state[task.tag[0]]["left"] += 1
    for index, (plan, tables) in enumerate(zip(plans, open_tables)):
        if not state[index]["left"]:
            finish(plan, tables, state[index]["problems"])
    for outcome in executor.map(tasks):
        index, family, part = outcome.task.tag
        plan, tables, mine = plans[index], open_tables[index], state[index]
        if outcome.error is not None:
            from grokscope.errors import GrokscopeError

            if isinstance(outcome.error, GrokscopeError):
                mine["error"] = mine["error"] or str(outcome.error)  # the series' own problem, once
            else:  # a worker that kept dying, a system error: these steps are lost, the rest goes on
                message = failure_message(outcome)
                output.error(message)
                failures.add(message)
        elif family == "features":
            rows, found = outcome.result
            for name, new in rows.items():
                tables.add(name, new)
            mine["problems"] += found
        else:
            rows, found = outcome.result
            tables.add(family, rows)
            mine["problems"] += found
        if family == "features":
            advance(len(part))
        else:
            new = [s for s in part if s not in mine["counted"]]
            mine["counted"].update(new)
            advance(len(new))
        tables.save_if_due()
        mine["left"] -= 1
        if not mine["left"]:
            finish(plan, tables, mine["problems"], mine["error"])


def _key_frequencies(text: Optional[str]) -> Optional[tuple[int, ...]]:
    if text is None:
        return None
    from grokscope.sweep import parse_values

    values = parse_values("--key-frequencies", text, int)
    if any(k < 1 for k in values):
        raise GrokscopeError(f"--key-frequencies: frequencies are positive integers, got {text!r}")
    return tuple(sorted(values))


def _report_problems(output: Output, root, problems) -> set[str]:
    """Print the problems of one series: each error once, NaN values once per reason with their
    steps. Returns the error messages (a checkpoint that could not be measured)."""
    from grokscope import measuring

    errors: set[str] = set()
    nan: dict[tuple, list[int]] = {}
    for problem in dict.fromkeys(measuring.Problem.of(p) for p in problems):
        if problem.kind == "error":
            output.error(problem.message)
            errors.add(problem.message)
        elif problem.kind == "nan":
            nan.setdefault((problem.family, problem.message), []).append(problem.step)
        else:
            output.warn(problem.message)
    for (family, reason), steps in nan.items():
        output.warn(measuring.describe_nan(root, family, reason, sorted(set(steps))))
    return errors


def _merged_results(earlier, tables):
    """A series named again later on stdin: its rows and the steps asked for, together."""
    if earlier is None:
        return tables
    for family, rows in earlier.rows.items():
        measured = {row["step"] for row in tables.rows.get(family, [])}
        tables.rows.setdefault(family, [])
        tables.rows[family] = [r for r in rows if r["step"] not in measured] + tables.rows[family]
        tables.plan.chosen[family] = sorted(set(earlier.plan.chosen.get(family, [])) | set(tables.plan.chosen.get(family, [])))
    return tables


def _write_combined(output: Output, wanted, results, out_table: Optional[Path], fmt: Optional[str]) -> None:
    """The rows asked for, of every series, as one table (-o) or on stdout (--format), with a
    ``series`` column (the home) that tells apart series that share a run name."""
    import pandas as pd

    from grokscope import formats

    selected = []
    for home, tables in results.items():
        for family in wanted:
            table = tables.table(family)
            if len(table) and wanted[family] is not None:
                table = table[table["metric"].isin(wanted[family])]
            if len(table):
                selected.append(table.assign(series=str(home)))
    combined = pd.concat(selected, ignore_index=True) if selected else pd.DataFrame()
    if out_table is not None:
        formats.tables.write_table(out_table, combined)
        output.result(out_table)
    if fmt is not None:
        output.rows(combined, fmt)
