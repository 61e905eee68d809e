"""grokscope onsets and plot onsets on a synthetic sweep with planted onsets: each seed's events
recovered relative to its own generalisation step, the lead-lag over seeds grouped by setting with
the bootstrap of the seeds' values, the command's formats and mistakes, the figure."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from grokscope.cli import app
from grokscope.config import OptimConfig, RunConfig, TaskConfig, hyperparameters
from grokscope.measures.onsets import bootstrap_interval

# Every planted onset is recovered within a tenth of a decade (tests/test_measures_onsets.py).
TOLERANCE_DECADES = 0.1
STEPS = np.union1d(np.arange(0, 4001, 50), np.unique(np.round(np.logspace(0, np.log10(4000), 60)).astype(int)))
MEMORISED = 100
# weight decay -> each seed's generalisation step (None: never)
SETTINGS = {0.1: [900, 1200, 1500, 2000], 1.0: [250, 300, 400, None]}
# Planted leads, in decades of step before the seed's own generalisation step.
SYNERGY_PEAK = -0.5    # the synergy peak (lowest O-information)
RNC1_DROP = -0.2       # test RNC1 falls in a sigmoid in log step centred here
RESTRICTED_KINK = -0.3  # restricted loss flat, then falling linearly in log step from here


def write_run(root: Path, weight_decay: float, seed: int, generalised: int | None) -> Path:
    name = f"wd{weight_decay:g}-seed{seed}"
    config = RunConfig(name=name, seed=seed, task=TaskConfig(p=11),
                       optim=OptimConfig(weight_decay=weight_decay)).resolved()
    run_dir = root / name
    (run_dir / "measures").mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"schema": "grokscope.run/1", **config.to_dict()}))
    x = np.log10(np.maximum(STEPS, 1))
    # the training loss falls 10% by step 3: the initial transient is over there
    train_acc = np.where(STEPS >= MEMORISED, 1.0, 0.3)
    test_acc = np.where(STEPS >= (generalised or 10**9), 0.995, 0.1)
    pd.DataFrame({"step": STEPS, "train_loss": 2.3 / (1 + STEPS / 20), "train_acc": train_acc,
                  "test_loss": 1 - test_acc, "test_acc": test_acc}).to_parquet(run_dir / "history.parquet")
    centre = math.log10(generalised or 3000)  # a run that never generalises still has curves
    rng = np.random.default_rng(seed)
    columns = {"run": name, **hyperparameters(config)}
    synergy = -0.6 * np.exp(-((x - centre - SYNERGY_PEAK) / 0.15) ** 2) - 0.05 + rng.normal(0, 0.005, len(x))
    pd.DataFrame({"step": STEPS, "metric": "synergy", "value": synergy, "scope": "overall", "layer": "h",
                  "split": "train", **columns}).to_parquet(run_dir / "measures" / "oinfo.parquet")
    rnc1 = 0.5 - 0.4 * np.tanh((x - centre - RNC1_DROP) / 0.08) + rng.normal(0, 0.01, len(x))
    restricted = 4.0 - 3.0 * np.maximum(x - centre - RESTRICTED_KINK, 0) + rng.normal(0, 0.01, len(x))
    pd.concat([
        pd.DataFrame({"step": STEPS, "metric": "rnc1", "value": rnc1, "split": "test", "layer": "h"}),
        pd.DataFrame({"step": STEPS, "metric": "restricted_loss", "value": restricted, "split": "test", "layer": None}),
    ]).assign(**columns).to_parquet(run_dir / "measures" / "collapse.parquet")
    return run_dir


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("onsets") / "runs"
    for weight_decay, steps in SETTINGS.items():
        for seed, generalised in enumerate(steps):
            write_run(root, weight_decay, seed, generalised)
    return root


def onsets(*args):
    return CliRunner().invoke(app, ["onsets", *map(str, args)])


def csv(result) -> pd.DataFrame:
    assert result.exit_code == 0, result.output
    return pd.read_csv(io.StringIO(result.stdout))


def test_each_seeds_planted_onsets_are_recovered_relative_to_its_generalisation_step(sweep):
    rows = csv(onsets(sweep, "--format", "csv"))
    # 8 series x (synergy, rnc1 test, restricted_loss test, loss train, loss test) x 3 events
    assert len(rows) == 8 * 5 * 3
    assert set(rows["event"]) == {"peak", "steepest", "change_point"}
    generalised = rows[rows["generalization_step"].notna()]
    planted = {("synergy", "peak"): SYNERGY_PEAK, ("rnc1", "steepest"): RNC1_DROP,
               ("rnc1", "change_point"): RNC1_DROP, ("restricted_loss", "change_point"): RESTRICTED_KINK}
    for (measure, event), lead in planted.items():
        found = generalised[(generalised["measure"] == measure) & (generalised["event"] == event)]
        assert len(found) == 7
        assert np.abs(found["log_ratio_generalization"] - lead).max() <= TOLERANCE_DECADES, (measure, event)
        # the two references are consistent with each other and with the step
        np.testing.assert_allclose(found["log_ratio_generalization"],
                                   np.log10(found["step"] / found["generalization_step"]))
        np.testing.assert_array_equal(found["after_memorization"], found["step"] - MEMORISED)
    never = rows[rows["generalization_step"].isna()]
    assert len(never) == 5 * 3 and never["after_generalization"].isna().all()
    assert never["log_ratio_memorization"].notna().all()
    # the synergy peak is the lowest O-information: its value there is the curve's minimum
    peak = rows[(rows["measure"] == "synergy") & (rows["event"] == "peak")]
    assert (peak["value"] < -0.5).all()


def test_lead_lag_groups_seeds_by_setting_and_bootstraps_their_values(sweep):
    per_series = csv(onsets(sweep, "--format", "csv"))
    summary = csv(onsets(sweep, "--over-seeds", "--resamples", "300", "--bootstrap-seed", "4", "--format", "csv"))
    assert "seed" not in summary.columns and "split_seed" not in summary.columns
    assert len(summary) == 2 * 5 * 3 * 2  # settings x curves x events x references
    for weight_decay, steps in SETTINGS.items():
        for reference in ("memorization", "generalization"):
            row = summary[(summary["weight_decay"] == weight_decay) & (summary["measure"] == "synergy")
                          & (summary["event"] == "peak") & (summary["relative_to"] == reference)].iloc[0]
            seeds = per_series[(per_series["weight_decay"] == weight_decay) & (per_series["measure"] == "synergy")
                               & (per_series["event"] == "peak")]
            values = []
            for _, seed_row in seeds.iterrows():  # by hand: the seeds that reached the reference step
                at = seed_row[f"{reference}_step"]
                if not pd.isna(at):
                    values.append(math.log10(seed_row["step"] / at))
            assert row["runs"] == len(steps) and row["seeds"] == len(values)
            mean, low, high = bootstrap_interval(values, resamples=300, seed=4)
            assert row["log_ratio"] == pytest.approx(mean)
            assert row["log_ratio_low"] == pytest.approx(low) and row["log_ratio_high"] == pytest.approx(high)
            assert row["log_ratio_low"] <= row["log_ratio"] <= row["log_ratio_high"]
            if reference == "generalization":
                assert abs(row["log_ratio"] - SYNERGY_PEAK) <= TOLERANCE_DECADES


def test_formats_and_choices(sweep):
    table = onsets(sweep, "--metric", "synergy")
    assert table.exit_code == 0, table.output
    header = table.stdout.splitlines()[0].split()
    # the table leaves out what is the same in every row (p, model, ...) and keeps what is not
    assert "weight_decay" in header and "seed" in header and "p" not in header and "series" not in header
    json_rows = [json.loads(line) for line in onsets(sweep, "--metric", "synergy,accuracy", "-f", "json").stdout.splitlines()]
    assert {r["measure"] for r in json_rows} == {"synergy", "accuracy"}
    assert all(r["variant"] is None for r in json_rows)  # JSON null, not NaN
    everything = csv(onsets(sweep, "--metric", "all", "-f", "csv"))
    assert {"synergy", "rnc1", "restricted_loss", "loss", "accuracy"} <= set(everything["measure"])
    only = csv(onsets(sweep, "--where", "weight_decay == 1", "-f", "csv"))
    assert set(only["weight_decay"]) == {1.0}


@pytest.mark.parametrize("args, needle", [
    (["--metric", "nosuch"], "--metric: no nosuch"),
    (["--format", "xml"], "--format"),
    (["--threshold", "1.5"], "--threshold"),
    (["--resamples", "0"], "--resamples"),
    (["--confidence", "1"], "--confidence"),
])
def test_mistakes_are_one_line_errors(sweep, args, needle):
    result = onsets(sweep, *args)
    assert result.exit_code == 2 and needle in result.output
    assert "Traceback" not in result.output


def test_plot_onsets_renders_and_needs_a_run_that_generalised(sweep, tmp_path):
    figure = tmp_path / "onsets.png"
    result = CliRunner().invoke(app, ["plot", "onsets", str(sweep), "-o", str(figure)])
    assert result.exit_code == 0, result.output
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    never = CliRunner().invoke(app, ["plot", "onsets", str(sweep), "--threshold", "0.999", "-o", str(figure)])
    assert never.exit_code == 2 and "nothing to plot" in never.output


def test_help_is_fast_and_shows_examples():
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    completed = subprocess.run([sys.executable, "-m", "grokscope", "onsets", "--help"], capture_output=True,
                               text=True, env=env)
    assert completed.returncode == 0 and "Examples" in completed.stdout
    imported = {line.split("|")[-1].strip() for line in completed.stderr.splitlines()}
    assert not imported & {"torch", "pandas", "plotnine", "numpy", "sklearn"}
