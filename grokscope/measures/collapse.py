r"""Neural-collapse measures of penultimate-layer features.

Notation used throughout: ``h`` is the ``(N, d)`` feature matrix, ``y`` the ``(N,)`` integer
labels, :math:`\mathcal{C}` the set of classes present in ``y`` (:math:`K = |\mathcal{C}|`),
:math:`n_c` the number of samples of class :math:`c`,

.. math::

    \mu_c = \frac{1}{n_c} \sum_{i: y_i = c} h_i, \qquad
    \mu_G = \frac{1}{N} \sum_i h_i, \qquad
    \bar\mu_c = \mu_c - \mu_G

the class means, the global mean and the centred class means. Only the classes present in ``y``
take part, so a test split that lacks some classes is measured over the classes it has; label
values are never used as numbers (relabelling the classes changes nothing) except to pick the
rows of the output weights ``w`` for NC3 and NC4.

Sources: Papyan, Han & Donoho (2020), "Prevalence of neural collapse during the terminal phase
of deep learning training", PNAS 117(40) (NC1-NC4); Sato & Sakamoto (2025), "Explaining
grokking and information bottleneck through neural collapse emergence", arXiv:2509.20829, and
their code github.com/keitaroskmt/collapse-dynamics ``src/neural_collapse.py`` (RNC1, the
class-size-weighted between-class variance, the class-mean condition number).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from grokscope.errors import GrokscopeError
from grokscope.measures.thread_independent import fixed_order_mean, fixed_order_sum, on_one_thread

#: Keys of :func:`collapse_measures` without and with output weights, in table order.
COLLAPSE_KEYS = (
    "within_var",
    "between_var",
    "nc1",
    "rnc1",
    "rnc1_sup",
    "nc1_papyan",
    "nc2_equinorm",
    "nc2_equiangularity",
    "nc2_cond",
)
COLLAPSE_KEYS_WITH_WEIGHTS = (*COLLAPSE_KEYS, "nc3", "nc4")


@dataclass(frozen=True)
class _ClassStats:
    """Everything the measures share, computed once per call."""

    h: torch.Tensor  # (N, d) float64
    classes: torch.Tensor  # (K,) the label values present, ascending
    counts: torch.Tensor  # (K,) float64
    means: torch.Tensor  # (K, d) class means mu_c
    centred_means: torch.Tensor  # (K, d) mu_c - mu_G
    residuals: torch.Tensor  # (N, d) h_i - mu_{y_i}


def _as_features(h) -> torch.Tensor:
    h = torch.as_tensor(h)
    if h.ndim != 2:
        raise GrokscopeError(f"h: expected a 2-D (samples, features) array, got shape {tuple(h.shape)}")
    if h.is_complex() or h.dtype == torch.bool:
        raise GrokscopeError(f"h: expected real features, got dtype {h.dtype}")
    return h.to(torch.float64)


def _as_labels(y, n: int, device: torch.device) -> torch.Tensor:
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise GrokscopeError(f"y: expected {n} labels (one per row of h), got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise GrokscopeError(f"y: expected integer class labels, got dtype {y.dtype}")
    return y.to(device=device, dtype=torch.int64)


def _as_weights(w, d: int, labels: torch.Tensor) -> torch.Tensor:
    w = torch.as_tensor(w)
    if w.ndim != 2 or w.shape[1] != d:
        raise GrokscopeError(
            f"w: expected output weights of shape (classes, {d}), got shape {tuple(w.shape)}"
        )
    lowest, highest = int(labels.min()), int(labels.max())
    if lowest < 0 or highest >= w.shape[0]:
        bad = lowest if lowest < 0 else highest
        raise GrokscopeError(f"w: has {w.shape[0]} rows (classes) but y contains the label {bad}")
    return w.to(device=labels.device, dtype=torch.float64)


def _class_stats(h: torch.Tensor, labels: torch.Tensor) -> _ClassStats:
    classes, index = torch.unique(labels, return_inverse=True)  # (K,), (N,)
    k, d = classes.numel(), h.shape[1]
    counts = torch.bincount(index, minlength=k).to(h.dtype)  # (K,)
    sums = torch.zeros(k, d, dtype=h.dtype, device=h.device).index_add_(0, index, h)  # (K, d)
    means = sums / counts[:, None]  # (K, d)
    global_mean = h.mean(dim=0)  # (d,)
    return _ClassStats(
        h=h,
        classes=classes,
        counts=counts,
        means=means,
        centred_means=means - global_mean,
        residuals=h - means[index],
    )


def _prepare(h, y) -> tuple[torch.Tensor, torch.Tensor]:
    features = _as_features(h)
    labels = _as_labels(y, features.shape[0], features.device)
    n_classes = torch.unique(labels).numel()
    if n_classes < 2:
        raise GrokscopeError(f"y: neural-collapse measures need at least two classes, found {n_classes}")
    return features, labels


def _finite_stats(h, y) -> _ClassStats | None:
    """Class statistics of validated inputs, or None for non-finite features (a diverged run)."""
    features, labels = _prepare(h, y)
    if not torch.isfinite(features).all():
        return None
    return _class_stats(features, labels)


# --- the formulas, each on shared statistics -------------------------------------------------


def _within_var(s: _ClassStats) -> torch.Tensor:
    return fixed_order_sum(s.residuals.pow(2)) / s.h.shape[0]


def _between_var(s: _ClassStats) -> torch.Tensor:
    # Weighted by class size (as the authors' code does), so that within + between equals the
    # total variance (1/N) sum_i ||h_i - mu_G||^2 exactly.
    weights = s.counts / s.counts.sum()  # (K,)
    return fixed_order_sum(weights * s.centred_means.pow(2).sum(dim=1))


def _feature_norms(s: _ClassStats) -> torch.Tensor:
    return torch.linalg.vector_norm(s.h, dim=1)  # (N,)


def _nc1_papyan(s: _ClassStats) -> torch.Tensor:
    # S_B = Mc^T Mc / K with Mc the (K, d) centred means, so from Mc = U diag(s) V^T,
    # S_B^+ = V diag(K / s^2) V^T over the non-zero singular values, and
    # tr(S_W S_B^+) / K = (1/N) sum_j ||R v_j||^2 / s_j^2 with R the (N, d) residuals.
    _, sing, vh = on_one_thread(torch.linalg.svd, s.centred_means, full_matrices=False)  # (r,), (r, d)
    tolerance = sing.max() * max(s.centred_means.shape) * torch.finfo(sing.dtype).eps
    keep = sing > tolerance
    projected = s.residuals @ vh[keep].T  # (N, r')
    return fixed_order_sum(projected.pow(2).sum(dim=0) / sing[keep].pow(2)) / s.h.shape[0]


def _nc2_equinorm(s: _ClassStats) -> torch.Tensor:
    norms = torch.linalg.vector_norm(s.centred_means, dim=1)  # (K,)
    mean = fixed_order_mean(norms)
    return fixed_order_mean((norms - mean).pow(2)).sqrt() / mean


def _nc2_equiangularity(s: _ClassStats) -> torch.Tensor:
    k = s.centred_means.shape[0]
    unit = s.centred_means / torch.linalg.vector_norm(s.centred_means, dim=1, keepdim=True)  # (K, d)
    cosines = unit @ unit.T  # (K, K)
    off_diagonal = ~torch.eye(k, dtype=torch.bool, device=cosines.device)
    return fixed_order_mean((cosines[off_diagonal] + 1.0 / (k - 1)).abs())


def _nc2_cond(s: _ClassStats) -> torch.Tensor:
    # The authors compute sqrt(cond(M M^T)) on the *uncentred* (K, d) class means, which is
    # sigma_max(M) / sigma_min(M) when K <= d; with K > d, M M^T is singular: infinite.
    k, d = s.means.shape
    if k > d:
        return torch.tensor(math.inf, dtype=s.means.dtype)
    sing = on_one_thread(torch.linalg.svdvals, s.means)  # (K,)
    return sing.max() / sing.min()


def _nc3(s: _ClassStats, w: torch.Tensor) -> torch.Tensor:
    w_present = w[s.classes]  # (K, d)
    m = s.centred_means
    return fixed_order_sum((w_present / _frobenius(w_present) - m / _frobenius(m)).pow(2))


def _frobenius(matrix: torch.Tensor) -> torch.Tensor:
    return fixed_order_sum(matrix.pow(2)).sqrt()


def _nc4(s: _ClassStats, w: torch.Tensor) -> torch.Tensor:
    network = (s.h @ w.T).argmax(dim=1)  # (N,) over all rows of w
    # argmin_c ||h - mu_c||^2 = argmin_c (||mu_c||^2 - 2 h . mu_c): ||h||^2 is the same for all c.
    scores = s.means.pow(2).sum(dim=1) - 2.0 * s.h @ s.means.T  # (N, K)
    nearest_centre = s.classes[scores.argmin(dim=1)]  # (N,) as label values
    return fixed_order_mean((network == nearest_centre).to(s.h.dtype))


# --- public functions --------------------------------------------------------------------------


@torch.no_grad()
def nc1(h, y) -> float:
    r"""NC1 as a variance ratio: within-class over between-class variance.

    .. math::

        \mathrm{NC1} = \frac{\frac{1}{N}\sum_i \lVert h_i - \mu_{y_i}\rVert^2}
                             {\sum_{c} \frac{n_c}{N} \lVert \mu_c - \mu_G \rVert^2}

    The between-class variance is weighted by class size, as in Sato & Sakamoto's code, so the
    two terms add up to the total variance. No ``1e-8`` is added to the denominator (their code
    does): identical class means give ``inf``.

    Parameters
    ----------
    h : array_like, shape (N, d)
        Features (numpy array or torch tensor; computed in float64 on its device).
    y : array_like of int, shape (N,)
        Class labels; any integer values.

    Returns
    -------
    float
        ``nan`` if ``h`` holds a non-finite value.

    Raises
    ------
    GrokscopeError
        Wrong shapes, non-integer labels, or fewer than two classes.
    """
    stats = _finite_stats(h, y)
    if stats is None:
        return math.nan
    return float(_within_var(stats) / _between_var(stats))


@torch.no_grad()
def rnc1(h, y) -> float:
    r"""RNC1 of Sato & Sakamoto (2025) as their code computes it.

    .. math::

        \mathrm{RNC1} = \frac{\frac{1}{N}\sum_i \lVert h_i - \mu_{y_i}\rVert^2}
                              {\left(\frac{1}{N}\sum_i \lVert h_i \rVert\right)^2}

    Invariant to rescaling ``h``; zero exactly when every sample sits at its class mean.

    Parameters
    ----------
    h : array_like, shape (N, d)
        Features.
    y : array_like of int, shape (N,)
        Class labels; any integer values.

    Returns
    -------
    float
        ``nan`` if ``h`` holds a non-finite value or is all zero.

    Raises
    ------
    GrokscopeError
        Wrong shapes, non-integer labels, or fewer than two classes.
    """
    stats = _finite_stats(h, y)
    if stats is None:
        return math.nan
    return float(_within_var(stats) / fixed_order_mean(_feature_norms(stats)).pow(2))


@torch.no_grad()
def rnc1_sup(h, y) -> float:
    r"""RNC1 normalised by the largest feature norm, as in the paper's bound.

    .. math::

        \mathrm{RNC1}_{\sup} = \frac{\frac{1}{N}\sum_i \lVert h_i - \mu_{y_i}\rVert^2}
                                      {\max_i \lVert h_i \rVert^2}

    Source: Sato & Sakamoto (2025), where the feature scale in the bound is a supremum norm.

    Parameters
    ----------
    h : array_like, shape (N, d)
        Features.
    y : array_like of int, shape (N,)
        Class labels; any integer values.

    Returns
    -------
    float
        ``nan`` if ``h`` holds a non-finite value or is all zero.

    Raises
    ------
    GrokscopeError
        Wrong shapes, non-integer labels, or fewer than two classes.
    """
    stats = _finite_stats(h, y)
    if stats is None:
        return math.nan
    return float(_within_var(stats) / _feature_norms(stats).max().pow(2))


@torch.no_grad()
def collapse_measures(h, y, w=None) -> dict[str, float]:
    r"""Every neural-collapse measure of one feature matrix, sharing the class means.

    With :math:`\bar M` the ``(K, d)`` matrix of centred class means (rows :math:`\bar\mu_c`),
    :math:`M` the uncentred one, :math:`r_i = h_i - \mu_{y_i}`:

    .. math::

        \text{within\_var} &= \tfrac{1}{N} \textstyle\sum_i \lVert r_i \rVert^2, \qquad
        \text{between\_var} = \textstyle\sum_c \tfrac{n_c}{N} \lVert \bar\mu_c \rVert^2 \\
        \text{nc1} &= \text{within\_var} / \text{between\_var}, \quad
        \text{rnc1} = \frac{\text{within\_var}}{(\frac{1}{N}\sum_i \lVert h_i\rVert)^2}, \quad
        \text{rnc1\_sup} = \frac{\text{within\_var}}{\max_i \lVert h_i\rVert^2} \\
        \text{nc1\_papyan} &= \tfrac{1}{K} \operatorname{tr}(\Sigma_W \Sigma_B^{+}), \quad
        \Sigma_W = \tfrac{1}{N} \textstyle\sum_i r_i r_i^\top, \quad
        \Sigma_B = \tfrac{1}{K} \bar M^\top \bar M \\
        \text{nc2\_equinorm} &= \operatorname{std}_c \lVert \bar\mu_c \rVert /
                                 \operatorname{mean}_c \lVert \bar\mu_c \rVert \\
        \text{nc2\_equiangularity} &= \operatorname{mean}_{c \ne c'}
            \left| \cos(\bar\mu_c, \bar\mu_{c'}) + \tfrac{1}{K-1} \right| \\
        \text{nc2\_cond} &= \sqrt{\kappa_2(M M^\top)}
            = \sigma_{\max}(M) / \sigma_{\min}(M) \\
        \text{nc3} &= \left\lVert \frac{W_{\mathcal{C}}}{\lVert W_{\mathcal{C}}\rVert_F}
            - \frac{\bar M}{\lVert \bar M \rVert_F} \right\rVert_F^2 \\
        \text{nc4} &= \tfrac{1}{N} \textstyle\sum_i
            \mathbf{1}\left[\arg\max_k (W h_i)_k = \arg\min_{c \in \mathcal{C}}
            \lVert h_i - \mu_c \rVert\right]

    Choices, and where they come from:

    - ``between_var`` weights classes by size (Sato & Sakamoto's code); Papyan's
      :math:`\Sigma_B` in ``nc1_papyan`` is the unweighted class average, as in Papyan et al.
      The two agree for balanced classes.
    - ``nc1_papyan`` uses the pseudo-inverse, keeping singular values of :math:`\bar M` above
      :math:`\sigma_{\max} \max(K, d)\,\epsilon_{\text{float64}}`.
    - ``nc2_equinorm`` uses the population standard deviation, as Papyan et al.'s equinorm plot.
    - ``nc2_equiangularity`` is Papyan et al.'s *maximal-angle* equiangularity, zero only for a
      simplex ETF; the standard deviation of the cosines vanishes for every equiangular
      configuration, whatever the angle.
    - ``nc2_cond`` follows the authors' code: uncentred class means, ``inf`` when ``K > d``
      (their code refuses that case).
    - ``nc3`` takes the rows of ``w`` for the classes present in ``y``.
    - ``nc4`` is the *agreement* (tends to 1 under collapse; Papyan et al. plot the mismatch
      ``1 - nc4``). The network's prediction is over all rows of ``w`` and has no bias (the
      default model's output layer has none); the nearest class centre is among the classes
      present.

    Parameters
    ----------
    h : array_like, shape (N, d)
        Penultimate features (numpy array or torch tensor; computed in float64 on its device).
    y : array_like of int, shape (N,)
        Class labels; any integer values unless ``w`` is given, then row indices of ``w``.
    w : array_like, shape (K_out, d), optional
        Output-layer weights; adds ``nc3`` and ``nc4``.

    Returns
    -------
    dict[str, float]
        Keys :data:`COLLAPSE_KEYS` (plus ``nc3``, ``nc4`` with ``w``). Every value is ``nan`` if
        ``h`` or ``w`` holds a non-finite value (a diverged checkpoint): the caller warns.

    Raises
    ------
    GrokscopeError
        Wrong shapes, non-integer labels, fewer than two classes, or a label outside the rows
        of ``w``.
    """
    features, labels = _prepare(h, y)
    weights = None if w is None else _as_weights(w, features.shape[1], labels)
    keys = COLLAPSE_KEYS if weights is None else COLLAPSE_KEYS_WITH_WEIGHTS
    if not torch.isfinite(features).all() or (weights is not None and not torch.isfinite(weights).all()):
        return dict.fromkeys(keys, math.nan)

    stats = _class_stats(features, labels)
    within, between = _within_var(stats), _between_var(stats)
    norms = _feature_norms(stats)
    values = {
        "within_var": within,
        "between_var": between,
        "nc1": within / between,
        "rnc1": within / fixed_order_mean(norms).pow(2),
        "rnc1_sup": within / norms.max().pow(2),
        "nc1_papyan": _nc1_papyan(stats),
        "nc2_equinorm": _nc2_equinorm(stats),
        "nc2_equiangularity": _nc2_equiangularity(stats),
        "nc2_cond": _nc2_cond(stats),
    }
    if weights is not None:
        values["nc3"] = _nc3(stats, weights)
        values["nc4"] = _nc4(stats, weights)
    return {key: float(values[key]) for key in keys}
