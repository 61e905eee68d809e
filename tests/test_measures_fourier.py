"""Fourier progress measures: against brute-force DFTs, and on a model that implements the
Fourier algorithm of Nanda et al. (2023) exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from grokscope.errors import GrokscopeError
from grokscope.measures.fourier import (
    excluded_logits,
    fourier_basis,
    fourier_losses,
    frequency_norms,
    gini,
    key_frequencies,
    restricted_logits,
)


@pytest.mark.parametrize("p", [7, 8, 13])
def test_basis_is_orthonormal(p):
    basis = fourier_basis(p)
    assert basis.shape == (p, p)
    assert torch.allclose(basis @ basis.T, torch.eye(p, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("p", [11, 12])
def test_frequency_norms_match_numpy_fft(p):
    embedding = np.random.default_rng(p).normal(size=(p, 6))
    spectrum = np.fft.fft(embedding, axis=0)  # (p, d): sum_x E_x exp(-2 pi i k x / p)
    # A real signal's energy at frequency k sits in the DFT bins k and p - k, each carrying
    # |E^_k|^2 / p of it (Parseval); the Nyquist bin of even p is a single bin.
    expected = []
    for k in range(1, p // 2 + 1):
        bins = {k, p - k}
        expected.append(math.sqrt(sum((np.abs(spectrum[b]) ** 2).sum() for b in bins) / p))
    np.testing.assert_allclose(frequency_norms(embedding), expected, rtol=1e-12)


def test_gini_matches_the_double_sum():
    values = np.random.default_rng(0).exponential(size=17)
    brute = np.abs(values[:, None] - values[None, :]).sum() / (2 * len(values) * values.sum())
    assert gini(values) == pytest.approx(brute, rel=1e-12)
    assert gini(np.ones(9)) == pytest.approx(0.0, abs=1e-12)
    assert gini(np.r_[np.zeros(9), 3.0]) == pytest.approx(1 - 1 / 10)
    assert math.isnan(gini(np.zeros(4)))


def brute_force_projection(logits: np.ndarray, key: list[int], sign: int) -> tuple[np.ndarray, np.ndarray]:
    """(restricted, excluded) logits by a 2-D DFT over (a, b): cos/sin of w_k (a + sign b) live in
    the bins (k, sign k) and (-k, -sign k); the mean lives in (0, 0)."""
    p = logits.shape[0]
    spectrum = np.fft.fft2(logits, axes=(0, 1))  # (p, p, C)
    key_bins = np.zeros((p, p), dtype=bool)
    for k in key:
        key_bins[k % p, (sign * k) % p] = key_bins[-k % p, (-sign * k) % p] = True
    kept = key_bins.copy()
    kept[0, 0] = True
    restricted = np.fft.ifft2(np.where(kept[..., None], spectrum, 0), axes=(0, 1)).real
    excluded = np.fft.ifft2(np.where(key_bins[..., None], 0, spectrum), axes=(0, 1)).real
    return restricted, excluded


@pytest.mark.parametrize(("p", "key", "sign"), [(11, [2, 5], 1), (11, [1, 3, 4], -1), (10, [2, 5], 1)])
def test_projections_match_a_two_dimensional_dft(p, key, sign):
    logits = np.random.default_rng(1).normal(size=(p, p, p))
    restricted, excluded = brute_force_projection(logits, key, sign)
    np.testing.assert_allclose(restricted_logits(logits, p, key, sign).numpy().reshape(p, p, p), restricted, atol=1e-10)
    np.testing.assert_allclose(excluded_logits(logits, p, key, sign).numpy().reshape(p, p, p), excluded, atol=1e-10)


class FourierAlgorithm(torch.nn.Module):
    """Modular addition (or subtraction, sign -1) the way Nanda et al. found a transformer does it:
    embed each residue as cos/sin of the key frequencies, combine a and b by the angle-addition
    identities, and score each answer c by sum_k cos(w_k (a + sign b - c))."""

    def __init__(self, p: int, key: list[int], scale: float, sign: int = 1):
        super().__init__()
        self.p, self.scale, self.sign = p, scale, sign
        w = 2 * math.pi * torch.tensor(key, dtype=torch.float64) / p  # (K,)
        x = torch.arange(p, dtype=torch.float64)[:, None]  # (p, 1)
        self.embed = torch.cat([torch.cos(w * x), torch.sin(w * x)], dim=1)  # (p, 2K)
        self.n_key = len(key)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # (B,), (B,) -> (B, p)
        cos_a, sin_a = self.embed[a].split(self.n_key, dim=1)  # (B, K) each
        cos_b, sin_b = self.embed[b].split(self.n_key, dim=1)
        sin_b = self.sign * sin_b  # sin(-w b) = -sin(w b)
        cos_sum = cos_a * cos_b - sin_a * sin_b  # cos(w (a + sign b))
        sin_sum = sin_a * cos_b + cos_a * sin_b  # sin(w (a + sign b))
        cos_c, sin_c = self.embed.split(self.n_key, dim=1)  # (p, K): cos(w c), sin(w c)
        return self.scale * (cos_sum @ cos_c.T + sin_sum @ sin_c.T)  # (B, p)


@pytest.mark.parametrize("sign", [1, -1])
def test_the_fourier_algorithm_lives_in_its_key_frequencies(sign):
    p, key = 23, [3, 7, 10]
    model = FourierAlgorithm(p, key, scale=6.0, sign=sign)
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    labels = (a + sign * b) % p
    logits = model(a, b)  # (p^2, p)
    assert bool((logits.argmax(1) == labels).all())

    norms = frequency_norms(model.embed)
    assert key_frequencies(norms) == key
    assert np.allclose(np.delete(norms, [k - 1 for k in key]), 0, atol=1e-12)
    # Three equal norms among eleven frequencies: G = 1 - 3/11 exactly.
    assert gini(norms) == pytest.approx(1 - len(key) / len(norms), abs=1e-12)

    split = torch.from_numpy(np.random.default_rng(0).permutation(p * p) % 3 == 0).to(torch.uint8)
    losses = fourier_losses(logits, labels, split, p, key, sign)
    for part in ("train", "test"):
        assert losses["restricted_loss"][part] == pytest.approx(losses["loss"][part], abs=1e-12)
        # Without its key frequencies the model's logits are constant: chance level, log p.
        assert losses["excluded_loss"][part] == pytest.approx(math.log(p), abs=1e-9)
        assert losses["excluded_loss"][part] > 5 * losses["loss"][part]

    # Leaving one key frequency out of the restriction costs loss; removing a frequency the
    # model does not use changes nothing.
    partial = fourier_losses(logits, labels, split, p, key[:-1], sign)
    assert partial["restricted_loss"]["train"] > 1.1 * losses["loss"]["train"]
    unused = fourier_losses(logits, labels, split, p, [1], sign)
    assert unused["excluded_loss"]["train"] == pytest.approx(losses["loss"]["train"], abs=1e-12)


def test_key_frequencies_and_bad_input():
    assert key_frequencies([0.1, 2.0, 0.2, 1.5, 0.05]) == [2, 4]
    assert key_frequencies(np.zeros(5)) == []
    with pytest.raises(GrokscopeError, match="key frequencies"):
        restricted_logits(np.zeros((25, 5)), 5, [3])
    with pytest.raises(GrokscopeError, match="p\\^2"):
        restricted_logits(np.zeros((24, 5)), 5, [1])


# --- the family on grokscope runs ----------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    from typer.testing import CliRunner

    from grokscope.cli import app

    out = tmp_path_factory.mktemp("runs")
    result = CliRunner().invoke(app, ["train", "--p", "11", "--width", "24", "--steps", "60", "--save-every", "30",
                                      "--save-log", "0", "--eval-every", "30", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "add-p11"


def measure(*args):
    from typer.testing import CliRunner

    from grokscope.cli import app

    return CliRunner().invoke(app, ["measure", *map(str, args)])


def test_family_on_an_mlp_run_matches_brute_force(mlp_run, tmp_path):
    import pandas as pd

    from grokscope import formats
    from grokscope.discovery import run_checkpoints
    from grokscope.loading import load_state
    from grokscope.tasks import load_task

    result = measure(mlp_run, "--metric", "fourier", "-o", tmp_path / "f.parquet", "-q")
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(tmp_path / "f.parquet")
    p = 11
    last = run_checkpoints(mlp_run)[-1]
    state = {k: v.double() for k, v in load_state(last).items()}
    first = state["layers.0.weight"].numpy()  # (width, 2p)

    # The MLP's embedding of residue x: its weight columns on a = x and on b = x, side by side.
    embedding = np.concatenate([first[:, :p].T, first[:, p:].T], axis=1)  # (p, 2 width)
    spectrum = np.fft.fft(embedding, axis=0)
    expected = np.sqrt(2 / p * (np.abs(spectrum[1:p // 2 + 1]) ** 2).sum(axis=1))
    rows = table[(table["step"] == last.step) & (table["metric"] == "fourier_norm")
                 & (table["layer"] == "layers.0.weight")].sort_values("frequency")
    np.testing.assert_allclose(rows["value"], expected, rtol=1e-5)
    key = key_frequencies(expected)
    assert sorted(table.loc[table["metric"] == "key_frequency", "frequency"].unique()) == key

    # Restricted and excluded loss of an independent forward pass, projected by 2-D DFT.
    data = load_task(formats.run.read_run(mlp_run).task)
    x = torch.from_numpy(data.x).double()
    logits = torch.relu(x @ state["layers.0.weight"].T + state["layers.0.bias"]) @ state["layers.1.weight"].T
    restricted, excluded = brute_force_projection(logits.numpy().reshape(p, p, p), key, 1)
    for name, values in (("restricted_loss", restricted), ("excluded_loss", excluded)):
        values = torch.from_numpy(values.reshape(p * p, p))
        for split, code in (("train", 0), ("test", 1)):
            mask = torch.from_numpy(data.split == code)
            brute = torch.nn.functional.cross_entropy(values[mask], torch.from_numpy(data.y)[mask]).item()
            row = table[(table["step"] == last.step) & (table["metric"] == name) & (table["split"] == split)]
            assert row["value"].item() == pytest.approx(brute, rel=1e-5)


def test_pinned_key_frequencies_and_their_errors(mlp_run, tmp_path):
    import pandas as pd

    result = measure(mlp_run, "--metric", "restricted_loss", "--key-frequencies", "2,5", "--force")
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(mlp_run / "measures" / "fourier.parquet")
    assert set(table.loc[table["metric"] == "key_frequency", "value"]) == {2.0, 5.0}
    assert (table["params"] == '{"key_frequencies": [2, 5]}').all()
    # The rows on stdout (from the table just written) hold the metric asked for only.
    result = measure(mlp_run, "--metric", "restricted_loss", "--key-frequencies", "2,5", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert "restricted_loss" in result.stdout and "excluded_loss" not in result.stdout

    result = measure(mlp_run, "--metric", "fourier", "--key-frequencies", "6", "--force")
    assert result.exit_code == 2 and "--key-frequencies" in result.stderr and "1..5" in result.stderr


def test_a_run_without_modular_arithmetic_gives_nan_and_a_warning(tmp_path):
    import pandas as pd
    from typer.testing import CliRunner

    from grokscope.cli import app

    result = CliRunner().invoke(app, ["train", "--task", "digits", "--train-size", "300", "--width", "8", "--steps", "2",
                                      "--save-log", "0", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    result = measure(tmp_path / "digits", "--metric", "fourier,weights")
    assert result.exit_code == 0, result.output
    assert "warning" in result.stderr and "modular" in result.stderr
    table = pd.read_parquet(tmp_path / "digits" / "measures" / "fourier.parquet")
    assert table["value"].isna().all() and set(table["metric"]) == {"restricted_loss", "excluded_loss"}
    assert (tmp_path / "digits" / "measures" / "weights.parquet").is_file()
