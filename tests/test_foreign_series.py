"""Series written by other tools, end to end: each kind made by the real library (the Hugging Face
Trainer, Lightning) or by the loop people write (plain state dicts, nanoGPT-style dicts, a
TransformerLens-style one-layer transformer in safetensors, Nanda et al.'s single-file series),
then probe, measure --metric all (through the pipe), every plot kind and report, one command each.
The numbers are checked against a forward hook written here and against what the tool logged."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from grokscope.cli import app
from grokscope.context import open_series

ROOT = Path(__file__).resolve().parents[1]
P = 11

TRANSFORMER = '''
import torch
from torch import nn


class Attention(nn.Module):
    """TransformerLens-style: per-head weights (heads first) and its mask buffers."""

    def __init__(self, d_model, n_heads, n_ctx):
        super().__init__()
        d_head = d_model // n_heads
        self.W_Q = nn.Parameter(torch.randn(n_heads, d_model, d_head) / d_model ** 0.5)
        self.W_K = nn.Parameter(torch.randn(n_heads, d_model, d_head) / d_model ** 0.5)
        self.W_V = nn.Parameter(torch.randn(n_heads, d_model, d_head) / d_model ** 0.5)
        self.W_O = nn.Parameter(torch.randn(n_heads, d_head, d_model) / d_model ** 0.5)
        self.register_buffer("mask", torch.tril(torch.ones(n_ctx, n_ctx)).bool())
        self.register_buffer("IGNORE", torch.tensor(-1e5))

    def forward(self, x):  # (B, T, d)
        q = torch.einsum("btd,hde->bhte", x, self.W_Q)
        k = torch.einsum("btd,hde->bhte", x, self.W_K)
        v = torch.einsum("btd,hde->bhte", x, self.W_V)
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # (B, h, T, T)
        scores = scores.masked_fill(~self.mask[: x.shape[1], : x.shape[1]], self.IGNORE)
        z = torch.softmax(scores, dim=-1) @ v  # (B, h, T, d_head)
        return torch.einsum("bhte,hed->btd", z, self.W_O)


class MLP(nn.Module):
    def __init__(self, d_model, d_mlp):
        super().__init__()
        self.W_in = nn.Parameter(torch.randn(d_model, d_mlp) / d_model ** 0.5)
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.randn(d_mlp, d_model) / d_mlp ** 0.5)
        self.hook_post = nn.Identity()  # the neurons, for probing

    def forward(self, x):
        return self.hook_post(torch.relu(x @ self.W_in + self.b_in)) @ self.W_out


class Block(nn.Module):
    def __init__(self, d_model, n_heads, d_mlp, n_ctx):
        super().__init__()
        self.attn, self.mlp = Attention(d_model, n_heads, n_ctx), MLP(d_model, d_mlp)

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.mlp(x)


class OneLayer(nn.Module):
    def __init__(self, p=11, d_model=32, n_heads=4, d_mlp=64):
        super().__init__()
        self.W_E = nn.Parameter(torch.randn(p + 1, d_model) / d_model ** 0.5)
        self.W_pos = nn.Parameter(torch.randn(3, d_model) / d_model ** 0.5)
        self.blocks = nn.ModuleList([Block(d_model, n_heads, d_mlp, 3)])
        self.W_U = nn.Parameter(torch.randn(d_model, p + 1) / d_model ** 0.5)

    def forward(self, tokens):  # (B, 3) -> (B, 3, p + 1)
        x = self.W_E[tokens] + self.W_pos
        for block in self.blocks:
            x = block(x)
        return x @ self.W_U


def build():
    return OneLayer()


def mlp():
    return nn.Sequential(nn.Linear(22, 32), nn.ReLU(), nn.Linear(32, 11))
'''


def invoke(*args, input: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def example(name: str) -> dict:
    namespace: dict = {"__name__": "example"}  # defining, not running
    exec(compile((ROOT / "examples" / name).read_text(), name, "exec"), namespace)
    return namespace


def tokens_data(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y, split = example("hf_trainer_series.py")["make_data"](P)
    np.savez(folder / "tokens.npz", X=x, y=y, split=split)
    return x, y, split


def one_hot_data(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tokens, y, split = tokens_data(folder)
    x = np.zeros((len(y), 2 * P), dtype=np.float32)
    x[np.arange(len(y)), tokens[:, 0]] = 1.0
    x[np.arange(len(y)), P + tokens[:, 1]] = 1.0
    np.savez(folder / "onehot.npz", X=x, y=y, split=split)
    return x, y, split


def train_loop(model: nn.Module, x: np.ndarray, y: np.ndarray, split: np.ndarray, steps: int, save,
               every: int = 10, lr: float = 3e-3) -> None:
    """Full-batch AdamW on the training pairs, ``save(model, step)`` at every ``every`` steps."""
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1.0)
    inputs, labels = torch.from_numpy(x[split == 0]), torch.from_numpy(y[split == 0])
    for step in range(steps + 1):
        if step % every == 0:
            save(model, step)
        logits = model(inputs)
        logits = logits[:, -1] if logits.ndim == 3 else logits
        loss = nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def factory(folder: Path) -> Path:
    path = folder / "nets.py"
    path.write_text(TRANSFORMER)
    return path


def full_pipeline(series: Path, home: Path, figures: Path, *probe_options) -> dict:
    """probe | measure - --metric all, every plot kind and report: one command each."""
    probed = invoke("probe", series, *probe_options, "-q")
    assert probed.exit_code == 0, probed.output
    assert probed.stdout.split() and all(Path(p).is_file() for p in probed.stdout.split())
    measured = invoke("measure", "-", "--metric", "all", "-q", input=probed.stdout)
    assert measured.exit_code == 0, measured.output
    tables = {Path(p).stem: pd.read_parquet(p) for p in measured.stdout.split()}
    assert set(tables) == {"collapse", "hsic", "weights", "grokking", "oinfo", "complexity"}
    for family, table in tables.items():
        assert {"run", "step", "metric", "value", "split", "layer"} <= set(table.columns)
        assert family == "grokking" or table["value"].notna().any(), family  # NaN: never reached
    figures.mkdir(exist_ok=True)
    for kind in ("curves", "collapse", "phases", "info-plane"):
        drawn = invoke("plot", kind, home, "-o", figures / f"{kind}.png")
        assert drawn.exit_code == 0, (kind, drawn.output)
        assert (figures / f"{kind}.png").stat().st_size > 1000
    reported = invoke("report", home, "--format", "json")
    assert reported.exit_code == 0, reported.output
    rows = [json.loads(line) for line in reported.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["rnc1_test"] is not None
    return tables


# --- the Hugging Face Trainer --------------------------------------------------------------


@pytest.fixture(scope="module")
def trainer_run(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    out = tmp_path_factory.mktemp("trainer") / "hf-run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        example("hf_trainer_series.py")["train"](out, p=P, steps=40, save_every=10)
    return out


def test_trainer_folder_needs_only_the_data(trainer_run, tmp_path):
    assert sorted(p.name for p in trainer_run.glob("checkpoint-*")) == [f"checkpoint-{s}" for s in (10, 20, 30, 40)]
    tables = full_pipeline(trainer_run, trainer_run, tmp_path, "--data", trainer_run / "data.npz")
    record = json.loads((trainer_run / "features" / "probe.json").read_text())
    assert record["model"]["transformers"].endswith("config.json") and record["penultimate"] == "score:input"
    assert set(tables["collapse"]["run"]) == {"hf-run"}

    # probe's accuracy, on the data it was given, is the Trainer's own eval_accuracy at every step.
    history = open_series(trainer_run).history()
    logged = history.dropna(subset=["eval_accuracy"])
    assert list(logged["step"]) == [10, 20, 30, 40]
    np.testing.assert_allclose(logged["test_acc"], logged["eval_accuracy"], atol=1e-12)
    np.testing.assert_allclose(logged["test_loss"], logged["eval_loss"], rtol=1e-4)


# --- Lightning -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lightning_run(tmp_path_factory) -> Path:
    lightning = pytest.importorskip("lightning")
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    folder = tmp_path_factory.mktemp("lightning")
    x, y, split = one_hot_data(folder)
    factory(folder)

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.model = nn.Sequential(nn.Linear(2 * P, 32), nn.ReLU(), nn.Linear(32, P))

        def _accuracy(self, batch):
            inputs, labels = batch
            logits = self.model(inputs)
            return nn.functional.cross_entropy(logits, labels), (logits.argmax(1) == labels).float().mean()

        def training_step(self, batch, index):
            loss, accuracy = self._accuracy(batch)
            self.log("train_loss", loss)
            self.log("train_acc", accuracy)
            return loss

        def validation_step(self, batch, index):
            loss, accuracy = self._accuracy(batch)
            self.log("val_loss", loss)
            self.log("val_acc", accuracy)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-2, weight_decay=1.0)

    def loader(code):
        rows = np.flatnonzero(split == code)
        data = torch.utils.data.TensorDataset(torch.from_numpy(x[rows]), torch.from_numpy(y[rows]))
        return torch.utils.data.DataLoader(data, batch_size=len(rows))  # one batch: exact means

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = lightning.Trainer(
            max_steps=12, logger=CSVLogger(str(folder / "logs")), log_every_n_steps=1, accelerator="cpu",
            callbacks=[ModelCheckpoint(every_n_train_steps=3, save_top_k=-1)], enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0, check_val_every_n_epoch=3,
        )
        trainer.fit(Module(), loader(0), loader(1))
    return folder / "logs" / "lightning_logs" / "version_0"


def test_lightning_ckpt_series_with_its_step_convention(lightning_run, tmp_path):
    names = {p.name for p in (lightning_run / "checkpoints").iterdir()}
    assert names == {"epoch=2-step=3.ckpt", "epoch=5-step=6.ckpt", "epoch=8-step=9.ckpt", "epoch=11-step=12.ckpt"}
    folder = lightning_run.parents[2]
    # The checkpoints folder names the run it belongs to: features and measures go beside metrics.csv.
    tables = full_pipeline(lightning_run / "checkpoints", lightning_run, tmp_path,
                           "--model", folder / "nets.py:mlp", "--data", folder / "onehot.npz")
    assert sorted(set(tables["weights"]["step"])) == [3, 6, 9, 12]
    assert set(tables["collapse"]["run"]) == {"version_0"}
    history = open_series(lightning_run).history().set_index("step")
    # Lightning logs a training row before its step's update and a validation row after it, both at
    # global_step - 1: aligned, each logged accuracy is probe's at the checkpoint of that step.
    for step in (3, 6, 9, 12):
        assert history.loc[step, "val_acc"] == pytest.approx(history.loc[step, "test_acc"], abs=1e-6)
        assert history.loc[step, "val_loss"] == pytest.approx(history.loc[step, "test_loss"], rel=1e-5)
    logged = pd.read_csv(lightning_run / "metrics.csv")
    train_rows = logged.dropna(subset=["train_acc"]).set_index("step")
    for step in (3, 6, 9):
        assert train_rows.loc[step, "train_acc"] == pytest.approx(history.loc[step, "train_acc"], abs=1e-6)


# --- plain loops ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loops(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("loops")
    nets = {}
    exec(compile(factory(folder).read_text(), "nets", "exec"), nets)
    x, y, split = one_hot_data(folder)
    tokens, _, _ = tokens_data(folder)
    plain, nano, transformer = folder / "plain", folder / "nano", folder / "transformer"
    for path in (plain, nano, transformer):
        path.mkdir()
    train_loop(nets["mlp"](), x, y, split, 30,
               lambda model, step: torch.save(model.state_dict(), plain / f"step_{step}.pt"))
    words = iter(["alpha", "bravo", "charlie", "delta"])

    def nanogpt(model, step):
        # torch.compile's prefix, the step stored inside, and a name without a number.
        state = {f"_orig_mod.{k}": v.clone() for k, v in model.state_dict().items()}
        torch.save({"model": state, "optimizer": {}, "iter_num": step, "config": {"lr": 3e-3}},
                   nano / f"ckpt_{next(words)}.pt")

    train_loop(nets["mlp"](), x, y, split, 30, nanogpt)
    snapshots = []
    train_loop(nets["build"](), tokens, y, split, 40,
               lambda model, step: (save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                                              str(transformer / f"step_{step}.safetensors")),
                                    snapshots.append((step, {k: v.clone() for k, v in model.state_dict().items()}))))
    torch.save({
        "checkpoints": [state for _, state in snapshots], "checkpoint_epochs": [step for step, _ in snapshots],
        "train_losses": [float(s) for s in range(41)], "test_losses": [float(2 * s) for s in range(41)],
        "config": {"p": P, "d_model": 32},
    }, folder / "full_run_data.pth")
    return folder


def test_plain_state_dicts(loops, tmp_path):
    tables = full_pipeline(loops / "plain", loops / "plain", tmp_path,
                           "--model", loops / "nets.py:mlp", "--data", loops / "onehot.npz")
    assert sorted(set(tables["collapse"]["step"])) == [0, 10, 20, 30]
    # weight_norm is the norm of the parameters, and balancedness pairs the two Linear layers.
    state = torch.load(loops / "plain" / "step_30.pt", weights_only=True)
    weights = tables["weights"].set_index(["step", "metric", "layer"])["value"]
    want = math.sqrt(sum(float(v.double().pow(2).sum()) for v in state.values()))
    assert weights[(30, "weight_norm", None)] == pytest.approx(want, rel=1e-12)
    balanced = tables["weights"][tables["weights"]["metric"] == "balancedness"]
    assert set(balanced["layer"]) == {"0.weight->2.weight"}


def test_nanogpt_style_dicts_with_stored_steps(loops, tmp_path):
    tables = full_pipeline(loops / "nano", loops / "nano", tmp_path,
                           "--model", loops / "nets.py:mlp", "--data", loops / "onehot.npz")
    # The steps came from iter_num inside the files; the names carry none.
    assert sorted(set(tables["weights"]["step"])) == [0, 10, 20, 30]
    assert set(tables["weights"]["layer"].dropna()) >= {"0.weight", "2.weight"}  # _orig_mod. stripped


def test_one_layer_transformer_in_safetensors(loops, tmp_path):
    tables = full_pipeline(
        loops / "transformer", loops / "transformer", tmp_path, "--model", loops / "nets.py:build",
        "--data", loops / "tokens.npz", "--layer", "blocks.0.mlp.hook_post@-1", "--layer", "blocks.0@-1")
    record = json.loads((loops / "transformer" / "features" / "probe.json").read_text())
    assert record["layers"] == ["blocks.0@-1", "blocks.0.mlp.hook_post@-1"] and record["penultimate"] == "blocks.0@-1"

    # RNC1 at the answer position equals a brute-force computation from a forward hook.
    nets: dict = {}
    exec(compile((loops / "nets.py").read_text(), "nets", "exec"), nets)
    model = nets["build"]()
    model.load_state_dict(dict(torch.load(loops / "full_run_data.pth", weights_only=True)["checkpoints"][-1]))
    captured = {}
    model.blocks[0].register_forward_hook(lambda module, args, output: captured.update(h=output))
    tokens = np.load(loops / "tokens.npz")
    with torch.no_grad():
        model(torch.from_numpy(tokens["X"]))
    train = tokens["split"] == 0
    h, y = captured["h"][:, -1].double().numpy()[train], tokens["y"][train]
    means = {c: h[y == c].mean(axis=0) for c in np.unique(y)}
    within = np.mean([np.sum((h[i] - means[y[i]]) ** 2) for i in range(len(y))])
    rnc1 = within / np.mean(np.linalg.norm(h, axis=1)) ** 2
    collapse = tables["collapse"].set_index(["step", "metric", "split", "layer"])["value"]
    assert collapse[(40, "rnc1", "train", "blocks.0@-1")] == pytest.approx(rnc1, rel=1e-5)

    # Weights: the attention masks are not weights; per-head matrices are measured per head.
    weights = tables["weights"]
    norm = weights[(weights["step"] == 40) & (weights["metric"] == "weight_norm")]["value"].item()
    assert norm == pytest.approx(math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in model.parameters())), rel=1e-6)
    layers = set(weights["layer"].dropna())
    assert not any("mask" in layer or "IGNORE" in layer for layer in layers)
    assert {"blocks.0.attn.W_Q[0]", "blocks.0.attn.W_Q[3]"} <= layers

    # The answer position's logits give the accuracy: the model's own, on the training pairs.
    history = open_series(loops / "transformer").history().set_index("step")
    with torch.no_grad():
        logits = model(torch.from_numpy(tokens["X"]))[:, -1]
    accuracy = float((logits.argmax(1).numpy() == tokens["y"])[train].mean())
    assert history.loc[40, "train_acc"] == pytest.approx(accuracy)


def test_single_file_series(loops, tmp_path):
    home = loops / "full_run_data.grokscope"
    full_pipeline(loops / "full_run_data.pth", home, tmp_path, "--model", loops / "nets.py:build",
                  "--data", loops / "tokens.npz", "--layer", "blocks.0@-1")
    assert sorted(p.name for p in (home / "features").glob("step-*")) == [f"step-{s:08d}.safetensors" for s in (0, 10, 20, 30, 40)]
    history = open_series(home).history()
    # The losses the file lists for every epoch come along; probe's own fill train/test columns.
    assert list(history["step"]) == list(range(41))
    assert history.set_index("step").loc[7, "test_losses"] == 14.0
    assert history.dropna(subset=["test_acc"])["step"].tolist() == [0, 10, 20, 30, 40]


# --- mistakes ------------------------------------------------------------------------------


def test_mistakes_are_one_line_naming_what_to_do(loops, tmp_path):
    series, model, data = loops / "transformer", loops / "nets.py:build", loops / "tokens.npz"
    unprobed = tmp_path / "unprobed"
    unprobed.mkdir()
    (unprobed / "step_10.pt").write_bytes((loops / "plain" / "step_10.pt").read_bytes())
    cases = [
        (["probe", unprobed, "--model", loops / "nets.py:mlp"], "needs --data"),
        (["probe", series, "--model", model, "--data", data, "--layer", "blocks.0.nope"], "no module 'blocks.0.nope'"),
        (["probe", series, "--model", model, "--data", data, "--layer", "blocks.0@7", "--force", "--out", tmp_path / "x"],
         "position 7 is out of range for 3 tokens"),
        (["probe", series, "--model", model, "--data", data, "--layer", "blocks.0@first", "--out", tmp_path / "y"],
         "use @-1"),
    ]
    for args, expected in cases:
        result = invoke(*args)
        assert result.exit_code in (1, 2), (args, result.output)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert errors and expected in " ".join(result.stderr.split()), (args, result.stderr)
        assert "Traceback" not in result.output


def test_refused_pickle_names_the_global_and_the_opt_in(loops, tmp_path):
    series = tmp_path / "fairseq-style"
    series.mkdir()
    nets: dict = {}
    exec(compile((loops / "nets.py").read_text(), "nets", "exec"), nets)
    for step in (0, 5):
        torch.save({"model": nets["mlp"]().state_dict(), "args": argparse.Namespace(lr=0.1), "step": step},
                   series / f"checkpoint_{step}.pt")
    options = ["--model", loops / "nets.py:mlp", "--data", loops / "onehot.npz"]
    refused = invoke("probe", series, *options)
    assert refused.exit_code == 1
    assert "argparse.Namespace" in refused.stderr and "--allow-global argparse.Namespace" in refused.stderr
    allowed = invoke("probe", series, *options, "--allow-global", "argparse.Namespace", "-q")
    assert allowed.exit_code == 0, allowed.output
    # The opt-in is recorded with the series: measure needs no flag repeated.
    measured = invoke("measure", series, "--metric", "collapse,weights", "-q")
    assert measured.exit_code == 0, measured.output


def plain_series_copy(loops: Path, folder: Path) -> Path:
    """``folder`` holding a copy of the plain loop's checkpoints (step_*.pt), to change freely."""
    folder.mkdir()
    for path in (loops / "plain").glob("step_*.pt"):
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def test_weights_need_no_model_and_no_data(loops, tmp_path):
    copy = plain_series_copy(loops, tmp_path / "unprobed")
    result = invoke("measure", copy, "--metric", "weights", "-q")
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(result.stdout.strip())
    assert sorted(set(table["step"])) == [0, 10, 20, 30] and "balancedness" not in set(table["metric"])
    result = invoke("measure", copy, "--metric", "collapse")
    assert result.exit_code == 2 and "never probed" in result.stderr and "grokscope probe" in result.stderr


