"""Summaries that do not mislead: runs keep their identity, synergy_min skips the initial transient,
diverged runs are flagged, synergy has one sign in every figure, accuracy axes span 0-1."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from grokscope import formats
from grokscope.cli import app
from grokscope.measures.grokking import divergence_step, transient_end
from grokscope.plotting import draw, style
from grokscope.plotting.data import Tables, load
from grokscope.plotting.summary import run_summaries

TINY = ["--p", "5", "--width", "8", "--steps", "20", "--save-every", "10", "--save-log", "0", "-q"]


def invoke(*args, input: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


# --- identity ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> list[Path]:
    """add-p5 trained twice, in two folders, with two learning rates."""
    root = tmp_path_factory.mktemp("twins")
    runs = []
    for folder, lr in (("a", "0.01"), ("b", "0.003")):
        result = invoke("train", *TINY, "--lr", lr, "--out", root / folder)
        assert result.exit_code == 0, result.output
        runs.append(root / folder / "add-p5")
        assert invoke("measure", runs[-1], "--metric", "collapse", "-q").exit_code == 0
    return runs


def test_same_named_runs_stay_two_rows_in_report(twins):
    result = invoke("report", *twins, "--format", "json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["run"] for r in rows] == ["add-p5", "add-p5"]
    assert [r["series"] for r in rows] == [str(r) for r in twins]
    assert [r["lr"] for r in rows] == [0.01, 0.003]
    # Each row's RNC1 is its own run's, not a mix.
    for row, run in zip(rows, twins):
        collapse = pd.read_parquet(formats.tables.measures_path(run, "collapse"))
        last = collapse[(collapse.metric == "rnc1") & (collapse.split == "train") & (collapse.step == 20)]
        assert row["rnc1_train"] == pytest.approx(last["value"].item())
    # The aligned table shows the series column only because the names repeat.
    table = invoke("report", *twins)
    assert "series" in table.stdout.splitlines()[0]
    alone = invoke("report", twins[0])
    assert "series" not in alone.stdout.splitlines()[0]


def test_same_named_runs_stay_two_lines_in_plots(twins):
    tables = load([str(r) for r in twins])
    for kind in ("curves", "collapse"):
        plot = draw(kind, tables, style.FigureOptions())
        data = plot.data
        assert set(data["series"]) == {str(r) for r in twins}
        # Lines are told apart by series, and coloured by it since the names collide.
        assert data.groupby("line")["series"].nunique().max() == 1
        assert plot.mapping["color"] == "series"
    coloured = draw("curves", tables, style.FigureOptions(color="lr"))
    assert set(coloured.data["lr"]) == {0.01, 0.003}


def test_measure_output_keeps_series_apart(twins, tmp_path):
    out = tmp_path / "both.parquet"
    assert invoke("measure", *twins, "--metric", "rnc1", "-o", out, "-q").exit_code == 0
    combined = pd.read_parquet(out)
    assert set(combined["series"]) == {str(r) for r in twins}
    summaries = run_summaries(load([str(out)]))
    assert len(summaries) == 2


# --- the initial transient --------------------------------------------------------------------


def brute_transient_end(steps, losses, drop=0.1):
    pairs = [(s, l) for s, l in sorted(zip(steps, losses)) if l == l and math.isfinite(l)]
    if not pairs:
        return 1
    for step, loss in pairs:
        if loss <= (1 - drop) * pairs[0][1]:
            return max(1, step)
    return 1


@pytest.mark.parametrize("losses", [
    [4.6, 4.5, 4.2, 4.0, 1.0, 0.1],
    [4.6, 4.0, 3.0, 2.0, 1.0, 0.5],
    [2.0, 2.0, 2.0, 2.0, 2.0, 2.0],  # never learns: only step 0 is left out
    [math.nan, 5.0, 4.9, 4.4, 3.0, 1.0],
])
def test_transient_end_is_the_first_step_the_loss_fell_by_a_tenth(losses):
    steps = [0, 2, 4, 6, 8, 10]
    history = pd.DataFrame({"step": steps, "train_loss": losses})
    assert transient_end(history) == brute_transient_end(steps, losses)
    assert transient_end(history.iloc[::-1]) == brute_transient_end(steps, losses)  # any row order


def test_transient_end_without_a_loss_leaves_out_step_zero():
    assert transient_end(None) == 1
    assert transient_end(pd.DataFrame({"step": [0, 1], "train_acc": [0.0, 1.0]})) == 1


def oinfo_tables(synergy: dict[int, float], losses: dict[int, float] | None) -> Tables:
    rows = [{"run": "r", "series": "runs/r", "step": s, "metric": "synergy", "value": v, "scope": "overall",
             "size": 3, "split": "train", "layer": "layers.0"} for s, v in synergy.items()]
    history = pd.DataFrame() if losses is None else pd.DataFrame(
        {"run": "r", "series": "runs/r", "step": list(losses), "train_loss": list(losses.values()),
         "train_acc": 0.5, "test_acc": 0.1})
    return Tables(pd.DataFrame(rows), history)


def test_synergy_min_leaves_out_the_initial_transient():
    # Random features at initialisation are the most synergistic of all (as on the default run).
    synergy = {0: -2.0, 1: -1.1, 2: -1.4, 4: 0.1, 20: -0.3, 40: -0.25, 400: -0.1}
    losses = {0: 4.6, 1: 4.5, 2: 4.3, 4: 3.9, 20: 0.6, 40: 0.01, 400: 0.001}
    summary = run_summaries(oinfo_tables(synergy, losses)).iloc[0]
    assert (summary["synergy_min"], summary["synergy_min_step"]) == (-0.3, 20)
    # Without a history, only the initialisation itself is left out.
    summary = run_summaries(oinfo_tables(synergy, None)).iloc[0]
    assert (summary["synergy_min"], summary["synergy_min_step"]) == (-1.4, 2)


# --- divergence -------------------------------------------------------------------------------


def test_divergence_step_counts_computed_non_finite_values_only():
    history = pd.DataFrame({"step": [0, 10, 20, 30], "train_loss": [4.0, np.nan, 3.0, 2.0],
                            "train_acc": [0.1, np.nan, 0.4, 0.5]})
    assert divergence_step(history) is None  # a row some logger left empty (Trainer's eval rows)
    history.loc[2, "train_loss"] = np.nan
    assert divergence_step(history) == 20  # computed (its accuracy is known), and NaN
    history.loc[3, "train_loss"] = np.inf
    history.loc[2, "train_loss"] = 3.0
    assert divergence_step(history) == 30
    assert divergence_step(pd.DataFrame({"step": [0], "weight_norm": [-np.inf]})) == 0


def test_a_diverged_run_is_flagged_and_its_final_rnc1_is_not_step_zero(tmp_path):
    # lr 1e30: the weights overflow after one step; the first evaluation (step 2) sees NaN.
    result = invoke("train", *TINY, "--lr", "1e30", "--eval-every", "2", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    run = tmp_path / "add-p5"
    assert invoke("measure", run, "--metric", "collapse", "-q").exit_code == 0
    collapse = pd.read_parquet(formats.tables.measures_path(run, "collapse"))
    rnc1 = collapse[(collapse.metric == "rnc1") & (collapse.split == "train")].set_index("step")["value"]
    assert math.isfinite(rnc1[0]) and rnc1[[10, 20]].isna().all()  # what the old report showed as "final"

    report = invoke("report", run, "--format", "csv")
    assert report.exit_code == 0, report.output
    row = pd.read_csv(io.StringIO(report.stdout)).iloc[0]
    assert row["diverged_step"] == 2
    assert math.isnan(row["rnc1_train"]) and math.isnan(row["rnc1_test"])
    assert report.stderr.strip() == (f"warning: {run}: diverged at step 2 (non-finite loss or weights); its values "
                                     "from there on are NaN and its summaries leave them out")


def test_a_diverged_weight_norm_flags_a_series_without_history():
    measures = pd.DataFrame({"run": "r", "series": "s", "step": [0, 10, 20], "metric": "weight_norm",
                             "value": [1.0, 2.0, np.nan], "layer": None, "split": None})
    assert run_summaries(Tables(measures, pd.DataFrame())).iloc[0]["diverged_step"] == 20
    measures["value"] = [1.0, 2.0, 3.0]
    assert pd.isna(run_summaries(Tables(measures, pd.DataFrame())).iloc[0]["diverged_step"])


# --- figures: one sign for synergy, accuracy on 0-1 ---------------------------------------------


def test_metric_synergy_has_the_sign_of_phases_and_pareto():
    synergy = {s: -0.1 * np.log10(s) for s in (1, 10, 100, 1000)}
    tables = oinfo_tables(synergy, None)
    redundancy = tables.measures.assign(metric="redundancy", value=1.0)
    tables = Tables(pd.concat([tables.measures, redundancy], ignore_index=True), tables.history)
    metric = draw("metric", tables, style.FigureOptions(), metric="synergy")
    pareto = draw("pareto", tables, style.FigureOptions())
    drawn = metric.data.set_index("step")["value"]
    assert np.allclose(drawn.to_numpy(), [-synergy[s] for s in drawn.index])  # up = more synergy
    assert np.allclose(pareto.data.set_index("step")["synergy"].reindex(drawn.index), drawn)
    assert metric.labels.y.startswith("synergy (−Ω")


def test_the_collapse_figure_draws_accuracy_on_zero_to_one():
    import matplotlib

    matplotlib.use("Agg", force=True)
    steps = [10, 100, 1000]
    measures = pd.DataFrame([{"run": "r", "series": "s", "step": s, "metric": "rnc1", "split": split,
                              "layer": "layers.0", "value": 0.01 + 0.001 * i}
                             for i, s in enumerate(steps) for split in ("train", "test")])
    history = pd.DataFrame({"run": "r", "series": "s", "step": steps, "test_acc": [0.2, 0.35, 0.5],
                            "train_acc": 1.0})
    for facet in (None, "run"):
        figure = draw("collapse", Tables(measures, history), style.FigureOptions(facet=facet)).draw()
        limits = sorted(tuple(round(v, 3) for v in axis.get_ylim()) for axis in figure.axes)
        spanning = [low <= 0.0 and high >= 1.0 for low, high in limits]
        # The accuracy panel spans 0-1 although its values lie in 0.2-0.5; RNC1 (log10 ~ -2) does not.
        assert spanning.count(True) == 1, limits
