r"""One summary row per run: hyperparameters, grokking steps and phase, synergy minimum, final RNC1.

Shared by ``grokscope report`` and the ``sweep`` and ``phases`` figures. The grokking part comes
from the run's history when there is one (so the thresholds can be chosen), else from a
``grokking`` measure table; the O-information and collapse parts only when those tables exist
(their cells are empty otherwise).

The synergy minimum is taken over every measured step, step 0 included (the curve at
initialisation is often its extreme). ``synergy_within_ties`` compares the synergy curve's two
extremes with the tie spread: true when its lowest and highest values differ by less than twice
the standard deviation of that difference over random orders of tied activations,
:math:`|\Omega_{\max} - \Omega_{\min}| < 2 \sqrt{s_{\min}^2 + s_{\max}^2}` with :math:`s` the
rows' ``value_sd``, i.e. when the rise and fall of the curve is within what the arbitrary order of
the ReLU zeros alone moves a value (empty where the table has no spread).

``synergy_peak_height`` / ``_bits`` / ``_step`` / ``_width``: the first synergy peak after the
initial transient (:func:`grokscope.measures.early_synergy.first_synergy_peak` from
:func:`~grokscope.measures.early_synergy.transient_end` of the run's history), over the whole run
or, with ``early=k``, over the steps up to the memorisation step + k; height on the run's
min-max scale over those steps (Clauw et al.'s normalisation), bits, step, width at half
height in steps. Height 0 where the curve has no peak.
"""

from __future__ import annotations

import math

import pandas as pd

from grokscope.config import hyperparameter_columns
from grokscope.measures import grokking
from grokscope.plotting.data import Tables

# Every setting a user can give train (config.hyperparameters), so runs that differ in any of
# them are told apart in the report.
HYPERPARAMETERS = hyperparameter_columns()
STEP_COLUMNS = ("memorization_step", "generalization_step", "grokking_gap", "synergy_min_step", "synergy_min_size",
                "synergy_peak_step")
COLUMNS = (
    "run", *HYPERPARAMETERS, "memorization_step", "generalization_step", "grokking_gap", "phase",
    "synergy_min", "synergy_min_step", "synergy_min_size", "synergy_min_sd", "synergy_within_ties",
    "rnc1_train", "rnc1_test",
    "synergy_peak_height", "synergy_peak_bits", "synergy_peak_step", "synergy_peak_width",
)


def run_summaries(
    tables: Tables,
    threshold: float = grokking.DEFAULT_THRESHOLD,
    delay: int = grokking.DEFAULT_DELAY,
    early: int | None = None,
) -> pd.DataFrame:
    """A frame with the columns :data:`COLUMNS`, one row per run, in the order runs were read;
    ``early``: the synergy peak from the steps up to the memorisation step + ``early`` only."""
    rows = [_summary(tables, run, threshold, delay, early) for run in _runs(tables)]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for column in STEP_COLUMNS:
        frame[column] = pd.array(frame[column], dtype="Float64").round().astype("Int64")
    for column in ("synergy_min", "synergy_min_sd", "rnc1_train", "rnc1_test", "synergy_peak_height",
                   "synergy_peak_bits", "synergy_peak_width"):
        frame[column] = frame[column].astype("float64")
    frame["synergy_within_ties"] = frame["synergy_within_ties"].astype("boolean")
    return frame


def overall_oinfo(tables: Tables, metric: str) -> pd.DataFrame:
    """Synergy or redundancy rows of the headline curve: one row per run and step.

    Where the table splits rows by ``scope`` only the ``overall`` rows count; where it lists one
    row per multiplet size instead, the extreme over sizes is the overall value (synergy is the
    lowest O-information found, redundancy the highest; Clauw et al. 2024).
    """
    rows = tables.metric(metric)
    if rows.empty:
        return rows
    if "scope" in rows.columns:
        rows = rows[rows["scope"] == "overall"]
    rows = rows.dropna(subset=["value"])
    extreme = rows.groupby(["run", "step"])["value"].idxmin() if metric == "synergy" else (
        rows.groupby(["run", "step"])["value"].idxmax()
    )
    return rows.loc[extreme.values].sort_values(["run", "step"]).reset_index(drop=True)


