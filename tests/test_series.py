"""Checkpoint series written by other tools: discovery, safe loading, and probing with --model/--data."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from grokscope.cli import app
from grokscope.errors import GrokscopeError
from grokscope.discovery import find_series, parse_steps
from grokscope.formats.steps import parse_checkpoint_step
from grokscope.loading import Checkpoint, load_state, strip_wrapper_prefixes

ROOT = Path(__file__).resolve().parents[1]
NET = """
from torch import nn

def build():
    return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))
"""
STEPS = (0, 5, 10)


def invoke(*args, input: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with safe_open(str(path), framework="np") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()


class Planted:
    """A pickled object whose unpickling would create a marker file: proof that nothing ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def workspace(tmp_path) -> Path:
    (tmp_path / "net.py").write_text(NET)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=40)
    split = (np.arange(40) % 4 == 0).astype(np.uint8)
    np.savez(tmp_path / "data.npz", X=x, y=y, split=split)
    return tmp_path


def plain_loop(folder: Path, data: Path, save) -> None:
    """A training loop as users write it; ``save(model, step)`` writes each checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    arrays = np.load(data)
    x, y = torch.from_numpy(arrays["X"]), torch.from_numpy(arrays["y"])
    for step in range(max(STEPS) + 1):
        if step in STEPS:
            save(model, step)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def hf_style(folder: Path, marker: Path):
    def save(model, step):
        checkpoint = folder / f"checkpoint-{step}"
        checkpoint.mkdir()
        save_file(model.state_dict(), str(checkpoint / "model.safetensors"))
        # Beside the weights, what a Trainer also leaves: none of it may be unpickled.
        torch.save(Planted(marker), checkpoint / "training_args.bin")
        torch.save({"lr": torch.tensor(0.5)}, checkpoint / "optimizer.pt")
    return save


def pt_style(folder: Path):
    def save(model, step):
        # DDP around torch.compile, nested in a dict with the step: all common in the wild.
        state = {f"module._orig_mod.{k}": v.clone() for k, v in model.state_dict().items()}
        torch.save({"model": state, "step": step}, folder / f"model_step_{step}.pt")
    return save


def expected_penultimate(x: np.ndarray, weights: dict) -> np.ndarray:
    w, b = weights["0.weight"].astype(np.float64), weights["0.bias"]
    return np.maximum(x @ w.T + b, 0.0)  # the input of the last Linear: ReLU(x W0^T + b0)


def test_checkpoint_folders_probe_like_a_forward_pass(workspace):
    series, marker = workspace / "hf", workspace / "pwned"
    plain_loop(series, workspace / "data.npz", hf_style(series, marker))
    result = invoke("probe", series, "--model", workspace / "net.py:build", "--data", workspace / "data.npz")
    assert result.exit_code == 0, result.output
    written = [Path(l) for l in result.stdout.split()]
    assert written == [series / "features" / f"step-{s:08d}.safetensors" for s in STEPS]
    assert not marker.exists()

    x = np.load(workspace / "data.npz")["X"].astype(np.float64)
    for step, path in zip(STEPS, written):
        weights, _ = read(series / f"checkpoint-{step}" / "model.safetensors")
        features, metadata = read(path)
        assert metadata["grokscope.penultimate"] == "2:input"
        assert json.loads(metadata["grokscope.layers"]) == ["2:input"]
        np.testing.assert_allclose(features["2:input"], expected_penultimate(x, weights), rtol=1e-5, atol=1e-6)
    samples, _ = read(series / "features" / "samples.safetensors")
    np.testing.assert_array_equal(samples["labels"], np.load(workspace / "data.npz")["y"])
    np.testing.assert_array_equal(samples["split"], np.load(workspace / "data.npz")["split"])


def test_pt_state_dicts_with_wrapper_prefixes(workspace, monkeypatch):
    series = workspace / "pt"
    plain_loop(series, workspace / "data.npz", pt_style(series))
    # The package.module:factory form, importable from the current folder like `python -m`.
    monkeypatch.chdir(workspace)
    (workspace / "netpkg_for_series_test.py").write_text(NET)
    out = workspace / "elsewhere"
    result = invoke("probe", "pt", "--model", "netpkg_for_series_test:build", "--data", "data.npz",
                    "--layer", "0", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert [Path(l).name for l in result.stdout.split()] == [f"step-{s:08d}.safetensors" for s in STEPS]
    assert not (series / "features").exists()

    x = np.load(workspace / "data.npz")["X"].astype(np.float64)
    for step in STEPS:
        loaded = torch.load(series / f"model_step_{step}.pt", weights_only=True)["model"]
        weights = {k.removeprefix("module._orig_mod."): v.numpy() for k, v in loaded.items()}
        features, metadata = read(out / "features" / f"step-{step:08d}.safetensors")
        assert json.loads(metadata["grokscope.layers"]) == ["0", "2:input"]  # registration order
        pre_activation = x @ weights["0.weight"].T.astype(np.float64) + weights["0.bias"]
        np.testing.assert_allclose(features["0"], pre_activation, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(features["2:input"], expected_penultimate(x, weights), rtol=1e-5, atol=1e-6)


def test_a_module_output_that_is_the_next_input_is_stored_twice(workspace):
    series = workspace / "pt"
    plain_loop(series, workspace / "data.npz", pt_style(series))
    for batch_size in ("64", "7"):
        result = invoke("probe", series, "--model", workspace / "net.py:build", "--data", workspace / "data.npz",
                        "--layer", "1", "--steps", "10", "--batch-size", batch_size, "--force", "-q")
        assert result.exit_code == 0, result.output
        features, metadata = read(Path(result.stdout.strip()))
        assert json.loads(metadata["grokscope.layers"]) == ["1", "2:input"]
        np.testing.assert_array_equal(features["1"], features["2:input"])  # ReLU output = last Linear's input
        x = np.load(workspace / "data.npz")["X"].astype(np.float64)
        loaded = torch.load(series / "model_step_10.pt", weights_only=True)["model"]
        weights = {k.removeprefix("module._orig_mod."): v.numpy() for k, v in loaded.items()}
        np.testing.assert_allclose(features["1"], expected_penultimate(x, weights), rtol=1e-5, atol=1e-6)


def test_pickled_objects_are_refused_unexecuted_and_the_rest_probed(workspace):
    series, marker = workspace / "mixed", workspace / "pwned"
    plain_loop(series, workspace / "data.npz", pt_style(series))
    torch.save(Planted(marker), series / "model_step_5.pt")
    truncated = series / "model_step_10.pt"
    truncated.write_bytes(truncated.read_bytes()[:300])
    result = invoke("probe", series, "--model", workspace / "net.py:build", "--data", workspace / "data.npz")
    assert result.exit_code == 1
    assert not marker.exists()
    pickle.loads(pickle.dumps(Planted(tmp_marker := workspace / "live")))
    assert tmp_marker.exists()  # the payload is live: only weights_only kept it from running
    errors = [l for l in " ".join(result.stderr.split()).split("error:")[1:]]
    assert len(errors) == 2
    assert "model_step_5.pt" in errors[0] and "refused" in errors[0] and "weights_only" in errors[0]
    assert "model_step_10.pt" in errors[1]
    assert sorted(p.name for p in (series / "features").glob("step-*")) == ["step-00000000.safetensors"]


def test_a_state_dict_that_does_not_fit_the_model_names_the_checkpoint(workspace):
    series = workspace / "other"
    series.mkdir()
    save_file({"0.weight": torch.zeros(4, 6), "0.bias": torch.zeros(4), "2.weight": torch.zeros(3, 4),
               "2.bias": torch.zeros(3)}, str(series / "step-00000007.safetensors"))
    result = invoke("probe", series, "--model", workspace / "net.py:build", "--data", workspace / "data.npz")
    assert result.exit_code == 1
    assert "step-00000007.safetensors" in result.stderr and "size mismatch" in " ".join(result.stderr.split())


def test_foreign_series_need_model_and_data(workspace):
    series = workspace / "pt"
    plain_loop(series, workspace / "data.npz", pt_style(series))
    result = invoke("probe", series)
    assert result.exit_code == 2 and "needs --model" in result.stderr
    result = invoke("probe", series, "--model", workspace / "net.py:build")
    assert result.exit_code == 2 and "needs --data" in result.stderr
    result = invoke("probe", series, "--model", workspace / "net.py:nothing", "--data", workspace / "data.npz")
    assert result.exit_code == 2 and "nothing" in result.stderr


def test_sharded_checkpoint_folder_is_merged(tmp_path):
    folder = tmp_path / "checkpoint_3"
    folder.mkdir()
    save_file({"a": torch.ones(2)}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.zeros(3)}, str(folder / "model-00002-of-00002.safetensors"))
    state = load_state(Checkpoint(3, folder))
    assert sorted(state) == ["a", "b"] and state["b"].shape == (3,)


@pytest.mark.parametrize("name, step", [
    ("step-00001200.safetensors", 1200), ("checkpoint-500", 500), ("checkpoint_500", 500),
    ("step500", 500), ("model_step_500.pt", 500), ("ckpt-42.pth", 42), ("epoch_3.bin", 3),
    ("weights_0077.safetensors", 77), ("model-00001-of-00002.safetensors", None),
    ("pytorch_model.bin", None), ("data.npz", None),
])
def test_steps_are_read_from_names(name, step):
    assert parse_checkpoint_step(name) == step


def test_folders_need_a_labelled_step():
    assert parse_checkpoint_step("seed_3", is_file=False) is None
    assert parse_checkpoint_step("checkpoint-3", is_file=False) == 3


def test_step_selection():
    available = [0, 10, 20, 30, 40, 100, 1000]
    assert parse_steps(None).select(available) == available
    assert parse_steps("0-30").select(available) == [0, 10, 20, 30]
    assert parse_steps("40-").select(available) == [40, 100, 1000]
    assert parse_steps("100,10").select(available) == [10, 100]
    assert parse_steps("every:3").select(available) == [0, 30, 1000]
    assert parse_steps("0-40,every:2").select(available) == [0, 20, 40]
    assert parse_steps("10,15").missing(available) == [15]
    for bad in ("30-10", "every:0", "ten", "1.5"):
        with pytest.raises(GrokscopeError, match="--steps"):
            parse_steps(bad)


def test_wrapper_prefixes_are_stripped():
    state = {"module._orig_mod.fc.weight": 1, "_orig_mod.fc.bias": 2, "modules.x": 3, "head.module.w": 4}
    assert strip_wrapper_prefixes(state) == {"fc.weight": 1, "fc.bias": 2, "modules.x": 3, "head.module.w": 4}


def test_discovery_of_runs_series_and_single_checkpoints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "all" / "runs" / "r1"
    (run / "checkpoints").mkdir(parents=True)
    (run / "features").mkdir()
    (run / "run.json").write_text(json.dumps({"schema": "grokscope.run/1", "name": "r1"}))
    for step in (0, 40, 8):
        save_file({"w": torch.zeros(1)}, str(run / "checkpoints" / f"step-{step:08d}.safetensors"))
        save_file({"w": torch.zeros(1)}, str(run / "features" / f"step-{step:08d}.safetensors"))
    foreign = tmp_path / "all" / "mine" / "series"
    for step in (100, 20):
        (foreign / f"checkpoint-{step}").mkdir(parents=True)
        save_file({"w": torch.zeros(1)}, str(foreign / f"checkpoint-{step}" / "model.safetensors"))
    (foreign / "features").mkdir()
    save_file({"w": torch.zeros(1)}, str(foreign / "features" / "step-00000020.safetensors"))

    found = {s.root.name: s for s in find_series(["all"])}
    assert set(found) == {"r1", "series"}
    assert found["r1"].is_run and [c.step for c in found["r1"].checkpoints] == [0, 8, 40]
    assert not found["series"].is_run and [c.step for c in found["series"].checkpoints] == [20, 100]

    single = find_series([str(foreign / "checkpoint-100" / "model.safetensors"), str(foreign / "checkpoint-20")])
    assert len(single) == 1 and single[0].root.name == "series"
    assert [c.step for c in single[0].chosen()] == [20, 100] and single[0].selected == {20, 100}
    one = find_series([str(run / "checkpoints" / "step-00000040.safetensors")])
    assert one[0].is_run and [c.step for c in one[0].chosen()] == [40]
    # A series' features folder, or one of its files, names the series (what probe prints).
    assert find_series([str(run / "features")])[0].root.name == "r1"
    assert find_series([str(foreign / "features")])[0].root.name == "series"
    named = find_series([str(run / "features" / "step-00000008.safetensors")])[0]
    assert named.is_run and named.selected == {8}
    # A Trainer's rng_state_0.pth beside the weights is no checkpoint of step 0.
    torch.save({"seed": torch.tensor(1)}, foreign / "checkpoint-20" / "rng_state_0.pth")
    inside = find_series([str(foreign / "checkpoint-20")])
    assert inside[0].root.name == "series" and [c.step for c in inside[0].chosen()] == [20]
    (tmp_path / "empty").mkdir()
    with pytest.raises(GrokscopeError, match="no grokscope run"):
        find_series(["empty"])


def test_no_torch_load_without_weights_only():
    sources = [p for folder in ("grokscope", "examples", "benchmarks") for p in (ROOT / folder).rglob("*.py")]
    calls = 0
    for path in sources:
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            depth, end = 1, match.end()
            while depth and end < len(text):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            call = text[match.start():end]
            calls += 1
            assert re.search(r"weights_only\s*=\s*True", call), f"{path}: {call}"
    assert calls >= 1  # the loader itself is found, so the scan is looking in the right place


def test_the_documented_example_series_probes(tmp_path):
    namespace: dict = {"__name__": "example"}  # not __main__: defining, not running
    exec(compile((ROOT / "examples" / "plain_pytorch_series.py").read_text(), "example", "exec"), namespace)
    namespace["train"](tmp_path / "series")
    result = invoke("probe", tmp_path / "series", "--model", ROOT / "examples" / "plain_pytorch_series.py:build_model",
                    "--data", tmp_path / "series" / "data.npz", "--steps", "300", "-q")
    assert result.exit_code == 0, result.output
    features, metadata = read(Path(result.stdout.strip()))
    assert metadata["grokscope.penultimate"] == "4:input" and features["4:input"].shape == (600, 32)
