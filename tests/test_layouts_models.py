"""Models whose layers are not (batch, units): a ViT saved by the Hugging Face Trainer (transformers
5 renamed its keys; its CLS token is read with @0), a ResNet's convolutional maps (flattened, or
pooled with @mean), and a model without nn.Linear (the default layer is the input of what
produces the logits). Each checked against a forward hook written here."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from grokscope.context import open_series
from series_helpers import images, invoke, nets, pipeline, warnings_in


def read_features(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with safe_open(path, framework="np") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()


# --- a ViT saved by the Trainer ------------------------------------------------------------


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = tmp_path_factory.mktemp("vit")
    data = images(folder)

    class Images(torch.utils.data.Dataset):
        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            row = self.rows[i]
            return {"pixel_values": torch.from_numpy(data["X"][row]), "labels": torch.tensor(data["y"][row])}

    config = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32, num_labels=3,
                                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(config)

    def accuracy(evaluation):
        return {"accuracy": float((evaluation.predictions.argmax(-1) == evaluation.label_ids).mean())}

    out = folder / "vit-run"
    arguments = transformers.TrainingArguments(
        str(out), max_steps=12, save_steps=4, eval_strategy="steps", eval_steps=4, logging_strategy="no",
        per_device_train_batch_size=8, per_device_eval_batch_size=100, learning_rate=2e-2, report_to=[],
        use_cpu=True, disable_tqdm=True, seed=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = transformers.Trainer(model=model, args=arguments, compute_metrics=accuracy,
                                       train_dataset=Images(np.flatnonzero(data["split"] == 0)),
                                       eval_dataset=Images(np.flatnonzero(data["split"] == 1)))
        trainer.train()
    return {"run": out, "data": folder / "images.npz"}


def test_vit_trainer_series(vit_run, tmp_path):
    run = vit_run["run"]
    with safe_open(str(run / "checkpoint-4" / "model.safetensors"), framework="pt") as handle:
        assert "vit.encoder.layer.0.attention.attention.key.weight" in handle.keys()  # the names on disk

    # Before probe, the history is the Trainer's evaluations only: curves draws them and says what is missing.
    drawn = invoke("plot", "curves", run, "-o", tmp_path / "eval-only.png")
    assert drawn.exit_code == 0, drawn.output
    said = [w for w in warnings_in(drawn) if "curves:" in w]
    assert len(said) == 1 and "no train_acc, train_loss" in said[0] and "eval_accuracy" in said[0], said
    assert (tmp_path / "eval-only.png").stat().st_size > 1000

    tables = pipeline(run, run, tmp_path / "figures", "--data", vit_run["data"], "--layer", "vit.layers.0@0")
    assert sorted(set(tables["weights"]["step"])) == [4, 8, 12]
    record = json.loads((run / "features" / "probe.json").read_text())
    assert record["penultimate"] == "classifier:input" and record["layers"] == ["vit.layers.0@0", "classifier:input"]

    # The renamed keys were loaded: probe's accuracy is the Trainer's own eval_accuracy at every step.
    history = open_series(run).history().dropna(subset=["eval_accuracy"])
    assert list(history["step"]) == [4, 8, 12]
    np.testing.assert_allclose(history["test_acc"], history["eval_accuracy"], atol=1e-6)
    np.testing.assert_allclose(history["test_loss"], history["eval_loss"], rtol=1e-5)

    # @0 is the CLS token of the block's (batch, tokens, width) output, as transformers' own loading gives it.
    import transformers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.ViTForImageClassification.from_pretrained(str(run / "checkpoint-12")).eval()
    captured = {}
    model.vit.layers[0].register_forward_hook(
        lambda module, args, output: captured.update(h=output[0] if isinstance(output, tuple) else output))
    x = np.load(vit_run["data"])["X"]
    with torch.no_grad():
        model(torch.from_numpy(x))
    features, metadata = read_features(str(run / "features" / "step-00000012.safetensors"))
    assert captured["h"].shape == (len(x), 5, 16)  # CLS + 4 patches
    np.testing.assert_allclose(features["vit.layers.0@0"], captured["h"][:, 0].numpy(), rtol=1e-5, atol=1e-6)
    assert json.loads(metadata["grokscope.positions"])["vit.layers.0@0"] == "0"


# --- convolutional feature maps ------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet_series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resnet")
    data, factories = images(folder), nets(folder)
    series = folder / "ckpts"
    series.mkdir()
    torch.manual_seed(0)
    model = factories["resnet"]()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train = np.flatnonzero(data["split"] == 0)
    for step in range(7):
        if step % 3 == 0:
            torch.save(model.state_dict(), series / f"step_{step}.pt")
        loss = nn.functional.cross_entropy(model(torch.from_numpy(data["X"][train])), torch.from_numpy(data["y"][train]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"folder": folder, "series": series, "factories": factories, "X": data["X"]}


def test_conv_maps_are_flattened_or_pooled(resnet_series, tmp_path):
    folder, series = resnet_series["folder"], resnet_series["series"]
    result = invoke("probe", series, "--model", folder / "nets.py:resnet", "--data", folder / "images.npz",
                    "--layer", "layer2", "--layer", "layer2@mean", "--layer", "layer1.conv1", "-q")
    assert result.exit_code == 0, result.output
    model = resnet_series["factories"]["resnet"]()
    model.load_state_dict(torch.load(series / "step_6.pt", weights_only=True))
    model.eval()
    captured = {}
    model.layer2.register_forward_hook(lambda module, args, output: captured.update(layer2=output))
    model.layer1.conv1.register_forward_hook(lambda module, args, output: captured.update(conv=output))
    with torch.no_grad():
        model(torch.from_numpy(resnet_series["X"]))
    features, metadata = read_features(str(folder / "features" / "step-00000006.safetensors"))  # ckpts/: home beside it
    assert captured["layer2"].shape == (60, 16, 4, 4)
    # Every channel at every position, in the map's own (C, H, W) order; not one "token" of it.
    np.testing.assert_allclose(features["layer2"], captured["layer2"].flatten(1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features["layer1.conv1"], captured["conv"].flatten(1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features["layer2@mean"], captured["layer2"].mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    positions = json.loads(metadata["grokscope.positions"])
    assert positions["layer2"] == "flattened (16, 4, 4)" and positions["layer2@mean"] == "mean over (4, 4)"
    assert metadata["grokscope.penultimate"] == "fc:input"

    wrong = invoke("probe", series, "--model", folder / "nets.py:resnet", "--data", folder / "images.npz",
                   "--layer", "layer2@0", "--out", tmp_path / "x")
    line = " ".join(wrong.stderr.split())
    assert wrong.exit_code == 1 and "(B, C, H, W)" in line and "@mean" in line, line


# --- models without nn.Linear --------------------------------------------------------------

NANDA = '''
import torch
from torch import nn

P = 7


class HookPoint(nn.Module):
    """TransformerLens' hook point: the identity, there to be hooked."""

    def forward(self, x):
        return x


