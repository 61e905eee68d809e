"""The tables of docs/claims.md, from what examples/claims_sweep.py wrote (Markdown on stdout).

    python examples/claims_table.py OUT > tables.md

Reads OUT/report.csv (one row per run), OUT/predict.csv and the sweep's runs and sub-networks
through grokscope's own commands (``onsets --over-seeds``, ``report``), and prints:

* the sweep: per setting, how many seeds memorised and generalised, and at which steps;
* each seed claim's event relative to the generalisation step, log10(t_event / t_gen) over the
  seeds that generalised, with its 95 % percentile bootstrap interval (``onsets --over-seeds``:
  2000 resamples of the seeds, seed 0); for the first synergy peak, the same statistic computed
  here from ``report``'s ``synergy_peak_step`` (the first prominent peak, Clauw et al.'s early
  synergy), by the same bootstrap;
* the early-synergy predictor against the loss-only baseline (``predict``);
* the sub-networks: the generalisation step of the synergistic sub-network, its inverse and its
  size-matched random controls, per parent run.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

SETTING = ["weight_decay", "alpha", "fix_norm"]
# (claim, measure, split, variant, event): the curves the seed papers make claims about.
EVENTS = [
    ("003: the most synergistic step", "synergy", None, None, "peak"),
    ("003: the most redundant step", "redundancy", None, None, "peak"),
    ("000/001: test RNC1's steepest change", "rnc1", "test", None, "steepest"),
    ("000/001: test RNC1's change point", "rnc1", "test", None, "change_point"),
    ("000/001: test accuracy's steepest change", "accuracy", "test", None, "steepest"),
    ("IB: nHSIC(X; T) change point (compression)", "nhsic_x", "test", None, "change_point"),
    ("IB: nHSIC(Y; T) change point", "nhsic_y", "test", None, "change_point"),
    ("002: complexity's peak (tolerance 0.1)", "complexity", None, "tolerance=0.1", "peak"),
    ("Nanda: restricted loss's steepest change (test)", "restricted_loss", "test", None, "steepest"),
    ("Nanda: test loss's steepest change", "loss", "test", None, "steepest"),
]
METRICS = "synergy,redundancy,rnc1,accuracy,nhsic_x,nhsic_y,complexity,restricted_loss,loss"


def grokscope(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "grokscope", *args], check=True, capture_output=True,
                          text=True).stdout


def setting_name(row) -> str:
    if row["fix_norm"]:
        return f"alpha {row['alpha']:g}, wd 0, constant norm"
    return f"wd {row['weight_decay']:g}"


def bootstrap_mean(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95 % percentile interval over resamples of ``values`` with replacement (the method
    of ``onsets --over-seeds``)."""
    if len(values) < 2:
        return float(np.mean(values)) if len(values) else float("nan"), float("nan"), float("nan")
    index = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    means = values[index].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(values.mean()), float(low), float(high)


def interval(mean: float, low: float, high: float, n: int) -> str:
    if np.isnan(mean):
        return "-"
    if np.isnan(low):
        return f"{mean:+.2f} (n={n})"
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}] (n={n})"


def sweep_table(report: pd.DataFrame) -> str:
    lines = ["| setting | seeds | memorised (step) | generalised (steps) | phase |", "| --- | --- | --- | --- | --- |"]
    for _, group in report.groupby(SETTING, sort=True):
        first = group.iloc[0]
        memorised = group["memorization_step"].dropna()
        general = group["generalization_step"].dropna()
        lines.append(f"| {setting_name(first)} | {len(group)} | {len(memorised)} ({', '.join(f'{s:g}' for s in memorised)}) "
                     f"| {len(general)} ({', '.join(f'{s:g}' for s in general) or '-'}) "
                     f"| {', '.join(sorted(set(group['phase'].astype(str))))} |")
    return "\n".join(lines)


def direction(per_run: pd.DataFrame, setting, measure, split, variant, event) -> str:
    """' (rise)' or ' (fall)' when every seed's slope at a steepest change has that sign; for a
    change point, the bend: ' (bends down)' or ' (bends up)'."""
    rows = per_run[(per_run["measure"] == measure) & (per_run["event"] == event)
                   & (per_run[SETTING] == setting[SETTING]).all(axis=1)]
    rows = rows[rows["split"].isna()] if split is None else rows[rows["split"] == split]
    rows = rows[rows["variant"].isna()] if variant is None else rows[rows["variant"] == variant]
    slopes = rows["slope"].dropna()
    if slopes.empty or not ((slopes > 0).all() or (slopes < 0).all()):
        return ""
    up = bool((slopes > 0).all())
    if event == "change_point":
        return " (bends up)" if up else " (bends down)"
    return " (rise)" if up else " (fall)"