def test_a_home_whose_series_moved_names_the_recorded_path(loops, tmp_path):
    series = plain_series_copy(loops, tmp_path / "series")
    home = tmp_path / "home"
    probed = invoke("probe", series, "--model", loops / "nets.py:mlp", "--data", loops / "onehot.npz",
                    "--steps", "0", "--out", home, "-q")
    assert probed.exit_code == 0, probed.output
    series.rename(tmp_path / "elsewhere")
    result = invoke("measure", home, "--metric", "collapse")
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "probe.json" in line and "'../../series'" in line and str(series) in line and "does not exist" in line


def test_changed_data_is_refused_by_name(loops, tmp_path):
    series = plain_series_copy(loops, tmp_path / "series")
    data = tmp_path / "data.npz"
    data.write_bytes((loops / "onehot.npz").read_bytes())
    assert invoke("probe", series, "--model", loops / "nets.py:mlp", "--data", data, "--steps", "0", "-q").exit_code == 0
    arrays = dict(np.load(data))
    arrays["X"] = arrays["X"] * 2
    np.savez(data, **arrays)
    result = invoke("measure", series, "--metric", "hsic")
    assert result.exit_code == 2 and str(data) in result.stderr and "changed since" in result.stderr


def test_documented_plain_loop_walkthrough(tmp_path):
    """docs/your-checkpoints.md, section 10, as written."""
    series = tmp_path / "series"
    example("plain_pytorch_series.py")["train"](series)
    tables = full_pipeline(series, series, tmp_path / "figures",
                           "--model", ROOT / "examples" / "plain_pytorch_series.py:build_model",
                           "--data", series / "data.npz")
    assert sorted(set(tables["collapse"]["step"])) == [0, 50, 100, 150, 200, 250, 300]
    assert set(tables["collapse"]["layer"]) == {"4:input"}
    # Separable Gaussian clusters: the penultimate features collapse as training goes on.
    rnc1 = tables["collapse"].query("metric == 'rnc1' and split == 'train'").set_index("step")["value"]
    assert rnc1[300] < rnc1[0]


