"""The tie spread in the O-information figures and in the report: bands, error bars, the flag."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from grokscope.plotting import draw, style
from grokscope.plotting.data import Tables
from grokscope.plotting.summary import run_summaries

STEPS = [1, 10, 100, 1000]


def oinfo_rows(run, synergy, redundancy, synergy_sd=None, redundancy_sd=None):
    rows = []
    for metric, values, sds in (("synergy", synergy, synergy_sd), ("redundancy", redundancy, redundancy_sd)):
        for i, (step, value) in enumerate(zip(STEPS, values)):
            row = {"run": run, "step": step, "metric": metric, "value": value, "split": "train",
                   "layer": "h", "scope": "overall", "size": 3}
            if sds is not None:
                row["value_sd"] = sds[i]
            rows.append(row)
    return rows


def tables(*runs) -> Tables:
    return Tables(measures=pd.DataFrame([row for run in runs for row in run]), history=pd.DataFrame())


def layer_data(plot, geom: str) -> pd.DataFrame:
    layers = [layer for layer in plot.layers if type(layer.geom).__name__ == geom]
    assert len(layers) == 1
    return layers[0].geom.data  # the frame the layer was given


def test_phases_band_is_one_spread_either_side_scaled_like_the_curve():
    synergy = np.array([-0.2, -1.0, -0.6, -0.4])
    sd = np.array([0.05, 0.1, 0.02, 0.04])
    redundancy = [5.0, 7.0, 6.0, 6.5]
    plot = draw("phases", tables(oinfo_rows("r", synergy, redundancy, sd, [0.1] * 4)),
                style.FigureOptions(smooth=1.0))  # no smoothing: the band is the scaled spread
    band = layer_data(plot, "geom_ribbon").sort_values("step")
    up = -synergy  # the figure draws synergy as -Omega
    span = up.max() - up.min()
    curve = band[band["quantity"] == "synergy"]
    np.testing.assert_allclose(curve["value"], (up - up.min()) / span)
    np.testing.assert_allclose(curve["low"], (up - sd - up.min()) / span)
    np.testing.assert_allclose(curve["high"], (up + sd - up.min()) / span)
    assert set(band["quantity"]) == {"synergy", "redundancy"}


def test_phases_and_pareto_without_a_spread_draw_no_band():
    run = oinfo_rows("r", [-0.2, -1.0, -0.6, -0.4], [5.0, 7.0, 6.0, 6.5])
    assert layer_data(draw("phases", tables(run), style.FigureOptions()), "geom_ribbon").empty
    pareto = draw("pareto", tables(run), style.FigureOptions())
    assert layer_data(pareto, "geom_errorbar").empty and layer_data(pareto, "geom_errorbarh").empty


def test_pareto_error_bars_span_one_spread_in_both_directions():
    synergy, redundancy = [-0.2, -1.0, -0.6, -0.4], [5.0, 7.0, 6.0, 6.5]
    plot = draw("pareto", tables(oinfo_rows("r", synergy, redundancy, [0.1] * 4, [0.3] * 4)),
                style.FigureOptions())
    bars = layer_data(plot, "geom_errorbarh").sort_values("step")
    np.testing.assert_allclose(bars["synergy_low"], -np.array(synergy) - 0.1)
    np.testing.assert_allclose(bars["synergy_high"], -np.array(synergy) + 0.1)
    vertical = layer_data(plot, "geom_errorbar").sort_values("step")
    np.testing.assert_allclose(vertical["redundancy_high"] - vertical["redundancy_low"], 0.6)


def test_report_flags_a_run_whose_synergy_extremes_are_within_the_tie_spread():
    flat = oinfo_rows("flat", [-0.10, -0.13, -0.11, -0.12], [5.0] * 4, [0.05, 0.05, 0.04, 0.05], [0.1] * 4)
    peaked = oinfo_rows("peaked", [-0.10, -1.00, -0.10, -0.15], [5.0] * 4, [0.05, 0.08, 0.05, 0.05], [0.1] * 4)
    bare = oinfo_rows("bare", [-0.10, -1.00, -0.10, -0.15], [5.0] * 4)  # no spread (e.g. --ties index)
    summaries = run_summaries(tables(flat, peaked, bare)).set_index("run")
    # flat: -0.13 vs -0.10 differ by 0.03 < 2 * hypot(0.05, 0.05); peaked: 0.9 > 2 * hypot(0.08, 0.05)
    assert summaries.loc["flat", "synergy_within_ties"]
    assert not summaries.loc["peaked", "synergy_within_ties"]
    assert summaries.loc["peaked", "synergy_min_sd"] == pytest.approx(0.08)
    assert summaries.loc["peaked", "synergy_min_step"] == 10
    assert pd.isna(summaries.loc["bare", "synergy_within_ties"]) and math.isnan(summaries.loc["bare", "synergy_min_sd"])
    assert summaries["synergy_within_ties"].dtype == "boolean"
