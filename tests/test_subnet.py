"""grokscope subnet: choosing a synergistic multiplet, masking it exactly, the run it writes, its figure."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from grokscope import formats
from grokscope.cli import app
from grokscope.config import OptimConfig, RunConfig, SubnetConfig, hyperparameters
from grokscope.errors import GrokscopeError
from grokscope.masking import NeuronMask
from grokscope.subnet import Spec, choose_step, parse_spec
from grokscope.training import Trainer

WIDTH = 24
TINY = ["--p", "11", "--width", str(WIDTH), "--steps", "120", "--save-every", "20", "--save-log", "8",
        "--eval-every", "5", "--weight-decay", "1"]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    """A tiny trained run with an o-info table (4 Ward bins)."""
    root = tmp_path_factory.mktemp("subnet")
    result = invoke("train", *TINY, "--out", str(root), "-q")
    assert result.exit_code == 0, result.output
    run = root / "add-p11"
    result = invoke("measure", str(run), "--metric", "o-info", "--bins", "4", "--tie-draws", "2", "-q")
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def children(parent) -> tuple[Path, Path]:
    result = invoke("subnet", str(parent), "--at", "min", "--inverse", "-q")
    assert result.exit_code == 0, result.output
    printed = result.stdout.split()
    assert printed == [str(parent.parent / "add-p11-subnet-min"), str(parent.parent / "add-p11-subnet-min-inverse")]
    return Path(printed[0]), Path(printed[1])


def checkpoints(run: Path) -> list[dict]:
    return [formats.run.load_checkpoint(path) for _, path in formats.run.list_checkpoints(run)]


def test_masked_neurons_stay_zero_in_every_checkpoint_and_the_rest_train(parent, children):
    parent_start = checkpoints(parent)[0]
    records = [formats.run.read_run(child).subnet for child in children]
    for child, record in zip(children, records):
        kept = record.neurons
        masked = [n for n in range(WIDTH) if n not in set(kept)]
        states = checkpoints(child)
        assert len(states) == len(formats.run.list_checkpoints(parent))
        for state in states:
            assert torch.count_nonzero(state["layers.0.weight"][masked]) == 0
            assert torch.count_nonzero(state["layers.0.bias"][masked]) == 0
        # the kept neurons start from the parent's initialisation, and train
        assert torch.equal(states[0]["layers.0.weight"][kept], parent_start["layers.0.weight"][kept])
        assert torch.equal(states[0]["layers.1.weight"], parent_start["layers.1.weight"])
        moved = (states[-1]["layers.0.weight"][kept] - states[0]["layers.0.weight"][kept]).abs().amax(dim=1)
        assert bool((moved > 0).all())
        # same data split as the parent
        assert formats.run.read_run_config(child)["split_sha256"] == formats.run.read_run_config(parent)["split_sha256"]
    sub, inverse = records
    assert not sub.inverse and inverse.inverse
    assert sorted(sub.neurons + inverse.neurons) == list(range(WIDTH))


def test_run_json_records_the_choice(parent, children):
    table = formats.tables.read_table(formats.tables.measures_path(parent, "oinfo"))
    synergy = table[(table["metric"] == "synergy") & (table["scope"] == "overall")]
    after = synergy[synergy["step"] >= 1]
    lowest = after.loc[after["value"].idxmin()]
    record = formats.run.read_run_config(children[0])["subnet"]
    assert record["parent"] == str(parent.resolve())
    assert record["parent_run"] == "add-p11" and record["rule"] == "min" and record["layer"] == "layers.0"
    assert record["step"] == int(lowest["step"]) and record["bins"] == lowest["bins"]
    assert record["synergy"] == pytest.approx(lowest["value"])
    assert len(record["neurons"]) == int(lowest["n_neurons"])
    # the sub-network's hyperparameter columns say what it is
    columns = hyperparameters(formats.run.read_run(children[1]))
    assert columns["parent_run"] == "add-p11" and columns["subnet_rule"] == "min"
    assert columns["subnet_inverse"] is True and columns["subnet_neurons"] == WIDTH - len(record["neurons"])


def test_chosen_neurons_are_the_multiplets_ward_bins(parent, children):
    """Recompute the step's features and Ward bins independently (numpy + scikit-learn)."""
    from sklearn.cluster import AgglomerativeClustering

    from grokscope.tasks import load_task

    record = formats.run.read_run(children[0]).subnet
    config = formats.run.read_run(parent)
    data = load_task(config.task)
    state = formats.run.load_checkpoint(formats.run.checkpoint_path(parent, record.step))
    x = data.x[data.split == 0].astype(np.float64)
    hidden = np.maximum(x @ state["layers.0.weight"].double().numpy().T + state["layers.0.bias"].double().numpy(), 0)
    alive = np.flatnonzero(hidden.max(axis=0) != hidden.min(axis=0))
    labels = AgglomerativeClustering(n_clusters=min(4, len(alive)), linkage="ward").fit(hidden[:, alive].T).labels_
    _, first = np.unique(labels, return_index=True)
    renumber = {int(labels[i]): rank for rank, i in enumerate(sorted(first))}
    bins = np.array([renumber[int(label)] for label in labels])
    chosen = [int(b) for b in record.bins.split(",")]
    assert record.neurons == alive[np.isin(bins, chosen)].tolist()


