r"""O-information of every multiplet of variables, by the Gaussian copula.

The O-information (Rosas et al. 2019) of a set of :math:`k` variables :math:`Z = (Z_1, \dots, Z_k)`

.. math::

    \Omega(Z) = (k - 2)\, H(Z) + \sum_{j=1}^{k} \left[ H(Z_j) - H(Z_{-j}) \right]

is positive when redundancy dominates the dependencies of the set and negative when synergy does.
Entropies come from the Gaussian copula estimator (Ince et al. 2017): each variable is replaced by
the standard-normal scores of its ranks (:func:`copnorm`) and the entropy of a set is that of a
Gaussian with the sets's covariance, :math:`H(Z) = \tfrac12 \log\det(2 \pi e \Sigma_Z)`, minus
Ince's analytic bias correction.

Speed: the covariance is taken once; no entropy is ever re-estimated from samples. Two routes give
the same numbers:

* the *lattice* (:func:`oinfo_multiplets_from_cov`, up to :data:`LATTICE_MAX_VARIABLES` variables):
  the log-determinant of every subset is obtained from its prefix's by one Gaussian-elimination
  step (the Cholesky factor of a subset is its prefix's plus one row), all subsets of a level in a
  few batched tensor operations, into a table indexed by bitmask. Every leave-one-out entropy of a
  :math:`k`-subset is then the entropy of a :math:`(k-1)`-subset already in the table, so each
  O-information is a gather;
* the *direct* route (:func:`oinfo_of_sets`, any sets): one batched Cholesky per set of
  multiplets, with every leave-one-out log-determinant from the same factorisation,
  :math:`\log\det\Sigma_{-j} = \log\det\Sigma + \log(\Sigma^{-1})_{jj}`. Sets of different sizes
  share a batch by padding with an identity block, which adds nothing to either term.

References
----------
Rosas, F. E., Mediano, P. A. M., Gastpar, M., & Jensen, H. J. (2019). Quantifying high-order
interdependencies via multivariate extensions of the mutual information. Phys. Rev. E 100, 032305.

Ince, R. A. A., Giordano, B. L., Kayser, C., Rousselet, G. A., Gross, J., & Schyns, P. G. (2017).
A statistical framework for neuroimaging data analysis based on mutual information estimated via
a Gaussian copula. Human Brain Mapping 38, 1541-1573.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch

from grokscope.errors import GrokscopeError

#: Largest number of variables for which the bitmask lattice is used (its table holds 2**n floats).
LATTICE_MAX_VARIABLES = 22

#: A variable whose residual variance, given the variables before it, is below this fraction of
#: its variance is taken as a linear combination of them (a singular covariance).
COLLINEARITY_TOLERANCE = 1e-10

_UNITS = ("bits", "nats")
_TIES = ("random", "index")


# --------------------------------------------------------------------------------------------
# inputs


def _as_tensor(x, device=None, name: str = "x") -> torch.Tensor:
    """A float64 tensor on ``device`` (default: where ``x`` already is, else the CPU)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as exc:
            raise GrokscopeError(f"{name}: not a numeric array ({exc})") from None
    if not (t.dtype.is_floating_point or t.dtype in (torch.int8, torch.int16, torch.int32,
                                                      torch.int64, torch.uint8, torch.bool)):
        raise GrokscopeError(f"{name}: expected a real-valued array, got dtype {t.dtype}")
    return t.to(device=device if device is not None else t.device, dtype=torch.float64)


def _check_units(units: str) -> None:
    if units not in _UNITS:
        raise GrokscopeError(f"units: expected one of {', '.join(_UNITS)}, got {units!r}")


def _check_samples_matrix(x: torch.Tensor, name: str = "x") -> None:
    if x.ndim != 2:
        raise GrokscopeError(f"{name}: expected a 2-D array (samples, variables), got shape "
                             f"{tuple(x.shape)}")
    if x.shape[0] < 3:
        raise GrokscopeError(f"{name}: need at least 3 samples, got {x.shape[0]}")
    if not torch.isfinite(x).all():
        raise GrokscopeError(f"{name}: contains NaN or infinite values")


