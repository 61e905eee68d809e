r"""Which progress measure moves first: every measure's onsets per series, relative to memorisation
and generalisation, and their lead or lag over seeds.

What ``grokscope onsets`` prints and ``grokscope plot onsets`` draws.

* :func:`curves`: one curve (step, value) per series, measure, split, layer and variant, from the
  measure tables and the histories. Synergy and redundancy are the headline O-information curves
  (:func:`grokscope.plotting.summary.overall_oinfo`: the lowest / highest O-information over
  multiplets at each step) of each layer; the histories give ``loss`` and ``accuracy`` (train and
  test split) and ``weight_norm`` (where no weights table has it); a table's ``tolerance``,
  ``frequency`` or ``chain`` column makes one curve per value (the ``variant``).
* :func:`onset_rows`: one tidy row per series x curve x event
  (:data:`grokscope.measures.onsets.EVENTS`), found on the steps from the end of the series'
  initial transient on (:func:`grokscope.measures.grokking.transient_end`: the random
  initialisation's features are no regime of the network's making), with the memorisation and
  generalisation steps (first evaluation with train / test accuracy >= the threshold), the
  event's distance from each in steps (``after_memorization``, ``after_generalization``:
  negative = before) and as a log ratio
  (``log_ratio_generalization`` :math:`= \log_{10}(t_\mathrm{event} / t_\mathrm{gen})`: -1 is a
  tenth of the generalisation step, the same lead on a run that generalises at 300 as at 3000).
* :func:`lead_lag`: those distances over seeds: the runs that differ only in ``seed`` (and
  ``split_seed``) form a group; per group, measure, event and reference step, the mean over the
  seeds with a percentile bootstrap interval
  (:func:`grokscope.measures.onsets.bootstrap_interval`); a seed that never reached the reference
  step has no distance and is left out (``seeds`` counts those left).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from grokscope.errors import GrokscopeError
from grokscope.measures import grokking, onsets
from grokscope.plotting.data import Tables, series_key
from grokscope.plotting.summary import HYPERPARAMETERS, overall_oinfo, run_summaries

#: The measures of the seed papers' claims (those present are measured by default).
DEFAULT_MEASURES = ("synergy", "redundancy", "rnc1", "nhsic_x", "nhsic_y", "complexity", "restricted_loss",
                    "excluded_loss", "weight_norm", "llc", "alpha", "loss")
#: History columns read as measures: column -> (measure, split).
HISTORY_MEASURES = {"train_loss": ("loss", "train"), "test_loss": ("loss", "test"),
                    "train_acc": ("accuracy", "train"), "test_acc": ("accuracy", "test"),
                    "weight_norm": ("weight_norm", None)}
#: Peak direction: synergy's peak is its lowest O-information, every other measure's its largest value.
PEAK_SIGNS = {"synergy": -1}
#: Columns of a table that make one curve per value of theirs.
VARIANT_COLUMNS = ("tolerance", "frequency", "chain")
#: What tells apart runs that are the same setting: left out of a lead-lag group.
SEED_COLUMNS = ("seed", "split_seed")
REFERENCES = ("memorization", "generalization")
CURVE_COLUMNS = ("measure", "split", "layer", "variant")


@dataclass(frozen=True)
class Curve:
    series: str
    measure: str
    split: str | None
    layer: str | None
    variant: str | None
    steps: np.ndarray
    values: np.ndarray


def curves(tables: Tables, measures=None) -> list[Curve]:
    """Every curve of ``measures`` in the tables: names (each must be found), None (those of
    :data:`DEFAULT_MEASURES` that are there) or ``"all"`` (every metric of the tables but the
    grokking summary's, and every history measure)."""
    chosen = measures not in (None, "all")
    present = set() if tables.measures.empty else set(tables.measures["metric"].dropna().unique())
    if measures is None:
        measures = DEFAULT_MEASURES
    elif measures == "all":
        measures = sorted(present - set(grokking.METRICS)) + ["loss", "accuracy", "weight_norm"]
    found: list[Curve] = []
    for measure in dict.fromkeys(measures):
        if measure in ("synergy", "redundancy"):
            found += _oinfo_curves(tables, measure)
        elif measure in present:
            found += _table_curves(tables.metric(measure), measure)
    found += _history_curves(tables, set(measures), {(c.series, c.measure) for c in found})
    missing = sorted(set(measures) - {c.measure for c in found}) if chosen else []
    if missing:
        raise GrokscopeError(f"--metric: no {', '.join(missing)} in the tables")
    return found


def _oinfo_curves(tables: Tables, metric: str) -> list[Curve]:
    rows = tables.metric(metric)
    found = []
    for layer, of_layer in rows.groupby("layer", dropna=False, sort=True) if not rows.empty else ():
        headline = overall_oinfo(Tables(of_layer, tables.history), metric)
        key = series_key(headline)
        for series, curve in headline.groupby(key, sort=False):
            found.append(Curve(str(series), metric, None, _none(layer), None,
                               curve["step"].to_numpy(), curve["value"].to_numpy(dtype=float)))
    return found


def _table_curves(rows: pd.DataFrame, metric: str) -> list[Curve]:
    variants = [c for c in VARIANT_COLUMNS if c in rows.columns and rows[c].notna().any()]
    keys = [series_key(rows), *(c for c in ("split", "layer") if c in rows.columns), *variants]
    found = []
    for values, curve in rows.groupby(keys, dropna=False, sort=False):
        named = dict(zip(keys, values))
        if curve["step"].duplicated().any():
            raise GrokscopeError(f"--metric {metric}: {named[keys[0]]} has several rows per step apart from "
                                 f"{', '.join(keys[1:]) or 'its series'}; choose rows with --where")
        variant = ", ".join(f"{c}={named[c]:g}" if isinstance(named[c], float) else f"{c}={named[c]}"
                            for c in variants if _none(named[c]) is not None)
        found.append(Curve(str(named[keys[0]]), metric, _none(named.get("split")), _none(named.get("layer")),
                           variant or None, curve["step"].to_numpy(), curve["value"].to_numpy(dtype=float)))
    return found


def _history_curves(tables: Tables, wanted: set[str], taken: set[tuple[str, str]]) -> list[Curve]:
    history = tables.history
    if history.empty or "run" not in history.columns:
        return []
    found = []
    for series, rows in history.groupby(series_key(history), sort=False):
        rows = rows.sort_values("step")
        for column, (measure, split) in HISTORY_MEASURES.items():
            if measure in wanted and column in rows.columns and (str(series), measure) not in taken:
                found.append(Curve(str(series), measure, split, None, None, rows["step"].to_numpy(),
                                   pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float)))
    return found


