"""Power-law fits of weight spectra: planted exponents and a brute-force xmin search."""

import math

import numpy as np
import pytest
import torch

from grokscope.measures.spectra import (
    LayerSpectrum,
    layer_spectrum,
    power_law_fit,
    spectra,
    spectral_layers,
    spectrum_rows,
)


def planted_matrix(eigenvalues, rows, seed=0):
    """W = U diag(sqrt(lambda)) V^T with orthonormal U (rows x M) and V (M x M): W^T W has
    exactly the eigenvalues lambda."""
    generator = torch.Generator().manual_seed(seed)
    m = len(eigenvalues)
    u, _ = torch.linalg.qr(torch.randn(rows, m, generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(m, m, generator=generator, dtype=torch.float64))
    return u @ torch.diag(torch.as_tensor(eigenvalues).sqrt()) @ v.T


def pareto(alpha, size, scale, seed):
    # Density proportional to x^-alpha above `scale`: inverse CDF of a uniform.
    uniform = np.random.default_rng(seed).uniform(size=size)
    return scale * uniform ** (-1 / (alpha - 1))


@pytest.mark.parametrize("alpha", [2.5, 4.0])
def test_alpha_recovers_a_planted_power_law(alpha):
    eigenvalues = pareto(alpha, 1000, scale=0.5, seed=int(alpha * 10))
    spectrum = layer_spectrum("w", planted_matrix(eigenvalues, 1200))
    fit = spectrum.fit
    assert spectrum.reason is None and spectrum.n_evals == 1000
    # The MLE's standard error is (alpha - 1) / sqrt(n_tail); the KS search keeps most of a pure
    # power law in the tail.
    assert fit.tail_size >= 300
    assert abs(fit.alpha - alpha) <= 3 * (alpha - 1) / math.sqrt(fit.tail_size)
    assert fit.xmin >= 0.5 * (1 - 1e-9)
    assert spectrum.lambda_max == pytest.approx(eigenvalues.max(), rel=1e-9)
    assert spectrum.alpha_weighted == pytest.approx(fit.alpha * math.log10(eigenvalues.max()), rel=1e-12)


def brute_force_fit(eigenvalues):
    """Every candidate xmin by hand: the continuous MLE and the KS distance with the empirical
    CDF k / n; the least distance wins (the small-sample rule below 20 eigenvalues)."""
    x = sorted(float(v) for v in eigenvalues if v > 1e-5)
    size = len(x)
    candidates = []
    for i in range(size - 1):
        tail = x[i:]
        n = len(tail)
        log_sum = sum(math.log(v / x[i]) for v in tail)
        alpha = 1 + (n - 1 if size < 20 else n) / log_sum if log_sum > 0 else math.inf
        if alpha <= 1:
            distance = 1.0
        else:
            distance = max(abs(1 - (v / x[i]) ** (1 - alpha) - k / n) for k, v in enumerate(tail))
        if size < 20:
            if n < 8 or log_sum <= 1e-12 or alpha <= 1:
                continue
            candidates.append((distance - 0.868 / math.sqrt(n), i, alpha, distance))
        else:
            candidates.append((distance, i, alpha, distance))
    if not candidates:
        log_sum = sum(math.log(v / x[0]) for v in x)
        alpha = 1 + (size - 1) / log_sum
        distance = max(abs(1 - (v / x[0]) ** (1 - alpha) - k / size) for k, v in enumerate(x))
        return x[0], alpha, distance
    _, i, alpha, distance = min(candidates, key=lambda c: (c[0], c[1]))
    return x[i], alpha, distance


@pytest.mark.parametrize("size, seed", [(150, 0), (60, 1), (15, 2), (9, 3), (6, 4)])
def test_xmin_by_least_ks_distance_against_a_brute_force_loop(size, seed):
    rng = np.random.default_rng(seed)
    # A bulk and a heavy tail, as in trained layers: the KS search has a real choice to make.
    eigenvalues = np.concatenate([rng.lognormal(0.0, 0.3, size - size // 3), pareto(3.0, size // 3, 2.0, seed)])
    fit = power_law_fit(torch.from_numpy(eigenvalues))
    xmin, alpha, distance = brute_force_fit(eigenvalues)
    assert fit.xmin == pytest.approx(xmin, rel=1e-12)
    assert fit.alpha == pytest.approx(alpha, rel=1e-10)
    assert fit.ks_distance == pytest.approx(distance, rel=1e-9, abs=1e-12)
    assert fit.tail_size == int((eigenvalues >= xmin).sum())
    assert fit.xmax == pytest.approx(eigenvalues.max(), rel=1e-12)


def test_alpha_is_scale_free_and_xmin_scales():
    eigenvalues = pareto(3.0, 200, 1.0, seed=7)
    w = planted_matrix(eigenvalues, 300, seed=1)
    one, scaled = layer_spectrum("w", w), layer_spectrum("w", 3 * w)
    assert scaled.fit.alpha == pytest.approx(one.fit.alpha, rel=1e-9)
    assert scaled.fit.xmin == pytest.approx(9 * one.fit.xmin, rel=1e-9)
    assert scaled.lambda_max == pytest.approx(9 * one.lambda_max, rel=1e-9)


def test_eigenvalues_below_the_floor_are_rank_loss():
    # Rank 30 of 40: ten eigenvalues at ~0 leave the fit but still count towards the layer size.
    eigenvalues = np.concatenate([pareto(3.0, 30, 1.0, seed=3), np.zeros(10)])
    spectrum = layer_spectrum("w", planted_matrix(eigenvalues, 50))
    assert spectrum.n_evals == 40
    reference = power_law_fit(torch.from_numpy(eigenvalues[:30]))
    assert spectrum.fit.alpha == pytest.approx(reference.alpha, rel=1e-8)
    assert spectrum.fit.xmin == pytest.approx(reference.xmin, rel=1e-8)


def test_layers_without_a_fit_are_nan_with_the_reason():
    small = layer_spectrum("small", torch.randn(7, 30))
    assert small.fit is None and small.reason == "7 eigenvalues, fewer than min_evals = 8"
    assert math.isnan(small.alpha_weighted) and small.lambda_max > 0
    broken = layer_spectrum("broken", torch.full((10, 10), math.nan))
    assert broken.reason == "weights not finite"
    flat = layer_spectrum("flat", torch.eye(12))  # twelve equal eigenvalues: no tail to fit
    assert flat.fit is None and "distinct" in flat.reason
    limited = layer_spectrum("big", torch.randn(30, 20), max_evals=19)
    assert limited.reason == "20 eigenvalues, more than max_evals = 19"
    rows = {r["metric"]: r["value"] for r in spectrum_rows([small])}
    assert math.isnan(rows["alpha"]) and math.isnan(rows["alpha_xmin"]) and rows["lambda_max"] == small.lambda_max


def test_a_convolution_kernel_pools_its_kernel_positions():
    kernel = torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    spectrum = layer_spectrum("conv", kernel)
    pooled = np.sort(np.concatenate([np.linalg.svd(kernel[:, :, i, j].numpy() * math.sqrt(0.5), compute_uv=False) ** 2
                                     for i in range(3) for j in range(3)]))
    assert spectrum.n_evals == 8 * 9
    reference = power_law_fit(torch.from_numpy(pooled))
    assert spectrum.fit.alpha == pytest.approx(reference.alpha, rel=1e-10)
    assert spectrum.lambda_max == pytest.approx(pooled.max(), rel=1e-10)


def test_selection_follows_the_weights_family():
    w = torch.randn(20, 12)
    heads = torch.randn(3, 16, 10)
    state = {"a.weight": w, "a.bias": torch.randn(20), "tied.weight": w, "heads": heads,
             "attn.mask": torch.ones(20, 20), "bn.running_mean": torch.zeros(12, 12)}
    layers = dict(spectral_layers(state))
    assert list(layers) == ["a.weight", "heads[0]", "heads[1]", "heads[2]"]
    torch.testing.assert_close(layers["heads[1]"], heads[1].double())
    results = spectra(list(layers.items()))
    assert all(isinstance(r, LayerSpectrum) and r.reason is None for r in results)
    rows = spectrum_rows(results)
    assert len(rows) == 4 * 7
    alpha = {r["layer"]: r["value"] for r in rows if r["metric"] == "alpha"}
    assert alpha["heads[2]"] == results[3].fit.alpha
