"""The ``early-synergy`` figure: each run's synergy curve, the window a prediction may use, its first peak."""

from __future__ import annotations

import pandas as pd

from grokscope.errors import GrokscopeError
from grokscope.measures.early_synergy import SMOOTHING
from grokscope.plotting import style
from grokscope.plotting.data import Tables
from grokscope.plotting.summary import overall_oinfo

OUTCOME_COLOURS = {"generalised": "#1f77b4", "did not generalise": "#d62728"}
DEFAULT_K = 300


def early_synergy(tables: Tables, options: style.FigureOptions):
    """Synergy (:math:`-\\Omega_{\\min}`, bits) against step for every run, coloured by whether
    the run generalised (test accuracy reaches ``--threshold``), smoothed as the peak finder
    smooths it (the raw values faint behind), with its first synergy peak
    (:func:`grokscope.measures.early_synergy.first_synergy_peak`) before the memorisation step +
    ``--k`` marked by a point and the end of that window by a tick on the curve: what
    ``grokscope predict`` reads. The curve is drawn from the end of the initial transient on, the
    part past the window faded. ``--facet`` takes one column or several, comma-separated.
    """
    import plotnine as p9

    from grokscope.early_windows import window_features

    if options.color:
        raise GrokscopeError("--color: the early-synergy figure colours by outcome; use --facet to split it")
    k = DEFAULT_K if options.k is None else options.k
    synergy = overall_oinfo(tables, "synergy")
    features, _ = window_features(tables.history, synergy, [k], threshold=options.threshold, delay=options.delay)
    style.require_rows(features, "runs with a history and an o-info table")
    facets = [c.strip() for c in options.facet.split(",")] if options.facet else []
    for column in facets:
        if column not in synergy.columns:
            raise GrokscopeError(f"--facet: no column {column!r} in the table")
    windows = features.set_index("run")
    curves = synergy[synergy["run"].isin(windows.index)].copy()
    curves = curves.join(windows[["start", "until", "label", "peak_step"]], on="run")
    curves = curves[curves["step"] >= curves["start"]].assign(synergy=lambda f: -f["value"])
    curves["outcome"] = curves["label"].map({True: "generalised", False: "did not generalise"})
    curves["part"] = (curves["step"] <= curves["until"]).map({True: "window", False: "after"})
    curves = style.positive_steps(curves)
    style.require_rows(curves, "synergy rows after the initial transient")
    # The peak is found on the curve smoothed as first_synergy_peak smooths it (the same moving
    # average, from the window's first step): draw that one, the raw values faint behind it.
    curves = curves.dropna(subset=["synergy"]).sort_values(["run", "step"], kind="stable")
    curves["smoothed"] = curves.groupby("run")["synergy"].transform(
        lambda v: v.ewm(alpha=SMOOTHING, adjust=False).mean())
    curves["outcome"] = pd.Categorical(curves["outcome"], categories=list(OUTCOME_COLOURS))
    peaks = curves[curves["step"] == curves["peak_step"]]
    ends = (curves[curves["part"] == "window"].sort_values("step").groupby("run").tail(1))
    plot = (
        p9.ggplot(curves, p9.aes("step", "smoothed", color="outcome", group="run"))
        + p9.geom_line(p9.aes(y="synergy"), size=0.3, alpha=0.15)
        + p9.geom_line(p9.aes(alpha="part"), size=0.7)
        + p9.geom_point(data=ends, shape="|", size=4)
        + p9.geom_point(data=peaks, size=2.2)
        + p9.scale_alpha_manual(values={"window": 1.0, "after": 0.25}, guide=None)
        + p9.scale_color_manual(values=OUTCOME_COLOURS, drop=False)
        + style.log_step_axis()
        + p9.labs(y=f"synergy, −Ω (bits; moving average {SMOOTHING:g})",
                  color=f"first peak before memorisation + {k}:")
        + style.theme(options)
    )
    if facets:
        plot += p9.facet_wrap(facets, labeller="label_both", scales="free_y")  # ranges differ tenfold
    return plot