def test_tied_weights_and_prefixes_fit_the_model():
    from grokscope.state_dicts import fit_state

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.head = nn.Embedding(5, 3), nn.Linear(3, 5, bias=False)
            self.head.weight = self.embed.weight  # GPT-2's lm_head = wte
            self.register_buffer("mask", torch.ones(2, 2))

    source = Tied()
    saved = {"model.embed.weight": source.embed.weight.detach().clone()}  # one name, a wrapper's prefix, no mask
    target = Tied()
    target.load_state_dict(fit_state(target, saved), strict=True)
    torch.testing.assert_close(target.head.weight, source.embed.weight)
    torch.testing.assert_close(target.embed.weight, source.embed.weight)


def test_a_factory_file_imports_code_beside_it(tmp_path, loops):
    code = tmp_path / "code"
    code.mkdir()
    (code / "architecture.py").write_text("from torch import nn\n\ndef net():\n"
                                          "    return nn.Sequential(nn.Linear(22, 32), nn.ReLU(), nn.Linear(32, 11))\n")
    (code / "factory.py").write_text("from architecture import net\n\ndef build():\n    return net()\n")
    result = invoke("probe", loops / "plain", "--model", code / "factory.py:build", "--data", loops / "onehot.npz",
                    "--out", tmp_path / "home", "--steps", "10", "-q")
    assert result.exit_code == 0, result.output