def _check_sizes(n_variables: int, min_size: int, max_size: int | None) -> int:
    max_size = n_variables if max_size is None else int(max_size)
    if min_size < 2:
        raise GrokscopeError(f"min_size: must be at least 2, got {min_size}")
    if max_size > n_variables:
        raise GrokscopeError(f"max_size: {max_size} exceeds the number of variables "
                             f"({n_variables})")
    if max_size < min_size:
        raise GrokscopeError(f"max_size: {max_size} is smaller than min_size ({min_size})")
    return max_size


def constant_columns(x) -> np.ndarray:
    """Indices of the columns of ``x`` (samples, variables) that take a single value.

    Their entropy is :math:`-\\infty`, so O-information is undefined for any set holding one.
    """
    t = _as_tensor(x)
    _check_samples_matrix(t)
    constant = t.amax(dim=0) == t.amin(dim=0)  # (m,)
    return torch.nonzero(constant).flatten().cpu().numpy()


# --------------------------------------------------------------------------------------------
# copula normalisation, covariance, entropy


def _ranks(x: torch.Tensor, ties: str, seed: int) -> torch.Tensor:
    """0-based rank of each entry within its column, ties broken as ``ties`` says."""
    n, m = x.shape
    if ties == "index":
        order = torch.argsort(x, dim=0, stable=True)  # (n, m)
    else:
        # An independent random order per column as the secondary sort key: the same as adding
        # an infinitesimal independent jitter to each variable, so a tied block (the zeros of a
        # ReLU) carries no spurious dependence between variables or on sample order.
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        keys = torch.rand((n, m), generator=gen, dtype=torch.float64).to(x.device)  # (n, m)
        shuffle = torch.argsort(keys, dim=0)  # (n, m)
        within = torch.argsort(torch.gather(x, 0, shuffle), dim=0, stable=True)  # (n, m)
        order = torch.gather(shuffle, 0, within)  # (n, m)
    ranks = torch.empty_like(order)
    positions = torch.arange(n, device=x.device).unsqueeze(1).expand(n, m)  # (n, m)
    ranks.scatter_(0, order, positions)
    return ranks


def _copnorm_tensor(x: torch.Tensor, ties: str = "random", seed: int = 0) -> torch.Tensor:
    if ties not in _TIES:
        raise GrokscopeError(f"ties: expected one of {', '.join(_TIES)}, got {ties!r}")
    n = x.shape[0]
    ranks = _ranks(x, ties, seed).to(torch.float64)  # (n, m)
    return torch.special.ndtri((ranks + 1.0) / (n + 1.0))  # (n, m)


def copnorm(x, *, ties: str = "random", seed: int = 0):
    r"""Copula-normalise each column: standard-normal scores of its ranks.

    .. math::

        \tilde z_{ij} = \Phi^{-1}\!\left(\frac{r_{ij}}{n + 1}\right)

    with :math:`r_{ij} \in \{1, \dots, n\}` the rank of sample :math:`i` within column :math:`j`
    and :math:`\Phi^{-1}` the standard-normal quantile function (Ince et al. 2017).

    Parameters
    ----------
    x : array_like or torch.Tensor, shape (n_samples, n_variables)
    ties : {"random", "index"}
        How equal values are ranked. ``"random"`` (default) breaks ties in an independent random
        order per column, fixed by ``seed``: the same as an infinitesimal jitter, so the many
        exact zeros of ReLU features add no dependence between neurons. ``"index"`` ranks tied
        samples in their row order, which is what the argsort-of-argsort of the reference code
        (Ince's ``gcmi``, ``hoi``, Clauw et al.) effectively does.
    seed : int
        Seed of the tie-breaking order (``ties="random"`` only).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        Same shape as ``x``, float64; a tensor on ``x``'s device when ``x`` is a tensor.
    """
    t = _as_tensor(x)
    _check_samples_matrix(t)
    z = _copnorm_tensor(t, ties, seed)
    return z if isinstance(x, torch.Tensor) else z.cpu().numpy()


def _covariance(z: torch.Tensor) -> torch.Tensor:
    """Sample covariance with the n - 1 denominator, as in Ince's ``gcmi``. (n, m) -> (m, m)."""
    zc = z - z.mean(dim=0, keepdim=True)  # (n, m)
    return zc.T @ zc / (z.shape[0] - 1)  # (m, m)