def test_old_run_json_reads_and_ordinary_runs_write_no_subnet(parent):
    document = formats.run.read_run_config(parent)
    assert "subnet" not in document
    config = formats.run.read_run(parent)
    assert config.subnet is None and "subnet" not in config.to_dict()
    assert all(hyperparameters(config)[c] is None for c in
               ("parent_run", "subnet_rule", "subnet_step", "subnet_inverse", "subnet_neurons"))
    record = SubnetConfig(parent="/x", parent_run="x", rule="step:3", step=3, bins="0,2", synergy=-0.5,
                          layer="layers.0", inverse=False, neurons=[1, 4])
    with_subnet = dataclasses.replace(config, subnet=record)
    assert RunConfig.from_dict(with_subnet.to_dict()) == with_subnet


@pytest.mark.parametrize("extra", [
    {},
    {"weight_noise": 0.05, "spectral_entropy": 0.1},
    {"name": "sgd", "momentum": 0.9, "fix_norm": True},
])
def test_masking_is_exact_under_every_optimizer_and_regulariser(tmp_path, extra):
    config = RunConfig().resolved()
    config.task.p, config.model.width = 7, 12
    config.schedule.steps, config.schedule.save_every, config.schedule.save_log = 12, 4, 0
    config.optim = dataclasses.replace(OptimConfig(weight_decay=1.0), **extra)
    kept = [0, 3, 4, 9]
    config.subnet = SubnetConfig(parent="/x", parent_run="x", rule="step:0", step=0, bins="0", synergy=0.0,
                                 layer="layers.0", inverse=False, neurons=kept)
    masked = [n for n in range(12) if n not in kept]
    trainer = Trainer(config, tmp_path, torch.device("cpu"))
    (tmp_path / "checkpoints").mkdir()
    trainer.run()
    for state in checkpoints(tmp_path):
        assert torch.count_nonzero(state["layers.0.weight"][masked]) == 0
        assert torch.count_nonzero(state["layers.0.bias"][masked]) == 0
    # no optimizer state builds up on masked entries either
    for param, state in zip(trainer.params[:2], (trainer.optimizer.state[p] for p in trainer.params[:2])):
        for value in state.values():
            if torch.is_tensor(value) and value.shape == param.shape:
                assert torch.count_nonzero(value[masked]) == 0
    if extra.get("fix_norm"):
        norms = [float(torch.sqrt(sum((v.double() ** 2).sum() for v in s.values()))) for s in checkpoints(tmp_path)]
        assert np.allclose(norms, norms[0], rtol=1e-6)  # the masked model's own initial norm


class Interrupt(Exception):
    pass


def test_resume_of_a_sub_network_is_bit_identical(parent, tmp_path):
    args = ["subnet", str(parent), "--at", "min", "-q"]
    assert invoke(*args, "--out", str(tmp_path / "whole")).exit_code == 0
    assert invoke(*args, "--out", str(tmp_path / "cut")).exit_code == 0
    cut = tmp_path / "cut" / "add-p11-subnet-min"
    for path in (cut / "checkpoints").iterdir():
        path.unlink()
    (cut / formats.run.RESUME_FILE).unlink()

    def stop(evaluation):
        if evaluation.step == 50:
            raise Interrupt

    with pytest.raises(Interrupt):
        Trainer(formats.run.read_run(cut), cut, torch.device("cpu")).run(stop)
    assert formats.run.list_checkpoints(cut)[-1][0] == 40
    result = invoke(*args, "--out", str(tmp_path / "cut"), "--resume")
    assert result.exit_code == 0, result.output
    whole = tmp_path / "whole" / "add-p11-subnet-min"
    for (_, a), (_, b) in zip(formats.run.list_checkpoints(whole), formats.run.list_checkpoints(cut), strict=True):
        first, second = formats.run.load_checkpoint(a), formats.run.load_checkpoint(b)
        assert all(torch.equal(first[k], second[k]) for k in first)
    pd.testing.assert_frame_equal(formats.run.read_history(whole), formats.run.read_history(cut))
    # finished: skipped
    again = invoke("subnet", str(parent), "--at", "min", "--out", str(tmp_path / "cut"), "--resume")
    assert again.exit_code == 0 and "already complete" in again.stderr