def test_positions_all_and_first_and_the_record_reused(loops, tmp_path):
    home = tmp_path / "home"
    options = ["--model", loops / "nets.py:build", "--data", loops / "tokens.npz"]
    result = invoke("probe", loops / "transformer", *options, "--layer", "blocks.0@all", "--layer", "blocks.0@0",
                    "--steps", "0,10", "--out", home, "-q")
    assert result.exit_code == 0, result.output
    from safetensors import safe_open

    with safe_open(result.stdout.split()[0], framework="np") as handle:
        everything, first = handle.get_tensor("blocks.0@all"), handle.get_tensor("blocks.0@0")
        positions = json.loads(handle.metadata()["grokscope.positions"])
    assert everything.shape == (P * P, 3 * 32) and first.shape == (P * P, 32)
    np.testing.assert_array_equal(everything[:, :32], first)  # position 0 leads the flattened rows
    assert positions == {"blocks.0@all": "all", "blocks.0@0": "0"}
    # Probing the home again needs no flags; measure computes unstored steps in memory.
    again = invoke("probe", home, "--steps", "20", "-q")
    assert again.exit_code == 0, again.output
    measured = invoke("measure", home, "--metric", "collapse", "--steps", "0,30", "-q")
    assert measured.exit_code == 0, measured.output
    assert sorted(set(pd.read_parquet(measured.stdout.strip())["step"])) == [0, 30]


