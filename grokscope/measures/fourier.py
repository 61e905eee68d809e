r"""Fourier progress measures of modular addition (Nanda et al. 2023).

Source: Nanda, Chan, Lieberum, Smith & Steinhardt (2023), "Progress measures for grokking via
mechanistic interpretability", ICLR, and their code
(github.com/mechanistic-interpretability-grokking/progress-measures-paper, ``transformers.py``
and ``helpers.py``). A network that has grokked :math:`(a + b) \bmod p` embeds each residue
through a few *key frequencies* :math:`\omega_k = 2\pi k / p`, computes
:math:`\cos(\omega_k(a+b))` and :math:`\sin(\omega_k(a+b))` from the products of the embedded
:math:`\cos(\omega_k a), \sin(\omega_k a)` and :math:`\cos(\omega_k b), \sin(\omega_k b)`, and reads
the answer :math:`c` out of the logits

.. math::

    \ell(a, b, c) \approx \sum_{k \in K} \alpha_k \cos(\omega_k (a + b - c))
    = \sum_{k \in K} \alpha_k \left[\cos(\omega_k(a+b)) \cos(\omega_k c)
      + \sin(\omega_k(a+b)) \sin(\omega_k c)\right].

The measures here find that structure in the weights and in the logits over all :math:`p^2`
inputs:

- the Fourier spectrum of the embedding (:func:`frequency_norms`) and its sparsity
  (:func:`gini`), from which the key frequencies are read (:func:`key_frequencies`);
- the restricted loss (the logits kept only along the key frequencies' directions) and the
  excluded loss (those directions removed) (:func:`restricted_logits`, :func:`excluded_logits`,
  :func:`fourier_losses`).

Notation: :math:`F` is the orthonormal real Fourier basis of :math:`\mathbb{R}^p`
(:func:`fourier_basis`): the constant :math:`1/\sqrt p`, then for :math:`k = 1 .. \lfloor p/2
\rfloor` the unit vectors :math:`c_k \propto \cos(\omega_k x)` and :math:`s_k \propto
\sin(\omega_k x)`, :math:`x = 0 .. p-1` (for even :math:`p`, :math:`s_{p/2} = 0` is left out).
Subtraction :math:`(a - b) \bmod p` is handled with the directions of :math:`a - b` (``sign=-1``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from grokscope.errors import GrokscopeError


def _as_float64(values) -> torch.Tensor:
    tensor = torch.as_tensor(values)
    return tensor.detach().to(torch.float64)


def fourier_basis(p: int, device=None) -> torch.Tensor:
    r"""The orthonormal real Fourier basis of :math:`\mathbb{R}^p`, one basis vector per row.

    Rows: the constant, then :math:`c_1, s_1, c_2, s_2, \dots` (:math:`s_{p/2}` omitted for even
    :math:`p`, where it is zero), each scaled to unit norm, as in Nanda et al.'s
    ``make_fourier_basis``.

    Returns
    -------
    torch.Tensor
        (p, p) float64: ``basis @ basis.T`` is the identity.
    """
    if p < 2:
        raise GrokscopeError(f"fourier: p must be at least 2, got {p}")
    x = torch.arange(p, dtype=torch.float64, device=device)  # (p,)
    rows = [torch.ones(p, dtype=torch.float64, device=device)]
    for k in range(1, p // 2 + 1):
        rows.append(torch.cos(2 * math.pi * k * x / p))
        if 2 * k != p:
            rows.append(torch.sin(2 * math.pi * k * x / p))
    basis = torch.stack(rows)  # (p, p)
    return basis / basis.norm(dim=1, keepdim=True)


def frequencies(p: int) -> list[int]:
    """The frequencies of the spectrum: 1 .. floor(p / 2) (the constant is not a frequency)."""
    return list(range(1, p // 2 + 1))


def frequency_norms(embedding) -> np.ndarray:
    r"""The norm of each Fourier frequency of an embedding.

    .. math::

        n_k = \sqrt{\lVert c_k^\top E \rVert^2 + \lVert s_k^\top E \rVert^2},
        \qquad k = 1 .. \lfloor p/2 \rfloor

    for :math:`E` (p, d) whose row :math:`x` is the embedding of residue :math:`x` (the
    transformer's token embeddings of 0 .. p-1; for the MLP, the first layer's weight columns on
    the one-hots of a and of b, side by side). Equivalently, with the discrete Fourier
    transform :math:`\hat E_k = \sum_x E_x e^{-i\omega_k x}`,
    :math:`n_k^2 = (2/p) \lVert \hat E_k \rVert^2` (:math:`1/p` for :math:`k = p/2`). Nanda et al.
    plot these norms (their Fig. 3) and find a handful of key frequencies standing out.

    Parameters
    ----------
    embedding : array_like (p, d)

    Returns
    -------
    numpy.ndarray
        (floor(p/2),) float64: entry ``k - 1`` is :math:`n_k`.
    """
    matrix = _as_float64(embedding)
    if matrix.ndim != 2 or matrix.shape[0] < 2:
        raise GrokscopeError(f"fourier: the embedding must be a (p, d) matrix, got shape {tuple(matrix.shape)}")
    p = matrix.shape[0]
    coefficients = fourier_basis(p, matrix.device) @ matrix  # (p, d): constant, c1, s1, c2, s2, ...
    energy = coefficients.pow(2).sum(dim=1)  # (p,)
    # Row 2k-1 is c_k and row 2k is s_k; for even p the last row is c_{p/2} alone.
    paired = torch.zeros(p // 2, dtype=torch.float64, device=matrix.device)  # (floor(p/2),)
    paired += energy[1::2][: p // 2]
    sines = energy[2::2]  # (ceil(p/2) - 1,)
    paired[: len(sines)] += sines
    return paired.sqrt().cpu().numpy()


def gini(values) -> float:
    r"""The Gini coefficient of non-negative values: 0 for equal values, :math:`1 - 1/n` for one
    non-zero value among :math:`n`.

    .. math::

        G = \frac{\sum_i \sum_j |x_i - x_j|}{2 n \sum_i x_i}
          = \frac{2 \sum_{i=1}^n i\, x_{(i)}}{n \sum_i x_i} - \frac{n + 1}{n}

    with :math:`x_{(1)} \le \dots \le x_{(n)}` sorted. Nanda et al. (2023, Sec. 5.2) track the
    Gini coefficient of the Fourier norms of the embedding as a sparsity measure. All zeros give
    ``nan``.
    """
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if len(x) == 0 or np.any(x < 0):
        raise GrokscopeError("gini: needs at least one value, none negative")
    total = x.sum()
    if not total > 0:
        return math.nan
    n = len(x)
    ranks = np.arange(1, n + 1)
    return float(2 * (ranks * x).sum() / (n * total) - (n + 1) / n)


def key_frequencies(norms, ratio: float = 0.25) -> list[int]:
    r"""The key frequencies of a spectrum: those whose norm is at least ``ratio`` times the largest.

    .. math::

        K = \{k : n_k \ge r \max_j n_j\}

    After grokking, weight decay has shrunk every frequency the algorithm does not use, so the
    key ones stand far above the rest; any ``ratio`` between the two groups gives the same set.

    Parameters
    ----------
    norms : array_like
        :func:`frequency_norms`: entry ``k - 1`` is frequency ``k``.
    ratio : float
        In (0, 1].

    Returns
    -------
    list[int]
        The key frequencies, ascending (empty for a zero spectrum).
    """
    if not 0 < ratio <= 1:
        raise GrokscopeError(f"key frequencies: ratio must lie in (0, 1], got {ratio}")
    norms = np.asarray(norms, dtype=np.float64)
    if len(norms) == 0 or not np.all(np.isfinite(norms)) or not norms.max() > 0:
        return []
    return [int(k) + 1 for k in np.flatnonzero(norms >= ratio * norms.max())]


def sum_directions(p: int, key: list[int], sign: int = 1, device=None) -> torch.Tensor:
    r"""Unit vectors of :math:`\mathbb{R}^{p^2}` along :math:`\cos(\omega_k(a + \sigma b))` and
    :math:`\sin(\omega_k(a + \sigma b))` for each key frequency :math:`k` (:math:`\sigma` =
    ``sign``), over inputs enumerated a-major (row ``a * p + b``). They are orthonormal for
    distinct frequencies in 1 .. floor(p/2).

    Returns
    -------
    torch.Tensor
        (2 |K|, p^2) float64 (the zero sine of k = p/2 is left out).
    """
    if sign not in (1, -1):
        raise GrokscopeError(f"fourier: sign must be 1 (a + b) or -1 (a - b), got {sign}")
    bad = [k for k in key if not 1 <= k <= p // 2]
    if bad or len(set(key)) != len(key):
        raise GrokscopeError(f"fourier: key frequencies must be distinct integers in 1..{p // 2}, got {list(key)}")
    residues = torch.arange(p, dtype=torch.float64, device=device)
    combined = (residues[:, None] + sign * residues[None, :]).reshape(-1)  # (p^2,) a + sign*b, a-major
    rows = []
    for k in key:
        rows.append(torch.cos(2 * math.pi * k * combined / p))
        if 2 * k != p:
            rows.append(torch.sin(2 * math.pi * k * combined / p))
    if not rows:
        return torch.zeros(0, p * p, dtype=torch.float64, device=device)
    directions = torch.stack(rows)  # (2|K|, p^2)
    return directions / directions.norm(dim=1, keepdim=True)


def _grid_logits(logits, p: int) -> torch.Tensor:
    matrix = _as_float64(logits)
    if matrix.ndim == 3:
        matrix = matrix.reshape(-1, matrix.shape[-1])
    if matrix.ndim != 2 or matrix.shape[0] != p * p:
        raise GrokscopeError(
            f"fourier: logits must cover all p^2 = {p * p} inputs a-major, got shape {tuple(_as_float64(logits).shape)}"
        )
    return matrix  # (p^2, C)


def restricted_logits(logits, p: int, key: list[int], sign: int = 1) -> torch.Tensor:
    r"""The logits restricted to the key frequencies' directions (plus their mean).

    .. math::

        \ell_R = \bar\ell + \sum_{k \in K} \left(u_k u_k^\top + v_k v_k^\top\right) \ell

    where :math:`\ell` is (p^2, C), one column per output class, :math:`u_k, v_k` are the unit
    vectors of :math:`\cos(\omega_k(a+b))` and :math:`\sin(\omega_k(a+b))` over the inputs
    (:func:`sum_directions`) and :math:`\bar\ell` the mean logit of each class over all inputs.
    The mean is Nanda et al.'s "bias correction" (``test_logits(..., bias_correction=True)``): it
    restores the input-independent part that the projection drops. Logits of the exact Fourier
    algorithm are unchanged.

    Parameters
    ----------
    logits : array_like (p^2, C) or (p, p, C)
        Over every input (a, b), a-major.

    Returns
    -------
    torch.Tensor
        (p^2, C) float64.
    """
    matrix, projected = _key_projection(logits, p, key, sign)
    return matrix.mean(dim=0, keepdim=True) + projected


def excluded_logits(logits, p: int, key: list[int], sign: int = 1) -> torch.Tensor:
    r"""The logits with the key frequencies' directions removed.

    .. math::

        \ell_E = \ell - \sum_{k \in K} \left(u_k u_k^\top + v_k v_k^\top\right) \ell

    (notation of :func:`restricted_logits`). Nanda et al. measure the loss of these on the
    training data: it rises while the network builds the Fourier circuit, because the training
    data is then fitted through the key frequencies rather than memorised.

    Returns
    -------
    torch.Tensor
        (p^2, C) float64.
    """
    matrix, projected = _key_projection(logits, p, key, sign)
    return matrix - projected


def _key_projection(logits, p: int, key: list[int], sign: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the logits as a (p^2, C) float64 matrix, their projection onto the key directions)."""
    matrix = _grid_logits(logits, p)  # (p^2, C)
    directions = sum_directions(p, key, sign, matrix.device)  # (2|K|, p^2)
    return matrix, directions.T @ (directions @ matrix)


