"""LLC and heavy-tailed-spectrum figures from their tidy rows: ``plot llc`` and ``plot alpha``.

``llc_curve``: the local learning coefficient against step (log), one line per run, the spread
over chains as a ribbon (mean ± sd), vertical lines at each run's memorisation (dashed) and
generalisation (solid) step. ``alpha_curves``: the power-law exponent alpha of each layer against
step, one line per layer, one panel per run. Both take the rows as the families write them
(``run``, ``step``, ``metric``, ``layer``, ``value``, ...), events as ``run``, ``event``
(``memorisation`` / ``generalisation``), ``step``.
"""

from __future__ import annotations

import pandas as pd

from grokscope.plotting import style
from grokscope.plotting.data import Tables

EVENTS = {"memorisation": "dashed", "generalisation": "solid"}


def _event_lines(events: pd.DataFrame | None, runs):
    import plotnine as p9

    if events is None or events.empty:
        return []
    shown = events[events["run"].isin(runs) & (events["step"] > 0)]
    if shown.empty:
        return []
    return [p9.geom_vline(p9.aes(xintercept="step", color="run", linetype="event"), data=shown, size=0.45,
                          alpha=0.8, show_legend=False),
            p9.scale_linetype_manual(values=EVENTS)]


def grokking_events(tables: Tables, options: style.FigureOptions) -> pd.DataFrame:
    """``run``, ``event``, ``step``: each run's memorisation and generalisation step (from its
    history, at ``options.threshold``), where it reached them."""
    from grokscope.plotting.summary import run_summaries

    rows = []
    for _, summary in run_summaries(tables, threshold=options.threshold, delay=options.delay).iterrows():
        for event, column in (("memorisation", "memorization_step"), ("generalisation", "generalization_step")):
            if pd.notna(summary[column]) and summary[column] > 0:
                rows.append({"run": summary["run"], "event": event, "step": float(summary[column])})
    return pd.DataFrame(rows, columns=["run", "event", "step"])


def llc(tables: Tables, options: style.FigureOptions):
    """``plot llc``: :func:`llc_curve` of the tables' llc rows, the runs' grokking steps marked."""
    rows = tables.measures
    style.require_rows(tables.metric("llc"), "rows with metric 'llc' (grokscope measure --metric llc)")
    return llc_curve(rows, grokking_events(tables, options), options)


def alpha(tables: Tables, options: style.FigureOptions):
    """``plot alpha``: :func:`alpha_curves` of the tables' alpha rows, the runs' grokking steps marked."""
    style.require_rows(tables.metric("alpha"), "rows with metric 'alpha' (grokscope measure --metric spectra)")
    return alpha_curves(tables.measures, grokking_events(tables, options), options)


def llc_curve(rows: pd.DataFrame, events: pd.DataFrame | None = None,
              options: style.FigureOptions | None = None):
    """LLC (mean over chains) against step with its chain spread as a ribbon; NaN estimates
    (diverged chains) leave gaps."""
    import plotnine as p9

    options = options or style.FigureOptions()
    style.require_columns(rows, ["run", "step", "metric", "value"], "llc")
    wide = rows[rows["metric"].isin(["llc", "llc_sd"])].pivot_table(
        index=["run", "step"], columns="metric", values="value", dropna=False).reset_index()
    style.require_rows(wide, "rows with metric 'llc' (grokscope measure --metric llc)")
    data = style.positive_steps(wide).dropna(subset=["llc"])
    style.require_rows(data, "finite llc rows at steps > 0 (the step axis is logarithmic)")
    sd = data["llc_sd"].fillna(0.0) if "llc_sd" in data else 0.0
    data = style.as_levels(data.assign(low=data["llc"] - sd, high=data["llc"] + sd), "run")
    plot = (
        p9.ggplot(data, p9.aes("step", "llc", color="run", fill="run"))
        + p9.geom_ribbon(p9.aes(ymin="low", ymax="high"), alpha=0.2, color="none")
        + p9.geom_line(size=0.7)
        + p9.geom_point(size=0.6, alpha=0.6)
    )
    colours = style.colour_scale(data, "run")
    # The ribbon takes the line's colour.
    fill = p9.scale_fill_brewer(type="qual", palette="Dark2") if colours is not None else None
    return style.add(
        plot, *_event_lines(events, data["run"].unique()),
        style.log_step_axis(),
        colours, fill,
        p9.labs(y="local learning coefficient (SGLD, mean ± sd over chains)",
                caption="dashed: memorisation step, solid: generalisation step"),
        style.theme(options),
    )


def alpha_curves(rows: pd.DataFrame, events: pd.DataFrame | None = None,
                 options: style.FigureOptions | None = None, metric: str = "alpha"):
    """``metric`` (alpha, or alpha_weighted, ...) of each layer against step, a panel per run."""
    import plotnine as p9

    options = options or style.FigureOptions()
    style.require_columns(rows, ["run", "step", "metric", "layer", "value"], metric)
    data = style.positive_steps(rows[rows["metric"] == metric]).dropna(subset=["value"])
    style.require_rows(data, f"finite {metric} rows at steps > 0 (grokscope measure --metric spectra)")
    data = style.as_levels(data, "layer")
    plot = (
        p9.ggplot(data, p9.aes("step", "value", color="layer", group="layer"))
        + p9.geom_line(size=0.7)
        + p9.geom_point(size=0.6, alpha=0.6)
    )
    lines = []
    if events is not None and not events.empty:
        shown = events[events["run"].isin(data["run"].unique()) & (events["step"] > 0)]
        if not shown.empty:
            lines = [p9.geom_vline(p9.aes(xintercept="step", linetype="event"), data=shown, size=0.45,
                                   alpha=0.6, color="grey", show_legend=False),
                     p9.scale_linetype_manual(values=EVENTS)]
    return style.add(
        plot, *lines,
        style.log_step_axis(),
        style.colour_scale(data, "layer"),
        p9.labs(y=f"{metric} (power-law fit of the layer's eigenvalue tail)",
                caption="dashed: memorisation step, solid: generalisation step"),
        style.facet(options, default="run"),
        style.theme(options),
    )