def test_token_inputs_enter_nhsic_one_hot():
    # The hsic family hands token ids to nHSIC as TokenInputs (never a dense n x T*V one-hot):
    # its values are those of the one-hot encoding built here, and real inputs pass as they are.
    from grokscope.measures.hsic import TokenInputs, as_hsic_inputs, hsic_measures

    tokens = np.array([[0, 2, 3], [1, 2, 3], [3, 0, 3], [2, 2, 1], [0, 1, 3], [3, 3, 0]])
    encoded = np.stack([np.concatenate([np.eye(4)[t] for t in row]) for row in tokens])  # (6, 3 * 4)
    distances = ((encoded[:, None] - encoded[None]) ** 2).sum(-1)
    assert distances[0, 1] == distances[0, 2] / 2 == 2.0  # equally far apart whatever the token ids
    inputs = as_hsic_inputs(tokens)
    assert isinstance(inputs, TokenInputs) and inputs.vocabulary == 4
    t = np.random.default_rng(1).normal(size=(6, 5))
    y = np.array([0, 1, 0, 1, 1, 0])
    options = dict(batch_size=None, passes=1, seed=None)
    via_tokens = hsic_measures(t, inputs, y, **options)
    via_one_hot = hsic_measures(t, encoded, y, **options)
    for key in via_one_hot:
        assert via_tokens[key] == pytest.approx(via_one_hot[key], rel=1e-12, abs=1e-12)
    real = np.random.default_rng(0).normal(size=(4, 2, 3))
    np.testing.assert_array_equal(np.asarray(as_hsic_inputs(real)), real)


