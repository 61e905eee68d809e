"""grokscope predict, report's synergy peak and the early-synergy figure, on a synthetic sweep with a
planted answer: the runs that generalise, and only they, have an early synergy peak, and their loss
curves are the same as the others' until they generalise."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from grokscope.cli import app
from grokscope.config import OptimConfig, RunConfig, TaskConfig, hyperparameters

STEPS = np.arange(0, 2001, 10)
MEMORISED, GENERALISED = 100, 800
N_RUNS = 10  # seeds 0-4 generalise, 5-9 do not


def write_run(root: Path, seed: int, rng: np.random.Generator) -> Path:
    generalises = seed < N_RUNS // 2
    config = RunConfig(name=f"run{seed}", seed=seed, task=TaskConfig(p=11), optim=OptimConfig(weight_decay=1.0)).resolved()
    run = root / config.name
    (run / "measures").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"schema": "grokscope.run/1", **config.to_dict()}))
    train_loss = 4.0 * np.exp(-STEPS / 40.0) + 0.01  # falls 10% by step 10: the transient ends there
    test_loss = 5.0 + 0.05 * rng.standard_normal(len(STEPS))
    test_acc = np.full(len(STEPS), 0.02)
    if generalises:
        test_loss = np.where(STEPS >= GENERALISED, 0.05, test_loss)
        test_acc = np.where(STEPS >= GENERALISED, 0.995, test_acc)
    pd.DataFrame({"step": STEPS, "train_loss": train_loss, "train_acc": np.where(STEPS >= MEMORISED, 1.0, 0.4),
                  "test_loss": test_loss, "test_acc": test_acc}).to_parquet(run / "history.parquet")
    synergy = 0.02 * rng.standard_normal(len(STEPS)) + np.where(STEPS == 0, 2.0, 0.0)  # step 0: the init's synergy
    if generalises:
        synergy += 0.5 * np.exp(-0.5 * ((STEPS - 200) / 40.0) ** 2)
    oinfo = pd.DataFrame({"step": STEPS, "metric": "synergy", "value": -synergy, "value_sd": 0.01,
                          "scope": "overall", "size": 3, "split": "train", "layer": "layers.0"})
    oinfo.assign(**{"run": config.name, **hyperparameters(config)}).to_parquet(run / "measures" / "oinfo.parquet")
    return run


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    rng = np.random.default_rng(0)
    for seed in range(N_RUNS):
        write_run(root, seed, rng)
    return root


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_the_planted_early_peak_predicts_and_the_loss_does_not(sweep):
    result = invoke("predict", str(sweep), "--k", "300,1000", "--permutations", "40", "--format", "csv")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout)).set_index(["k", "features"])
    assert list(table.columns) == ["runs", "positives", "leaked", "accuracy", "chance", "auc", "auc_low", "auc_high",
                                   "p_value", "auc_loo", "permutations"]
    early = table.loc[(300, "synergy")]
    assert early["runs"] == N_RUNS and early["positives"] == N_RUNS // 2 and early["leaked"] == 0
    assert early["auc"] == 1.0 and early["accuracy"] == 1.0 and early["chance"] == 0.5
    assert early["auc_low"] == early["auc_high"] == 1.0  # every pair won: every resample too
    assert early["p_value"] <= 2 / 41
    # before generalisation the loss curves carry nothing: chance, and no significance
    loss = table.loc[(300, "loss")]
    assert loss["p_value"] > 0.05 and loss["auc"] < 0.85
    assert loss["auc_low"] < loss["auc"] < loss["auc_high"]
    # at k = 1000 the window reaches the generalisers' step 800: the loss sees the outcome
    late = table.loc[(1000, "loss")]
    assert late["leaked"] == N_RUNS // 2 and late["auc"] == 1.0


def test_per_run_features_and_windows(sweep):
    result = invoke("predict", str(sweep), "--k", "0,300", "--features", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = pd.DataFrame([json.loads(line) for line in result.stdout.splitlines()])
    assert set(rows["k"]) == {0, 300} and len(rows) == 2 * N_RUNS
    assert (rows["start"] == 10).all() and (rows["until"] == MEMORISED + rows["k"]).all()
    window = rows[rows["k"] == 300]
    generalisers = window[window["label"]]
    assert len(generalisers) == N_RUNS // 2
    # the smoothed peak of the bump at 200 (the moving average lags it a little)
    assert generalisers["peak_step"].between(200, 300).all()
    assert (generalisers["peak_bits"] > 0.1).all() and (generalisers["peak_height"] > 0.1).all()
    assert (window.loc[~window["label"], "peak_height"] == 0).all()
    # k = 0 ends at memorisation, before the bump: nobody has a peak yet
    assert (rows.loc[rows["k"] == 0, "peak_height"] == 0).all()


def test_report_gives_the_first_synergy_peak(sweep):
    result = invoke("report", str(sweep), "--format", "csv")
    assert result.exit_code == 0, result.output
    report = pd.read_csv(io.StringIO(result.stdout)).set_index("run")
    assert report.loc["run0", "synergy_peak_step"] in range(200, 301)
    assert report.loc["run9", "synergy_peak_height"] == 0
    # the minimum is taken after the initial transient too: the planted peak, not step 0's init
    assert report.loc["run0", "synergy_min_step"] in range(150, 251)
    early = pd.read_csv(io.StringIO(invoke("report", str(sweep), "--early", "0", "--format", "csv").stdout))
    assert (early["synergy_peak_height"] == 0).all()


def test_the_early_synergy_figure(sweep, tmp_path):
    out = tmp_path / "early.png"
    result = invoke("plot", "early-synergy", str(sweep), "--k", "300", "--facet", "seed", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000


@pytest.mark.parametrize("args, needle", [
    (["--k", "-5"], "--k"),
    (["--outcome", "wins"], "--outcome"),
    (["--permutations", "-1"], "--permutations"),
    (["--where", "seed == 0"], "at least 3 runs"),
])
def test_mistakes_are_one_line(sweep, args, needle):
    result = invoke("predict", str(sweep), *args)
    assert result.exit_code == 2 and needle in result.stderr and "Traceback" not in result.output


def test_every_run_alike_warns_and_leaves_the_scores_empty(sweep):
    result = invoke("predict", str(sweep), "--where", "seed >= 5", "--permutations", "0", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert "same outcome" in result.stderr
    table = pd.read_csv(io.StringIO(result.stdout))
    assert table["auc"].isna().all() and (table["positives"] == 0).all()


def test_a_missing_peak_tells_the_classifier_nothing_about_the_window():
    from grokscope.measures.early_synergy import PEAK_FEATURES
    from grokscope.prediction import design

    # one run memorised at step 30 (window to 330), one never did (window to its last step + 300)
    frame = pd.DataFrame({"peak_height": [0.0, 0.0], "peak_bits": [0.0, 0.0], "peak_step": [np.nan, np.nan],
                          "peak_width": [0.0, 0.0], "until": [330, 4300]})
    x = design(frame, PEAK_FEATURES)
    assert np.array_equal(x[0], x[1]) and np.isfinite(x).all()
    found = design(frame.assign(peak_step=[99.0, np.nan]), PEAK_FEATURES)
    assert found[0, PEAK_FEATURES.index("peak_step")] == pytest.approx(2.0)  # log10(1 + 99)
