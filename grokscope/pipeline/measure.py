"""``grokscope measure`` as a function: measure families over checkpoint series into tidy tables.

For each batch of series (all of them, or what stdin has brought so far): plan every series
(:mod:`~grokscope.pipeline.measure_plan`), measure it in this process or on the executor's
workers (:mod:`~grokscope.pipeline.measure_run`), save its tables as it goes
(:mod:`~grokscope.pipeline.tables`) and say each table's path when the series is done. With
``output`` or ``table`` nothing is written into the series' homes: the rows asked for of every
series come back as one table (written to ``output``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from grokscope.errors import GrokscopeError
from grokscope.pipeline.reporter import Recording, Reporter, Written

CHOICES = {"--split": ("train", "test", "both"), "--hsic-split": ("train", "test", "both"),
           "--hsic-estimator": ("nocco", "hsic", "cka"), "--hsic-bandwidth": ("fixed", "median"),
           "--hsic-order": ("shuffled", "stored"), "--variables": ("neurons", "bins"),
           "--search": ("auto", "exhaustive", "greedy", "annealing"), "--ties": ("random", "average", "index"),
           "--units": ("bits", "nats"), "--compressor": ("bz2", "lzma")}
# The estimator that a metric's prefix names (--metric cka_x implies --hsic-estimator cka).
ESTIMATOR_OF_PREFIX = {"nhsic": "nocco", "hsic": "hsic", "cka": "cka"}


def measure(paths: Iterable[str], *, metrics: Sequence[str] | str = ("collapse",), output: Path | None = None,
            table: bool = False, steps: str | None = None, split: str = "both", layers: Sequence[str] | None = None,
            hsic_split: str = "test", hsic_batch_size: int = 100, hsic_sigma: float = 5.0,
            hsic_bandwidth: str = "fixed", hsic_estimator: str = "nocco", hsic_passes: int = 3,
            hsic_order: str = "shuffled", bins: int = 10, variables: str = "neurons", min_size: int = 2,
            max_size: int | None = None, search: str = "auto", per_size: bool = False, ties: str = "random",
            tie_draws: int = 10, seed: int = 0, units: str = "bits", bias_correction: bool = True,
            threshold: float = 0.99, tolerance=0.1, compressor: str = "bz2", key_frequencies=None,
            llc_step_size: float | None = None, llc_localization: float = 100.0, llc_nbeta: float | None = None,
            llc_chains: int = 4, llc_draws: int = 500, llc_burnin: int = 200, llc_batch_size: int = 64,
            complexity_samples: int | None = None, complexity_evaluations: int = 64,
            max_memory: str | int | None = None,
            workers: int = 1, scheduler: str | None = None, threads: int | None = None, device: str = "auto",
            allow_global: Sequence[str] = (), force: bool = False, reporter: Reporter | None = None) -> Written:
    """Measure ``paths`` (runs, series, folders of them, ``-`` for paths on stdin) as ``grokscope
    measure`` does, with its options by the same names (``metrics`` is ``--metric``, ``layers``
    ``--layer``, ``output`` ``-o``; ``tolerance`` and ``key_frequencies`` take text as the command
    line does or numbers). ``table=True`` writes nothing into the series and returns the rows
    in ``.table``. Returns what was written (see :class:`~grokscope.pipeline.reporter.Written`:
    the tables, and the checkpoints and series that could not be measured)."""
    from grokscope import execution, formats
    from grokscope.discovery import iter_series, parse_steps
    from grokscope.families import only_through_all
    from grokscope.loading import trust_globals
    from grokscope.pipeline.measure_plan import plan_series
    from grokscope.pipeline.measure_run import Measuring, measure_batch
    from grokscope.pipeline.tables import combined_table

    say = Recording(reporter)
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    options, wanted = measure_options(
        names, split=split, layers=layers, hsic_split=hsic_split, hsic_batch_size=hsic_batch_size,
        hsic_sigma=hsic_sigma, hsic_bandwidth=hsic_bandwidth, hsic_estimator=hsic_estimator, hsic_passes=hsic_passes,
        hsic_order=hsic_order, bins=bins, variables=variables, min_size=min_size, max_size=max_size, search=search,
        per_size=per_size, ties=ties, tie_draws=tie_draws, seed=seed, units=units, bias_correction=bias_correction,
        threshold=threshold, tolerance=tolerance, compressor=compressor, key_frequencies=key_frequencies,
        complexity_samples=complexity_samples, complexity_evaluations=complexity_evaluations, max_memory=max_memory)
    options = llc_options(options, step_size=llc_step_size, localization=llc_localization, nbeta=llc_nbeta,
                          chains=llc_chains, draws=llc_draws, burnin=llc_burnin, batch_size=llc_batch_size)
    if output is not None:
        output = Path(output)
        if output.suffix != ".parquet":
            raise GrokscopeError(f"--output: {output} must end in .parquet")
        if not output.parent.is_dir():
            raise GrokscopeError(f"--output: folder {output.parent} does not exist")
    selection = parse_steps(steps)
    trust_globals(allow_global or [])
    where_applicable = only_through_all(names)
    # -o and --format write nothing into the series' homes (which may be read-only): they only
    # read what is already measured there.
    with execution.open_executor(workers, scheduler, threads) as executor, say.progress() as bar:
        if executor.threads.warning:
            say.warn(executor.threads.warning)
        measuring = Measuring(say, bar, wanted, options, write=output is None and not table)
        for batch in iter_series(formats.inputs.InputPaths(paths)):
            plans = [plan_series(found, wanted, options, selection.select, force, where_applicable)
                     for found in batch]
            measuring.count(sum(plan.n_steps for plan in plans))
            measure_batch(plans, measuring, executor, device)
    if not measuring.write:
        say.written.table = combined_table(wanted, measuring.results)
        if output is not None:
            formats.tables.write_table(output, say.written.table)
            say.result(output)
    say.written.refused = measuring.failed_series
    say.written.failed = list(measuring.failures)
    if measuring.failures and not measuring.failed_series:
        say.info(f"measure: {len(measuring.failures)} checkpoint(s) could not be measured (see above)")
    return say.written


def measure_options(names, *, split, layers, hsic_split, hsic_batch_size, hsic_sigma, hsic_bandwidth, hsic_estimator,
                    hsic_passes, hsic_order, bins, variables, min_size, max_size, search, per_size, ties, tie_draws,
                    seed, units, bias_correction, threshold, tolerance, compressor, key_frequencies,
                    complexity_samples=None, complexity_evaluations=64, max_memory=None):
    """(MeasureOptions, family -> metrics wanted) of ``measure``'s arguments, each checked and
    named by its option."""
    from grokscope.families import resolve_metrics
    from grokscope.families.options import MeasureOptions
    from grokscope.pipeline.values import listed

    given = {"--split": split, "--hsic-split": hsic_split, "--hsic-estimator": hsic_estimator,
             "--hsic-bandwidth": hsic_bandwidth, "--hsic-order": hsic_order, "--variables": variables,
             "--search": search, "--ties": ties, "--units": units}
    for option, value in given.items():
        if value not in CHOICES[option]:
            raise GrokscopeError(f"{option}: unknown value {value!r}; known: {', '.join(CHOICES[option])}")
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
    wanted = resolve_metrics(names)
    estimators = {m.split("_")[0] for m in wanted.get("hsic") or ()}
    if len(estimators) > 1:
        raise GrokscopeError(f"--metric: {', '.join(sorted(wanted['hsic']))} need different estimators; ask for one at a time")
    if estimators and hsic_estimator == "nocco":
        hsic_estimator = ESTIMATOR_OF_PREFIX[estimators.pop()]
    tolerances = tuple(listed("--tolerance", tolerance, float))
    if not all(0 <= t < float("inf") for t in tolerances):
        raise GrokscopeError(f"--tolerance: every value must be a finite number >= 0, got {tolerance!r}")
    if compressor not in CHOICES["--compressor"]:
        raise GrokscopeError(f"--compressor: unknown {compressor!r}; known: bz2, lzma")
    for option, value in (("--complexity-samples", complexity_samples), ("--complexity-evaluations",
                                                                        complexity_evaluations)):
        if value is not None and value < 0:
            raise GrokscopeError(f"{option}: must be at least 0 (0: no bound), got {value}")
    from grokscope.memory import memory_budget

    memory_budget(max_memory)  # a malformed size is said here, before any series is read
    keys = None
    if key_frequencies is not None:
        keys = listed("--key-frequencies", key_frequencies, int)
        if any(k < 1 for k in keys):
            raise GrokscopeError(f"--key-frequencies: frequencies are positive integers, got {key_frequencies!r}")
        keys = tuple(sorted(keys))
    options = MeasureOptions(
        split=split, layers=tuple(layers) if layers else None, hsic_split=hsic_split,
        hsic_batch_size=hsic_batch_size or None, hsic_sigma=hsic_sigma, hsic_bandwidth=hsic_bandwidth,
        hsic_estimator=hsic_estimator, hsic_passes=hsic_passes, hsic_shuffle=hsic_order == "shuffled",
        bins=bins, variables=variables, min_size=min_size, max_size=max_size, search=search,
        per_size=per_size, ties=ties, tie_draws=tie_draws, seed=seed, units=units, bias_correction=bias_correction,
        threshold=threshold, tolerance=tolerances, compressor=compressor, key_frequencies=keys,
        complexity_samples=complexity_samples, complexity_evaluations=complexity_evaluations, max_memory=max_memory,
    )
    return options, wanted


def llc_options(options, **settings):
    """``options`` with the llc family's SGLD settings (``--llc-*``), each checked and named by its
    option (the batch size against the training set is checked per series)."""
    import dataclasses

    from grokscope.families.llc import option_named
    from grokscope.measures.llc import SGLDSettings

    sgld = SGLDSettings(**{**settings, "step_size": settings["step_size"] or 1.0}, seed=options.seed)
    if settings["step_size"] is not None and not settings["step_size"] > 0:
        raise GrokscopeError(f"--llc-step-size: must be a finite number positive, got {settings['step_size']!r}")
    try:
        sgld.validate(n_samples=max(sgld.batch_size, 2))
    except GrokscopeError as exc:
        raise GrokscopeError(option_named(str(exc))) from None
    return dataclasses.replace(options, **{f"llc_{name}": value for name, value in settings.items()})
