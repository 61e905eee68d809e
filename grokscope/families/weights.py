"""The weights family (norms, balancedness, spectra of the weight matrices), straight from the checkpoints."""

from __future__ import annotations

import math
from typing import Iterator

from grokscope.discovery import Series
from grokscope.families.architecture import fitted_states
from grokscope.families.options import MeasureOptions
from grokscope.families.problems import Problem
from grokscope.fingerprints import SOURCE_COLUMN


def iter_weight_rows(series: Series, steps: list[int], options: MeasureOptions | None = None, device: str = "cpu",
                     threads: int | None = None) -> Iterator[tuple[int, list[dict], list[Problem]]]:
    """(step, rows, problems) of the weight measures, checkpoint by checkpoint: no data needed
    (``options``, ``device`` and ``threads`` are those of every checkpoint family, unused here).

    A checkpoint that cannot be read, or that holds another architecture than the series' (other
    parameter names or shapes than the model's; for a series without a model, than its first
    checkpoint's), is an "error" problem and has no rows.
    """
    from grokscope.context import SeriesContext
    from grokscope.measures.weights import weight_measures

    layout = SeriesContext.open(series).weight_layout()
    for step, state, problems, digest in fitted_states(layout, series, steps):
        if state is None:
            yield step, [], problems
            continue
        measured = weight_measures(state, parameters=layout.groups, pairs=layout.pairs)
        # Said like the other families' NaN (once per reason, with its steps), not left silent.
        diverged = any(not math.isfinite(row["value"]) for row in measured)
        found = [Problem("nan", "weights not finite (diverged?)", "weights", step)] if diverged else []
        yield step, [{"step": step, "split": None, **row, SOURCE_COLUMN: digest} for row in measured], found


def weight_rows(series: Series, steps: list[int]) -> tuple[list[dict], list[Problem]]:
    """Weight measures of the given steps, straight from the checkpoints (see :func:`iter_weight_rows`)."""
    rows, problems = [], []
    for _, new, found in iter_weight_rows(series, steps):
        rows += new
        problems += found
    return rows, problems