def test_a_folder_of_runs_named_with_step_words_is_read_as_runs(parent, children, tmp_path):
    assert invoke("subnet", str(parent), "--at", "step:20", "--inverse", "-q", "--out", str(tmp_path)).exit_code == 0
    result = invoke("report", str(tmp_path), "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(pd.io.common.StringIO(result.stdout))
    assert sorted(rows["run"]) == ["add-p11-subnet-step20", "add-p11-subnet-step20-inverse"]
    assert set(rows["subnet_step"]) == {20}


def test_plot_subnet_finds_the_relatives_of_either(parent, children, tmp_path):
    for named in (parent, children[1]):
        out = tmp_path / f"{named.name}.png"
        result = invoke("plot", "subnet", str(named), "-o", str(out))
        assert result.exit_code == 0, result.output
        assert out.stat().st_size > 10_000


# --- rules ---------------------------------------------------------------------------------


def test_rules_pick_their_steps():
    steps = np.array([0, 2, 5, 10, 20, 40, 80, 160, 320])
    omega = np.array([-3.0, -1.0, -0.2, -0.5, -0.4, -0.9, -0.3, -0.6, -1.2])
    synergy = pd.DataFrame({"step": steps, "value": omega})
    evaluated = np.arange(0, 321, 5)
    # train loss down 10% at step 5; memorised at 20, generalised at 160
    history = pd.DataFrame({"step": evaluated, "train_loss": np.where(evaluated >= 5, 1.0, 2.0),
                            "train_acc": np.where(evaluated >= 20, 1.0, 0.5),
                            "test_acc": np.where(evaluated >= 160, 0.995, np.where(evaluated >= 100, 0.7, 0.1))})
    assert choose_step(Spec("emergence"), synergy, history) == 40  # lowest in [20, 160)
    assert choose_step(Spec("min"), synergy, history) == 320  # lowest from step 5 on (not step 0's -3)
    assert choose_step(Spec("step", 80), synergy, history) == 80
    assert choose_step(Spec("acc", 0.5), synergy, history) == 160  # reached at 100; next measured 160
    assert choose_step(Spec("acc", 0.99), synergy, history) == 160
    never = history.assign(train_acc=0.5)
    with pytest.raises(GrokscopeError, match="never reaches"):
        choose_step(Spec("emergence"), synergy, never)
    with pytest.raises(GrokscopeError, match="nearest measured: 5, 10, 20"):
        choose_step(Spec("step", 15), synergy, history)


@pytest.mark.parametrize("text, expected", [
    ("emergence", Spec("emergence")), ("MIN", Spec("min")), ("229", Spec("step", 229)),
    ("step:40", Spec("step", 40)), ("acc", Spec("acc", 0.99)), ("acc:0.98", Spec("acc", 0.98)),
])
def test_rules_parse(text, expected):
    assert parse_spec(text) == expected


@pytest.mark.parametrize("text", ["peak", "step:", "step:-3", "acc:1.5", "acc:x"])
def test_bad_rules_are_one_line_errors(text):
    with pytest.raises(GrokscopeError, match="--at"):
        parse_spec(text)


@pytest.mark.parametrize("args, needle", [
    (["--at", "nonsense"], "unknown rule"),
    (["--at", "step:7"], "was not measured"),
    (["--at", "min", "--layer", "layers.5"], "no o-info rows"),
])
def test_cli_mistakes(parent, args, needle):
    result = invoke("subnet", str(parent), *args)
    assert result.exit_code == 2 and needle in result.stderr and "Traceback" not in result.output


def test_a_run_without_oinfo_or_not_a_run(tmp_path):
    assert invoke("train", "--p", "5", "--width", "8", "--steps", "4", "--save-log", "0", "--out", str(tmp_path),
                  "-q").exit_code == 0
    result = invoke("subnet", str(tmp_path / "add-p5"), "--at", "min")
    assert result.exit_code == 2 and "no o-info table" in result.stderr
    result = invoke("subnet", str(tmp_path), "--at", "min")
    assert result.exit_code == 2 and "not a grokscope run" in result.stderr


# --- the masking mechanism -----------------------------------------------------------------


class ColumnMajor(nn.Module):
    """A layer that stores its neurons along axis 1 (as a transformer's W_in (d_model, d_mlp))."""

    def __init__(self):
        super().__init__()
        self.w_in = nn.Parameter(torch.randn(3, 5))
        self.b_in = nn.Parameter(torch.randn(5))
        self.w_out = nn.Parameter(torch.randn(5, 2))

    def forward(self, x):
        return torch.relu(x @ self.w_in + self.b_in) @ self.w_out

    def neuron_parameters(self):
        return {"mlp": [("w_in", 1), ("b_in", 0)]}


def test_a_mask_follows_the_axis_the_model_names():
    model = ColumnMajor()
    mask = NeuronMask(model, {"mlp": [1, 3]})
    mask.apply_(model)
    assert torch.count_nonzero(model.w_in[:, [0, 2, 4]]) == 0 and torch.count_nonzero(model.b_in[[0, 2, 4]]) == 0
    assert torch.count_nonzero(model.w_in[:, [1, 3]]) == 6
    hidden = torch.relu(torch.randn(7, 3) @ model.w_in + model.b_in)
    assert torch.count_nonzero(hidden[:, [0, 2, 4]]) == 0
    masked = mask.masked({"w_in": torch.ones(3, 5), "w_out": torch.ones(5, 2)})
    assert masked["w_in"].sum() == 6 and masked["w_out"].sum() == 10
    with pytest.raises(GrokscopeError, match="out of range"):
        NeuronMask(model, {"mlp": [5]})
    with pytest.raises(GrokscopeError, match="maskable: mlp"):
        NeuronMask(model, {"attn": [0]})
    with pytest.raises(GrokscopeError, match="names no maskable neurons"):
        NeuronMask(nn.Linear(2, 2), {"mlp": [0]})


@pytest.mark.parametrize("command", ["subnet", "predict"])
def test_help_is_fast_and_shows_examples(command):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    completed = subprocess.run([sys.executable, "-m", "grokscope", command, "--help"], capture_output=True,
                               text=True, env=env)
    assert completed.returncode == 0 and "Examples" in completed.stdout
    imported = {line.split("|")[-1].strip() for line in completed.stderr.splitlines()}
    assert not imported & {"torch", "pandas", "plotnine", "numpy", "sklearn"}


def test_a_transformer_sub_network_masks_its_mlp_neurons(tmp_path):
    """On a transformer, the multiplet's neurons are those of a block's MLP (o-info measured on
    blocks.0.mlp.post): the rest stay exactly zero, the kept ones train."""
    d_mlp = 12
    result = invoke("train", "--model", "transformer", "--p", "5", "--d-model", "16", "--heads", "2",
                    "--d-mlp", str(d_mlp), "--steps", "30", "--save-every", "10", "--save-log", "0",
                    "--eval-every", "5", "--lr", "0.01", "--out", str(tmp_path), "-q")
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.split()[0])
    result = invoke("measure", str(run), "--metric", "o-info", "--layer", "blocks.0.mlp.post", "--bins", "3",
                    "--tie-draws", "2", "-q")
    assert result.exit_code == 0, result.output
    result = invoke("subnet", str(run), "--at", "min", "-q")
    assert result.exit_code == 0, result.output
    child = Path(result.stdout.split()[0])
    record = formats.run.read_run(child).subnet
    assert record.layer == "blocks.0.mlp.post" and formats.run.read_run(child).model.kind == "transformer"
    masked = [n for n in range(d_mlp) if n not in set(record.neurons)]
    assert masked and record.neurons
    states = checkpoints(child)
    for state in states:
        assert torch.count_nonzero(state["blocks.0.mlp.hidden.weight"][masked]) == 0
        assert torch.count_nonzero(state["blocks.0.mlp.hidden.bias"][masked]) == 0
    moved = (states[-1]["blocks.0.mlp.hidden.weight"][record.neurons]
             - states[0]["blocks.0.mlp.hidden.weight"][record.neurons]).abs().amax(dim=1)
    assert bool((moved > 0).all())