def test_a_copy_of_the_last_checkpoint_is_not_a_second_step(lightning_run, tmp_path):
    import shutil

    folder = tmp_path / "checkpoints"
    shutil.copytree(lightning_run / "checkpoints", folder)
    shutil.copy(folder / "epoch=11-step=12.ckpt", folder / "last.ckpt")  # Lightning's save_last
    from grokscope.discovery import find_series

    found = find_series([str(folder)])
    assert [c.step for c in found[0].checkpoints] == [3, 6, 9, 12]
    assert all(c.path.name != "last.ckpt" for c in found[0].checkpoints)


def test_one_combined_table_where_a_family_does_not_apply(loops, tmp_path):
    # --metric all brings fourier to modular-arithmetic runs only: the combined table of another
    # tool's series holds the families that apply, with the rows their own tables hold.
    series = tmp_path / "plain"
    shutil.copytree(loops / "plain", series)
    probed = invoke("probe", series, "--model", loops / "nets.py:mlp", "--data", loops / "onehot.npz", "-q")
    assert probed.exit_code == 0, probed.stderr
    combined = tmp_path / "all.parquet"
    measured = invoke("measure", series, "--metric", "all", "-o", combined, "-q")
    assert measured.exit_code == 0, measured.stderr
    table = pd.read_parquet(combined)
    assert not table["metric"].str.startswith(("restricted", "excluded", "fourier")).any()
    for metric in ("rnc1", "nhsic_x", "synergy", "weight_norm"):
        assert sorted(set(table.loc[table["metric"] == metric, "step"])) == [0, 10, 20, 30], metric
