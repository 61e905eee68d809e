"""Per-run early-synergy and loss features over windows that end at the memorisation step + k:
what ``grokscope predict`` evaluates (:mod:`grokscope.prediction`) and the early-synergy figure
draws (:mod:`grokscope.plotting.early_synergy`).

The window of a run starts at the end of its initial transient
(:func:`grokscope.measures.early_synergy.transient_end`) and ends at its memorisation step + k
(its last step + k when it never memorises). Its outcome is ``generalised`` (test accuracy
reaches the threshold within the run, Clauw et al.'s sense of "grokking") or ``grokking`` (Liu
et al.'s phase: generalised at least ``delay`` steps after memorising).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from grokscope.errors import GrokscopeError
from grokscope.measures import early_synergy, grokking

OUTCOMES = ("generalised", "grokking")


def window_features(history: pd.DataFrame, synergy: pd.DataFrame, ks, *, outcome: str = "generalised",
                    threshold: float = grokking.DEFAULT_THRESHOLD, delay: int = grokking.DEFAULT_DELAY,
                    min_prominence: float = early_synergy.MIN_PROMINENCE_BITS) -> tuple[pd.DataFrame, list[str]]:
    """One row per run and window end k: the run, its outcome (``label``), its memorisation and
    generalisation steps, the window (``start``, ``until``), whether the window reaches the
    generalisation step (``leaked``: the outcome was already visible), the peak and loss features;
    and the runs left out, with why. ``history``: the runs' histories (a ``run`` column);
    ``synergy``: their overall synergy rows (step, value, value_sd)."""
    if outcome not in OUTCOMES:
        raise GrokscopeError(f"--outcome: unknown {outcome!r}; known: {', '.join(OUTCOMES)}")
    rows, skipped = [], []
    runs = list(dict.fromkeys(history["run"].astype(str))) if "run" in history.columns else []
    for run in runs:
        run_history = history[history["run"].astype(str) == run]
        curve = synergy[synergy["run"].astype(str) == run] if not synergy.empty else synergy
        if curve.empty:
            skipped.append(f"{run}: no o-info table")
            continue
        if not {"train_loss", "test_loss", "train_acc", "test_acc"} <= set(run_history.columns):
            skipped.append(f"{run}: its history lacks loss or accuracy")
            continue
        summary = grokking.grokking_summary(run_history, threshold=threshold, delay=delay)
        label = summary["generalization_step"] is not None if outcome == "generalised" else (
            summary["phase"] == "grokking")
        start = early_synergy.transient_end(run_history)
        anchor = summary["memorization_step"] if summary["memorization_step"] is not None else summary["last_step"]
        sd = curve["value_sd"] if "value_sd" in curve.columns else None
        if not np.isfinite(early_synergy.loss_features(run_history, start=start)["train_loss"]):
            skipped.append(f"{run}: no finite training loss after the initial transient (diverged?)")
            continue
        for k in ks:
            until = anchor + k
            peak = early_synergy.first_synergy_peak(curve["step"], curve["value"], sd, start=start, until=until,
                                                    min_prominence=min_prominence)
            generalised = summary["generalization_step"]
            rows.append({
                "run": run, "k": k, "label": bool(label), "phase": summary["phase"],
                "memorization_step": summary["memorization_step"], "generalization_step": generalised,
                "start": start, "until": until, "leaked": generalised is not None and until >= generalised,
                "n_steps": peak.n_steps, **peak.features(),
                **early_synergy.loss_features(run_history, start=start, until=until),
            })
    return pd.DataFrame(rows), skipped