def _entropy_bias(sizes: torch.Tensor, n_samples: int) -> torch.Tensor:
    r"""Ince's bias of the plug-in Gaussian entropy of ``sizes`` variables, in nats.

    .. math::

        b(k) = \tfrac12 \left[ k \log\frac{2}{n - 1} + \sum_{i=1}^{k} \psi\!\left(\frac{n - i}{2}
        \right) \right]

    (the ``dterm`` and ``psiterms`` of ``ent_g``; also thoi's ``_gaussian_entropy_bias_correction``).
    """
    k_max = int(sizes.max()) if sizes.numel() else 0
    i = torch.arange(1, k_max + 1, dtype=torch.float64, device=sizes.device)
    psi_cumulative = torch.cat([torch.zeros(1, dtype=torch.float64, device=sizes.device),
                                torch.cumsum(torch.special.digamma((n_samples - i) / 2.0), 0)])
    k = sizes.to(torch.float64)
    return 0.5 * (k * math.log(2.0 / (n_samples - 1)) + psi_cumulative[sizes.long()])


def _oinfo_bias(sizes: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Bias of the O-information of ``sizes`` variables: (k-2) b(k) + k b(1) - k b(k-1)."""
    k = sizes.to(torch.float64)
    one = torch.ones_like(sizes)
    return ((k - 2) * _entropy_bias(sizes, n_samples) + k * _entropy_bias(one, n_samples)
            - k * _entropy_bias(sizes - 1, n_samples))


def _unit_scale(units: str) -> float:
    return 1.0 / math.log(2.0) if units == "bits" else 1.0


def gaussian_entropy(cov, n_samples: int, *, bias_correction: bool = True, units: str = "bits"):
    r"""Entropy of a Gaussian with covariance ``cov`` estimated from ``n_samples`` samples.

    .. math::

        H(Z) = \tfrac12 \log\det(2 \pi e\, \Sigma) - b(k), \qquad
        b(k) = \tfrac12 \left[ k \log\frac{2}{n - 1}
               + \sum_{i=1}^{k} \psi\!\left(\frac{n - i}{2}\right) \right]

    with :math:`k` the dimension, :math:`n` the number of samples and :math:`\psi` the digamma
    function; :math:`b` is the analytic bias of the plug-in estimator (Ince et al. 2017, ``ent_g``
    in ``gcmi``), subtracted when ``bias_correction`` is true.

    Parameters
    ----------
    cov : array_like or torch.Tensor, shape (k, k) or (batch, k, k)
        Symmetric positive-definite covariance(s).
    n_samples : int
        Number of samples the covariance was estimated from (> k).
    bias_correction : bool
        Subtract Ince's bias :math:`b(k)` (default true).
    units : {"bits", "nats"}

    Returns
    -------
    float or numpy.ndarray
        A float for one matrix, an array of shape (batch,) for a batch.
    """
    _check_units(units)
    c = _as_tensor(cov, name="cov")
    if c.ndim not in (2, 3) or c.shape[-1] != c.shape[-2]:
        raise GrokscopeError(f"cov: expected a square matrix or a batch of them, got shape "
                             f"{tuple(c.shape)}")
    k = c.shape[-1]
    if n_samples <= k:
        raise GrokscopeError(f"n_samples: must exceed the dimension ({k}), got {n_samples}")
    chol, info = torch.linalg.cholesky_ex(c)
    if bool((info != 0).any()):
        raise GrokscopeError("cov: not positive definite (duplicated or constant variables?)")
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    h = 0.5 * (k * math.log(2.0 * math.pi * math.e) + logdet)
    if bias_correction:
        h = h - _entropy_bias(torch.tensor([k], device=c.device), n_samples)[0]
    h = h * _unit_scale(units)
    return float(h) if c.ndim == 2 else h.cpu().numpy()


def _check_positive_definite(cov: torch.Tensor, ridge: float) -> torch.Tensor:
    """``cov`` (+ ridge on the diagonal), or a GrokscopeError naming the collinear columns."""
    if ridge < 0:
        raise GrokscopeError(f"ridge: must be >= 0, got {ridge}")
    m = cov.shape[0]
    if ridge > 0:
        cov = cov + ridge * torch.eye(m, dtype=cov.dtype, device=cov.device)
    chol, info = torch.linalg.cholesky_ex(cov)
    residual = torch.diagonal(chol) ** 2 / torch.diagonal(cov)  # (m,) 1 - R^2 on earlier columns
    bad = (info != 0) or bool((~(residual > COLLINEARITY_TOLERANCE)).any())
    if not bad:
        return cov
    corr = cov / torch.sqrt(torch.outer(torch.diagonal(cov), torch.diagonal(cov)))
    close = torch.triu(corr.abs() > 1.0 - COLLINEARITY_TOLERANCE, diagonal=1).nonzero()
    if len(close):
        i, j = (int(v) for v in close[0])
        what = f"columns {i} and {j} are duplicates (correlation 1 after copula normalisation)"
    else:
        j = int(torch.nonzero(~(residual > COLLINEARITY_TOLERANCE)).flatten()[0]) \
            if info == 0 else int(info) - 1
        what = f"column {j} is a linear combination of the columns before it"
    raise GrokscopeError(f"x: singular covariance, {what}; drop them or pass ridge > 0 (e.g. "
                         "1e-6) to regularise")


# --------------------------------------------------------------------------------------------
# the lattice: log-determinant of every subset, indexed by bitmask


def _subset_logdets(cov: torch.Tensor, max_size: int) -> torch.Tensor:
    """Table T with T[mask] = log det cov[S, S] for every subset S of size <= max_size.

    Subsets are grown in increasing variable order; a node is (its bitmask, its log-determinant,
    the covariance of the variables after its largest one conditioned on it). Adding variable j
    is one step of Gaussian elimination on that conditional covariance: the pivot is the
    conditional variance of j, whose log is the increment of the log-determinant, and the
    rank-one downdate is the child's conditional covariance. Nodes are grouped by their largest
    variable so that each group, and all its children at once, is one batched tensor operation.
    """
    n = cov.shape[0]
    device = cov.device
    table = torch.zeros(1 << n, dtype=torch.float64, device=device)  # (2^n,)
    bits = torch.ones(1, dtype=torch.int64, device=device) << torch.arange(n, device=device)
    # groups[m] = (masks (B,), logdets (B,), conditional covariance of the variables > m (B, r, r))
    groups = {-1: (torch.zeros(1, dtype=torch.int64, device=device),
                   torch.zeros(1, dtype=torch.float64, device=device),
                   cov.unsqueeze(0))}
    for level in range(max_size):
        children: dict[int, list] = {}
        for m, (masks, logdets, cond) in groups.items():
            pivots = torch.diagonal(cond, dim1=-2, dim2=-1)  # (B, r)
            child_logdets = logdets.unsqueeze(1) + torch.log(pivots)  # (B, r)
            child_masks = masks.unsqueeze(1) | bits[m + 1:]  # (B, r)
            table[child_masks.flatten()] = child_logdets.flatten()
            r = cond.shape[-1]
            if level + 1 == max_size or r < 2:
                continue
            # downdated[b, a] = cond[b] - cond[b, :, a] cond[b, a, :] / cond[b, a, a]: the
            # conditional covariance once variable m+1+a joins the conditioning set
            scaled_rows = cond / pivots.unsqueeze(2)  # (B, r, r)
            downdated = cond.unsqueeze(1) - cond.unsqueeze(3) * scaled_rows.unsqueeze(2)  # (B,r,r,r)
            for a in range(r - 1):  # the child adding variable m+1+a keeps the variables after it
                children.setdefault(m + 1 + a, []).append(
                    (child_masks[:, a], child_logdets[:, a], downdated[:, a, a + 1:, a + 1:]))
        groups = {j: (torch.cat([c[0] for c in parts]), torch.cat([c[1] for c in parts]),
                      torch.cat([c[2] for c in parts]))
                  for j, parts in children.items()}
    return table


def _lexicographic_masks(n: int, min_size: int, max_size: int, device) -> list[torch.Tensor]:
    """Bitmasks of the k-subsets of range(n) in lexicographic order, for each k in the range.

    Lex(a, k), the k-subsets of {a, ..., n-1}, is those holding a (a joined to Lex(a+1, k-1))
    followed by those that do not (Lex(a+1, k)); built from a = n down to 0.
    """
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    lex = [torch.zeros(1, dtype=torch.int64, device=device)] + [empty] * max_size  # a = n
    for a in range(n - 1, -1, -1):
        lex = [lex[0]] + [torch.cat([lex[k - 1] | (1 << a), lex[k]])
                          for k in range(1, max_size + 1)]
    return lex[min_size:max_size + 1]


def _lattice_values(cov: torch.Tensor, n_samples: int, min_size: int, max_size: int,
                    bias_correction: bool) -> torch.Tensor:
    """O-information (nats) of every multiplet, sizes ascending, lexicographic within a size.

    The leave-one-out sum is built for all 2^n bitmasks at once, one vectorised pass per
    variable j: seen as a (2^(n-1-j), 2, 2^j) array, the masks holding j are the slice
    [:, 1, :] and the same masks without j the slice [:, 0, :], so nothing is gathered.
    """
    n = cov.shape[0]
    device = cov.device
    table = _subset_logdets(cov, max_size)  # (2^n,)
    # sum over members j of [log var_j - log det S_{-j}], accumulated term by term so that for
    # two variables the terms are exact negatives and the O-information is exactly 0
    loo = torch.zeros(1 << n, dtype=torch.float64, device=device)  # (2^n,)
    for j in range(n):
        loo.view(-1, 2, 1 << j)[:, 1, :] += table[1 << j] - table.view(-1, 2, 1 << j)[:, 0, :]
    sizes = torch.arange(min_size, max_size + 1, device=device)
    bias = _oinfo_bias(sizes, n_samples) if bias_correction else torch.zeros(len(sizes))
    values = []
    for k, masks, b in zip(sizes.tolist(), _lexicographic_masks(n, min_size, max_size, device),
                           bias.tolist()):
        values.append(0.5 * ((k - 2) * table[masks] + loo[masks]) - b)  # (C(n, k),)
    return torch.cat(values)


# --------------------------------------------------------------------------------------------
# the direct route: any list of sets, one batched factorisation each


def _pad_sets(sets: Sequence[Sequence[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Sets -> (indices padded with -1 (B, s_max), sizes (B,))."""
    sizes = torch.tensor([len(s) for s in sets], dtype=torch.int64)
    width = int(sizes.max()) if len(sets) else 0
    padded = torch.full((len(sets), width), -1, dtype=torch.int64)
    for row, s in enumerate(sets):
        padded[row, :len(s)] = torch.as_tensor(list(s), dtype=torch.int64)
    return padded.to(device), sizes.to(device)


def _direct_values(cov: torch.Tensor, padded: torch.Tensor, sizes: torch.Tensor, n_samples: int,
                   bias_correction: bool) -> torch.Tensor:
    r"""O-information (nats) of the sets in ``padded`` (B, s) with -1 padding.

    .. math::

        \Omega = \tfrac12 \Big[ \sum_j \log \Sigma_{jj} - 2 \log\det\Sigma
                 - \sum_j \log(\Sigma^{-1})_{jj} \Big] - \beta(k)

    which is the definition with :math:`\log\det\Sigma_{-j} = \log\det\Sigma + \log(\Sigma^{-1})_{jj}`
    (the :math:`\log 2\pi e` terms cancel). Padding is an identity block: it contributes 0 to
    every term.
    """
    b, s = padded.shape
    valid = padded >= 0  # (B, s)
    idx = padded.clamp(min=0)  # (B, s)
    sub = cov[idx.unsqueeze(2), idx.unsqueeze(1)]  # (B, s, s)
    eye = torch.eye(s, dtype=cov.dtype, device=cov.device).expand(b, s, s)
    both = valid.unsqueeze(2) & valid.unsqueeze(1)  # (B, s, s)
    sub = torch.where(both, sub, eye)  # (B, s, s)
    chol = torch.linalg.cholesky(sub)  # (B, s, s)
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (B,)
    inv_chol = torch.linalg.solve_triangular(chol, eye, upper=False)  # (B, s, s)
    precision_diag = (inv_chol * inv_chol).sum(dim=1)  # (B, s)  diag(L^-T L^-1)
    log_var = torch.log(torch.diagonal(sub, dim1=-2, dim2=-1))  # (B, s)
    omega = 0.5 * ((log_var - torch.log(precision_diag)).sum(1) - 2.0 * logdet)  # (B,)
    if bias_correction:
        omega = omega - _oinfo_bias(sizes, n_samples)
    # For two variables the O-information is identically 0 (H(Z1) + H(Z2) - H(Z2) - H(Z1));
    # the formula above only reaches 0 up to rounding, so it is set exactly.
    return torch.where(sizes == 2, torch.zeros_like(omega), omega)


#: Elements (batch x size x size) per batched factorisation in the direct route.
_DIRECT_CHUNK_ELEMENTS = 1 << 23


def _direct_values_chunked(cov: torch.Tensor, sets: Sequence[Sequence[int]], n_samples: int,
                           bias_correction: bool) -> torch.Tensor:
    """Direct route over many sets: bucketed by size (padding waste < 1 row in 8) and chunked."""
    out = torch.empty(len(sets), dtype=torch.float64, device=cov.device)
    if not len(sets):
        return out
    lengths = np.array([len(s) for s in sets])
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):
        width = int(lengths[order[start]])
        limit = width + max(1, width // 8)
        per_chunk = max(1, _DIRECT_CHUNK_ELEMENTS // (limit * limit))
        stop = start
        while stop < len(order) and lengths[order[stop]] < limit and stop - start < per_chunk:
            stop += 1
        rows = order[start:stop]
        padded, sizes = _pad_sets([sets[i] for i in rows], cov.device)
        out[torch.as_tensor(rows, device=cov.device)] = _direct_values(
            cov, padded, sizes, n_samples, bias_correction)
        start = stop
    return out


# --------------------------------------------------------------------------------------------
# public entry points


def _all_multiplets(n: int, min_size: int, max_size: int) -> list[tuple[int, ...]]:
    return [c for k in range(min_size, max_size + 1) for c in itertools.combinations(range(n), k)]


def oinfo_values_from_cov(cov: torch.Tensor, n_samples: int, min_size: int = 2,
                          max_size: int | None = None, *,
                          bias_correction: bool = True) -> torch.Tensor:
    """O-information in nats of every multiplet of a checked covariance, as a tensor on its device.

    The hot-path form of :func:`oinfo_multiplets_from_cov` (same order, no tuples, no checks of
    positive definiteness): the lattice up to :data:`LATTICE_MAX_VARIABLES` variables, the direct
    route past it.
    """
    n = cov.shape[0]
    max_size = _check_sizes(n, min_size, max_size)
    if n <= LATTICE_MAX_VARIABLES:
        values = _lattice_values(cov, n_samples, min_size, max_size, bias_correction)
    else:
        values = _direct_values_chunked(cov, _all_multiplets(n, min_size, max_size), n_samples,
                                        bias_correction)
    if not bool(torch.isfinite(values).all()):
        raise GrokscopeError("cov: O-information is not finite; the covariance is numerically "
                             "singular (pass ridge > 0 to regularise)")
    return values


def _prepare_cov(cov, n_samples: int, ridge: float, device) -> torch.Tensor:
    c = _as_tensor(cov, device, name="cov")
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise GrokscopeError(f"cov: expected a square matrix, got shape {tuple(c.shape)}")
    if n_samples <= c.shape[0]:
        raise GrokscopeError(f"n_samples: must exceed the number of variables ({c.shape[0]}), "
                             f"got {n_samples}")
    return _check_positive_definite(c, ridge)


def oinfo_multiplets_from_cov(cov, n_samples: int, min_size: int = 2, max_size: int | None = None,
                              units: str = "bits", bias_correction: bool = True, *,
                              ridge: float = 0.0, device=None):
    r"""O-information of every multiplet of variables, from their (copula) covariance.

    .. math::

        \Omega(S) = (k - 2) H(S) + \sum_{j \in S} [H(Z_j) - H(S \setminus j)], \quad k = |S|

    with Gaussian entropies :math:`H(S) = \frac12\log\det(2\pi e\,\Sigma_S) - b(k)`
    (see :func:`gaussian_entropy`; Rosas et al. 2019, Ince et al. 2017).

    Parameters
    ----------
    cov : array_like or torch.Tensor, shape (n, n)
        Covariance of the copula-normalised variables.
    n_samples : int
        Samples it was estimated from (for the bias correction).
    min_size, max_size : int
        Multiplet sizes, inclusive; ``max_size`` defaults to ``n``. Size-2 values are exactly 0.
    units : {"bits", "nats"}
    bias_correction : bool
        Subtract Ince's bias from every entropy (default true).
    ridge : float
        Added to the diagonal before anything else. A singular covariance (duplicated or
        collinear variables) raises :class:`GrokscopeError` unless ``ridge > 0``; with a ridge the
        values are finite but, for collinear sets, dominated by :math:`\log` ridge.
    device : str or torch.device, optional
        Where to compute (default: ``cov``'s device, the CPU for arrays).

    Returns
    -------
    multiplets : list of tuple of int
        Sizes ascending, lexicographic within a size.
    values : numpy.ndarray, shape (len(multiplets),)
    """
    _check_units(units)
    c = _prepare_cov(cov, n_samples, ridge, device)
    max_size = _check_sizes(c.shape[0], min_size, max_size)
    values = oinfo_values_from_cov(c, n_samples, min_size, max_size,
                                   bias_correction=bias_correction)
    return (_all_multiplets(c.shape[0], min_size, max_size),
            (values * _unit_scale(units)).cpu().numpy())


def oinfo_of_sets(cov, sets: Sequence[Sequence[int]], n_samples: int, units: str = "bits",
                  bias_correction: bool = True, *, ridge: float = 0.0, device=None) -> np.ndarray:
    r"""O-information of the given sets of variables (each at least 2 distinct indices).

    Same quantity and parameters as :func:`oinfo_multiplets_from_cov`, for an arbitrary list of
    sets (of any sizes) instead of all multiplets: one batched Cholesky factorisation per bucket
    of similar sizes, every leave-one-out entropy from it via
    :math:`\log\det\Sigma_{-j} = \log\det\Sigma + \log(\Sigma^{-1})_{jj}`.
    """
    _check_units(units)
    c = _prepare_cov(cov, n_samples, ridge, device)
    n = c.shape[0]
    clean = []
    for s in sets:
        t = tuple(int(v) for v in s)
        if len(t) < 2 or len(set(t)) != len(t) or min(t) < 0 or max(t) >= n:
            raise GrokscopeError(f"sets: {t} is not a set of at least 2 distinct indices in "
                                 f"0..{n - 1}")
        clean.append(t)
    values = _direct_values_chunked(c, clean, n_samples, bias_correction)
    return (values * _unit_scale(units)).cpu().numpy()


def oinfo_multiplets(x, min_size: int = 2, max_size: int | None = None, units: str = "bits",
                     bias_correction: bool = True, *, device=None, copnormed: bool = False,
                     ties: str = "random", seed: int = 0, ridge: float = 0.0):
    r"""O-information of every multiplet of the columns of ``x``, by the Gaussian copula.

    .. math::

        \Omega(S) = (k - 2) H(S) + \sum_{j \in S} [H(Z_j) - H(S \setminus j)]

    ``x`` is copula-normalised (:func:`copnorm`) and its covariance taken once; every entropy
    comes from that one matrix (:func:`oinfo_multiplets_from_cov`). Rosas et al. 2019; Ince et al.
    2017.

    Parameters
    ----------
    x : array_like or torch.Tensor, shape (n_samples, n_variables)
    min_size, max_size : int
        Multiplet sizes, inclusive (``max_size`` defaults to all variables).
    units : {"bits", "nats"}
    bias_correction : bool
        Ince's analytic bias correction of every entropy (default true).
    device : str or torch.device, optional
        Where to compute (default: ``x``'s device; a CUDA tensor is computed on its GPU).
    copnormed : bool
        ``x`` is already copula-normalised: use it as it is.
    ties, seed
        Tie-breaking of the ranks, see :func:`copnorm`.
    ridge : float
        See :func:`oinfo_multiplets_from_cov`; a singular covariance raises unless ``ridge > 0``.

    Returns
    -------
    multiplets : list of tuple of int
        Column indices; sizes ascending, lexicographic within a size.
    values : numpy.ndarray
        O-information of each multiplet, in ``units``.

    Raises
    ------
    GrokscopeError
        A constant column (its entropy is :math:`-\infty`), duplicated / collinear columns
        (unless ``ridge > 0``), bad sizes or shapes.
    """
    _check_units(units)
    t = _as_tensor(x, device)
    _check_samples_matrix(t)
    if not copnormed:
        constant = torch.nonzero(t.amax(dim=0) == t.amin(dim=0)).flatten()
        if len(constant):
            raise GrokscopeError(f"x: column {int(constant[0])} is constant; O-information is "
                                 "undefined for a constant variable (drop it)")
        t = _copnorm_tensor(t, ties, seed)
    return oinfo_multiplets_from_cov(_covariance(t), t.shape[0], min_size, max_size, units,
                                     bias_correction, ridge=ridge)
