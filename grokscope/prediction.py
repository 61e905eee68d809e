"""Does an early synergy peak predict grokking? Per-run features and their leave-one-out evaluation.

``grokscope predict`` reads a sweep (runs with histories and o-info tables), and for each window
end k computes, per run, the early-synergy features (:func:`grokscope.measures.early_synergy.
first_synergy_peak`) and the loss baseline (:func:`~grokscope.measures.early_synergy.
loss_features`) on the steps from the end of the initial transient to the memorisation step + k,
then evaluates how well each feature set predicts the run's outcome by leave-one-out
(:func:`~grokscope.measures.early_synergy.leave_one_out`).

Outcome: ``generalised`` (default) is true when test accuracy reaches the threshold within the
run, Clauw et al.'s sense of "grokking" (their weight decay 2, which generalises a few hundred
steps after memorising, counts); ``grokking`` is Liu et al.'s phase (generalised at least
``delay`` steps after memorising). A run that never memorises is windowed up to its last step +
k, i.e. it shows everything it did (its failure to memorise is then visible to both feature
sets alike).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from grokscope.early_windows import window_features
from grokscope.measures import early_synergy
from grokscope.plotting.data import Tables
from grokscope.plotting.summary import overall_oinfo

FEATURE_SETS = {
    "synergy": early_synergy.PEAK_FEATURES,
    "loss": early_synergy.LOSS_FEATURES,
    "synergy+loss": early_synergy.PEAK_FEATURES + early_synergy.LOSS_FEATURES,
}
RESULT_COLUMNS = ("k", "features", "runs", "positives", "leaked", "accuracy", "chance", "auc", "auc_low",
                  "auc_high", "p_value", "auc_loo", "permutations")


def run_features(tables: Tables, ks, **options) -> tuple[pd.DataFrame, list[str]]:
    """:func:`grokscope.early_windows.window_features` of a sweep's tables (histories and o-info
    tables), with its options."""
    return window_features(tables.history, overall_oinfo(tables, "synergy"), ks, **options)


def design(frame: pd.DataFrame, columns) -> np.ndarray:
    """The classifier's inputs from feature columns: steps and widths on a log scale
    (``log10(1 + x)``), a missing peak step read as 0, like the missing peak's height and width.

    Not as the window's end: that is the memorisation step + k, or the run's last step for a run
    that never memorises, so it would tell the classifier whether and when the run memorised,
    which is not synergy (the loss baseline sees it anyway)."""
    x = frame[list(columns)].astype(float).copy()
    if "peak_step" in x.columns:
        x["peak_step"] = np.log10(1.0 + x["peak_step"].fillna(0.0))
    if "peak_width" in x.columns:
        x["peak_width"] = np.log10(1.0 + x["peak_width"])
    return x.to_numpy()


def evaluate(features: pd.DataFrame, *, permutations: int = 200, bootstraps: int = 2000,
             seed: int = 0) -> pd.DataFrame:
    """Leave-one-out accuracy beside chance (the majority's share), leave-pair-out ROC AUC with its
    permutation p-value and its bootstrap interval, and the pooled leave-one-out AUC, of every feature set
    (:data:`FEATURE_SETS`) at every k (:func:`grokscope.measures.early_synergy.leave_one_out`);
    columns :data:`RESULT_COLUMNS`."""
    results = []
    for k, group in features.groupby("k", sort=True):
        labels = group["label"].to_numpy().astype(int)
        for name, columns in FEATURE_SETS.items():
            row = {"k": int(k), "features": name, "runs": len(group), "positives": int(labels.sum()),
                   "leaked": int(group["leaked"].sum()), "permutations": permutations}
            if len(set(labels)) < 2:
                row.update(accuracy=math.nan, chance=1.0, auc=math.nan, auc_low=math.nan, auc_high=math.nan,
                           p_value=math.nan, auc_loo=math.nan)
            else:
                result = early_synergy.leave_one_out(design(group, columns), labels, permutations=permutations,
                                                     seed=seed, bootstraps=bootstraps)
                row.update(accuracy=result.accuracy, chance=result.chance, auc=result.auc, auc_low=result.auc_low,
                           auc_high=result.auc_high, p_value=result.p_value, auc_loo=result.auc_loo)
            results.append(row)
    return pd.DataFrame(results, columns=list(RESULT_COLUMNS))
