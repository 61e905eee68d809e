r"""Heavy-tailed self-regularisation: the power-law exponent of each weight matrix's spectrum.

Martin & Mahoney, "Implicit self-regularization in deep neural networks: evidence from random
matrix theory and implications for learning" (JMLR 22(165), 2021) and "Predicting trends in the
quality of state-of-the-art neural networks without access to training or testing data" (Nature
Communications 12, 4122, 2021); their WeightWatcher package. The empirical spectral density of
a layer's correlation matrix, the eigenvalues :math:`\lambda_i` of :math:`X = W^\top W` (the
squared singular values of :math:`W`), is fitted in its tail by a power law

.. math::

    p(\lambda) \propto \lambda^{-\alpha}, \qquad \lambda \ge \lambda_{\min},

by maximum likelihood at every candidate :math:`\lambda_{\min}` (each eigenvalue but the
largest), keeping the one of least Kolmogorov-Smirnov distance (Clauset, Shalizi & Newman 2009,
"Power-law distributions in empirical data", SIAM Review 51(4)). Well-trained layers have
:math:`2 \lesssim \alpha \lesssim 6`; ``alpha_weighted`` :math:`= \alpha \log_{10}\lambda_{\max}`.

What "the same alpha" means is WeightWatcher 0.7.7's ``analyze()`` with its defaults, read from
its source: no normalisation of dense and embedding matrices (its ``normalize`` is off, so
:math:`X = W^\top W`, not :math:`W^\top W / N`; :math:`\alpha` is scale-free, :math:`\lambda_{\min}`
and ``alpha_weighted`` are not); a 2-D convolution kernel (out, in, kh, kw) is the kh * kw
matrices (out, in) of its kernel positions, their eigenvalues pooled, the kernel scaled by
:math:`\sqrt{1/2}` first (``conv2d_norm``); a layer is analysed only with between
``min_evals`` = 8 and ``max_evals`` = 15000 eigenvalues (:math:`M \cdot rf`, :math:`M` the
smaller side, :math:`rf` the kernel positions) and a larger side of at most ``max_N`` = 50000;
eigenvalues at or below :math:`10^{-5}` are dropped before the fit; no ``xmax`` and no
``fix_fingers``. The fit is WeightWatcher's own (``pl_package='ww'``, its default since 0.7), not
the ``powerlaw`` package's: the same estimators but with its empirical CDF :math:`k/n`,
:math:`k = 0..n-1`, and, with fewer than 20 eigenvalues, its small-sample rule (below). On a CUDA
machine WeightWatcher rounds the weights to float16 and drops eigenvalues below :math:`10^{-4}`;
grokscope matches its CPU path (float64 throughout).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from grokscope.measures.weights import _as_parameters
from grokscope.measures.thread_independent import on_one_thread

MIN_EVALS = 8
MAX_EVALS = 15000
MAX_N = 50000
# Eigenvalues at or below this are rank loss, not spectrum (WeightWatcher's EVALS_THRESH).
EIGENVALUE_FLOOR = 1e-5
# Below this many eigenvalues WeightWatcher switches to its small-sample fit.
SMALL_SAMPLE = 20
SMALL_SAMPLE_MIN_TAIL = 8


@dataclass(frozen=True)
class PowerLawFit:
    """The chosen tail: exponent, its lower and upper end, KS distance, eigenvalues in it and
    WeightWatcher's ``sigma`` :math:`(\\alpha - 1) / \\sqrt{n}`."""

    alpha: float
    xmin: float
    xmax: float
    ks_distance: float
    tail_size: int
    sigma: float


@dataclass(frozen=True)
class LayerSpectrum:
    """One layer's spectrum and fit. Without a fit (``reason`` says why) the fit's fields are
    ``nan``; ``lambda_max`` is there whenever the eigenvalues are."""

    name: str
    n_evals: int
    lambda_max: float
    fit: PowerLawFit | None
    reason: str | None

    @property
    def alpha_weighted(self) -> float:
        return self.fit.alpha * math.log10(self.lambda_max) if self.fit else math.nan


