"""grokscope measure end to end on tiny runs: tables, values, skipping, workers, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from grokscope import formats
from grokscope.cli import app
from grokscope.tasks import load_task
from grokscope.config import TaskConfig


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    result = invoke("train", "--p", "11", "--width", "24", "--steps", "30", "--save-every", "10", "--save-log", "0",
                    "--weight-decay", "0.5", "--out", str(out))
    assert result.exit_code == 0, result.output
    return out / "add-p11"


def copy_run(run_dir, tmp_path):
    import shutil

    target = tmp_path / run_dir.name
    shutil.copytree(run_dir, target)
    return target


def brute_rnc1(h: np.ndarray, y: np.ndarray) -> float:
    total = 0.0
    for i in range(len(h)):
        mean = h[y == y[i]].mean(axis=0)
        total += float(((h[i] - mean) ** 2).sum())
    scale = np.mean([np.linalg.norm(row) for row in h])
    return total / len(h) / scale**2


def test_tables_have_the_contract_columns_and_right_values(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    result = invoke("measure", str(run), "--metric", "collapse,hsic,weights,grokking", "-q")
    assert result.exit_code == 0, result.output
    printed = result.stdout.split()
    assert sorted(printed) == sorted(str(formats.tables.measures_path(run, f)) for f in ("collapse", "hsic", "weights", "grokking"))

    collapse = pd.read_parquet(formats.tables.measures_path(run, "collapse"))
    assert list(collapse.columns[:6]) == ["run", "step", "metric", "value", "split", "layer"]
    assert collapse["step"].dtype == np.int64 and collapse["value"].dtype == np.float64
    assert {"weight_decay", "lr", "alpha", "seed", "p", "train_fraction"} <= set(collapse.columns)
    assert (collapse["weight_decay"] == 0.5).all() and (collapse["run"] == "add-p11").all()
    assert sorted(collapse["step"].unique()) == [0, 10, 20, 30]
    assert set(collapse["split"]) == {"train", "test"} and set(collapse["layer"]) == {"layers.0"}

    # RNC1 at step 20 from an independent forward pass and a brute-force loop.
    state = formats.run.load_checkpoint(formats.run.checkpoint_path(run, 20))
    data = load_task(TaskConfig(p=11, split_seed=0))
    h = np.maximum(data.x @ state["layers.0.weight"].numpy().T + state["layers.0.bias"].numpy(), 0)
    for split_name, code in (("train", 0), ("test", 1)):
        mask = data.split == code
        row = collapse[(collapse.step == 20) & (collapse.metric == "rnc1") & (collapse.split == split_name)]
        assert row["value"].item() == pytest.approx(brute_rnc1(h[mask], data.y[mask]), rel=1e-5)

    hsic = pd.read_parquet(formats.tables.measures_path(run, "hsic"))
    assert set(hsic["metric"]) == {"nhsic_x", "nhsic_y"} and set(hsic["split"]) == {"test"}
    weights = pd.read_parquet(formats.tables.measures_path(run, "weights"))
    norm = weights[(weights.step == 20) & (weights.metric == "weight_norm")]["value"].item()
    assert norm == pytest.approx(math.sqrt(sum(float((v.double() ** 2).sum()) for v in state.values())), rel=1e-6)
    grokking = pd.read_parquet(formats.tables.measures_path(run, "grokking"))
    history = formats.run.read_history(run)
    memorised = history.loc[history.train_acc >= 0.99, "step"]
    expected = float(memorised.iloc[0]) if len(memorised) else math.nan
    value = grokking.loc[grokking.metric == "memorization_step", "value"].item()
    assert (math.isnan(expected) and math.isnan(value)) or value == expected


def test_already_measured_checkpoints_are_skipped_unless_forced(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    assert invoke("measure", str(run), "--metric", "collapse", "--steps", "0-10").exit_code == 0
    path = formats.tables.measures_path(run, "collapse")
    first = path.stat().st_mtime_ns
    assert sorted(pd.read_parquet(path)["step"].unique()) == [0, 10]

    assert invoke("measure", str(run), "--metric", "collapse", "--steps", "0-10").exit_code == 0
    assert path.stat().st_mtime_ns == first  # nothing new, nothing rewritten

    assert invoke("measure", str(run), "--metric", "collapse").exit_code == 0
    table = pd.read_parquet(path)
    assert sorted(table["step"].unique()) == [0, 10, 20, 30]
    assert not table.duplicated(["step", "metric", "split", "layer"]).any()

    # Different settings replace the table instead of mixing two parameter sets.
    assert invoke("measure", str(run), "--metric", "collapse", "--split", "train").exit_code == 0
    table = pd.read_parquet(path)
    assert set(table["split"]) == {"train"} and table["params"].nunique() == 1

    before = pd.read_parquet(path)
    assert invoke("measure", str(run), "--metric", "collapse", "--split", "train", "--force").exit_code == 0
    pd.testing.assert_frame_equal(before, pd.read_parquet(path))


def test_workers_give_the_same_values(run_dir, tmp_path):
    one, two = copy_run(run_dir, tmp_path / "one"), copy_run(run_dir, tmp_path / "two")
    assert invoke("measure", str(one), "--metric", "collapse,hsic").exit_code == 0
    result = invoke("measure", str(two), "--metric", "collapse,hsic", "--workers", "2")
    assert result.exit_code == 0, result.output
    for family in ("collapse", "hsic"):
        a = pd.read_parquet(formats.tables.measures_path(one, family))
        b = pd.read_parquet(formats.tables.measures_path(two, family))
        pd.testing.assert_frame_equal(a, b)


def test_stored_features_give_the_same_values_as_in_memory(run_dir, tmp_path):
    probed, fresh = copy_run(run_dir, tmp_path / "probed"), copy_run(run_dir, tmp_path / "fresh")
    assert invoke("probe", str(probed), "-q").exit_code == 0
    assert formats.features.list_features(probed)
    for run in (probed, fresh):
        assert invoke("measure", str(run), "--metric", "collapse").exit_code == 0
    a = pd.read_parquet(formats.tables.measures_path(probed, "collapse"))
    b = pd.read_parquet(formats.tables.measures_path(fresh, "collapse"))
    pd.testing.assert_frame_equal(a, b)


def test_combined_table_and_rows_on_stdout(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    out = tmp_path / "all.parquet"
    result = invoke("measure", str(run), "--metric", "rnc1,weight_norm", "-o", str(out))
    assert result.exit_code == 0 and result.stdout.strip() == str(out)
    table = pd.read_parquet(out)
    assert set(table["metric"]) == {"rnc1", "weight_norm"}

    result = invoke("measure", str(run), "--metric", "nc1", "--format", "json")
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["metric"] for r in rows} == {"nc1"} and len(rows) == 4 * 2


def test_unknown_metric_lists_the_known_ones(run_dir):
    result = invoke("measure", str(run_dir), "--metric", "rnc9")
    assert result.exit_code == 2
    assert "rnc9" in result.stderr and "collapse" in result.stderr and "rnc1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_sample_count_mismatch_names_the_file(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    assert invoke("probe", str(run), "-q").exit_code == 0
    path = formats.features.features_path(run, 10)
    _, layers, penultimate = formats.features.features_header(path)
    tensors, _ = formats.tensors.load_tensors(path)
    formats.features.save_features(path, 10, {k: tensors[k][:-3] for k in layers}, penultimate)
    result = invoke("measure", str(run), "--metric", "collapse")
    assert result.exit_code != 0
    assert str(path) in result.stderr and "Traceback" not in result.output


def test_diverged_checkpoint_gives_nan_with_a_warning(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    path = formats.run.checkpoint_path(run, 20)
    state = formats.run.load_checkpoint(path)
    state["layers.0.weight"][0, 0] = float("nan")
    formats.run.save_checkpoint(run, 20, state)
    result = invoke("measure", str(run), "--metric", "collapse,hsic")
    assert result.exit_code == 0, result.output
    assert "step 20" in result.stderr
    collapse = pd.read_parquet(formats.tables.measures_path(run, "collapse"))
    assert collapse.loc[collapse.step == 20, "value"].isna().all()
    assert collapse.loc[collapse.step == 10, "value"].notna().any()


def test_single_class_is_a_clear_error(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    np.savez(tmp_path / "one.npz", X=x, y=np.zeros(40, dtype=np.int64))
    result = invoke("train", "--task", "npz", "--data", str(tmp_path / "one.npz"), "--width", "4", "--steps", "2",
                    "--save-log", "0", "--out", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    result = invoke("measure", str(tmp_path / "runs" / "npz"), "--metric", "collapse")
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "two classes" in errors[0] and "npz" in errors[0]
    assert "Traceback" not in result.output


def test_corrupt_checkpoint_is_reported_and_the_rest_measured(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    path = formats.run.checkpoint_path(run, 10)
    path.write_bytes(path.read_bytes()[:50])
    result = invoke("measure", str(run), "--metric", "collapse,weights")
    assert result.exit_code == 1
    assert str(path) in result.stderr
    table = pd.read_parquet(formats.tables.measures_path(run, "collapse"))
    assert sorted(table["step"].unique()) == [0, 20, 30]
    assert torch.isfinite(torch.tensor(table["value"].to_numpy())).any()


def test_cka_and_plain_hsic_estimators(run_dir, tmp_path):
    from grokscope.measures.hsic import cka

    run = copy_run(run_dir, tmp_path)
    result = invoke("measure", str(run), "--metric", "cka_x,cka_y", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(__import__("io").StringIO(result.stdout))
    assert set(rows["metric"]) == {"cka_x", "cka_y"} and rows["value"].between(0, 1).all()
    # Same value as the function on an independent forward pass of the test split.
    state = formats.run.load_checkpoint(formats.run.checkpoint_path(run, 30))
    data = load_task(TaskConfig(p=11, split_seed=0))
    h = np.maximum(data.x @ state["layers.0.weight"].numpy().T + state["layers.0.bias"].numpy(), 0)
    test = data.split == 1
    expected = cka(h[test], data.x[test])
    assert rows.loc[(rows.step == 30) & (rows.metric == "cka_x"), "value"].item() == pytest.approx(expected, rel=1e-5)

    result = invoke("measure", str(run), "--metric", "hsic", "--hsic-estimator", "hsic", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(__import__("io").StringIO(result.stdout))["metric"]) == {"hsic_x", "hsic_y"}
