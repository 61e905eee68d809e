"""grokscope report: a synthetic sweep with planted crossings gives the right phases and steps."""

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

STEPS = np.arange(0, 4001, 25)
# weight decay -> (memorisation step, generalisation step or None, train accuracy reached?)
PLANTED = {
    0.1: (100, 2600),   # grokking: gap 2500
    1.0: (100, 400),    # comprehension: gap 300
    0.0: (150, None),   # memorization
    5.0: (None, None),  # confusion
}


def write_run(root: Path, weight_decay: float, with_measures: bool) -> Path:
    name = f"wd{weight_decay:g}"
    config = RunConfig(name=name, task=TaskConfig(p=11), optim=OptimConfig(weight_decay=weight_decay)).resolved()
    run_dir = root / name
    (run_dir / "measures").mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"schema": "grokscope.run/1", **config.to_dict()}))
    memorised, generalised = PLANTED[weight_decay]
    train_acc = np.where(STEPS >= (memorised or 10**9), 1.0, 0.3)
    test_acc = np.where(STEPS >= (generalised or 10**9), 0.995, 0.1)
    pd.DataFrame({"step": STEPS, "train_loss": 1 - train_acc, "train_acc": train_acc,
                  "test_loss": 1 - test_acc, "test_acc": test_acc}).to_parquet(run_dir / "history.parquet")
    if with_measures:
        columns = {"run": name, **hyperparameters(config)}
        measure_steps = [10, 100, 1000, 4000]
        # Synergy (the lowest O-information) is deepest at step 1000 with a multiplet of 5 bins.
        oinfo = pd.DataFrame(
            [{"step": s, "metric": "synergy", "value": v, "size": z, "scope": "overall"}
             for s, v, z in zip(measure_steps, [-0.1, -0.4, -0.9, -0.3], [2, 3, 5, 4])]
            + [{"step": s, "metric": "redundancy", "value": 0.5, "size": 2, "scope": "overall"} for s in measure_steps]
            + [{"step": 4000, "metric": "synergy", "value": -2.0, "size": 7, "scope": "size"}]  # not the headline
        ).assign(split="train", layer="h", **columns)
        oinfo.to_parquet(run_dir / "measures" / "oinfo.parquet")
        collapse = pd.DataFrame(
            [{"step": s, "metric": "rnc1", "split": split, "value": base / s}
             for s in measure_steps for split, base in (("train", 1.0), ("test", 3.0))]
        ).assign(layer="h", **columns)
        collapse.to_parquet(run_dir / "measures" / "collapse.parquet")
    return run_dir


@pytest.fixture()
def sweep(tmp_path) -> Path:
    for weight_decay in PLANTED:
        write_run(tmp_path / "runs", weight_decay, with_measures=weight_decay == 0.1)
    return tmp_path / "runs"


def report(*args, stdin=None):
    return CliRunner().invoke(app, ["report", *map(str, args)], input=stdin)


def read_csv(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text)).set_index("weight_decay")


def test_phases_and_steps_of_a_sweep(sweep):
    result = report(sweep, "--format", "csv")
    assert result.exit_code == 0, result.output
    table = read_csv(result.stdout)
    assert len(table) == 4
    assert table.loc[0.1, ["memorization_step", "generalization_step", "grokking_gap"]].tolist() == [100, 2600, 2500]
    assert table.loc[0.1, "phase"] == "grokking"
    assert table.loc[1.0, ["memorization_step", "generalization_step", "grokking_gap"]].tolist() == [100, 400, 300]
    assert table.loc[1.0, "phase"] == "comprehension"
    assert table.loc[0.0, "phase"] == "memorization" and math.isnan(table.loc[0.0, "generalization_step"])
    assert table.loc[5.0, "phase"] == "confusion" and math.isnan(table.loc[5.0, "memorization_step"])
    assert (table["p"] == 11).all() and (table["task"] == "add").all()


def test_optional_tables_fill_their_columns_or_stay_empty(sweep):
    table = read_csv(report(sweep, "--format", "csv").stdout)
    row = table.loc[0.1]
    # The per-size row at -2.0 is not the overall curve: the minimum is -0.9 at step 1000, size 5.
    assert (row["synergy_min"], row["synergy_min_step"], row["synergy_min_size"]) == (-0.9, 1000, 5)
    assert row["rnc1_train"] == pytest.approx(1 / 4000) and row["rnc1_test"] == pytest.approx(3 / 4000)
    others = table.drop(index=0.1)
    assert others[["synergy_min", "synergy_min_step", "rnc1_train", "rnc1_test"]].isna().all().all()


def test_thresholds_are_options(sweep):
    table = read_csv(report(sweep, "--format", "csv", "--delay", "200").stdout)
    assert table.loc[1.0, "phase"] == "grokking"  # gap 300 >= 200
    table = read_csv(report(sweep, "--format", "csv", "--threshold", "0.999").stdout)
    assert table.loc[0.1, "phase"] == "memorization"  # test accuracy plateaus at 0.995


def test_json_lines_and_table(sweep):
    result = report(sweep, "--format", "json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["run"]: r["phase"] for r in records} == {
        "wd0.1": "grokking", "wd1": "comprehension", "wd0": "memorization", "wd5": "confusion"}
    assert all(r["generalization_step"] is None for r in records if r["run"] == "wd0")

    result = report(sweep)  # default: an aligned table
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["run", "task"] and len(lines) == 5
    assert "grokking" in result.stdout and "confusion" in result.stdout


def test_where_and_stdin(sweep):
    table = read_csv(report(sweep, "--format", "csv", "--where", "weight_decay >= 1").stdout)
    assert sorted(table.index) == [1.0, 5.0]
    paths = "\n".join(str(p) for p in sorted(sweep.iterdir())[:2]) + "\n"
    table = read_csv(report("-", "--format", "csv", stdin=paths).stdout)
    assert len(table) == 2


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--format", "xml"], "--format"),
        (["--where", "nosuch == 1"], "'nosuch'"),
        (["--where", "weight_decay > 100"], "no runs"),
    ],
)
def test_user_errors(sweep, args, named):
    result = report(sweep, *args)
    assert result.exit_code == 2
    assert named in result.stderr and result.stderr.strip().count("\n") == 0
    assert result.stdout == ""


def test_runs_without_history_use_the_grokking_table(tmp_path):
    from grokscope.measures.grokking import grokking_rows

    history = pd.DataFrame({"step": STEPS, "train_acc": np.where(STEPS >= 100, 1.0, 0.0),
                            "test_acc": np.where(STEPS >= 2600, 1.0, 0.0)})
    rows = pd.DataFrame(grokking_rows(history)).assign(run="stored", weight_decay=0.1)
    rows.to_parquet(tmp_path / "grokking.parquet")
    result = report(tmp_path / "grokking.parquet", "--format", "csv")
    assert result.exit_code == 0, result.output
    row = pd.read_csv(io.StringIO(result.stdout)).iloc[0]
    assert (row["run"], row["memorization_step"], row["generalization_step"], row["phase"]) == (
        "stored", 100, 2600, "grokking")
