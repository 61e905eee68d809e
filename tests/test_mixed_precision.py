"""Half precision as mixed precision: ``probe --dtype bfloat16`` computes what the model gives
under ``torch.autocast``, with its linear layers' weights held in bfloat16 once instead of cast
at every batch, and GPT-2's ``gelu_new`` built as the fused kernel of the same formula."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from grokscope import formats
from grokscope.cli import app
from grokscope.precision import hold_matmul_weights_in


def _gpt2_series(root: Path):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=53, n_positions=8, n_embd=32, n_layer=2, n_head=2, num_labels=3,
                                     pad_token_id=52, bos_token_id=0, eos_token_id=0)  # activation gelu_new
    torch.manual_seed(1)
    model = transformers.GPT2ForSequenceClassification(config).eval()
    model.save_pretrained(root / "series" / "checkpoint-0")
    rng = np.random.default_rng(1)
    x = rng.integers(0, 52, size=(30, 8))  # (n, T), never the pad token: the last position is read
    np.savez(root / "data.npz", X=x, y=x[:, 0] % 3, split=(np.arange(30) % 3 == 0).astype(np.int64))
    return root / "series", root / "data.npz", x


def _probed(root: Path, series: Path, data: Path, dtype: str) -> torch.Tensor:
    home = root / dtype
    result = CliRunner().invoke(app, ["probe", str(series), "--data", str(data), "--out", str(home), "-q",
                                      "--dtype", dtype])
    assert result.exit_code == 0, result.output
    tensors, _ = formats.tensors.load_tensors(home / "features" / formats.steps.step_file_name(0))
    return tensors["score:input"]  # (n, d): the classifier's input at the last token


def test_bfloat16_probe_is_the_model_under_autocast_and_rounds_like_it(tmp_path):
    import transformers

    series, data, x = _gpt2_series(tmp_path)
    mixed = _probed(tmp_path, series, data, "bfloat16")
    exact = _probed(tmp_path, series, data, "float32")
    assert mixed.dtype == torch.float32  # the format's dtype whatever the compute dtype
    # Independently: the saved model as transformers loads it (its own gelu_new), under autocast.
    model = transformers.GPT2ForSequenceClassification.from_pretrained(series / "checkpoint-0").eval()
    with torch.no_grad():
        reference32 = model(torch.from_numpy(x), output_hidden_states=True).hidden_states[-1][:, -1]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reference16 = model(torch.from_numpy(x), output_hidden_states=True).hidden_states[-1][:, -1].float()
    scale = float(reference32.abs().max())
    np.testing.assert_allclose(exact.numpy(), reference32.numpy(), atol=1e-5 * scale)
    # bfloat16 keeps 8 bits of mantissa: the mixed features are within its rounding of autocast's
    # (the fused GELU and the order of products may differ by an ulp) and far from float32's.
    assert float((mixed - reference16).abs().max()) <= 2e-2 * scale
    assert float((mixed - exact).abs().max()) > 1e-4 * scale


def test_matmul_weights_held_in_half_give_autocasts_products_and_spare_tied_embeddings():
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(11, 6)
            self.conv = torch.nn.Conv1d(6, 6, kernel_size=3, padding=1)
            self.hidden = torch.nn.Linear(6, 6)
            self.out = torch.nn.Linear(6, 11, bias=False)
            self.out.weight = self.embed.weight  # tied, as language models tie their output layer

        def forward(self, tokens):  # (B, T)
            h = self.embed(tokens)  # (B, T, C)
            h = self.conv(h.transpose(1, 2)).transpose(1, 2)  # (B, T, C)
            return self.out(torch.relu(self.hidden(h)))  # (B, T, V)

    net = Net().eval()
    tokens = torch.randint(0, 11, (4, 5))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        cast_every_call = net(tokens)
        hold_matmul_weights_in(net, torch.bfloat16)
        held = net(tokens)
    assert torch.equal(cast_every_call, held)
    assert net.hidden.weight.dtype == net.conv.weight.dtype == net.hidden.bias.dtype == torch.bfloat16
    assert net.embed.weight.dtype == torch.float32 and net.out.weight is net.embed.weight


def test_gpt2s_gelu_new_is_built_as_the_fused_kernel_of_the_same_formula(tmp_path):
    import transformers

    from grokscope.user_models import build_transformers_model

    series, _, x = _gpt2_series(tmp_path)
    built = build_transformers_model(series / "checkpoint-0" / "config.json")
    own = transformers.GPT2ForSequenceClassification.from_pretrained(series / "checkpoint-0").eval()
    assert type(own.transformer.h[0].mlp.act).__name__ == "NewGELUActivation"
    assert type(built.transformer.h[0].mlp.act).__name__ != "NewGELUActivation"
    built.load_state_dict(own.state_dict())
    z = torch.linspace(-6, 6, 1001)
    np.testing.assert_allclose(built.transformer.h[0].mlp.act(z).numpy(), own.transformer.h[0].mlp.act(z).numpy(),
                               atol=1e-6)
    with torch.no_grad():
        np.testing.assert_allclose(built.eval()(torch.from_numpy(x)).logits.numpy(),
                                   own(torch.from_numpy(x)).logits.numpy(), atol=1e-5)
