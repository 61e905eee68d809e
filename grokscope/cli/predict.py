"""Does an early synergy peak predict grokking? Leave-one-out over a sweep, against the loss curves."""

from __future__ import annotations

from typing import List, Optional

import typer

from grokscope.errors import GrokscopeError

EPILOG = """\
Examples:

  grokscope predict runs/                          # every run below runs/ (o-info measured)

  grokscope predict runs/ --k 0,100,300 --format csv > predict.csv

  grokscope predict runs/ --features               # the per-run features instead

For each window end k, each run is cut at its memorisation step + k (train accuracy first >=
--threshold; a run that never memorises, at its last step + k) and the steps before are read
from the end of the initial transient on (the first evaluation at which the training loss has
fallen 10% below its first value). Features: the first synergy peak in that window (height on
the run's min-max scale, height in bits, step, width at half height), and, as the baseline, the
loss curves over the same window (final train loss, final test loss, lowest test loss).
Outcome: generalised (test accuracy reaches --threshold within the run) or grokking (Liu et
al.'s phase: generalised at least --delay steps after memorising).

Columns: k; features (synergy, loss, synergy+loss); runs and positives (runs with the outcome);
leaked (runs whose window already reaches their generalisation step: for them it is no longer a
prediction); accuracy (leave-one-out, logistic regression on standardised features) beside
chance (always guessing the majority); auc (leave-pair-out ROC AUC: each positive-negative pair
scored by the model fitted without both), auc_low and auc_high (its 95% interval over --bootstraps
stratified resamples of the runs, the fits kept), p_value (share of --permutations label shufflings
whose auc is at least as high); auc_loo (ROC AUC of the pooled leave-one-out scores, which is
biased low on small sweeps: about 0.4 for features of pure noise on 27 runs).
"""

FORMATS = ("table", "csv", "json")


def predict(
    inputs: List[str] = typer.Argument(..., metavar="PATH...", help="Runs, folders of runs, or - for paths on stdin."),
    k: str = typer.Option("0,100,300,1000", "--k", help="Window ends: the memorisation step + k (a list)."),
    outcome: str = typer.Option("generalised", "--outcome", help="generalised (test accuracy reaches --threshold) or grokking (Liu et al.'s phase)."),
    threshold: float = typer.Option(0.99, "--threshold", help="Accuracy that counts as memorised (train) / generalised (test)."),
    delay: int = typer.Option(1000, "--delay", help="grokking: steps from memorisation to generalisation that count as grokking."),
    min_prominence: float = typer.Option(0.1, "--min-prominence", help="Bits a synergy peak must rise above its surroundings (and 2 tie spreads)."),
    permutations: int = typer.Option(200, "--permutations", help="Label shufflings for the AUC's p-value (0: none)."),
    bootstraps: int = typer.Option(2000, "--bootstraps", help="Resamples of the runs for the AUC's 95% interval, auc_low-auc_high (0: none)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the label shufflings and the resamples."),
    where: Optional[str] = typer.Option(None, "--where", help="Keep runs matching this pandas query, e.g. \"alpha == 1\"."),
    features: bool = typer.Option(False, "--features", help="Print the per-run features instead of the evaluation."),
    fmt: str = typer.Option("table", "--format", "-f", help="table (aligned, for reading), csv or json (one object per line)."),
) -> None:
    """Leave-one-out accuracy and ROC AUC of grokking from early-synergy features, against a loss-only baseline."""
    from grokscope.cli.checks import paths_exist
    from grokscope.cli.output import Output

    paths_exist(inputs)
    from grokscope.cli.report import render_table
    from grokscope.plotting.data import load
    from grokscope.prediction import evaluate, run_features
    from grokscope.sweep import parse_values

    if fmt not in FORMATS:
        raise GrokscopeError(f"--format: unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    ks = parse_values("--k", k, int)
    if any(value < 0 for value in ks):
        raise GrokscopeError(f"--k: must be >= 0, got {k!r}")
    for option, value in (("--permutations", permutations), ("--bootstraps", bootstraps)):
        if value < 0:
            raise GrokscopeError(f"{option}: must be >= 0, got {value}")
    if not 0.0 < threshold <= 1.0:
        raise GrokscopeError(f"--threshold: must lie in (0, 1], got {threshold}")
    if min_prominence < 0:
        raise GrokscopeError(f"--min-prominence: must be >= 0, got {min_prominence}")
    output = Output()
    frame, skipped = run_features(load(inputs).where(where), ks, outcome=outcome, threshold=threshold, delay=delay,
                                  min_prominence=min_prominence)
    for reason in skipped:
        output.warn(f"left out: {reason}")
    if frame.empty:
        raise GrokscopeError("nothing to predict: no run with a history and an o-info table (after --where, if given)")
    n_runs = frame["run"].nunique()
    if n_runs < 3 and not features:
        raise GrokscopeError(f"leave-one-out needs at least 3 runs, got {n_runs}")
    if frame.groupby("k")["label"].nunique().max() < 2:
        output.warn(f"every run has the same outcome ({outcome}): nothing to predict; accuracy and AUC are empty")
    table = frame if features else evaluate(frame, permutations=permutations, bootstraps=bootstraps, seed=seed)
    if fmt == "table":
        output.result(render_table(table))
    else:
        output.rows(table.astype(object).where(table.notna(), None), fmt)
