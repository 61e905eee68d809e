"""The ``onsets`` figure: which measure moves first, relative to generalisation, over seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from grokscope.errors import GrokscopeError
from grokscope.plotting.lead_lag import DEFAULT_MEASURES, SEED_COLUMNS, lead_lag, onset_rows
from grokscope.measures import onsets as onset_measures
from grokscope.plotting import style
from grokscope.plotting.data import Tables
from grokscope.plotting.summary import HYPERPARAMETERS

EVENT_COLOURS = {"peak": "#1b9e77", "steepest": "#d95f02", "change_point": "#7570b3"}
# Each event's row within a measure's band of the y axis.
EVENT_OFFSETS = {"peak": 0.25, "steepest": 0.0, "change_point": -0.25}
X_LABEL = "event step relative to the generalisation step, log10(t / t_gen)"
CAPTION = ("Small points: seeds; large point and bar: their mean and its {:.0%} percentile bootstrap\n"
           "interval ({} resamples, seed 0). Solid line: generalisation; dashed: memorisation (mean over\n"
           "seeds). Runs that never reach the test accuracy threshold have no t_gen and are left out.")


def onsets(tables: Tables, options: style.FigureOptions):
    """Every measure's events (peak, steepest change, change point) on the y axis, their step as
    log10(t / t_gen) on the x axis (0: the generalisation step, -1: a tenth of it), the seeds as
    points and their mean with a bootstrap interval, one panel per setting (the hyperparameters
    that differ between runs, seed aside)."""
    import plotnine as p9

    if options.color or options.facet:
        raise GrokscopeError("--color/--facet: the onsets figure colours by event and has one panel per setting")
    rows = onset_rows(tables, threshold=options.threshold)
    rows = rows[np.isfinite(rows["log_ratio_generalization"].to_numpy(dtype=float, na_value=np.nan))]
    style.require_rows(rows, f"runs that reach {options.threshold:g} test accuracy (their onsets have no "
                             "generalisation step to be relative to)")
    rows = _with_positions(_with_panels(rows))
    # A panel is one setting, so its lead-lag rows are those of its own runs.
    keys = ["measure", "split", "layer", "variant", "event"]
    summary = pd.concat([lead_lag(group).query("relative_to == 'generalization'")
                         .merge(group[[*keys, "y"]].drop_duplicates(), on=keys).assign(panel=panel)
                         for panel, group in rows.groupby("panel", sort=True)], ignore_index=True)
    memorised = (rows.drop_duplicates("series").assign(
        x=lambda f: np.log10(f["memorization_step"].astype(float) / f["generalization_step"].astype(float)))
        .groupby("panel", as_index=False)["x"].mean())
    labels = rows.drop_duplicates("label").sort_values("band")
    for frame in (rows, summary):
        frame["event"] = pd.Categorical(frame["event"], categories=list(EVENT_COLOURS))
    plot = (
        p9.ggplot(rows, p9.aes("log_ratio_generalization", "y", color="event"))
        + p9.geom_vline(xintercept=0.0, color="#555555", size=0.5)
        + p9.geom_vline(p9.aes(xintercept="x"), data=memorised, color="#555555", size=0.4, linetype="dashed")
        + p9.geom_point(size=1.0, alpha=0.45)
        + p9.geom_segment(p9.aes(x="log_ratio_low", xend="log_ratio_high", y="y", yend="y", color="event"),
                          data=summary.dropna(subset=["log_ratio_low"]), size=0.8, inherit_aes=False)
        + p9.geom_point(p9.aes(x="log_ratio", y="y", color="event"), data=summary, size=2.4, inherit_aes=False)
        + p9.scale_color_manual(values=EVENT_COLOURS, drop=False)
        + p9.scale_y_continuous(breaks=labels["band"].tolist(), labels=labels["label"].tolist(), name="")
        + p9.labs(x=X_LABEL, color="", caption=CAPTION.format(onset_measures.CONFIDENCE, onset_measures.RESAMPLES))
        + p9.facet_wrap("panel")
        + style.theme(options)
        + p9.theme(plot_caption=p9.element_text(size=7, ha="left"))
    )
    return plot


def _with_panels(rows: pd.DataFrame) -> pd.DataFrame:
    """``panel``: the setting, as the hyperparameters that differ between runs (seed aside)."""
    varying = [c for c in HYPERPARAMETERS if c in rows.columns and c not in SEED_COLUMNS
               and rows[c].nunique(dropna=False) > 1]
    if not varying:
        return rows.assign(panel="every run")
    return rows.assign(panel=rows[varying].astype(str).apply(
        lambda values: ", ".join(f"{c}={v}" for c, v in zip(varying, values)), axis=1))


def _with_positions(rows: pd.DataFrame) -> pd.DataFrame:
    """``label`` (the measure, with its split, layer and variant where it has several), its ``band``
    (the seed papers' measures from the top in their order, others after) and ``y`` (the band,
    offset by event)."""
    def text(row) -> str:
        parts = [row["measure"], row["split"], row["variant"]]
        if rows.loc[rows["measure"] == row["measure"], "layer"].nunique() > 1:
            parts.insert(2, row["layer"])
        return " ".join(str(p) for p in parts if p is not None and not (isinstance(p, float) and np.isnan(p)))

    rows = rows.assign(label=rows.apply(text, axis=1))
    order = {m: i for i, m in enumerate(DEFAULT_MEASURES)}
    ranked = sorted(rows["label"].unique(), key=lambda label: (order.get(label.split(" ")[0], len(order)), label))
    band = {label: -i for i, label in enumerate(ranked)}
    rows["band"] = rows["label"].map(band).astype(float)
    rows["y"] = rows["band"] + rows["event"].map(EVENT_OFFSETS)
    return rows

