"""The fourier family (Nanda et al. 2023: Fourier spectra of the embedding and readout, restricted
and excluded loss) of a run on modular arithmetic, checkpoint by checkpoint."""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from grokscope.discovery import Series
from grokscope.errors import GrokscopeError
from grokscope.families.options import MeasureOptions
from grokscope.families.problems import Problem
from grokscope.fingerprints import SOURCE_COLUMN

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
    from grokscope.devices import resolve_device
    from grokscope.features import DEFAULT_BATCH_SIZE
    from grokscope.loading import checkpoint_digest, load_state
    from grokscope.measures import fourier

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
            digest = checkpoint_digest(checkpoints[step])  # before the read, as fitted_states does
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
        yield step, [{"step": step, **row, SOURCE_COLUMN: digest} for row in new], found


# Families measured checkpoint by checkpoint from the weights, never from features (complexity
# and fourier also run the model on the data): family -> a function (series, steps, options, device) yielding
