"""The local learning coefficient family (localised SGLD at each checkpoint), checkpoint by checkpoint."""

from __future__ import annotations

import math
from typing import Iterator

from grokscope.discovery import Series
from grokscope.errors import GrokscopeError
from grokscope.families.architecture import fitted_states
from grokscope.families.options import MeasureOptions
from grokscope.families.problems import Problem
from grokscope.fingerprints import SOURCE_COLUMN

# --llc-step-size by model kind when it is not given. The MLP's 1e-3 is the calibration of
# grokscope.measures.llc (docs/llc.md). A grokscope transformer's chains leave the checkpoint at
# 1e-3 (past the divergence bound within 5 steps), and at 1e-4 they stay below the bound but give
# an LLC 16 times that of 1e-5 (not the local posterior); at 1e-5 no chain diverged at any
# checkpoint measured (docs/llc.md, "Step size by model").
DEFAULT_STEP_SIZE = {"mlp": 1e-3, "transformer": 1e-5}
# Another tool's series: the MLP's calibration, stated in the warning when a chain diverges.
FOREIGN_STEP_SIZE = 1e-3


def step_size_for(options: MeasureOptions, config) -> float:
    """The SGLD step size of a series: ``--llc-step-size``, or the default of its model kind."""
    if options.llc_step_size is not None:
        return options.llc_step_size
    if config is None:
        return FOREIGN_STEP_SIZE
    return DEFAULT_STEP_SIZE.get(config.model.kind, FOREIGN_STEP_SIZE)


def option_named(message: str) -> str:
    """An :meth:`SGLDSettings.validate` message with the setting named by its CLI option."""
    setting, _, rest = message.partition(":")
    option = "--seed" if setting == "seed" else "--llc-" + setting.replace("_", "-")
    return f"{option}:{rest}"


def sgld_settings(options: MeasureOptions, step_size: float):
    from grokscope.measures.llc import SGLDSettings

    return SGLDSettings(step_size=step_size, localization=options.llc_localization, nbeta=options.llc_nbeta,
                        chains=options.llc_chains, draws=options.llc_draws, burnin=options.llc_burnin,
                        batch_size=options.llc_batch_size, seed=options.seed)


def chain_route(model, inputs):
    """(chain_forward, inputs) for :func:`grokscope.measures.llc.estimate_llc`: a grokscope MLP
    runs its chains through :meth:`~grokscope.model.MLP.chain_forward` (its first layer a lookup
    on one-hot inputs, which then go as the positions of their ones); any other model through
    ``vmap`` (None)."""
    from grokscope.model import MLP, one_hot_columns

    if not isinstance(model, MLP):
        return None, inputs
    columns = one_hot_columns(inputs)
    return model.chain_forward, inputs if columns is None else columns


def iter_llc_rows(series: Series, steps: list[int], options: MeasureOptions, device: str = "cpu",
                  threads: int | None = None) -> Iterator[tuple[int, list[dict], list[Problem]]]:
    """(step, rows, problems) of the LLC family (Lau et al. 2023), checkpoint by checkpoint.

    The model and the training set come from the series (a run's run.json, another series' probe
    record); the loss is the run's own training loss (cross-entropy on the class logits for
    another tool's series, read out as probe reads them). Every checkpoint is sampled with the
    same seed, so the same command gives the same values. Rows: those of
    :func:`grokscope.measures.llc.llc_rows` (per-chain rows carry a ``chain`` column) and once
    ``llc_step_size``, the step size used. A checkpoint with a diverged chain gets NaN ``llc``,
    ``llc_sd`` and chain values and a "nan" problem with the reason.
    """
    from grokscope.families.objective import training_objective
    from grokscope.measures.llc import estimate_llc, llc_rows

    objective = training_objective(series, device, threads)
    context, model, targets = objective.context, objective.model, objective.targets
    chain_forward, inputs = chain_route(model, objective.inputs)
    layout = objective.layout
    step_size = step_size_for(options, context.config)
    settings = sgld_settings(options, step_size)
    try:
        settings.validate(len(targets))
    except GrokscopeError as exc:
        raise GrokscopeError(f"{series.root}: {option_named(str(exc))}") from None
    for step, state, problems, digest in fitted_states(layout, series, steps, device=objective.device):
        if state is None:
            yield step, [], problems
            continue
        estimate = estimate_llc(model, state, objective.criterion, inputs, targets, settings, readout=objective.readout,
                                chain_forward=chain_forward)
        rows = [{"step": step, "split": "train", **row} for row in llc_rows(estimate)]
        rows.append({"step": step, "split": "train", "metric": "llc_step_size", "layer": None, "chain": None,
                     "value": float(step_size)})
        rows = [{**row, SOURCE_COLUMN: digest} for row in rows]
        found = []
        if math.isnan(estimate.llc):
            reason = estimate.reason or "not finite"
            found.append(Problem("nan", f"{reason} (--llc-step-size {step_size:g}; a smaller one may not diverge)",
                                 "llc", step))
        yield step, rows, found
