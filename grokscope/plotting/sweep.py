"""A phase diagram over two hyperparameters (Liu et al. 2022, Fig. 6): one cell per setting."""

from __future__ import annotations

import pandas as pd

from grokscope.errors import GrokscopeError
from grokscope.measures.grokking import PHASES
from grokscope.plotting import style
from grokscope.plotting.data import Tables
from grokscope.plotting.summary import run_summaries

PHASE_COLOURS = {
    "comprehension": "#4daf4a",
    "grokking": "#377eb8",
    "memorization": "#ff7f00",
    "confusion": "#999999",
}
CAPTION = (
    "Colour: the most common phase over the cell's runs (seeds); ties go to the first in the legend.\n"
    "Label: mean steps from memorisation to generalisation over runs that generalised (– none); n = runs."
)


def sweep(tables: Tables, options: style.FigureOptions):
    """Each (--x, --y) cell coloured by its runs' phase and labelled with the mean grokking delay."""
    import plotnine as p9

    if options.color:
        raise GrokscopeError("--color: the sweep figure colours cells by phase; use --facet to split it")
    summaries = run_summaries(tables, threshold=options.threshold, delay=options.delay)
    summaries = summaries[summaries["phase"].notna()]
    style.require_rows(summaries, "runs with a history or a grokking table")
    for flag, column in (("--x", options.x), ("--y", options.y), ("--facet", options.facet)):
        if column is not None and (column not in summaries.columns or summaries[column].isna().all()):
            raise GrokscopeError(f"{flag}: no hyperparameter column {column!r} in the runs")
    cells = cell_summaries(summaries, [c for c in (options.x, options.y, options.facet) if c])
    for column in (options.x, options.y):
        cells = style.as_levels(cells, column)
    plot = (
        p9.ggplot(cells, p9.aes(options.x, options.y, fill="phase"))
        + p9.geom_tile(color="white", size=0.8)
        + p9.geom_text(p9.aes(label="label"), size=7, color="black")
        + p9.scale_fill_manual(values=PHASE_COLOURS, limits=list(PHASES), drop=False)
        + p9.labs(x=options.x, y=options.y, fill="phase", caption=CAPTION)
        + style.theme(options)
        + p9.theme(plot_caption=p9.element_text(size=7, ha="left"))
    )
    return style.add(plot, style.facet(options))


def cell_summaries(summaries: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per cell: the modal phase (ties: first in PHASES), the mean gap of runs that generalised, n."""
    rows = []
    for values, cell in summaries.groupby(keys, dropna=False, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        counts = cell["phase"].value_counts()
        phase = next(p for p in PHASES if counts.get(p, 0) == counts.max())
        gaps = cell["grokking_gap"].dropna()
        gap = float(gaps.mean()) if len(gaps) else None
        label = ("–" if gap is None else f"{gap:.0f}") + f"\nn={len(cell)}"
        rows.append({**dict(zip(keys, values)), "phase": phase, "gap": gap, "runs": len(cell), "label": label})
    return pd.DataFrame(rows)
