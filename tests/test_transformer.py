"""train --model transformer: the model against an independent forward pass, its config and
defaults, resume, and probe / measure / plot on a tiny transformer run."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from grokscope import formats
from grokscope.cli import app
from grokscope.config import ModelConfig, RunConfig
from grokscope.model import build_model, feature_keys, output_weight_key, penultimate_key
from grokscope.training import Trainer

P = 7
TINY = ["--model", "transformer", "--p", str(P), "--d-model", "16", "--heads", "4", "--d-mlp", "32",
        "--save-log", "0", "--eval-every", "5"]
RUN = f"add-p{P}-transformer"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def load_state(path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}


def one_hot_pairs(a: torch.Tensor, b: torch.Tensor, p: int) -> torch.Tensor:
    x = torch.zeros(len(a), 2 * p, dtype=torch.float64)
    x[torch.arange(len(a)), a] = 1
    x[torch.arange(len(a)), p + b] = 1
    return x


def reference_forward(state: dict, config: ModelConfig, a: torch.Tensor, b: torch.Tensor, p: int):
    """The transformer written out from its state dict with full causal attention at every
    position: (residual after each block (B, T, C), MLP neurons (B, T, d_mlp), logits (B, K))."""
    heads, width = config.n_heads, config.d_model
    act = torch.relu if config.activation == "relu" else torch.nn.functional.gelu

    def norm(x, name):
        if not config.layer_norm:
            return x
        return torch.nn.functional.layer_norm(x, (width,), state[f"{name}.weight"], state[f"{name}.bias"])

    tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)
    x = state["embed.weight"][tokens] + state["pos_embed.weight"]  # (B, 3, C)
    resids, neurons = [], []
    for i in range(config.depth):
        pre = f"blocks.{i}"
        h = norm(x, f"{pre}.ln1")
        q, k, v = (h @ state[f"{pre}.attn.{n}.weight"].T for n in ("query", "key", "value"))
        out = torch.zeros_like(x)
        d = width // heads
        for head in range(heads):
            cols = slice(head * d, (head + 1) * d)
            scores = q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(d)  # (B, 3, 3)
            scores = scores.masked_fill(torch.ones(3, 3, dtype=torch.bool).triu(1), -math.inf)
            out[..., cols] = scores.softmax(-1) @ v[..., cols]
        x = x + out @ state[f"{pre}.attn.output.weight"].T
        hidden = act(norm(x, f"{pre}.ln2") @ state[f"{pre}.mlp.hidden.weight"].T + state[f"{pre}.mlp.hidden.bias"])
        x = x + hidden @ state[f"{pre}.mlp.output.weight"].T + state[f"{pre}.mlp.output.bias"]
        resids.append(x)
        neurons.append(hidden)
    logits = norm(x[:, -1], "ln_final") @ state["unembed.weight"].T
    return resids, neurons, logits


@pytest.mark.parametrize("options", [
    dict(),
    dict(depth=2, layer_norm=True, activation="gelu"),
    dict(depth=2, n_heads=2),
])
def test_forward_and_features_match_an_independent_forward(options):
    p = 11
    config = ModelConfig(kind="transformer", d_model=16, d_mlp=24, **options)
    config.validate()
    model = build_model(2 * p, p, config, seed=3).double()
    state = {k: v.double() for k, v in model.state_dict().items()}
    a, b = torch.randint(0, p, (40,)), torch.randint(0, p, (40,))
    x = one_hot_pairs(a, b, p)
    resids, neurons, logits = reference_forward(state, config, a, b, p)

    torch.testing.assert_close(model(x), logits, rtol=0, atol=1e-12)
    tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)
    torch.testing.assert_close(model(tokens), logits, rtol=0, atol=1e-12)
    answer, answer_logits = model.hidden_features(x)
    every, _ = model.hidden_features(x, positions="all")
    assert list(answer) == feature_keys(config)
    torch.testing.assert_close(answer_logits, logits, rtol=0, atol=1e-12)
    for i in range(config.depth):
        torch.testing.assert_close(answer[f"blocks.{i}.resid_post"], resids[i][:, -1], rtol=0, atol=1e-12)
        torch.testing.assert_close(answer[f"blocks.{i}.mlp.post"], neurons[i][:, -1], rtol=0, atol=1e-12)
        torch.testing.assert_close(every[f"blocks.{i}.resid_post"], resids[i], rtol=0, atol=1e-12)
        torch.testing.assert_close(every[f"blocks.{i}.mlp.post"], neurons[i], rtol=0, atol=1e-12)
    # The penultimate layer is what the unembedding reads.
    readout = answer[penultimate_key(config)] @ state[output_weight_key(config)].T
    torch.testing.assert_close(readout, logits, rtol=0, atol=1e-12)


def test_initialisation_follows_nanda_et_al():
    p, config = 113, ModelConfig(kind="transformer")
    state = build_model(2 * p, p, config, seed=0).state_dict()
    # Every matrix N(0, 1/d_model); the unembedding N(0, 1/(p + 1)); biases zero.
    for name in ("embed.weight", "blocks.0.attn.query.weight", "blocks.0.mlp.hidden.weight",
                 "blocks.0.mlp.output.weight"):
        assert state[name].std().item() == pytest.approx(1 / math.sqrt(128), rel=0.05), name
    assert state["unembed.weight"].std().item() == pytest.approx(1 / math.sqrt(p + 1), rel=0.05)
    assert not state["blocks.0.mlp.hidden.bias"].any()
    again = build_model(2 * p, p, config, seed=0).state_dict()
    assert all(torch.equal(state[k], again[k]) for k in state)


def test_run_json_rebuilds_the_model_and_takes_the_transformer_defaults(tmp_path):
    result = invoke("train", *TINY, "--steps", "10", "--save-every", "5", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / RUN
    assert result.stdout.strip() == str(run_dir)
    config = formats.run.read_run(run_dir)
    assert config.model.kind == "transformer" and config.model.d_model == 16
    # Nanda et al.'s optimiser, since none was given.
    assert (config.optim.lr, config.optim.weight_decay, config.optim.warmup) == (1e-3, 1.0, 10)
    state = load_state(formats.run.checkpoint_path(run_dir, 10))
    assert state["embed.weight"].shape == (P + 1, 16) and state["unembed.weight"].shape == (P, 16)
    model = build_model(2 * P, P, config.model, config.seed)
    model.load_state_dict(state)
    # The recorded accuracy is reproduced by the model rebuilt from run.json.
    from grokscope.tasks import load_task

    data = load_task(config.task)
    with torch.no_grad():
        correct = model(torch.from_numpy(data.x)).argmax(1).numpy() == data.y
    history = formats.run.read_history(run_dir)
    last = history[history["step"] == 10].iloc[0]
    assert correct[data.split == 0].mean() == pytest.approx(last["train_acc"])
    assert correct[data.split == 1].mean() == pytest.approx(last["test_acc"])

    result = invoke("train", *TINY, "--steps", "2", "--lr", "0.01", "--warmup", "0", "--out", str(tmp_path / "given"))
    assert result.exit_code == 0, result.output
    given = formats.run.read_run(tmp_path / "given" / RUN)
    assert (given.optim.lr, given.optim.warmup, given.optim.weight_decay) == (0.01, 0, 1.0)


def test_old_run_json_without_a_model_kind_is_an_mlp(tmp_path):
    result = invoke("train", "--p", str(P), "--width", "8", "--steps", "4", "--save-log", "0", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / f"add-p{P}"
    document = json.loads((run_dir / "run.json").read_text())
    for name in ("kind", "activation", "d_model", "n_heads", "d_mlp", "layer_norm"):
        del document["model"][name]
    del document["optim"]["warmup"]
    (run_dir / "run.json").write_text(json.dumps(document))
    config = formats.run.read_run(run_dir)
    assert config.model.kind == "mlp" and config.optim.warmup == 0
    result = invoke("measure", str(run_dir), "--metric", "collapse", "-q")
    assert result.exit_code == 0, result.output


def test_sweep_over_model_kinds_names_each_run(tmp_path):
    result = invoke("train", "--p", str(P), "--width", "8", "--d-model", "8", "--d-mlp", "8", "--steps", "2",
                    "--save-log", "0", "--model", "mlp,transformer", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(tmp_path / f"add-p{P}-mlp"), str(tmp_path / f"add-p{P}-transformer")]
    # Each kind took its own defaults.
    assert formats.run.read_run(tmp_path / f"add-p{P}-mlp").optim.lr == 0.03
    assert formats.run.read_run(tmp_path / f"add-p{P}-transformer").optim.lr == 1e-3


def test_warmup_scales_the_learning_rate_linearly(tmp_path):
    config = RunConfig().resolved()
    config.task.p, config.model.kind, config.model.d_model, config.model.d_mlp = P, "transformer", 8, 8
    config.optim.lr, config.optim.warmup = 0.002, 4
    trainer = Trainer(config, tmp_path, torch.device("cpu"))
    seen = []
    for _ in range(6):
        trainer.train_step()
        seen.append(trainer.optimizer.param_groups[0]["lr"])
    assert seen == pytest.approx([0.0005, 0.001, 0.0015, 0.002, 0.002, 0.002])


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("extra", [[], ["--batch-size", "13", "--depth", "2", "--layer-norm", "--activation", "gelu"]])
def test_resume_equals_uninterrupted(tmp_path, extra):
    args = [*TINY, "--steps", "24", "--save-every", "8", "--warmup", "10", *extra]
    assert invoke("train", *args, "--out", str(tmp_path / "whole")).exit_code == 0

    # A second run, stopped after its step-8 checkpoint, while the warmup is still under way.
    assert invoke("train", *args, "--out", str(tmp_path / "cut")).exit_code == 0
    cut = tmp_path / "cut" / RUN
    for _, path in formats.run.list_checkpoints(cut):
        path.unlink()
    (cut / formats.run.RESUME_FILE).unlink()
    trainer = Trainer(formats.run.read_run(cut), cut, torch.device("cpu"))

    def stop_at_10(evaluation):
        if evaluation.step == 10:
            raise Interrupt

    with pytest.raises(Interrupt):
        trainer.run(stop_at_10)
    assert formats.run.list_checkpoints(cut)[-1][0] == 8

    result = invoke("train", *args, "--out", str(tmp_path / "cut"), "--resume")
    assert result.exit_code == 0, result.output
    whole = load_state(formats.run.checkpoint_path(tmp_path / "whole" / RUN, 24))
    resumed = load_state(formats.run.checkpoint_path(cut, 24))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    pd.testing.assert_frame_equal(formats.run.read_history(tmp_path / "whole" / RUN), formats.run.read_history(cut))


@pytest.mark.parametrize(("args", "needle"), [
    (["--task", "digits"], "--model transformer"),
    (["--heads", "3"], "--heads"),
    (["--model", "rnn"], "--model"),
    (["--activation", "tanh"], "--activation"),
    (["--warmup", "-1"], "--warmup"),
])
def test_bad_transformer_options_give_one_line_errors(tmp_path, args, needle):
    result = invoke("train", *TINY, *args, "--steps", "2", "--out", str(tmp_path))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    # Fewer MLP neurons (16) than training samples (20), so o-info's covariance has full rank.
    result = invoke("train", *TINY, "--d-mlp", "16", "--steps", "60", "--save-every", "20", "--lr", "0.01",
                    "--out", str(out))
    assert result.exit_code == 0, result.output
    return out / RUN


def test_probe_stores_the_answer_position_features(run):
    result = invoke("probe", str(run), "-q")
    assert result.exit_code == 0, result.output
    path = formats.features.features_path(run, 60)
    step, keys, penultimate = formats.features.features_header(path)
    assert keys == ["blocks.0.mlp.post", "blocks.0.resid_post"] and penultimate == "blocks.0.resid_post"
    stored = load_state(path)
    config = formats.run.read_run(run)
    state = load_state(formats.run.checkpoint_path(run, 60))
    a, b = torch.meshgrid(torch.arange(P), torch.arange(P), indexing="ij")
    resids, neurons, _ = reference_forward(state, config.model, a.reshape(-1), b.reshape(-1), P)
    torch.testing.assert_close(stored["blocks.0.resid_post"], resids[0][:, -1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stored["blocks.0.mlp.post"], neurons[0][:, -1], rtol=1e-5, atol=1e-6)


def test_measure_every_family_on_a_transformer_run(run, tmp_path):
    # Into the run's tables (the plots below read them), then every family as one table: -o
    # reuses what the run's tables hold and writes nothing into the run.
    result = invoke("measure", str(run), "--metric", "all", "-q")
    assert result.exit_code == 0, result.output
    result = invoke("measure", str(run), "--metric", "all", "-o", str(tmp_path / "all.parquet"), "-q")
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(tmp_path / "all.parquet")
    collapse = table[table["metric"].isin(["rnc1", "nc3"])]
    assert set(collapse["layer"]) == {"blocks.0.resid_post"}
    assert collapse["value"].notna().all() and len(collapse[collapse["metric"] == "nc3"]) > 0
    assert set(table.loc[table["metric"] == "synergy", "layer"]) == {"blocks.0.resid_post"}
    # Weights: every matrix, attention included.
    spectral = set(table.loc[table["metric"] == "stable_rank", "layer"])
    assert {"blocks.0.attn.query.weight", "blocks.0.attn.output.weight", "embed.weight",
            "unembed.weight"} <= spectral
    assert (table["model"] == "transformer").all() and (table["width"] == 16).all()

    # o-info on the MLP's neurons, as the issue asks.
    result = invoke("measure", str(run), "--metric", "o-info", "--layer", "blocks.0.mlp.post", "--force",
                    "--format", "csv", "-q")
    assert result.exit_code == 0, result.output
    assert "blocks.0.mlp.post" in result.stdout

    assert {"nhsic_x", "memorization_step", "restricted_loss"} <= set(table["metric"])
    for kind in ("curves", "phases", "pareto", "info-plane", "collapse", "sweep", "fourier", "metric"):
        figure = tmp_path / f"{kind}.png"
        words = ["nc1"] if kind == "metric" else []
        result = invoke("plot", kind, *words, str(run), "-o", str(figure))
        assert result.exit_code == 0, (kind, result.output)
        assert figure.stat().st_size > 1000
