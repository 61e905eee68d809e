r"""One summary row per series: hyperparameters, grokking steps and phase, synergy minimum, final
RNC1, divergence.

Shared by ``grokscope report`` and the ``sweep`` and ``phases`` figures. The grokking part comes
from the run's history when there is one (so the thresholds can be chosen), else from a
``grokking`` measure table; the O-information and collapse parts only when those tables exist
(their cells are empty otherwise). Rows are one per series (``series``: its home), so two runs
that share a name in different folders stay two rows.

The synergy minimum is taken after the initial transient (see :func:`after_transient`).
``synergy_within_ties`` compares the synergy curve's two extremes there with the tie spread: true
when its lowest and highest values differ by less than twice the standard deviation of that
difference over random orders of tied activations,
:math:`|\Omega_{\max} - \Omega_{\min}| < 2 \sqrt{s_{\min}^2 + s_{\max}^2}` with :math:`s` the
rows' ``value_sd``, i.e. when the rise and fall of the curve is within what the arbitrary order of
the ReLU zeros alone moves a value (empty where the table has no spread).

``synergy_peak_height`` / ``_bits`` / ``_step`` / ``_width``: the first synergy peak after the
initial transient (:func:`grokscope.measures.early_synergy.first_synergy_peak` from
:func:`~grokscope.measures.grokking.transient_end` of the run's history), over the whole run
or, with ``early=k``, over the steps up to the memorisation step + k; height on the run's
min-max scale over those steps (Clauw et al.'s normalisation), bits, step, width at half
height in steps. Height 0 where the curve has no peak.
"""

from __future__ import annotations

import math

import pandas as pd

from grokscope.config import hyperparameter_columns
from grokscope.measures import grokking
from grokscope.plotting.data import Tables, series_key

# Every setting a user can give train (config.hyperparameters), so runs that differ in any of
# them are told apart in the report.
HYPERPARAMETERS = hyperparameter_columns()
STEP_COLUMNS = ("memorization_step", "generalization_step", "grokking_gap", "synergy_min_step", "synergy_min_size",
                "diverged_step", "synergy_peak_step")
COLUMNS = (
    "run", "series", *HYPERPARAMETERS, "memorization_step", "generalization_step", "grokking_gap", "phase",
    "synergy_min", "synergy_min_step", "synergy_min_size", "synergy_min_sd", "synergy_within_ties",
    "rnc1_train", "rnc1_test", "diverged_step",
    "synergy_peak_height", "synergy_peak_bits", "synergy_peak_step", "synergy_peak_width",
)
# Measures whose non-finite value means the weights themselves were (weights family, global norm).
_WEIGHT_NORM = "weight_norm"


def run_summaries(
    tables: Tables,
    threshold: float = grokking.DEFAULT_THRESHOLD,
    delay: int = grokking.DEFAULT_DELAY,
    early: int | None = None,
) -> pd.DataFrame:
    """A frame with the columns :data:`COLUMNS`, one row per series, in the order they were read;
    ``early``: the synergy peak from the steps up to the memorisation step + ``early`` only."""
    rows = [_summary(tables, key, threshold, delay, early) for key in _series(tables)]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for column in STEP_COLUMNS:
        frame[column] = pd.array(frame[column], dtype="Float64").round().astype("Int64")
    for column in ("synergy_min", "synergy_min_sd", "rnc1_train", "rnc1_test", "synergy_peak_height",
                   "synergy_peak_bits", "synergy_peak_width"):
        frame[column] = frame[column].astype("float64")
    frame["synergy_within_ties"] = frame["synergy_within_ties"].astype("boolean")
    return frame


