"""Quantities against step, one line per run: ``curves``, ``collapse`` and ``metric NAME``."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from grokscope.errors import GrokscopeError, GrokscopeWarning
from grokscope.plotting import style
from grokscope.plotting.data import SERIES, Tables, label_column, series_key
from grokscope.plotting.summary import overall_oinfo

HISTORY_CURVES = {
    "train_acc": ("accuracy", "train"),
    "test_acc": ("accuracy", "test"),
    "train_loss": ("loss", "train"),
    "test_loss": ("loss", "test"),
}
OINFO_METRICS = ("synergy", "redundancy")


def curves(tables: Tables, options: style.FigureOptions):
    """Train and test accuracy and loss against step (log), one line per run, split by line type."""
    history = tables.history
    style.require_rows(history, "history (train/test accuracy and loss)")
    style.require_option_columns(history, options)
    present = [c for c in HISTORY_CURVES if c in history.columns and history[c].notna().any()]
    logged = ", ".join(c for c in history.columns if c not in ("run", SERIES))
    if not present:
        raise GrokscopeError(f"curves: the history has none of {', '.join(HISTORY_CURVES)} (its columns: {logged}); "
                             "`grokscope probe` computes them from the model's output at every checkpoint")
    if len(present) < len(HISTORY_CURVES):
        # An evaluation-only log (a Trainer that logged no training loss): draw what there is.
        warnings.warn(GrokscopeWarning(
            f"curves: the history has no {', '.join(c for c in HISTORY_CURVES if c not in present)} (its columns: "
            f"{logged}); drawing {', '.join(present)}"))
    keep = [c for c in history.columns if c not in HISTORY_CURVES]
    long = history.melt(id_vars=keep, value_vars=present, var_name="column", value_name="value")
    long["quantity"] = long["column"].map(lambda c: HISTORY_CURVES[c][0])
    long["split"] = long["column"].map(lambda c: HISTORY_CURVES[c][1])
    return _lines(long, options, panel="quantity", y_label=None, linetype="split")


ACCURACY = "test accuracy"


def collapse(tables: Tables, options: style.FigureOptions):
    """RNC1 on the train and test splits (log10) beside test accuracy (on a fixed 0-1 axis, so
    runs and figures compare), against step."""
    import plotnine as p9

    rnc1 = tables.metric("rnc1")
    style.require_rows(rnc1, "rows with metric 'rnc1' (a collapse table)")
    style.require_columns(rnc1, ["split"], "collapse")
    style.require_option_columns(rnc1, options)
    rnc1 = rnc1[rnc1["value"] > 0].assign(value=lambda f: np.log10(f["value"]), quantity="RNC1 (log10)")
    panels = [rnc1]
    if not tables.history.empty and "test_acc" in tables.history.columns:
        accuracy = tables.history.assign(value=tables.history["test_acc"], split="test", quantity=ACCURACY)
        panels.append(accuracy[[c for c in accuracy.columns if c in set(rnc1.columns) | {"quantity"}]])
    long = pd.concat(panels, ignore_index=True)
    long["quantity"] = pd.Categorical(long["quantity"], categories=["RNC1 (log10)", ACCURACY])
    plot = _lines(long, options, panel="quantity", y_label=None, linetype="split")
    drawn = style.positive_steps(long.dropna(subset=["value"]))
    if (drawn["quantity"] == ACCURACY).any():
        # Invisible points at 0 and 1 in every accuracy panel: free y scales, but that one spans 0-1.
        facets = [c for c in (options.facet,) if c]
        corners = drawn[drawn["quantity"] == ACCURACY][facets].drop_duplicates() if facets else pd.DataFrame([{}])
        blank = pd.concat([corners.assign(value=v) for v in (0.0, 1.0)], ignore_index=True).assign(
            step=float(drawn["step"].min()), quantity=pd.Categorical([ACCURACY] * (2 * len(corners)),
                                                                     categories=long["quantity"].cat.categories))
        plot = plot + p9.geom_blank(p9.aes("step", "value"), data=blank, inherit_aes=False)
    return plot


# O-information drawn as in the phases and pareto figures: synergy as -Omega_min, so up means
# more synergy; redundancy as Omega_max.
OINFO_LABELS = {"synergy": "synergy (−Ω, lowest O-information)", "redundancy": "redundancy (Ω, highest O-information)"}


def metric(tables: Tables, options: style.FigureOptions, name: str):
    """Any measured quantity against step: a measure table's metric, or a history column.
    Synergy is drawn negated (-Omega_min, up = more synergy), as in ``phases`` and ``pareto``."""
    rows = overall_oinfo(tables, name) if name in OINFO_METRICS else tables.metric(name)
    if name == "synergy" and not rows.empty:
        rows = rows.assign(value=-rows["value"])
    if rows.empty and name in tables.history.columns and name != "step":
        rows = tables.history.assign(value=tables.history[name])
    if rows.empty:
        raise GrokscopeError(
            f"metric: no rows with metric {name!r} and no history column of that name (after --where, if given)"
        )
    style.require_option_columns(rows, options)
    linetype = "split" if _varies(rows, "split") else None
    panel = "layer" if _varies(rows, "layer") and options.facet is None else None
    return _lines(rows, options, panel=panel, y_label=OINFO_LABELS.get(name, name), linetype=linetype)


def _lines(long: pd.DataFrame, options: style.FigureOptions, panel: str | None, y_label: str | None,
           linetype: str | None):
    import plotnine as p9

    long = style.positive_steps(long.dropna(subset=["value"]))
    style.require_rows(long, "rows at steps > 0 (the step axis is logarithmic)")
    colour = options.color or label_column(long)
    long = style.as_levels(long, colour)
    long = long.assign(line=_line_ids(long, ["split", "layer"]))
    mapping = p9.aes("step", "value", color=colour, group="line")
    if linetype:
        mapping = p9.aes("step", "value", color=colour, group="line", linetype=linetype)
    plot = p9.ggplot(long, mapping) + p9.geom_line(size=0.6, alpha=0.9)
    return style.add(
        plot,
        style.log_step_axis(),
        style.colour_scale(long, colour),
        p9.labs(y=y_label or "", color=colour, linetype=linetype or ""),
        _panels(options, panel),
        style.theme(options),
    )


def _panels(options: style.FigureOptions, panel: str | None):
    import plotnine as p9

    if panel and options.facet:
        return p9.facet_grid(f"{panel} ~ {options.facet}", scales="free_y",
                             labeller=p9.labeller(cols="label_both"))
    if panel:
        return p9.facet_wrap(panel, scales="free_y")
    return style.facet(options)


def _line_ids(frame: pd.DataFrame, extra: list[str]) -> pd.Series:
    """One id per drawn line: the series, plus whichever of split/layer tell its lines apart."""
    ids = frame[series_key(frame)].astype(str)
    for column in extra:
        if column in frame.columns:
            # Missing values (a history has no layer) must still join into a string, not NaN.
            ids = ids + "|" + frame[column].astype(object).fillna("").astype(str)
    return ids


def _varies(frame: pd.DataFrame, column: str) -> bool:
    return column in frame.columns and frame[column].nunique(dropna=True) > 1