def _runs(tables: Tables) -> list[str]:
    names = []
    for frame in (tables.history, tables.measures):
        if "run" in frame.columns:
            names.extend(frame["run"].astype(str).tolist())
    return list(dict.fromkeys(names))


def _summary(tables: Tables, run: str, threshold: float, delay: int, early: int | None = None) -> dict:
    row = {"run": run, **_hyperparameters(tables, run)}
    row.update(_grokking(tables, run, threshold, delay))
    row.update(_synergy_minimum(tables, run))
    row.update(_final_rnc1(tables, run))
    row.update(_synergy_peak(tables, run, threshold, early))
    return row


def _rows_of(frame: pd.DataFrame, run: str) -> pd.DataFrame:
    if frame.empty or "run" not in frame.columns:
        return frame.iloc[0:0]
    return frame[frame["run"].astype(str) == run]


def _hyperparameters(tables: Tables, run: str) -> dict:
    values = {}
    for frame in (tables.history, tables.measures):
        rows = _rows_of(frame, run)
        for column in HYPERPARAMETERS:
            if column not in values and column in rows.columns and rows[column].notna().any():
                values[column] = rows[column].dropna().iloc[0]
    return values


def _grokking(tables: Tables, run: str, threshold: float, delay: int) -> dict:
    history = _rows_of(tables.history, run)
    if not history.empty:
        summary = grokking.grokking_summary(history, threshold=threshold, delay=delay)
        return {key: summary[key] for key in (*grokking.METRICS, "phase")}
    stored = _rows_of(tables.measures, run)
    stored = stored[stored["metric"].isin(grokking.METRICS)] if not stored.empty else stored
    if stored.empty:
        return {}
    last = stored[stored["step"] == stored["step"].max()]
    values = {m: v for m, v in zip(last["metric"], last["value"]) if pd.notna(v)}
    if "phase" in last.columns and last["phase"].notna().any():
        values["phase"] = last["phase"].dropna().iloc[0]
    return values


def _synergy_minimum(tables: Tables, run: str) -> dict:
    synergy = _rows_of(overall_oinfo(tables, "synergy"), run)
    if synergy.empty:
        return {}
    lowest = synergy.loc[synergy["value"].idxmin()]
    highest = synergy.loc[synergy["value"].idxmax()]
    size = lowest["size"] if "size" in synergy.columns else None
    summary = {"synergy_min": lowest["value"], "synergy_min_step": lowest["step"], "synergy_min_size": size}
    if "value_sd" in synergy.columns and pd.notna(lowest["value_sd"]) and pd.notna(highest["value_sd"]):
        spread = math.hypot(lowest["value_sd"], highest["value_sd"])
        summary["synergy_min_sd"] = lowest["value_sd"]
        summary["synergy_within_ties"] = bool(highest["value"] - lowest["value"] < 2.0 * spread)
    return summary


def _final_rnc1(tables: Tables, run: str) -> dict:
    rnc1 = _rows_of(tables.metric("rnc1"), run)
    if rnc1.empty or "split" not in rnc1.columns:
        return {}
    final = {}
    for split in ("train", "test"):
        rows = rnc1[rnc1["split"] == split].dropna(subset=["value"])
        if not rows.empty:
            final[f"rnc1_{split}"] = rows.loc[rows["step"].idxmax(), "value"]
    return final


def _synergy_peak(tables: Tables, run: str, threshold: float, early: int | None) -> dict:
    from grokscope.measures.early_synergy import first_synergy_peak, transient_end

    synergy = _rows_of(overall_oinfo(tables, "synergy"), run)
    if synergy.empty:
        return {}
    history = _rows_of(tables.history, run)
    until = None
    if early is not None:
        if history.empty:
            return {}
        summary = grokking.grokking_summary(history, threshold=threshold)
        until = (summary["memorization_step"] if summary["memorization_step"] is not None
                 else summary["last_step"]) + early
    peak = first_synergy_peak(synergy["step"], synergy["value"], synergy.get("value_sd"),
                              start=transient_end(history if not history.empty else None), until=until)
    return {f"synergy_{name}": value for name, value in peak.features().items()}
