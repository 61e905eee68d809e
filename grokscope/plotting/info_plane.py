"""The nHSIC information plane (Sakamoto & Sato 2024): nHSIC(T;X) against nHSIC(T;Y), per layer."""

from __future__ import annotations

import pandas as pd

from grokscope.errors import GrokscopeError
from grokscope.plotting import style
from grokscope.plotting.data import Tables, label_column, series_key


def info_plane(tables: Tables, options: style.FigureOptions):
    """Each layer's trajectory through (nHSIC(T;X), nHSIC(T;Y)), points coloured by step (log)."""
    import plotnine as p9

    if options.color:
        raise GrokscopeError("--color: the info-plane figure colours by step; use --facet to split it")
    x, y = _test_split(tables.metric("nhsic_x")), _test_split(tables.metric("nhsic_y"))
    style.require_rows(x, "rows with metric 'nhsic_x' (an hsic table)")
    style.require_rows(y, "rows with metric 'nhsic_y' (an hsic table)")
    style.require_columns(x, ["layer"], "info-plane")
    style.require_option_columns(x, options)
    keys = [series_key(x), "step", "layer"]
    plane = (
        x.rename(columns={"value": "nhsic_x"}).drop(columns=["metric"])
        .merge(y[keys + ["value"]].rename(columns={"value": "nhsic_y"}), on=keys)
    )
    plane = style.positive_steps(plane).sort_values(keys)
    style.require_rows(plane, "steps with both nhsic_x and nhsic_y")
    if options.facet:
        facet = p9.facet_grid(f"{options.facet} ~ layer", labeller=p9.labeller(rows="label_both"))
    elif plane[keys[0]].nunique() > 1:
        facet = p9.facet_wrap([label_column(plane), "layer"])
    else:
        facet = p9.facet_wrap("layer")
    return (
        p9.ggplot(plane, p9.aes("nhsic_x", "nhsic_y"))
        + p9.geom_path(p9.aes(group=keys[0]), color="#bbbbbb", size=0.4)
        + p9.geom_point(p9.aes(color="step"), size=1.4)
        + p9.scale_color_cmap("viridis", trans="log10")
        + p9.labs(x="nHSIC(T; X)", y="nHSIC(T; Y)")
        + facet
        + style.theme(options)
    )


def _test_split(rows: pd.DataFrame) -> pd.DataFrame:
    """The test split's rows where a table holds several splits (the information plane is one)."""
    if "split" in rows.columns and (rows["split"] == "test").any():
        return rows[rows["split"] == "test"]
    return rows
