"""The checkpoint families: measured checkpoint by checkpoint from the weights, never from
features (complexity and fourier also run the model on the data)."""

from __future__ import annotations

from typing import Callable, Iterator

from grokscope.discovery import Series
from grokscope.errors import GrokscopeError
from grokscope.families.complexity import iter_complexity_rows
from grokscope.families.fourier import iter_fourier_rows
from grokscope.families.llc import iter_llc_rows
from grokscope.families.options import MeasureOptions
from grokscope.families.problems import Problem, describe_failure
from grokscope.families.spectra import iter_spectrum_rows
from grokscope.families.weights import iter_weight_rows

# Families measured checkpoint by checkpoint from the weights, never from features (complexity
# and fourier also run the model on the data): family -> a function (series, steps, options, device) yielding
# (step, rows, problems) per checkpoint, so that every row is saved as it comes (see SeriesTables).
RowsByCheckpoint = Callable[..., Iterator[tuple[int, list[dict], list[Problem]]]]


def _each_failure_on_its_step(family: str, rows_of: RowsByCheckpoint) -> RowsByCheckpoint:
    """``rows_of``, where an exception it did not foresee (any but the series' own
    GrokscopeError) costs the step it hit, said as a "nan" problem with its reason, and the family
    goes on with the next steps; the other families never see it."""

    def each_checkpoint(series, steps, options=None, device="cpu", threads=None):
        remaining = list(steps)
        while remaining:
            try:
                for step, rows, found in rows_of(series, remaining, options, device, threads):
                    if step in remaining:  # the families visit the steps in the order given
                        remaining = remaining[remaining.index(step) + 1:]
                    yield step, rows, found
                return
            except GrokscopeError:
                raise
            except Exception as exc:
                failed, remaining = remaining[0], remaining[1:]
                yield failed, [], [Problem("nan", describe_failure(exc), family, failed)]

    return each_checkpoint


CHECKPOINT_FAMILIES: dict[str, RowsByCheckpoint] = {
    family: _each_failure_on_its_step(family, rows_of)
    for family, rows_of in (("weights", iter_weight_rows), ("complexity", iter_complexity_rows),
                            ("fourier", iter_fourier_rows), ("spectra", iter_spectrum_rows),
                            ("llc", iter_llc_rows))
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
