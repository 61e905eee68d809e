"""The spectra family (WeightWatcher's power-law exponent alpha of each weight matrix), from the weights only."""

from __future__ import annotations

from typing import Iterator

from grokscope.discovery import Series
from grokscope.families.architecture import fitted_states
from grokscope.families.options import MeasureOptions
from grokscope.families.problems import Problem
from grokscope.fingerprints import SOURCE_COLUMN


def iter_spectrum_rows(series: Series, steps: list[int], options: MeasureOptions | None = None,
                       device: str = "cpu", threads: int | None = None
                       ) -> Iterator[tuple[int, list[dict], list[Problem]]]:
    """(step, rows, problems) of the heavy-tailed spectra (Martin & Mahoney 2021), checkpoint by
    checkpoint, on the matrices the weights family selects (buffers excluded, tied tensors once,
    attention heads split). No data needed (``options``, ``device`` and ``threads`` are those of
    every checkpoint family, unused here).

    A layer without a fit (too few eigenvalues, non-finite weights) has NaN rows; each reason is
    one "nan" problem per checkpoint, so the command reports it once with the steps it hit.
    """
    from grokscope.context import SeriesContext
    from grokscope.measures.spectra import spectra, spectral_layers, spectrum_rows

    layout = SeriesContext.open(series).weight_layout()
    for step, state, problems, digest in fitted_states(layout, series, steps):
        if state is None:
            yield step, [], problems
            continue
        fitted = spectra(spectral_layers(state, parameters=layout.groups))
        rows = [{"step": step, "split": None, **row, SOURCE_COLUMN: digest} for row in spectrum_rows(fitted)]
        reasons = sorted({f"{s.name}: {s.reason}" for s in fitted if s.reason is not None})
        found = [Problem("nan", f"alpha has no fit ({reason})", "spectra", step) for reason in reasons]
        if not fitted:
            found.append(Problem("nan", "no weight matrix to fit", "spectra", step))
        yield step, rows, found
