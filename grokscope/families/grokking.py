"""The grokking family (memorisation and generalisation steps, their gap) from a series' history."""

from __future__ import annotations

import math

from grokscope.discovery import Series
from grokscope.families.options import MeasureOptions
from grokscope.families.problems import Problem


def grokking_table_rows(series: Series, options: MeasureOptions) -> tuple[list[dict], list[Problem]]:
    """The grokking family from the series' history, or NaN rows and a warning where the history
    lacks train or test accuracy."""
    from grokscope.context import SeriesContext
    from grokscope.measures.grokking import METRICS, grokking_rows

    history = SeriesContext.open(series).history()
    missing = [c for c in ("train_acc", "test_acc") if history is None or c not in history.columns]
    if not missing:
        history = history.dropna(subset=["train_acc", "test_acc"], how="all")
    if missing or history.empty:
        last = max((c.step for c in series.checkpoints), default=0)
        why = "no history" if history is None else f"its history has no {' or '.join(missing) or 'accuracy'}"
        warning = (f"{series.root}: grokking steps unknown ({why}; probe the series with --data to compute "
                   "train/test accuracy from the model's output)")
        return [{"step": last, "metric": m, "value": math.nan, "split": None, "layer": None} for m in METRICS], \
            [Problem("warning", warning)]
    return grokking_rows(history, threshold=options.threshold), []
