"""grokscope probe on grokscope runs: features against an independent forward pass, the readout
against the recorded accuracy, samples rows, incremental runs, broken checkpoints, and the
in-memory iterator that measure shares."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from grokscope.cli import app
from grokscope.context import iter_features, open_series

P = 11
STEPS = [0, 10, 20, 30, 40, 50]


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with safe_open(str(path), framework="np") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[int, Path]:
    """Two tiny runs of (a+b) mod 11, one and two hidden layers, 50 steps, a checkpoint every 10."""
    out = tmp_path_factory.mktemp("runs")
    result = invoke("train", "--p", P, "--width", 16, "--depth", "1,2", "--steps", 50, "--save-every", 10,
                    "--save-log", 0, "--eval-every", 10, "--lr", 0.05, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    runs = [Path(line) for line in result.stdout.split()]
    return {json.loads((r / "run.json").read_text())["model"]["depth"]: r for r in runs}


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A fresh copy of the one-layer run, so each test starts with no features."""
    return Path(shutil.copytree(trained[1], tmp_path / "run"))


@pytest.fixture
def deep_run(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained[2], tmp_path / "deep"))


def one_hot_inputs(p: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (a, b) in the order a-major, b-minor, as concatenated one-hots, and (a+b) mod p."""
    rows, labels = [], []
    for a in range(p):
        for b in range(p):
            x = np.zeros(2 * p)
            x[a] = 1.0
            x[p + b] = 1.0
            rows.append(x)
            labels.append((a + b) % p)
    return np.array(rows), np.array(labels)


def relu(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0.0)


def test_features_equal_an_independent_forward_pass(run):
    result = invoke("probe", run)
    assert result.exit_code == 0, result.output
    written = [Path(line) for line in result.stdout.split()]
    assert [p.name for p in written] == [f"step-{s:08d}.safetensors" for s in STEPS]

    x, _ = one_hot_inputs(P)
    for step, path in zip(STEPS, written):
        weights, _ = read(run / "checkpoints" / f"step-{step:08d}.safetensors")
        expected = relu(x @ weights["layers.0.weight"].astype(np.float64).T + weights["layers.0.bias"])
        tensors, metadata = read(path)
        assert metadata["grokscope.step"] == str(step)
        assert json.loads(metadata["grokscope.layers"]) == ["layers.0"]
        assert metadata["grokscope.penultimate"] == "layers.0"
        assert tensors["layers.0"].dtype == np.float32 and tensors["layers.0"].shape == (P * P, 16)
        np.testing.assert_allclose(tensors["layers.0"], expected, rtol=1e-5, atol=1e-5)


def test_samples_rows_follow_the_task_and_the_recorded_split(run):
    assert invoke("probe", run, "-q").exit_code == 0
    samples, metadata = read(run / "features" / "samples.safetensors")
    _, labels = one_hot_inputs(P)
    assert samples["labels"].dtype == np.int64 and samples["split"].dtype == np.uint8
    np.testing.assert_array_equal(samples["labels"], labels)
    np.testing.assert_array_equal(samples["index"], np.arange(P * P))
    assert (samples["split"] == 0).sum() == round(0.4 * P * P)
    digest = hashlib.sha256(np.ascontiguousarray(samples["split"]).tobytes()).hexdigest()[:16]
    assert digest == json.loads((run / "run.json").read_text())["split_sha256"]
    from_file = open_series(run).samples()
    np.testing.assert_array_equal(from_file.split, samples["split"])


def test_load_samples_rebuilds_the_rows_of_an_unprobed_run(run):
    samples = open_series(run).samples()
    _, labels = one_hot_inputs(P)
    np.testing.assert_array_equal(samples.labels, labels)
    np.testing.assert_array_equal(samples.index, np.arange(P * P))
    digest = hashlib.sha256(samples.split.tobytes()).hexdigest()[:16]
    assert digest == json.loads((run / "run.json").read_text())["split_sha256"]


def test_penultimate_readout_reproduces_the_recorded_accuracy(deep_run):
    assert invoke("probe", deep_run, "-q").exit_code == 0
    history = pd.read_parquet(deep_run / "history.parquet").set_index("step")
    samples, _ = read(deep_run / "features" / "samples.safetensors")
    accuracies = []
    for step in STEPS:
        features, metadata = read(deep_run / "features" / f"step-{step:08d}.safetensors")
        assert json.loads(metadata["grokscope.layers"]) == ["layers.0", "layers.1"]
        assert metadata["grokscope.penultimate"] == "layers.1"
        weights, _ = read(deep_run / "checkpoints" / f"step-{step:08d}.safetensors")
        logits = features["layers.1"].astype(np.float64) @ weights["layers.2.weight"].T  # no output bias
        correct = logits.argmax(axis=1) == samples["labels"]
        for split, column in ((0, "train_acc"), (1, "test_acc")):
            accuracy = correct[samples["split"] == split].mean()
            assert accuracy == pytest.approx(history.loc[step, column], abs=1e-6), (step, column)
            accuracies.append(accuracy)
    assert len(set(accuracies)) > 2  # training moved the readout: the check is not vacuous


def test_second_layer_is_relu_of_the_first(deep_run):
    assert invoke("probe", deep_run, "--steps", "50", "-q").exit_code == 0
    features, _ = read(deep_run / "features" / "step-00000050.safetensors")
    weights, _ = read(deep_run / "checkpoints" / "step-00000050.safetensors")
    x, _ = one_hot_inputs(P)
    first = relu(x @ weights["layers.0.weight"].T.astype(np.float64) + weights["layers.0.bias"])
    second = relu(first @ weights["layers.1.weight"].T + weights["layers.1.bias"])
    np.testing.assert_allclose(features["layers.0"], first, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(features["layers.1"], second, rtol=1e-5, atol=1e-5)


def test_layer_option_keeps_the_penultimate_layer(deep_run):
    result = invoke("probe", deep_run, "--layer", "layers.1", "--steps", "0", "-q")
    assert result.exit_code == 0, result.output
    tensors, metadata = read(Path(result.stdout.strip()))
    assert list(tensors) == ["layers.1"] and json.loads(metadata["grokscope.layers"]) == ["layers.1"]
    # A later full probe sees the missing layer and recomputes that file.
    invoke("probe", deep_run, "--steps", "0", "-q")
    tensors, _ = read(deep_run / "features" / "step-00000000.safetensors")
    assert sorted(tensors) == ["layers.0", "layers.1"]
    bad = invoke("probe", deep_run, "--layer", "layers.7")
    assert bad.exit_code == 2 and "layers.7" in bad.stderr


def test_incremental_skip_completion_and_force(run):
    assert invoke("probe", run, "--steps", "0-20", "-q").exit_code == 0
    folder = run / "features"
    assert sorted(p.name for p in folder.glob("step-*")) == [f"step-{s:08d}.safetensors" for s in (0, 10, 20)]
    inodes = {p.name: p.stat().st_ino for p in folder.glob("step-*")}
    (folder / "step-00000010.safetensors").unlink()

    result = invoke("probe", run)  # completes the partial earlier run
    assert result.exit_code == 0, result.output
    assert [Path(l).name for l in result.stdout.split()] == [f"step-{s:08d}.safetensors" for s in STEPS]
    assert "4 probed, 2 already stored" in " ".join(result.stderr.split())
    assert folder.joinpath("step-00000000.safetensors").stat().st_ino == inodes["step-00000000.safetensors"]
    assert folder.joinpath("step-00000020.safetensors").stat().st_ino == inodes["step-00000020.safetensors"]

    inodes = {p.name: p.stat().st_ino for p in folder.glob("step-*")}
    result = invoke("probe", run, "--force", "-q")
    assert result.exit_code == 0 and result.stderr == ""
    assert all(folder.joinpath(n).stat().st_ino != i for n, i in inodes.items())
    assert not list(folder.glob(".*"))  # no temporary files left behind


def test_steps_selection_and_stdin_paths(run):
    result = invoke("probe", "-", "--steps", "every:2", "-q", input=f"{run}\n")
    assert result.exit_code == 0, result.output
    assert [Path(l).name for l in result.stdout.split()] == [f"step-{s:08d}.safetensors" for s in (0, 20, 40)]
    single = invoke("probe", run / "checkpoints" / "step-00000050.safetensors", "-q")
    assert [Path(l).name for l in single.stdout.split()] == ["step-00000050.safetensors"]
    missing = invoke("probe", run, "--steps", "10,15", "-q")
    assert missing.exit_code == 0 and "no checkpoint at step 15" in " ".join(missing.stderr.split())
    assert invoke("probe", run, "--steps", "9-3").exit_code == 2


def test_a_broken_checkpoint_is_named_and_the_rest_are_probed(run):
    truncated = run / "checkpoints" / "step-00000020.safetensors"
    truncated.write_bytes(truncated.read_bytes()[:200])
    garbage = run / "checkpoints" / "step-00000040.safetensors"
    garbage.write_bytes(b"\x00not a safetensors file at all" * 10)
    result = invoke("probe", run)
    assert result.exit_code == 1
    errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 2
    assert "step-00000020.safetensors" in errors[0] and "step-00000040.safetensors" in errors[1]
    stored = sorted(p.name for p in (run / "features").glob("step-*"))
    assert stored == [f"step-{s:08d}.safetensors" for s in (0, 10, 30, 50)]
    assert [Path(l).name for l in result.stdout.split()] == stored


def test_a_changed_split_is_refused(run):
    document = json.loads((run / "run.json").read_text())
    document["split_sha256"] = "0" * 16
    (run / "run.json").write_text(json.dumps(document))
    result = invoke("probe", run)
    assert result.exit_code != 0 and "split_sha256" in result.stderr
    assert not (run / "features").exists()


def test_iterator_computes_in_memory_what_probe_stores(run):
    computed = {f.step: f for f in iter_features(run, stored="never")}
    assert sorted(computed) == STEPS and not (run / "features").exists()
    assert invoke("probe", run, "-q").exit_code == 0
    for item in iter_features(run, [10, 50]):
        assert item.from_store and item.penultimate == "layers.0"
        torch.testing.assert_close(item.layers["layers.0"], computed[item.step].layers["layers.0"])
        weights, _ = read(run / "checkpoints" / f"step-{item.step:08d}.safetensors")
        np.testing.assert_array_equal(item.state["layers.1.weight"].numpy(), weights["layers.1.weight"])
    doubles = next(iter_features(run, [30], stored="never", dtype=torch.float64, batch_size=7))
    assert doubles.layers["layers.0"].dtype == torch.float64
    torch.testing.assert_close(doubles.layers["layers.0"].float(), computed[30].layers["layers.0"])


def test_iterator_reports_broken_checkpoints_and_goes_on(run):
    broken = run / "checkpoints" / "step-00000010.safetensors"
    broken.write_bytes(broken.read_bytes()[:100])
    failures = []
    steps = [f.step for f in iter_features(run, on_error=lambda step, exc: failures.append((step, str(exc))))]
    assert steps == [0, 20, 30, 40, 50]
    assert failures[0][0] == 10 and "step-00000010.safetensors" in failures[0][1]
    with pytest.raises(Exception, match="step-00000010"):
        list(iter_features(run))