def _ks_distances(data: torch.Tensor, starts: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """max_k |(1 - (x_{i+k} / x_i)^(1 - alpha_i)) - k / n_i| over each tail i (sorted data)."""
    n_total = len(data)
    out = torch.empty(len(starts), dtype=data.dtype, device=data.device)
    positions = torch.arange(n_total, device=data.device)
    chunk = max(1, (1 << 22) // max(n_total, 1))  # at most ~4M entries at a time
    for lo in range(0, len(starts), chunk):
        i = starts[lo:lo + chunk].unsqueeze(1)  # (c, 1)
        alpha = alphas[lo:lo + chunk].unsqueeze(1)
        n = (n_total - i).to(data.dtype)
        fitted = 1 - (data.unsqueeze(0) / data[i]) ** (1 - alpha)  # (c, N)
        empirical = (positions.unsqueeze(0) - i).to(data.dtype) / n
        gap = (fitted - empirical).abs().masked_fill(positions.unsqueeze(0) < i, 0.0)
        out[lo:lo + chunk] = gap.max(dim=1).values
    return out


def power_law_fit(eigenvalues) -> PowerLawFit | None:
    r"""WeightWatcher's power-law fit of a spectrum's tail, or None when it has no fit.

    With the sorted eigenvalues :math:`x_0 \le \dots \le x_{N-1}` above the floor
    :math:`10^{-5}`, for each candidate :math:`x_{\min} = x_i` (:math:`i < N-1`, tail of
    :math:`n = N - i`), the continuous maximum-likelihood exponent and KS distance

    .. math::

        \hat\alpha_i = 1 + \frac{n}{\sum_{j \ge i} \log(x_j / x_i)}, \qquad
        D_i = \max_{0 \le k < n} \left| 1 - \Big(\frac{x_{i+k}}{x_i}\Big)^{1-\hat\alpha_i}
              - \frac{k}{n} \right|

        (D_i = 1 \text{ when } \hat\alpha_i \le 1), \qquad i^* = \arg\min_i D_i

    (Clauset et al. 2009; WeightWatcher 0.7.7's ``WWFit``). With :math:`N < 20` eigenvalues,
    WeightWatcher's small-sample rule instead: the bias-corrected
    :math:`\hat\alpha_i = 1 + (n - 1) / \sum_{j \ge i} \log(x_j / x_i)` over tails of at least 8
    (and a positive log-sum), :math:`i^* = \arg\min_i \big(D_i - 0.868 / \sqrt{n}\big)`, and
    when no tail qualifies the whole spectrum (:math:`i^* = 0`). The first minimum wins ties.

    Returns None when fewer than two eigenvalues clear the floor or all are equal (WeightWatcher
    reports a failed fit or a placeholder :math:`\alpha = 1` there). Computed in float64 on the
    input's device.
    """
    values = torch.as_tensor(eigenvalues).to(torch.float64).flatten()
    data = torch.sort(values[values > EIGENVALUE_FLOOR]).values
    size = len(data)
    if size < 2:
        return None
    logs = torch.log(data)
    # suffix[i] = sum_{j >= i} log x_j
    suffix = torch.flip(torch.cumsum(torch.flip(logs, (0,)), 0), (0,))
    starts = torch.arange(size - 1, device=data.device)
    n = (size - starts).to(torch.float64)
    spread = suffix[:-1] - n * logs[:-1]  # sum_j log(x_j / x_i)
    if size >= SMALL_SAMPLE:
        alphas = 1 + n / spread
        distances = torch.where(alphas > 1, _ks_distances(data, starts, alphas), torch.ones_like(alphas))
        best = int(torch.argmin(distances))
    else:
        alphas = 1 + (n - 1) / spread
        usable = (n >= SMALL_SAMPLE_MIN_TAIL) & (spread > 1e-12) & (alphas > 1)
        if usable.any():
            distances = _ks_distances(data, starts, alphas)
            objective = torch.where(usable, distances - 0.868 / n.sqrt(), torch.full_like(n, math.inf))
            best = int(torch.argmin(objective))
        else:
            if float(spread[0]) <= 1e-12:
                return None
            best = 0
            distances = _ks_distances(data, starts[:1], alphas[:1])
    alpha = float(alphas[best])
    tail = int(n[best])
    return PowerLawFit(alpha=alpha, xmin=float(data[best]), xmax=float(data[-1]),
                       ks_distance=float(distances[best]), tail_size=tail, sigma=(alpha - 1) / math.sqrt(tail))


def _eigenvalues(tensor: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """The pooled eigenvalues of W^T W of a matrix or a 2-D convolution kernel (scaled as
    WeightWatcher scales it), with its larger side N, smaller side M and kernel positions rf."""
    if tensor.ndim == 2:
        n_side, m_side, positions = max(tensor.shape), min(tensor.shape), 1
        singular = on_one_thread(torch.linalg.svdvals, tensor)
        return singular.pow(2), n_side, m_side, positions
    out_channels, in_channels, kh, kw = tensor.shape
    slices = tensor.permute(2, 3, 0, 1).reshape(kh * kw, out_channels, in_channels)  # (rf, out, in)
    singular = on_one_thread(torch.linalg.svdvals, slices * math.sqrt(0.5))  # conv2d_norm
    return singular.pow(2).flatten(), max(out_channels, in_channels), min(out_channels, in_channels), kh * kw


def layer_spectrum(name: str, tensor, *, min_evals: int = MIN_EVALS, max_evals: int = MAX_EVALS,
                   max_n: int = MAX_N) -> LayerSpectrum:
    r"""Eigenvalues of one layer's :math:`W^\top W` and their power-law fit (:func:`power_law_fit`).

    ``tensor`` is a matrix, or a 2-D convolution kernel (out, in, kh, kw) whose kernel-position
    matrices are pooled. The limits are WeightWatcher's defaults: a layer with fewer than
    ``min_evals`` or more than ``max_evals`` eigenvalues, or a larger side above ``max_n``, is not
    fitted (WeightWatcher skips it), nor is one with non-finite weights; its ``reason`` says why.
    """
    matrix = torch.as_tensor(tensor).detach().to(torch.float64)
    if matrix.ndim not in (2, 4):
        return LayerSpectrum(name, 0, math.nan, None,
                             f"a {matrix.ndim}-D weight: only matrices and 2-D convolution kernels have a spectrum")
    if not torch.isfinite(matrix).all():
        return LayerSpectrum(name, 0, math.nan, None, "weights not finite")
    evals, n_side, m_side, positions = _eigenvalues(matrix)
    count, lambda_max = m_side * positions, float(evals.max())
    if count < min_evals:
        reason = f"{count} eigenvalues, fewer than min_evals = {min_evals}"
    elif count > max_evals:
        reason = f"{count} eigenvalues, more than max_evals = {max_evals}"
    elif n_side > max_n:
        reason = f"a side of {n_side}, more than max_N = {max_n}"
    else:
        fit = power_law_fit(evals)
        if fit is not None:
            # WeightWatcher counts the tail over every eigenvalue, not only those above the floor.
            tail = int((evals >= fit.xmin).sum())
            fit = PowerLawFit(fit.alpha, fit.xmin, fit.xmax, fit.ks_distance, tail, fit.sigma)
            return LayerSpectrum(name, count, lambda_max, fit, None)
        reason = f"fewer than two distinct eigenvalues above {EIGENVALUE_FLOOR:g}"
    return LayerSpectrum(name, count, lambda_max, None, reason)


def spectral_layers(state: Mapping, parameters=None) -> list[tuple[str, torch.Tensor]]:
    """The weights whose spectra are fitted, as the weights family selects them: its parameters
    (buffers excluded, tied tensors once; see :func:`grokscope.measures.weights.weight_measures`),
    each matrix as it is, a 3-D weight (heads first) as one matrix per head ``name[h]``, a 4-D
    convolution kernel whole (its kernel positions pool into one spectrum); vectors have none."""
    layers = []
    for name, tensor in _as_parameters(state, parameters).items():
        if tensor.ndim == 3:
            layers += [(f"{name}[{h}]", tensor[h]) for h in range(tensor.shape[0])]
        elif tensor.ndim >= 2:
            layers.append((name, tensor))
    return layers


def spectra(layers: Sequence[tuple[str, torch.Tensor]], **limits) -> list[LayerSpectrum]:
    """:func:`layer_spectrum` of each ``(name, weight)``; ``limits`` are its ``min_evals``,
    ``max_evals`` and ``max_n``."""
    return [layer_spectrum(name, tensor, **limits) for name, tensor in layers]


SPECTRUM_METRICS = ("alpha", "alpha_weighted", "alpha_xmin", "alpha_xmax", "alpha_ks_distance", "alpha_tail_size",
                    "lambda_max")


def spectrum_rows(layer_spectra: Sequence[LayerSpectrum]) -> list[dict]:
    """Tidy rows ``{"metric", "layer", "value"}`` per layer, one per :data:`SPECTRUM_METRICS`:
    :math:`\\alpha`, :math:`\\alpha \\log_{10} \\lambda_{\\max}`, the tail's lower and upper end,
    the KS distance, the eigenvalues in the tail and :math:`\\lambda_{\\max}`; ``nan`` for a layer
    without a fit (its :attr:`LayerSpectrum.reason`)."""
    rows = []
    for spectrum in layer_spectra:
        fit = spectrum.fit
        values = (fit.alpha, spectrum.alpha_weighted, fit.xmin, fit.xmax, fit.ks_distance, fit.tail_size) if fit \
            else (math.nan,) * 6
        for metric, value in zip(SPECTRUM_METRICS, (*values, spectrum.lambda_max)):
            rows.append({"metric": metric, "layer": spectrum.name, "value": float(value)})
    return rows
