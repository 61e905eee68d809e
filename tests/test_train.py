"""grokscope train: formats, sweeps, resume, atomic writes, the norm constraint, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from grokscope import formats
from grokscope.cli import app
from grokscope.config import RunConfig, ScheduleConfig
from grokscope.sweep import expand_grid, parse_values, run_names
from grokscope.training import Trainer

TINY = ["--p", "7", "--width", "16", "--save-log", "0", "--eval-every", "5"]


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result


def load_state(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}


def test_format_round_trip(tmp_path):
    result = invoke("train", *TINY, "--steps", "20", "--save-every", "10", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "add-p7"
    assert result.stdout.strip() == str(run_dir)

    document = json.loads((run_dir / "run.json").read_text())
    assert document["schema"] == "grokscope.run/1"
    for key in ("name", "seed", "task", "model", "optim", "schedule", "grokscope_version", "torch_version", "created"):
        assert key in document
    config = RunConfig.from_dict({k: document[k] for k in ("name", "seed", "task", "model", "optim", "schedule")})
    assert config.task.p == 7 and config.model.width == 16 and config.task.split_seed == 0
    assert config.to_dict() == {k: document[k] for k in config.to_dict()}

    files = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert files == ["step-00000000.safetensors", "step-00000010.safetensors", "step-00000020.safetensors"]
    with safe_open(str(run_dir / "checkpoints" / files[1]), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt", "grokscope.schema": "1", "grokscope.step": "10"}
        assert set(handle.keys()) == {"layers.0.weight", "layers.0.bias", "layers.1.weight"}
        assert handle.get_tensor("layers.0.weight").shape == (16, 14)

    history = pd.read_parquet(run_dir / "history.parquet")
    assert list(history.columns[:5]) == ["step", "train_loss", "train_acc", "test_loss", "test_acc"]
    assert history["step"].tolist() == [0, 5, 10, 15, 20]
    assert history["train_acc"].between(0, 1).all()


def test_split_is_reproducible_and_sized():
    config = RunConfig().resolved()
    config.task.p = 11
    from grokscope.tasks import load_task

    first, second = load_task(config.task), load_task(config.task)
    assert np.array_equal(first.split, second.split)
    assert (first.split == 0).sum() == round(0.4 * 121)
    # The inputs are the one-hots of a and b, and the label is (a + b) mod p.
    a, b = first.x[:, :11].argmax(1), first.x[:, 11:].argmax(1)
    assert np.array_equal(first.y, (a + b) % 11)


def test_modular_ops_match_their_definition():
    from grokscope.config import TaskConfig
    from grokscope.tasks import load_task

    p = 7
    for op, formula in {
        "sub": lambda a, b: (a - b) % p,
        "mul": lambda a, b: (a * b) % p,
        "sq_sum": lambda a, b: (a * a + b * b) % p,
        "div": lambda a, b: next(c for c in range(p) if (c * b) % p == a),
    }.items():
        data = load_task(TaskConfig(name=op, p=p, split_seed=0))
        a, b = data.x[:, :p].argmax(1), data.x[:, p:].argmax(1)
        assert all(y == formula(int(i), int(j)) for y, i, j in zip(data.y, a, b)), op
        assert len(data.y) == (p * (p - 1) if op == "div" else p * p)


def test_grid_expansion_and_names(tmp_path):
    assert parse_values("--seed", "0-2,5", int) == [0, 1, 2, 5]
    assert parse_values("--weight-decay", "0.1,2,1e-3", float) == [0.1, 2.0, 0.001]
    grid = expand_grid({"weight_decay": [0.1, 2.0], "seed": [0, 1, 2], "p": [97]})
    assert len(grid) == 6 and grid[0] == {"weight_decay": 0.1, "seed": 0, "p": 97}
    assert run_names("add-p97", grid)[:2] == ["add-p97-wd0.1-seed0", "add-p97-wd0.1-seed1"]

    result = invoke("train", *TINY, "--steps", "5", "--seed", "0-1", "--weight-decay", "0.1,2", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    printed = result.stdout.split()
    assert printed == [str(tmp_path / n) for n in
                       ["add-p7-wd0.1-seed0", "add-p7-wd0.1-seed1", "add-p7-wd2-seed0", "add-p7-wd2-seed1"]]
    stored = json.loads((tmp_path / "add-p7-wd2-seed1" / "run.json").read_text())
    assert stored["optim"]["weight_decay"] == 2.0 and stored["seed"] == 1


def test_same_seed_gives_identical_checkpoints(tmp_path):
    for out in ("a", "b"):
        assert invoke("train", *TINY, "--steps", "10", "--out", str(tmp_path / out)).exit_code == 0
    for step in (0, 10):
        a = load_state(formats.run.checkpoint_path(tmp_path / "a" / "add-p7", step))
        b = load_state(formats.run.checkpoint_path(tmp_path / "b" / "add-p7", step))
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_rerun_of_a_finished_runs_settings_under_another_name_gives_that_run(tmp_path):
    swept = invoke("train", *TINY, "--steps", "5", "--weight-decay", "0.1,2", "--out", str(tmp_path))
    assert swept.exit_code == 0, swept.output
    again = invoke("train", *TINY, "--steps", "5", "--weight-decay", "0.1", "--out", str(tmp_path))
    assert again.exit_code == 0, again.output
    assert again.stdout.split() == [str(tmp_path / "add-p7-wd0.1")]
    assert "add-p7-wd0.1, which is finished" in again.stderr and "add-p7:" in again.stderr
    assert not (tmp_path / "add-p7").exists()
    # Another seed is another run, trained as asked.
    other = invoke("train", *TINY, "--steps", "5", "--weight-decay", "0.1", "--seed", "1", "--out", str(tmp_path))
    assert other.exit_code == 0 and other.stdout.split() == [str(tmp_path / "add-p7")]
    assert "same settings" not in other.stderr


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("extra", [[], ["--batch-size", "13", "--optimizer", "sgd"],
                                   ["--weight-noise", "0.01", "--spectral-entropy", "0.1"]])
def test_resume_equals_uninterrupted(tmp_path, extra):
    args = [*TINY, "--steps", "40", "--save-every", "8", *extra]
    assert invoke("train", *args, "--out", str(tmp_path / "whole")).exit_code == 0

    # Interrupt a second run mid-way (after the step-16 checkpoint, before step 24's).
    assert invoke("train", *args, "--steps", "40", "--out", str(tmp_path / "cut")).exit_code == 0
    cut = tmp_path / "cut" / "add-p7"
    document = formats.run.read_run_config(cut)
    config = RunConfig.from_dict({k: document[k] for k in ("name", "seed", "task", "model", "optim", "schedule")})
    for path in (cut / "checkpoints").iterdir():
        path.unlink()
    (cut / formats.run.RESUME_FILE).unlink()
    trainer = Trainer(config, cut, torch.device("cpu"))

    def stop_at_20(evaluation):
        if evaluation.step == 20:
            raise Interrupt

    with pytest.raises(Interrupt):
        trainer.run(stop_at_20)
    assert formats.run.list_checkpoints(cut)[-1][0] == 16

    result = invoke("train", *args, "--out", str(tmp_path / "cut"), "--resume")
    assert result.exit_code == 0, result.output
    whole = load_state(formats.run.checkpoint_path(tmp_path / "whole" / "add-p7", 40))
    resumed = load_state(formats.run.checkpoint_path(cut, 40))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    history_whole = formats.run.read_history(tmp_path / "whole" / "add-p7")
    history_resumed = formats.run.read_history(cut)
    pd.testing.assert_frame_equal(history_whole, history_resumed)

    # A finished run is left alone by --resume.
    result = invoke("train", *args, "--out", str(tmp_path / "cut"), "--resume")
    assert result.exit_code == 0 and result.stdout.strip() == str(cut)


def test_killed_mid_write_leaves_only_complete_files(tmp_path):
    command = [sys.executable, "-m", "grokscope", "train", "--p", "11", "--width", "64", "--steps", "100000",
               "--save-every", "1", "--save-log", "0", "--eval-every", "1", "-q", "--out", str(tmp_path)]
    run_dir = tmp_path / "add-p11"
    for attempt in range(3):
        process = subprocess.Popen(command + (["--resume"] if attempt else []), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while len(formats.run.list_checkpoints(run_dir)) < 20 * (attempt + 1) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.013 * (attempt + 1))  # land somewhere inside a write
        process.send_signal(signal.SIGKILL)
        process.wait()

        formats.run.read_run_config(run_dir)
        checkpoints = formats.run.list_checkpoints(run_dir)
        assert len(checkpoints) >= 20
        for _, path in checkpoints:
            assert set(load_state(path)) == {"layers.0.weight", "layers.0.bias", "layers.1.weight"}
        assert len(formats.run.read_history(run_dir)) >= 1
        formats.tensors.load_tensors(run_dir / formats.run.RESUME_FILE)


def test_alpha_norm_constraint_holds(tmp_path):
    result = invoke("train", *TINY, "--steps", "30", "--save-every", "5", "--alpha", "8", "--fix-norm",
                    "--zero-last", "--weight-decay", "0", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "add-p7"
    states = [load_state(path) for _, path in formats.run.list_checkpoints(run_dir)]
    assert torch.count_nonzero(states[0]["layers.1.weight"]) == 0
    norms = [torch.sqrt(sum((v.double() ** 2).sum() for v in s.values())).item() for s in states]
    assert norms[0] > 0
    assert np.allclose(norms, norms[0], rtol=1e-6, atol=0)
    # The constraint must not freeze training: the weights still move.
    assert not torch.equal(states[0]["layers.0.weight"], states[-1]["layers.0.weight"])


def test_alpha_scales_initial_weights(tmp_path):
    for alpha in ("1", "3"):
        assert invoke("train", *TINY, "--steps", "1", "--alpha", alpha, "--out", str(tmp_path / alpha)).exit_code == 0
    one = load_state(formats.run.checkpoint_path(tmp_path / "1" / "add-p7", 0))
    three = load_state(formats.run.checkpoint_path(tmp_path / "3" / "add-p7", 0))
    assert all(torch.allclose(three[k], 3 * one[k]) for k in one)


def test_default_schedule_has_about_200_checkpoints():
    steps = ScheduleConfig().checkpoint_steps()
    assert 180 <= len(steps) <= 220 and steps[0] == 0 and steps[-1] == 4000


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--p", "1"], "--p"),
        (["--train-fraction", "0"], "--train-fraction"),
        (["--train-fraction", "1.5"], "--train-fraction"),
        (["--task", "pow"], "--task"),
        (["--seed", "x"], "--seed"),
        (["--task", "npz", "--data", "missing.npz"], "--data"),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, args, needle):
    result = invoke("train", *TINY, *args, "--steps", "2", "--out", str(tmp_path))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_existing_run_dir_is_never_overwritten(tmp_path):
    assert invoke("train", *TINY, "--steps", "3", "--out", str(tmp_path)).exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "add-p7").rglob("*")}
    result = invoke("train", *TINY, "--steps", "3", "--out", str(tmp_path))
    assert result.exit_code == 2 and "already exists" in result.stderr
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "add-p7").rglob("*")} == before


def test_unwritable_out_dir(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = invoke("train", *TINY, "--steps", "2", "--out", str(blocker / "runs"))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "--out" in result.stderr


def test_npz_and_digits_tasks(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    split = np.r_[np.zeros(40), np.ones(20)].astype(np.uint8)
    np.savez(tmp_path / "data.npz", X=x, y=y, split=split)
    result = invoke("train", "--task", "npz", "--data", str(tmp_path / "data.npz"), "--width", "8", "--steps", "3",
                    "--save-log", "0", "--out", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    run_dir = Path(result.stdout.strip())
    assert load_state(formats.run.checkpoint_path(run_dir, 0))["layers.0.weight"].shape == (8, 5)

    result = invoke("train", "--task", "digits", "--train-size", "300", "--width", "8", "--steps", "3",
                    "--save-log", "0", "--out", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "runs" / "digits" / "run.json").read_text())
    assert document["n_classes"] == 10 and document["task"]["train_size"] == 300


@pytest.mark.parametrize("command", [[], ["train"], ["probe"], ["measure"], ["plot"], ["report"], ["demo"]])
def test_help_is_fast_and_shows_examples(command):
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    completed = subprocess.run([sys.executable, "-m", "grokscope", *command, "--help"], capture_output=True,
                               text=True, env=env)
    assert completed.returncode == 0
    assert ("Examples" in completed.stdout) if command else ("grokscope train" in completed.stdout)
    imported = {line.split("|")[-1].strip() for line in completed.stderr.splitlines()}
    assert not imported & {"torch", "pandas", "plotnine", "numpy", "sklearn"}


@pytest.mark.parametrize(("reduction", "scale"), [("mean", 1 / 5), ("sum", 1.0)])
def test_mse_loss_on_one_hot_targets(reduction, scale):
    from grokscope.training import loss_fn

    config = RunConfig().resolved()
    config.optim.loss, config.optim.reduction = "mse", reduction
    logits = torch.tensor([[0.5, -1.0, 2.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    y = torch.tensor([2, 0])
    # Brute force: squared error against the one-hot row, summed over classes, averaged over
    # samples; "mean" also averages over the 5 classes.
    expected = 0.0
    for row, label in zip(logits.tolist(), y.tolist()):
        expected += sum((v - (1.0 if k == label else 0.0)) ** 2 for k, v in enumerate(row)) / 2
    assert loss_fn(logits, y, config).item() == pytest.approx(expected * scale)


def test_sgd_and_mse_train_end_to_end(tmp_path):
    result = invoke("train", *TINY, "--steps", "5", "--optimizer", "sgd", "--lr", "0.5", "--loss", "mse",
                    "--reduction", "sum", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    history = formats.run.read_history(tmp_path / "add-p7")
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]


def test_no_color_is_respected():
    command = [sys.executable, "-m", "grokscope", "train", "--p", "1"]
    forced = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "FORCE_COLOR": "1"})
    plain = subprocess.run(command, capture_output=True, text=True,
                           env={**os.environ, "FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert "\x1b[" in forced.stderr  # colour is on when forced, so the next check means something
    assert "\x1b[" not in plain.stderr and plain.stderr.startswith("error: --p")
    assert forced.returncode == plain.returncode == 2
