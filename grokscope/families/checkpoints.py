"""The checkpoint families: measured checkpoint by checkpoint from the weights, never from
features (complexity and fourier also run the model on the data)."""

from __future__ import annotations

from typing import Callable, Iterator

from grokscope.discovery import Series
from grokscope.families.complexity import iter_complexity_rows
from grokscope.families.fourier import iter_fourier_rows
from grokscope.families.llc import iter_llc_rows
from grokscope.families.options import MeasureOptions
from grokscope.families.problems import Problem
from grokscope.families.spectra import iter_spectrum_rows
from grokscope.families.weights import iter_weight_rows

# Families measured checkpoint by checkpoint from the weights, never from features (complexity
# and fourier also run the model on the data): family -> a function (series, steps, options, device) yielding
# (step, rows, problems) per checkpoint, so that every row is saved as it comes (see SeriesTables).
CHECKPOINT_FAMILIES: dict[str, Callable[..., Iterator[tuple[int, list[dict], list[Problem]]]]] = {
    "weights": iter_weight_rows,
    "complexity": iter_complexity_rows,
    "fourier": iter_fourier_rows,
    "spectra": iter_spectrum_rows,
    "llc": iter_llc_rows,
}

# Checkpoint families that run the model (seconds per checkpoint, and the --device) and are
# shared out among workers; the others (weights) take milliseconds and stay in the command's process.
POOLED_CHECKPOINT_FAMILIES = ("complexity", "fourier", "llc")


def checkpoint_rows(family: str, series: Series, steps: list[int], options: MeasureOptions, device: str = "cpu",
                    threads: int | None = None) -> tuple[list[dict], list[Problem]]:
    """The rows of one of :data:`CHECKPOINT_FAMILIES` at the given steps, and the problems met:
    what a worker's task returns."""
    rows, problems = [], []
    for _, new, found in CHECKPOINT_FAMILIES[family](series, steps, options, device, threads):
        rows += new
        problems += found
    return rows, problems
