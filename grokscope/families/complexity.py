"""The complexity family (DeMoss et al.'s description length under a loss tolerance), checkpoint by checkpoint."""

from __future__ import annotations

import math
from typing import Iterator

import torch

from grokscope.discovery import Series
from grokscope.errors import GrokscopeError
from grokscope.families.architecture import check_architecture, reference_shapes
from grokscope.families.options import MeasureOptions
from grokscope.families.problems import Problem


def iter_complexity_rows(series: Series, steps: list[int], options: MeasureOptions, device: str = "cpu",
                         threads: int | None = None) -> Iterator[tuple[int, list[dict], list[Problem]]]:
    """(step, rows, problems) of the complexity family (DeMoss et al.), checkpoint by checkpoint.

    The model and the training set come from the series (a run's run.json, another series' probe
    record); the loss is the run's own training loss (cross-entropy for another tool's series) over
    the whole training split, on the model's output read as class logits. Runs in a worker
    process with ``--workers``.
    """
    from grokscope.context import SeriesContext
    from grokscope.devices import resolve_device
    from grokscope.features import inputs_on, output_logits
    from grokscope.loading import load_state
    from grokscope.measures.complexity import model_error, model_loss, rate_distortion
    from grokscope.state_dicts import parameter_groups

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
    reference = reference_shapes(layout, series)
    for step in steps:
        try:
            state = layout.fit(load_state(checkpoints[step], device=torch_device))
            check_architecture(checkpoints[step], state, reference)
        except GrokscopeError as exc:
            yield step, [], [Problem("error", str(exc), step=step)]
            continue
        results = rate_distortion(state, loss, options.tolerance, compressor=options.compressor, error=error,
                                  names=names)
        found = []
        if any(math.isnan(r.bits) for r in results):
            found.append(Problem("nan", "weights or loss not finite (diverged?)", "complexity", step))
        yield step, [{"step": step, **row} for row in complexity_result_rows(results, len(targets))], found


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