def cross_entropy(logits, labels) -> float:
    r"""Mean cross-entropy :math:`-\frac1N \sum_i \log \mathrm{softmax}(\ell_i)_{y_i}`, in float64."""
    matrix = _as_float64(logits)
    labels = torch.as_tensor(labels, device=matrix.device).long()
    if len(labels) == 0:
        return math.nan
    return float(torch.nn.functional.cross_entropy(matrix, labels))


def fourier_losses(logits, labels, split, p: int, key: list[int], sign: int = 1) -> dict[str, dict[str, float]]:
    r"""Cross-entropy of the logits, of the restricted and of the excluded logits, per split.

    .. math::

        \mathcal L_S(\ell) = -\frac{1}{|S|} \sum_{(a,b) \in S} \log \operatorname{softmax}(\ell(a, b))_{y(a,b)}

    for :math:`\ell`, :math:`\ell_R` (:func:`restricted_logits`) and :math:`\ell_E`
    (:func:`excluded_logits`), on the training and the test inputs :math:`S`. The projections use
    all :math:`p^2` inputs, as in Nanda et al. (``calculate_trig_loss`` and
    ``calculate_excluded_loss``); there, restricted loss falls well before test loss, and excluded
    loss on the training data rises during "circuit formation".

    Parameters
    ----------
    logits : array_like (p^2, C)
        The logits of every input (a, b), a-major.
    labels : array_like (p^2,)
        The answer of each input.
    split : array_like (p^2,)
        0 for training inputs, 1 for test inputs.
    p, key, sign : see :func:`restricted_logits`.

    Returns
    -------
    dict
        ``{"loss" | "restricted_loss" | "excluded_loss": {"train": float, "test": float}}``;
        ``nan`` for a split without inputs.
    """
    matrix = _grid_logits(logits, p)  # (p^2, C)
    labels = torch.as_tensor(labels, device=matrix.device).long()  # (p^2,)
    split = torch.as_tensor(split, device=matrix.device)  # (p^2,)
    if labels.shape != (p * p,) or split.shape != (p * p,):
        raise GrokscopeError(f"fourier: labels and split need one entry per input ({p * p})")
    variants = {
        "loss": matrix,
        "restricted_loss": restricted_logits(matrix, p, key, sign),
        "excluded_loss": excluded_logits(matrix, p, key, sign),
    }
    out = {}
    for name, values in variants.items():
        out[name] = {}
        for split_name, code in (("train", 0), ("test", 1)):
            mask = split == code
            out[name][split_name] = cross_entropy(values[mask], labels[mask])
    return out