def _none(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA else value


def onset_rows(tables: Tables, measures=None, threshold: float = grokking.DEFAULT_THRESHOLD) -> pd.DataFrame:
    """One row per series x curve x event (see the module docstring; ``measures`` as :func:`curves`
    takes them); the series' columns first (run, series, hyperparameters, phase, memorisation and
    generalisation steps), then the curve's, the event's and the distances."""
    summaries = run_summaries(tables, threshold=threshold)
    identity = summaries[["run", "series", *HYPERPARAMETERS, "phase", "memorization_step",
                          "generalization_step"]].set_index("series", drop=False)
    histories = {} if tables.history.empty else \
        {str(k): v for k, v in tables.history.groupby(series_key(tables.history), sort=False)}
    rows = []
    for curve in curves(tables, measures):
        start = grokking.transient_end(histories.get(curve.series))
        after = curve.steps >= start
        sign = PEAK_SIGNS.get(curve.measure, 1)
        for event in onsets.curve_events(curve.steps[after], curve.values[after], sign):
            rows.append({"series": curve.series, "measure": curve.measure, "split": curve.split,
                         "layer": curve.layer, "variant": curve.variant, "event": event.name,
                         "step": event.step, "value": event.value, "slope": event.slope})
    if not rows:
        raise GrokscopeError("nothing to measure onsets of: no curves of the chosen measures (after --where, if given)")
    frame = pd.DataFrame(rows)
    frame = identity.reset_index(drop=True).merge(frame, on="series", how="inner")
    frame["step"] = pd.array(frame["step"], dtype="Float64").round().astype("Int64")
    step = frame["step"].to_numpy(dtype=float, na_value=np.nan)
    for reference in REFERENCES:
        at = pd.to_numeric(frame[f"{reference}_step"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        frame[f"after_{reference}"] = pd.array(step - at, dtype="Float64").round().astype("Int64")
        with np.errstate(divide="ignore", invalid="ignore"):
            # A run that memorised at step 0 has no ratio: log10 of a ratio to 0 is not a distance.
            frame[f"log_ratio_{reference}"] = np.where(at > 0, np.log10(step / at), np.nan)
    return frame


def lead_lag(rows: pd.DataFrame, resamples: int = onsets.RESAMPLES, confidence: float = onsets.CONFIDENCE,
             seed: int = 0) -> pd.DataFrame:
    """The onset rows' distances over seeds: one row per setting (every hyperparameter but
    :data:`SEED_COLUMNS`), curve, event and reference (memorization / generalization): ``runs``,
    ``seeds`` (those with a distance), the mean log ratio (``log_ratio``) and the mean distance in
    steps (``after_steps``), each with its bootstrap interval (``_low``, ``_high``; ``resamples``
    resamples from ``seed``)."""
    setting = [c for c in HYPERPARAMETERS if c in rows.columns and c not in SEED_COLUMNS]
    keys = setting + list(CURVE_COLUMNS) + ["event"]
    out = []
    for _, group in rows.groupby(keys, dropna=False, sort=False):
        # The group's own values (None stays None; the group key would be NaN).
        named = group.iloc[0][keys].to_dict()
        for reference in REFERENCES:
            ratio = group[f"log_ratio_{reference}"].to_numpy(dtype=float, na_value=np.nan)
            steps = group[f"after_{reference}"].to_numpy(dtype=float, na_value=np.nan)
            mean, low, high = onsets.bootstrap_interval(ratio, resamples, confidence, seed)
            steps_mean, steps_low, steps_high = onsets.bootstrap_interval(steps, resamples, confidence, seed)
            out.append({**named, "relative_to": reference, "runs": len(group), "seeds": int(np.isfinite(ratio).sum()),
                        "log_ratio": mean, "log_ratio_low": low, "log_ratio_high": high,
                        "after_steps": steps_mean, "after_steps_low": steps_low, "after_steps_high": steps_high})
    frame = pd.DataFrame(out)
    frame["seeds"] = frame["seeds"].astype("int64")
    return frame
