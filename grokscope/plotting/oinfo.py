"""O-information figures: ``phases`` (Clauw et al. 2024's progress measures) and ``pareto``."""

from __future__ import annotations

import pandas as pd

from grokscope.errors import GrokscopeError
from grokscope.plotting import style
from grokscope.plotting.data import Tables, label_column, series_key
from grokscope.plotting.summary import overall_oinfo, run_summaries

PROGRESS = "progress (normalised)"
SIZE = "multiplet size"
QUANTITY_COLOURS = {
    "synergy": "#1f77b4",
    "redundancy": "#d62728",
    "test accuracy": "#222222",
    "test loss": "#999999",
}


def phases(tables: Tables, options: style.FigureOptions):
    r"""Synergy and redundancy beside test loss and accuracy, with the grokking steps marked.

    After Clauw, Stramaglia & Marinazzo (2024), "Information-theoretic progress measures reveal
    grokking is an emergent phase transition": synergy is negated (:math:`-\Omega_\min`, so up
    means more synergy), synergy, redundancy and test loss are min-max normalised per run,
    synergy and redundancy are smoothed by an exponential moving average
    :math:`s_t = (1 - a) s_{t-1} + a x_t` (``--smooth`` a, default 0.1), test accuracy is drawn as
    it is. Where the rows carry ``value_sd`` (the standard deviation of the O-information over
    random orders of tied activations, see ``grokscope.measures.multiplets.oinfo_search``), a
    band of one standard deviation either side goes through the same scaling and smoothing.
    Dashed and solid vertical lines mark the memorisation and generalisation steps; a second
    panel shows the size of the multiplet that attains each extreme.
    """
    import plotnine as p9

    _reject_color(options, "phases", "quantity")
    if not 0.0 < options.smooth <= 1.0:
        raise GrokscopeError(f"--smooth: must lie in (0, 1], got {options.smooth}")
    synergy, redundancy = _extremes(tables)
    style.require_option_columns(synergy, options)
    progress = [
        _smoothed(_normalised(_with_band(synergy.assign(value=-synergy["value"]))), options.smooth).assign(quantity="synergy"),
        _smoothed(_normalised(_with_band(redundancy)), options.smooth).assign(quantity="redundancy"),
    ]
    key = series_key(synergy)
    history = tables.history
    if not history.empty:
        history = history[history[series_key(history)].isin(set(synergy[key]))]
        if "test_acc" in history.columns:
            progress.append(history.assign(value=history["test_acc"], quantity="test accuracy"))
        if "test_loss" in history.columns:
            progress.append(_normalised(history.assign(value=history["test_loss"])).assign(quantity="test loss"))
    progress = pd.concat(progress, ignore_index=True).assign(panel=PROGRESS)
    sizes = _sizes(synergy, redundancy)
    frames = [progress] + ([sizes] if not sizes.empty else [])
    panels = [PROGRESS] + ([SIZE] if not sizes.empty else [])
    data = style.positive_steps(pd.concat(frames, ignore_index=True))
    style.require_rows(data, "O-information rows at steps > 0 (the step axis is logarithmic)")
    data["panel"] = pd.Categorical(data["panel"], categories=panels)
    data["quantity"] = pd.Categorical(data["quantity"], categories=list(QUANTITY_COLOURS))
    data["line"] = data[series_key(data)].astype(str) + "|" + data["quantity"].astype(str)
    facet_column = options.facet or label_column(data)
    band = data[(data["panel"] == PROGRESS) & data["low"].notna()] if "low" in data.columns else data.iloc[0:0]
    plot = (
        p9.ggplot(data, p9.aes("step", "value", color="quantity", group="line"))
        + p9.geom_ribbon(p9.aes(ymin="low", ymax="high", fill="quantity"), data=band, alpha=0.25,
                         color=None, show_legend=False)
        + p9.geom_line(data=data[data["panel"] == PROGRESS], size=0.7)
        + p9.geom_point(data=data[data["panel"] == SIZE], size=1.2, alpha=0.8)
        + p9.scale_color_manual(values=QUANTITY_COLOURS, drop=True)
        + p9.scale_fill_manual(values=QUANTITY_COLOURS, drop=True)
        + style.log_step_axis()
        + p9.labs(y="", color="", linetype="")
        + p9.facet_grid(f"panel ~ {facet_column}", scales="free_y",
                        labeller=p9.labeller(cols="label_both" if options.facet else "label_value"))
        + style.theme(options)
    )
    events = _events(tables, options, set(synergy[key]), facet_column)
    if not events.empty:
        plot += p9.geom_vline(p9.aes(xintercept="step", linetype="event"), data=events,
                              color="#555555", size=0.5)
        plot += p9.scale_linetype_manual(values={"memorisation": "dashed", "generalisation": "solid"})
    return plot