def events_table(lead_lag: pd.DataFrame, report: pd.DataFrame, per_run: pd.DataFrame) -> str:
    settings = [g.iloc[0] for _, g in report.groupby(SETTING, sort=True) if g["generalization_step"].notna().any()]
    header = "| claim: event | " + " | ".join(setting_name(s) for s in settings) + " |"
    lines = [header, "| --- |" + " --- |" * len(settings)]
    rows = lead_lag[lead_lag["relative_to"] == "generalization"]
    early = report.assign(ratio=np.log10(report["synergy_peak_step"] / report["generalization_step"]))
    cells = []
    for s in settings:
        values = early[(early[SETTING] == s[SETTING]).all(axis=1)]["ratio"].dropna().to_numpy()
        cells.append(interval(*bootstrap_mean(values), len(values)))
    lines.append("| 003: the first synergy peak (early synergy) | " + " | ".join(cells) + " |")
    for claim, measure, split, variant, event in EVENTS:
        chosen = rows[(rows["measure"] == measure) & (rows["event"] == event)]
        chosen = chosen[chosen["split"].isna()] if split is None else chosen[chosen["split"] == split]
        chosen = chosen[chosen["variant"].isna()] if variant is None else chosen[chosen["variant"] == variant]
        cells = []
        for s in settings:
            match = chosen[(chosen[SETTING] == s[SETTING]).all(axis=1)]
            if match.empty:
                cells.append("-")
                continue
            row = match.iloc[0]
            cells.append(interval(row["log_ratio"], row["log_ratio_low"], row["log_ratio_high"], int(row["seeds"]))
                         + (direction(per_run, s, measure, split, variant, event) if event != "peak" else ""))
        lines.append(f"| {claim} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def predict_table(predict: pd.DataFrame) -> str:
    lines = ["| k | features | runs (positives) | accuracy (chance) | AUC [95 % bootstrap] | p (permutations) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for _, row in predict.iterrows():
        lines.append(f"| {row['k']} | {row['features']} | {row['runs']} ({row['positives']}) | {row['accuracy']:.2f} "
                     f"({row['chance']:.2f}) | {row['auc']:.2f} [{row['auc_low']:.2f}, {row['auc_high']:.2f}] | "
                     f"{row['p_value']:.3f} ({row['permutations']}) |")
    return "\n".join(lines)


def subnet_table(subnets: Path) -> str:
    report = pd.read_csv(io.StringIO(grokscope("report", str(subnets), "-f", "csv")))
    lines = ["| parent | neurons | sub-network | inverse | random controls (median) |", "| --- | --- | --- | --- | --- |"]
    for parent, group in report.groupby("parent_run", sort=True):
        def steps(rows) -> str:
            values = rows["generalization_step"]
            return ", ".join("never" if pd.isna(v) else f"{v:g}" for v in values) or "-"

        chosen = group[(group["subnet_control"].isna() | (group["subnet_control"] == "")) & ~group["subnet_inverse"].astype(bool)]
        inverse = group[group["subnet_inverse"].astype(bool)]
        controls = group[group["subnet_control"].astype(str) == "random"]
        finite = controls["generalization_step"].dropna()
        median = f" ({finite.median():g}; {len(finite)} of {len(controls)} generalised)" if len(controls) else ""
        neurons = chosen["subnet_neurons"].iloc[0] if len(chosen) else "-"
        lines.append(f"| {Path(str(parent)).name} | {neurons} | {steps(chosen)} | {steps(inverse)} | {steps(controls)}{median} |")
    return "\n".join(lines)


def main() -> None:
    out = Path(sys.argv[1])
    runs = out / "runs"
    report = pd.read_csv(out / "report.csv")
    lead_lag = pd.read_csv(io.StringIO(grokscope("onsets", str(runs), "--over-seeds", "--metric", METRICS, "-f", "csv")))
    print("## The sweep\n\n" + sweep_table(report) + "\n")
    per_run = pd.read_csv(io.StringIO(grokscope("onsets", str(runs), "--metric", METRICS, "-f", "csv")))
    print("## Events relative to generalisation: log10(t_event / t_gen), mean over seeds [95 % bootstrap]\n\n"
          + events_table(lead_lag, report, per_run) + "\n")
    if (out / "predict.csv").is_file():
        print("## The early-synergy predictor\n\n" + predict_table(pd.read_csv(out / "predict.csv")) + "\n")
    if (out / "subnets").is_dir():
        print("## Sub-networks: generalisation steps\n\n" + subnet_table(out / "subnets") + "\n")


if __name__ == "__main__":
    main()
