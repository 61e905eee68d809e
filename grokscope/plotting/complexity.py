"""Complexity figures (DeMoss et al., "The Complexity Dynamics of Grokking"): the complexity curve
against step with the grokking steps marked, and the rate-distortion view at chosen checkpoints.

Both read the ``complexity`` rows of a ``measures/complexity.parquet`` table (one per run, step
and tolerance). ``plot complexity`` draws the curve; ``plot complexity --steps 20,300,3000``
draws size against tolerance at those checkpoints instead (it needs the table measured at
several tolerances, ``measure --metric complexity --tolerance 0.01,0.1,1``).
"""

from __future__ import annotations

import pandas as pd

from grokscope.errors import GrokscopeError
from grokscope.plotting import style
from grokscope.plotting.data import Tables
from grokscope.plotting.summary import run_summaries

EVENTS = {"memorisation": "dashed", "generalisation": "solid"}


def complexity(tables: Tables, options: style.FigureOptions):
    """The complexity curve, or the rate-distortion view when ``options.steps`` names checkpoints."""
    rows = _complexity_rows(tables)
    style.require_option_columns(rows, options)
    if options.steps:
        return rate_distortion(rows, options)
    return curve(tables, rows, options)


def curve(tables: Tables, rows: pd.DataFrame, options: style.FigureOptions):
    """Complexity (kbit) against step (log), one line per run, one panel per tolerance when there
    are several; vertical lines at each run's memorisation (dashed) and generalisation (solid)
    step, in the run's colour."""
    import plotnine as p9

    colour = options.color or "run"
    data = style.positive_steps(rows).assign(kbit=lambda f: f["value"] / 1000)
    style.require_rows(data, "complexity rows at steps > 0 (the step axis is logarithmic)")
    data = style.as_levels(data, colour)
    several = data["tolerance"].nunique() > 1
    data = data.assign(line=data["run"].astype(str) + "|" + data["tolerance"].astype(str))
    plot = (
        p9.ggplot(data, p9.aes("step", "kbit", color=colour, group="line"))
        + p9.geom_line(size=0.7)
        + p9.geom_point(size=0.6, alpha=0.6)
    )
    events = _events(tables, options, data, colour)
    if not events.empty:
        plot += p9.geom_vline(p9.aes(xintercept="step", color=colour, linetype="event"), data=events,
                              size=0.45, alpha=0.8, show_legend=False)
        plot += p9.scale_linetype_manual(values=EVENTS)
    facet = None
    if options.facet and several:
        facet = p9.facet_grid(f"tolerance ~ {options.facet}", labeller="label_both", scales="free_y")
    elif several:
        facet = p9.facet_wrap("tolerance", labeller="label_both", scales="free_y")
    else:
        facet = style.facet(options)
    return style.add(
        plot,
        style.log_step_axis(),
        style.colour_scale(data, colour),
        p9.labs(y="complexity (kbit, compressed coarse-grained weights)", color=colour,
                caption="dashed: memorisation step, solid: generalisation step"),
        facet,
        style.theme(options),
    )


def rate_distortion(rows: pd.DataFrame, options: style.FigureOptions):
    """Complexity (kbit) against tolerance (log) at the checkpoints nearest ``options.steps``, one
    line per checkpoint, one panel per run (or per ``--facet`` value)."""
    import plotnine as p9

    if options.color:
        raise GrokscopeError("--color: the rate-distortion view colours by step; use --facet to split it")
    chosen = []
    for run, frame in rows.groupby("run", sort=False):
        measured = frame["step"].unique()
        for wanted in options.steps:
            nearest = measured[abs(measured - wanted).argmin()]
            chosen.append(frame[frame["step"] == nearest])
    data = pd.concat(chosen, ignore_index=True).drop_duplicates(subset=["run", "step", "tolerance"])
    data = data[data["tolerance"] > 0]
    if data.groupby(["run", "step"])["tolerance"].nunique().max() < 2:
        raise GrokscopeError(
            "--steps: the rate-distortion view needs complexity measured at several tolerances "
            "(grokscope measure RUN --metric complexity --tolerance 0.01,0.1,1)"
        )
    data = data.assign(kbit=data["value"] / 1000, checkpoint=lambda f: f["step"].map(lambda s: f"step {s}"))
    order = [f"step {s}" for s in sorted(data["step"].unique())]
    data["checkpoint"] = pd.Categorical(data["checkpoint"], categories=order, ordered=True)
    data["line"] = data["run"].astype(str) + "|" + data["checkpoint"].astype(str)
    return style.add(
        p9.ggplot(data, p9.aes("tolerance", "kbit", color="checkpoint", group="line"))
        + p9.geom_line(size=0.7)
        + p9.geom_point(size=1.2)
        + p9.scale_x_log10(name="tolerance (allowed increase of the training loss)")
        + p9.labs(y="complexity (kbit)", color=""),
        p9.scale_color_cmap_d("viridis"),
        style.facet(options, default="run"),
        style.theme(options),
    )


def _complexity_rows(tables: Tables) -> pd.DataFrame:
    rows = tables.metric("complexity")
    style.require_rows(rows, "rows with metric 'complexity' (grokscope measure --metric complexity)")
    style.require_columns(rows, ["tolerance"], "complexity")
    return rows.dropna(subset=["value"])


def _events(tables: Tables, options: style.FigureOptions, data: pd.DataFrame, colour: str) -> pd.DataFrame:
    """One row per run and event (memorisation / generalisation step), with the run's colour and
    facet values, repeated in each tolerance panel."""
    summaries = run_summaries(tables, threshold=options.threshold, delay=options.delay)
    keys = ["run", colour] + [c for c in (options.facet,) if c] + ["tolerance"]
    panels = data[list(dict.fromkeys(keys))].drop_duplicates()
    rows = []
    for _, summary in summaries.iterrows():
        for event, column in (("memorisation", "memorization_step"), ("generalisation", "generalization_step")):
            if pd.notna(summary[column]) and summary[column] > 0:
                rows.append({"run": summary["run"], "step": float(summary[column]), "event": event})
    if not rows:
        return pd.DataFrame()
    events = pd.DataFrame(rows).merge(panels, on="run")
    if colour in events and isinstance(data[colour].dtype, pd.CategoricalDtype):
        events[colour] = pd.Categorical(events[colour], categories=data[colour].cat.categories, ordered=True)
    return events