def pareto(tables: Tables, options: style.FigureOptions):
    """Synergy (-Omega min) against redundancy (Omega max), one trajectory per run, points by step.

    Where the rows carry ``value_sd`` (the spread over random orders of tied activations), each
    point gets error bars of one standard deviation in both directions.
    """
    import plotnine as p9

    _reject_color(options, "pareto", "step")
    synergy, redundancy = _extremes(tables)
    style.require_option_columns(synergy, options)
    keys = [series_key(synergy), "step"]
    synergy, redundancy = _with_sd(synergy), _with_sd(redundancy)
    pairs = synergy.assign(synergy=-synergy["value"], synergy_sd=synergy["value_sd"]).drop(
        columns=["value", "metric", "value_sd"]
    ).merge(redundancy[keys + ["value", "value_sd"]].rename(columns={"value": "redundancy", "value_sd": "redundancy_sd"}),
            on=keys)
    pairs = style.positive_steps(pairs).sort_values(keys)
    style.require_rows(pairs, "steps with both synergy and redundancy")
    bars = pairs.dropna(subset=["synergy_sd", "redundancy_sd"]).assign(
        synergy_low=lambda f: f["synergy"] - f["synergy_sd"], synergy_high=lambda f: f["synergy"] + f["synergy_sd"],
        redundancy_low=lambda f: f["redundancy"] - f["redundancy_sd"],
        redundancy_high=lambda f: f["redundancy"] + f["redundancy_sd"],
    )
    return style.add(
        p9.ggplot(pairs, p9.aes("synergy", "redundancy"))
        + p9.geom_path(p9.aes(group=keys[0]), color="#bbbbbb", size=0.4)
        + p9.geom_errorbar(p9.aes(ymin="redundancy_low", ymax="redundancy_high"), data=bars, color="#999999",
                           size=0.3, width=0)
        + p9.geom_errorbarh(p9.aes(xmin="synergy_low", xmax="synergy_high"), data=bars, color="#999999",
                            size=0.3, height=0)
        + p9.geom_point(p9.aes(color="step"), size=1.6)
        + p9.scale_color_cmap("viridis", trans="log10")
        + p9.labs(x="synergy (−Ω, lowest O-information)", y="redundancy (Ω, highest O-information)"),
        style.facet(options, default=label_column(pairs)),
        style.theme(options),
    )


def _reject_color(options: style.FigureOptions, kind: str, colours_by: str) -> None:
    if options.color:
        raise GrokscopeError(f"--color: the {kind} figure colours by {colours_by}; use --facet to split it")


def _extremes(tables: Tables) -> tuple[pd.DataFrame, pd.DataFrame]:
    synergy, redundancy = overall_oinfo(tables, "synergy"), overall_oinfo(tables, "redundancy")
    style.require_rows(synergy, "rows with metric 'synergy' (an oinfo table)")
    style.require_rows(redundancy, "rows with metric 'redundancy' (an oinfo table)")
    return synergy, redundancy


BAND = ("low", "high")


def _with_sd(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``value_sd`` column (NaN where the table has none)."""
    return frame if "value_sd" in frame.columns else frame.assign(value_sd=float("nan"))


def _with_band(frame: pd.DataFrame) -> pd.DataFrame:
    """``low`` and ``high``: the value one ``value_sd`` either side (NaN without a spread)."""
    sd = _with_sd(frame)["value_sd"].astype(float)
    return frame.assign(low=frame["value"] - sd, high=frame["value"] + sd)


def _normalised(frame: pd.DataFrame) -> pd.DataFrame:
    """``value`` min-max scaled to [0, 1] within each series (a constant one becomes 0); the band
    columns, where present, by the same map."""
    grouped = frame.groupby(series_key(frame))["value"]
    low, high = grouped.transform("min"), grouped.transform("max")
    span = (high - low).where(high > low)
    scaled = {column: (frame[column] - low) / span for column in BAND if column in frame.columns}
    return frame.assign(value=((frame["value"] - low) / span).fillna(0.0), **scaled)


def _smoothed(frame: pd.DataFrame, weight: float) -> pd.DataFrame:
    """An exponential moving average of ``value`` (and the band columns) within each series."""
    key = series_key(frame)
    frame = frame.sort_values([key, "step"])
    columns = ["value"] + [c for c in BAND if c in frame.columns]
    smooth = {c: frame.groupby(key)[c].transform(lambda v: v.ewm(alpha=weight, adjust=False).mean())
              for c in columns}
    return frame.assign(**smooth)


def _sizes(synergy: pd.DataFrame, redundancy: pd.DataFrame) -> pd.DataFrame:
    if "size" not in synergy.columns:
        return pd.DataFrame()
    frames = [frame.assign(value=frame["size"].astype(float), quantity=name, panel=SIZE)
              for name, frame in (("synergy", synergy), ("redundancy", redundancy)) if "size" in frame.columns]
    return pd.concat(frames, ignore_index=True).dropna(subset=["value"])


def _events(tables: Tables, options: style.FigureOptions, runs: set, facet_column: str) -> pd.DataFrame:
    summaries = run_summaries(tables, threshold=options.threshold, delay=options.delay)
    summaries = summaries[summaries["series"].isin(runs)]
    rows = []
    for _, summary in summaries.iterrows():
        for event, column in (("memorisation", "memorization_step"), ("generalisation", "generalization_step")):
            if pd.notna(summary[column]) and summary[column] > 0:
                rows.append({facet_column: summary.get(facet_column), "step": float(summary[column]), "event": event})
    return pd.DataFrame(rows)