class Embed(nn.Module):
    def __init__(self, d_vocab, d_model):
        super().__init__()
        self.W_E = nn.Parameter(torch.randn(d_model, d_vocab) / d_model ** 0.5)

    def forward(self, x):
        return torch.einsum("dbp -> bpd", self.W_E[:, x])


class Unembed(nn.Module):
    def __init__(self, d_vocab, d_model):
        super().__init__()
        self.W_U = nn.Parameter(torch.randn(d_model, d_vocab) / d_vocab ** 0.5)

    def forward(self, x):
        return x @ self.W_U


class Block(nn.Module):
    def __init__(self, d_model, d_mlp, hook_points=True):
        super().__init__()
        self.W_in = nn.Parameter(torch.randn(d_mlp, d_model) / d_model ** 0.5)
        self.W_out = nn.Parameter(torch.randn(d_model, d_mlp) / d_mlp ** 0.5)
        self.hook_post = HookPoint()
        if hook_points:
            self.hook_resid_post = HookPoint()

    def forward(self, x):
        hidden = self.hook_post(torch.relu(torch.einsum("md,bpd->bpm", self.W_in, x)))
        resid = x + torch.einsum("dm,bpm->bpd", self.W_out, hidden)
        return self.hook_resid_post(resid) if hasattr(self, "hook_resid_post") else resid


