"""The complexity family (DeMoss et al.'s description length under a loss tolerance), checkpoint by checkpoint."""

from __future__ import annotations

import math
from typing import Iterator

from grokscope.discovery import Series
from grokscope.families.architecture import fitted_states
from grokscope.families.options import MeasureOptions
from grokscope.families.problems import Problem
from grokscope.fingerprints import SOURCE_COLUMN

# The forward cost of one loss evaluation that the default subsample keeps within: 2^35
# multiply-accumulates (about a CPU-second). The default MLP's whole training set costs 1/125 of
# it, so it is evaluated on every sample as before; a 4 x 256 GPT-2 classifier at 64 tokens
# (2e8 a sequence) gets a seeded subsample of ~170 sequences, so that its ~30-64 evaluations
# per checkpoint stay near a CPU-minute instead of 22.
LOSS_MACS = 2**35


def loss_subsample(n_train: int, macs_per_sample: float, samples: int | None) -> int | None:
    """The training samples complexity's loss is evaluated on: ``samples`` as given (0: all),
    or by default (None) all of them where one evaluation costs at most :data:`LOSS_MACS`, else
    the most that do (at least 1); None means every sample."""
    if samples == 0:
        return None
    if samples is None:
        samples = max(1, int(LOSS_MACS // max(macs_per_sample, 1.0)))
    return None if samples >= n_train else samples


def iter_complexity_rows(series: Series, steps: list[int], options: MeasureOptions, device: str = "cpu",
                         threads: int | None = None) -> Iterator[tuple[int, list[dict], list[Problem]]]:
    """(step, rows, problems) of the complexity family (DeMoss et al.), checkpoint by checkpoint.

    The model and the training set come from the series (a run's run.json, another series' probe
    record); the loss is the run's own training loss (cross-entropy for another tool's series) over
    the training split (or a seeded subsample of it, :func:`loss_subsample`), on the model's
    output read as class logits, in batches that fit ``--max-memory``; each tolerance's search
    makes at most ``--complexity-evaluations`` new loss evaluations. Runs in a worker process
    with ``--workers``.
    """
    from grokscope.families.objective import training_objective
    from grokscope.measures.complexity import model_error, model_loss, rate_distortion
    from grokscope.memory import allocation_message, is_allocation_failure, measure_footprint, memory_budget
    from grokscope.state_dicts import parameter_groups

    objective = training_objective(series, device, threads)
    model, inputs, targets = objective.model, objective.inputs, objective.targets
    layout = objective.layout
    names = [group[0] for group in parameter_groups(model)]  # buffers are not part of the description
    footprint = measure_footprint(model, inputs)
    subsample = loss_subsample(len(targets), footprint.macs, options.complexity_samples)
    batch = footprint.batch_size(memory_budget(options.max_memory))
    sampling = dict(readout=objective.readout, subsample=subsample, seed=options.seed,
                    batch_size=None if batch >= (subsample or len(targets)) else batch)
    loss = model_loss(model, inputs, targets, objective.criterion, **sampling)
    error = model_error(model, inputs, targets, **sampling)
    tied = [group for group in parameter_groups(model) if len(group) > 1]
    evaluations = options.complexity_evaluations or None
    checkpoints = {c.step: c for c in series.checkpoints}
    for step, state, problems, digest in fitted_states(layout, series, steps, device=objective.device):
        if state is None:
            yield step, [], problems
            continue
        try:
            results = rate_distortion(state, loss, options.tolerance, compressor=options.compressor, error=error,
                                      names=names, tied=tied or None, max_loss_evaluations=evaluations)
        except (MemoryError, RuntimeError) as exc:  # one line; the other families keep their rows
            if not is_allocation_failure(exc):
                raise
            lower = "--max-memory or --complexity-samples"
            yield step, [], [Problem("error", f"{checkpoints[step].path}: {allocation_message('complexity', exc, lower)}",
                                     step=step)]
            continue
        found = []
        if any(math.isnan(r.bits) for r in results):
            found.append(Problem("nan", "weights or loss not finite (diverged?)", "complexity", step))
        if any(r.exhausted for r in results):
            found.append(Problem("warning", f"the search ran out of its {evaluations} loss evaluations: the size is "
                                            "the best point evaluated, an upper bound (--complexity-evaluations)",
                                 "complexity"))  # said once for every step where it happens
        yield step, [{"step": step, **row, SOURCE_COLUMN: digest}
                     for row in complexity_result_rows(results, len(targets))], found


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
            # How the value was searched: new loss evaluations, whether the budget ran out (1),
            # the training samples the loss was evaluated on (all unless subsampled) and the seed
            # that chose them (NaN: every sample, nothing chosen).
            "complexity_loss_evaluations": float(result.loss_evaluations),
            "complexity_exhausted": float(result.exhausted),
            "complexity_loss_samples": float(result.loss_samples) if result.loss_samples is not None else math.nan,
            "complexity_loss_seed": float(result.loss_seed) if result.loss_seed is not None else math.nan,
        }
        rows += [{"metric": k, "value": v, "layer": None, "tolerance": result.tolerance} for k, v in scalars.items()]
        rows += [{"metric": "complexity_rank", "value": float(rank), "layer": name, "tolerance": result.tolerance}
                 for name, rank in result.ranks.items()]
    for name, summary in (results[0].spectra if results else {}).items():
        rows += [{"metric": k, "value": summary[k], "layer": name, "tolerance": None}
                 for k in ("spectral_entropy", "effective_rank")]
    return rows
