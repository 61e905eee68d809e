"""Where each progress measure changes regime (peak, steepest change, change point), relative to memorisation and generalisation."""

from __future__ import annotations

from typing import Optional

import typer

from grokscope.errors import GrokscopeError

EPILOG = """\
Examples:

  grokscope onsets runs/add-p97              # every curve's events, one row each

  grokscope onsets runs/ --over-seeds        # each event's lead or lag over seeds

  grokscope onsets runs/ --metric synergy,loss --format csv > onsets.csv

  grokscope plot onsets runs/ -o onsets.png  # the lead-lag figure

Curves: synergy and redundancy (the headline O-information curves), rnc1, nhsic_x, nhsic_y,
complexity, restricted_loss, excluded_loss, weight_norm, llc, alpha (those measured), and loss
(train, test) from the history; --metric names others (accuracy, any metric of the tables) or all.
Each split, layer and tolerance is its own curve. Events, found from the end of the initial
transient (the training loss 10% below its first value) on, each at a measured step: peak (the
largest value; for synergy the lowest O-information), steepest (largest |d value / d log10 step|
after a running mean over 0.15 decade), change_point (the break of the best two-segment
piecewise-linear least-squares fit in log10 step, each segment at least a quarter decade); the
curve is first put on an even grid of 20 points per decade. docs/onsets.md has the formulas.

Columns: the series' (run, hyperparameters, phase, memorization_step, generalization_step: first
evaluation with train / test accuracy >= --threshold), the curve's (measure, split, layer,
variant), event, step, value (the measure there), slope (steepest: d value / d log10 step there;
change_point: slope after minus before), after_memorization / after_generalization (event step
minus that step: negative = before) and log_ratio_memorization / log_ratio_generalization
(log10 of event step / that step).

--over-seeds: runs that differ only in seed form a setting; per setting, curve, event and
reference step (relative_to), the mean over seeds of log_ratio and of after_steps with a
percentile bootstrap interval (--resamples from --bootstrap-seed, --confidence); runs: the
setting's runs, seeds: those that reached the reference step. The table format leaves out
hyperparameters that are the same in every row.
"""

FORMATS = ("table", "csv", "json")


def onsets(
    inputs: list[str] = typer.Argument(..., help="Runs, folders of runs, Parquet tables, or - for paths on stdin."),
    metric: Optional[str] = typer.Option(None, "--metric", "-m", help="Comma-separated measures, or all (default: the seed papers' measures that are there)."),
    over_seeds: bool = typer.Option(False, "--over-seeds", help="Each event's lead or lag over seeds, with a bootstrap interval, instead of one row per series."),
    fmt: str = typer.Option("table", "--format", "-f", help="table (aligned, for reading), csv or json (one object per line)."),
    where: Optional[str] = typer.Option(None, "--where", help="Keep rows matching this pandas query, e.g. \"weight_decay == 2\"."),
    threshold: float = typer.Option(0.99, "--threshold", help="Accuracy that counts as memorised (train) / generalised (test)."),
    resamples: int = typer.Option(2000, "--resamples", help="--over-seeds: bootstrap resamples of the seeds."),
    confidence: float = typer.Option(0.95, "--confidence", help="--over-seeds: the interval's coverage."),
    bootstrap_seed: int = typer.Option(0, "--bootstrap-seed", help="--over-seeds: seed of the resampling."),
    all_columns: bool = typer.Option(False, "--all-columns", help="table: every column, also those empty or the same in every row."),
) -> None:
    """Find where each measure changes regime, relative to memorisation and generalisation."""
    from grokscope.cli.output import Output
    from grokscope.cli.report import render_table
    from grokscope.plotting.lead_lag import lead_lag, onset_rows
    from grokscope.plotting.data import load

    if fmt not in FORMATS:
        raise GrokscopeError(f"--format: unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    if not 0.0 < threshold <= 1.0:
        raise GrokscopeError(f"--threshold: must lie in (0, 1], got {threshold}")
    if resamples < 1 or not 0.0 < confidence < 1.0:
        raise GrokscopeError("--resamples: must be >= 1" if resamples < 1 else f"--confidence: must lie in (0, 1), got {confidence}")
    measures = None
    if metric is not None:
        measures = [m.strip() for m in metric.split(",") if m.strip()]
        if not measures:
            raise GrokscopeError("--metric: name at least one measure, or all")
        measures = "all" if measures == ["all"] else measures
    rows = onset_rows(load(inputs).where(where), measures, threshold=threshold)
    if over_seeds:
        rows = lead_lag(rows, resamples=resamples, confidence=confidence, seed=bootstrap_seed)
    output = Output()
    if fmt == "table":
        output.result(render_table(_for_reading(rows, all_columns)))
    else:
        output.rows(rows.astype(object).where(rows.notna(), None), fmt)


def _for_reading(rows, all_columns: bool):
    """The table format's columns: the report's (:func:`grokscope.reporting.columns.reading_columns`),
    less the hyperparameters that are the same in every row, and ``series`` unless two series
    share a run name."""
    from grokscope.plotting.summary import HYPERPARAMETERS
    from grokscope.reporting.columns import reading_columns

    if all_columns:
        return rows
    same = [c for c in HYPERPARAMETERS if c in rows.columns and rows[c].nunique(dropna=False) <= 1]
    if "series" in rows.columns and rows.groupby("run")["series"].nunique().max() <= 1:
        same.append("series")
    return reading_columns(rows.drop(columns=same))