def overall_oinfo(tables: Tables, metric: str) -> pd.DataFrame:
    """Synergy or redundancy rows of the headline curve: one row per series and step.

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
    key = [series_key(rows), "step"]
    extreme = rows.groupby(key)["value"].idxmin() if metric == "synergy" else rows.groupby(key)["value"].idxmax()
    return rows.loc[extreme.values].sort_values(key).reset_index(drop=True)


def after_transient(rows: pd.DataFrame, history: pd.DataFrame | None) -> pd.DataFrame:
    """``rows`` of one series from the end of its initial transient on
    (:func:`grokscope.measures.grokking.transient_end` of its history: the first step at which
    the training loss has fallen by 10%; without a history, every step but step 0)."""
    if rows.empty:
        return rows
    start = grokking.transient_end(history if history is not None and not history.empty else None)
    return rows[rows["step"] >= start]


def _series(tables: Tables) -> list[str]:
    keys = []
    for frame in (tables.history, tables.measures):
        if not frame.empty and "run" in frame.columns:
            keys.extend(frame[series_key(frame)].astype(str).tolist())
    return list(dict.fromkeys(keys))


def _summary(tables: Tables, key: str, threshold: float, delay: int, early: int | None = None) -> dict:
    history, measures = _rows_of(tables.history, key), _rows_of(tables.measures, key)
    name = next((str(f["run"].dropna().iloc[0]) for f in (history, measures)
                 if "run" in f.columns and f["run"].notna().any()), key)
    row = {"run": name, "series": key, **_hyperparameters(history, measures)}
    row.update(_grokking(history, measures, threshold, delay))
    row.update(_synergy_minimum(tables, key, history))
    row.update(_final_rnc1(measures))
    row["diverged_step"] = _divergence(history, measures)
    row.update(_synergy_peak(tables, key, history, threshold, early))
    return row


def _rows_of(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    if frame.empty or "run" not in frame.columns:
        return frame.iloc[0:0]
    return frame[frame[series_key(frame)].astype(str) == key]


def _hyperparameters(*frames: pd.DataFrame) -> dict:
    values = {}
    for rows in frames:
        for column in HYPERPARAMETERS:
            if column not in values and column in rows.columns and rows[column].notna().any():
                values[column] = rows[column].dropna().iloc[0]
    return values


def _grokking(history: pd.DataFrame, measures: pd.DataFrame, threshold: float, delay: int) -> dict:
    if not history.empty:
        summary = grokking.grokking_summary(history, threshold=threshold, delay=delay)
        return {key: summary[key] for key in (*grokking.METRICS, "phase")}
    stored = measures[measures["metric"].isin(grokking.METRICS)] if not measures.empty else measures
    if stored.empty:
        return {}
    last = stored[stored["step"] == stored["step"].max()]
    values = {m: v for m, v in zip(last["metric"], last["value"]) if pd.notna(v)}
    if "phase" in last.columns and last["phase"].notna().any():
        values["phase"] = last["phase"].dropna().iloc[0]
    return values


def _synergy_minimum(tables: Tables, key: str, history: pd.DataFrame) -> dict:
    """The lowest O-information of the headline synergy curve after the initial transient."""
    synergy = after_transient(_rows_of(overall_oinfo(tables, "synergy"), key), history)
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


def _final_rnc1(measures: pd.DataFrame) -> dict:
    """RNC1 at the last measured step of each split: empty (not an earlier step's value) when it
    is NaN there, as after a divergence."""
    rnc1 = measures[measures["metric"] == "rnc1"] if not measures.empty else measures
    if rnc1.empty or "split" not in rnc1.columns:
        return {}
    final = {}
    for split in ("train", "test"):
        rows = rnc1[rnc1["split"] == split]
        if not rows.empty:
            last = rows[rows["step"] == rows["step"].max()]["value"]
            final[f"rnc1_{split}"] = float(last.iloc[0]) if last.notna().any() else math.nan
    return final


def _divergence(history: pd.DataFrame, measures: pd.DataFrame) -> int | None:
    """The first step at which the series had diverged (:func:`grokking.divergence_step` of its
    history; a non-finite weight norm in its weights table; an infinite value in any table)."""
    steps = []
    found = grokking.divergence_step(history) if not history.empty else None
    if found is not None:
        steps.append(found)
    if not measures.empty:
        values = pd.to_numeric(measures["value"], errors="coerce")
        bad = values.isin([math.inf, -math.inf])
        if "layer" in measures.columns:
            bad |= (measures["metric"] == _WEIGHT_NORM) & measures["layer"].isna() & values.isna()
        if bad.any():
            steps.append(int(measures.loc[bad, "step"].min()))
    return min(steps) if steps else None


def _synergy_peak(tables: Tables, key: str, history: pd.DataFrame, threshold: float, early: int | None) -> dict:
    """The first synergy peak after the initial transient (see
    :func:`grokscope.measures.early_synergy.first_synergy_peak`), up to the memorisation step +
    ``early`` when given."""
    from grokscope.measures.early_synergy import first_synergy_peak

    synergy = _rows_of(overall_oinfo(tables, "synergy"), key)
    if synergy.empty:
        return {}
    until = None
    if early is not None:
        if history.empty:
            return {}
        summary = grokking.grokking_summary(history, threshold=threshold)
        until = (summary["memorization_step"] if summary["memorization_step"] is not None
                 else summary["last_step"]) + early
    peak = first_synergy_peak(synergy["step"], synergy["value"], synergy.get("value_sd"),
                              start=grokking.transient_end(history if not history.empty else None), until=until)
    return {f"synergy_{name}": value for name, value in peak.features().items()}