class Transformer(nn.Module):
    """Nanda et al.'s layout: einsum parameters, W_U in an Unembed module."""

    def __init__(self, d_model=16, d_mlp=32, own_unembedding=False, hook_points=True):
        super().__init__()
        self.embed = Embed(P + 1, d_model)
        self.W_pos = nn.Parameter(torch.randn(3, d_model) / d_model ** 0.5)
        self.blocks = nn.ModuleList([Block(d_model, d_mlp, hook_points), Block(d_model, d_mlp, hook_points)])
        self.own_unembedding = own_unembedding
        if own_unembedding:  # W_U applied in forward itself: no module produces the logits
            self.W_U = nn.Parameter(torch.randn(d_model, P + 1) / (P + 1) ** 0.5)
        else:
            self.unembed = Unembed(P + 1, d_model)

    def forward(self, tokens):
        x = self.embed(tokens) + self.W_pos
        for block in self.blocks:
            x = block(x)
        return x @ self.W_U if self.own_unembedding else self.unembed(x)


def nanda():
    return Transformer()


def inline():
    return Transformer(own_unembedding=True)


def bare():
    return Transformer(own_unembedding=True, hook_points=False)
'''


@pytest.mark.parametrize("factory, chosen, hooked", [
    ("nanda", "unembed:input", "blocks.1"),  # the input of the module whose output is the logits
    ("inline", "blocks.1.hook_resid_post", "blocks.1"),  # no such module: the last block's hook point
    ("bare", "blocks.1", "blocks.1"),  # nor a hook point: the last module to finish before the logits
])
def test_the_default_layer_without_nn_linear(tmp_path, factory, chosen, hooked):
    from series_helpers import pairs

    data = pairs(tmp_path)
    (tmp_path / "nanda.py").write_text(NANDA)
    namespace: dict = {"__name__": "nanda"}
    exec(compile(NANDA, "nanda.py", "exec"), namespace)
    torch.manual_seed(0)
    model = namespace[factory]()
    snapshots = []
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train = torch.from_numpy(data["split"] == 0)
    for epoch in range(3):
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        logits = model(torch.from_numpy(data["tokens"]))[train][:, -1]
        loss = nn.functional.cross_entropy(logits, torch.from_numpy(data["y"])[train])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save({"state_dicts": snapshots, "epochs": [0, 1, 2]}, tmp_path / "full_run_data.pth")

    result = invoke("probe", tmp_path / "full_run_data.pth", "--model", tmp_path / f"nanda.py:{factory}",
                    "--data", tmp_path / "tokens.npz", "-q")
    assert result.exit_code == 0, result.output
    said = [w for w in warnings_in(result) if "no nn.Linear" in w]
    assert len(said) == 1 and f"probing {chosen} (" in said[0], said
    home = tmp_path / "full_run_data.grokscope"
    record = json.loads((home / "features" / "probe.json").read_text())
    assert record["penultimate"] == chosen and record["layers"] == [chosen]

    # Whichever way it was found, it is the residual stream the logits are read from, at the last token.
    model.load_state_dict(snapshots[2])
    captured = {}
    dict(model.named_modules())[hooked].register_forward_hook(lambda m, a, output: captured.update(h=output))
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(data["tokens"]))
    features, metadata = read_features(str(home / "features" / "step-00000002.safetensors"))
    np.testing.assert_allclose(features[chosen], captured["h"][:, -1].numpy(), rtol=1e-5, atol=1e-6)
    history = open_series(home).history().set_index("step")
    test = data["split"] == 1
    assert history.loc[2, "test_acc"] == pytest.approx(float((logits[:, -1].argmax(-1).numpy() == data["y"])[test].mean()))
