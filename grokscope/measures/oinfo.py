r"""O-information of every multiplet of variables, by the Gaussian copula.

The O-information (Rosas et al. 2019) of a set of :math:`k` variables :math:`Z = (Z_1, \dots, Z_k)`

.. math::

    \Omega(Z) = (k - 2)\, H(Z) + \sum_{j=1}^{k} \left[ H(Z_j) - H(Z_{-j}) \right]

is positive when redundancy dominates the dependencies of the set and negative when synergy does.
Entropies come from the Gaussian copula estimator (Ince et al. 2017): each variable is replaced by
the standard-normal scores of its ranks (:func:`copnorm`) and the entropy of a set is that of a
Gaussian with the sets's covariance, :math:`H(Z) = \tfrac12 \log\det(2 \pi e \Sigma_Z)`, minus
Ince's analytic bias correction.

Tied values (the exact zeros of ReLU features) have no rank order; :func:`copula_covariance`
takes them in a random order (``ties="random"``, an infinitesimal jitter), averaged over every
order in closed form (``"average"``), or in row order (``"index"``, the reference code's, which
makes the value depend on the order in which the samples are stored).

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
  share a batch by padding with an identity block, which adds nothing to either term;
* the *block lattice* (``_union_values``, every union of groups of variables: the neurons mode
  of :func:`grokscope.measures.multiplets.oinfo_search`): the same two terms from the
  precision matrix, each union's complement grown one group at a time (a Schur complement of
  one group per step), so nothing larger than one group is ever factorised.

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
_TIES = ("random", "average", "index")


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


def _sort_rows(keys: torch.Tensor, *, indices: bool = False) -> torch.Tensor:
    """Each row of ``keys`` sorted (or its argsort, when ``indices``), on ``keys``' device.

    On the CPU this goes through NumPy, whose vectorised sorts are about ten times faster than
    torch's there (a few ms against ~40 ms for 250 x 3763); elsewhere it is ``torch.sort``.
    """
    if keys.device.type == "cpu":
        a = keys.numpy()
        return torch.from_numpy(np.argsort(a, axis=1) if indices else np.sort(a, axis=1))
    out = torch.sort(keys, dim=1)
    return out.indices if indices else out.values


def _value_keys(xt: torch.Tensor) -> torch.Tensor:
    """(m, n) non-negative int64 keys below 2^32 with the order and the ties of each row of ``xt``.

    Values that are all exact float32 (stored features always are) are keyed by their float32
    bits, made monotone, with no sort at all; others by the rank of their value's first
    occurrence, from one argsort.
    """
    single = xt.to(torch.float32)
    if torch.equal(single.to(torch.float64), xt):
        bits = (single + 0.0).view(torch.int32).to(torch.int64)  # + 0.0 turns -0.0 into 0.0
        # sign-magnitude to two's complement order: reverse the negatives' magnitudes
        return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + (1 << 31)
    m, n = xt.shape
    by_value = _sort_rows(xt, indices=True).to(xt.device)  # (m, n)
    ordered = torch.gather(xt, 1, by_value)  # (m, n)
    starts = torch.ones_like(ordered, dtype=torch.bool)  # (m, n) first of its run of equals
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    positions = torch.arange(n, device=xt.device).expand(m, n)  # (m, n)
    first = torch.cummax(torch.where(starts, positions, 0), dim=1).values  # (m, n)
    return torch.empty_like(first).scatter_(1, by_value, first)


def _generator(seed: int) -> torch.Generator:
    """The CPU generator of the random tie orders: drawn on the CPU, so any device gets the same."""
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _order(x: torch.Tensor, ties: str, generator: torch.Generator | None = None,
           key: torch.Tensor | None = None) -> torch.Tensor:
    """(m, n): for each column of ``x`` (n, m), its rows from smallest to largest value.

    Equal values are ordered by a secondary key: the row (``"index"``) or the row's place in an
    independent uniform random permutation of the rows per column, drawn from ``generator``
    (``"random"``: the same as an infinitesimal independent jitter, so a tied block such as the
    zeros of a ReLU carries no spurious dependence between variables or on sample order). Value
    key and secondary key are packed into one int64, value * 2^31 + secondary, so that one sort
    of plain integers does it. ``key`` is :func:`_value_keys` of ``x.T`` when already at hand
    (it is not modified).
    """
    n, m = x.shape
    device = x.device
    key = _value_keys(x.T.contiguous()) if key is None else key.clone()  # (m, n)
    positions = torch.arange(n, device=device).expand(m, n)  # (m, n)
    if ties == "index":
        secondary = positions
    else:
        # a uniform random permutation per column (randperm: no sort of random keys needed)
        shuffled = torch.stack([torch.randperm(n, generator=generator) for _ in range(m)]
                               ).to(device)  # (m, n) the row at each shuffled place
        secondary = torch.empty_like(shuffled).scatter_(1, shuffled, positions)  # place of row
    key.bitwise_left_shift_(31).bitwise_or_(secondary)  # fits: key < 2^32, secondary < 2^31
    low = _sort_rows(key).to(device).bitwise_and_((1 << 31) - 1)  # (m, n)
    return low if ties == "index" else torch.gather(shuffled, 1, low)


def _normal_scores(n: int, device) -> torch.Tensor:
    """(n,) the standard-normal quantiles of ranks 1..n: every column's scores, in rank order."""
    return torch.special.ndtri(torch.arange(1, n + 1, dtype=torch.float64, device=device)
                               / (n + 1.0))


def _check_ties(ties: str) -> None:
    if ties not in _TIES:
        raise GrokscopeError(f"ties: expected one of {', '.join(_TIES)}, got {ties!r}")


def _average_scores(x: torch.Tensor, key: torch.Tensor | None = None) -> torch.Tensor:
    """(n, m): each value's normal score averaged over the ranks its tied block spans.

    A block of equal values occupying ranks a..b gets the mean of the scores of ranks a..b, the
    expectation of its scores under a uniform random order of the block (an untied value keeps
    its own score). ``key`` as in :func:`_order`.
    """
    n, m = x.shape
    device = x.device
    key = _value_keys(x.T.contiguous()) if key is None else key  # (m, n)
    order = _order(x, "index", key=key)  # (m, n) rows by value
    ordered = torch.gather(key, 1, order)  # (m, n)
    starts = torch.ones_like(ordered, dtype=torch.bool)  # (m, n) first of its block
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    block = torch.cumsum(starts, dim=1) - 1  # (m, n) block id of each rank
    scores = _normal_scores(n, device).expand(m, n)  # (m, n)
    sums = torch.zeros((m, n), dtype=torch.float64, device=device).scatter_add_(1, block, scores)
    counts = torch.zeros((m, n), dtype=torch.float64, device=device).scatter_add_(
        1, block, torch.ones_like(scores))
    mean = torch.gather(sums, 1, block) / torch.gather(counts, 1, block)  # (m, n) in rank order
    zt = torch.empty((m, n), dtype=torch.float64, device=device)
    return zt.scatter_(1, order, mean).T  # (n, m)


def _copnorm_tensor(x: torch.Tensor, ties: str = "random", seed: int = 0, *,
                    generator: torch.Generator | None = None,
                    key: torch.Tensor | None = None) -> torch.Tensor:
    _check_ties(ties)
    if ties == "average":
        return _average_scores(x, key)
    n, m = x.shape
    # every column's scores are the same n normal quantiles, placed in rank order
    scores = _normal_scores(n, x.device)  # (n,)
    if ties == "random" and generator is None:
        generator = _generator(seed)
    order = _order(x, ties, generator, key)  # (m, n)
    zt = torch.empty((m, n), dtype=torch.float64, device=x.device)
    return zt.scatter_(1, order, scores.expand(m, n)).T  # (n, m)


def copnorm(x, *, ties: str = "random", seed: int = 0):
    r"""Copula-normalise each column: standard-normal scores of its ranks.

    .. math::

        \tilde z_{ij} = \Phi^{-1}\!\left(\frac{r_{ij}}{n + 1}\right)

    with :math:`r_{ij} \in \{1, \dots, n\}` the rank of sample :math:`i` within column :math:`j`
    and :math:`\Phi^{-1}` the standard-normal quantile function (Ince et al. 2017).

    Parameters
    ----------
    x : array_like or torch.Tensor, shape (n_samples, n_variables)
    ties : {"random", "average", "index"}
        How equal values are ranked. ``"random"`` (default here) breaks ties in an independent
        uniform random order per column, fixed by ``seed``: one draw of an infinitesimal jitter,
        so the many exact zeros of ReLU features add no dependence between neurons.
        ``"average"`` gives each tied value the mean of the scores its block spans (the
        expectation over random orders; each column then has a smaller variance than the
        scores', which :func:`copula_covariance` puts back). ``"index"`` ranks tied samples in
        their row order, which is what the argsort-of-argsort of the reference code (Ince's
        ``gcmi``, ``hoi``, Clauw et al.) does: the result then depends on the order of the
        samples.
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


def _tie_averaged_covariance(x: torch.Tensor, key: torch.Tensor | None = None) -> torch.Tensor:
    """(m, m) the copula covariance of ``x`` (n, m) averaged over every random order of its ties.

    Off the diagonal, columns' tie orders are independent, so the expected product of two
    columns' scores is the product of their expected scores: the covariance of the
    :func:`_average_scores`. On the diagonal, every order gives a column all n scores, so its
    variance is theirs, not the smaller variance of its averaged scores.
    """
    cov = _covariance(_average_scores(x, key))  # (m, m)
    cov.diagonal().fill_(float(_normal_scores(x.shape[0], x.device).var()))
    return cov


def _tie_covariances(x: torch.Tensor, ties: str, seed: int, draws: int
                     ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The covariance an estimator searches on, and the covariance of each random tie order.

    ``"average"``: the tie-averaged covariance; ``"random"``: the mean of the draws' covariances
    (for one draw, that draw's); ``"index"``: the row-order covariance, and no draws. The draws
    share the value keys and one generator seeded by ``seed``, so draw 0 is
    ``copnorm(x, ties="random", seed=seed)``.
    """
    _check_ties(ties)
    key = _value_keys(x.T.contiguous())  # (m, n)
    if ties == "index":
        return _covariance(_copnorm_tensor(x, "index", key=key)), []
    generator = _generator(seed)
    drawn = [_covariance(_copnorm_tensor(x, "random", generator=generator, key=key))
             for _ in range(draws)]  # R x (m, m)
    if ties == "random":
        if not drawn:
            raise GrokscopeError("tie_draws: ties='random' needs at least 1 draw")
        return (drawn[0] if len(drawn) == 1 else torch.stack(drawn).mean(dim=0)), drawn
    return _tie_averaged_covariance(x, key), drawn


def copula_covariance(x, *, ties: str = "random", seed: int = 0):
    r"""Covariance of the copula-normalised columns of ``x``, ties treated as ``ties`` says.

    .. math::

        \Sigma_{jk} = \mathbb{E}_\pi\left[\operatorname{cov}(\tilde z_j, \tilde z_k)\right]
        = \begin{cases} \operatorname{cov}(\bar z_j, \bar z_k) & j \ne k \\
        \operatorname{var}\big(\Phi^{-1}(\tfrac{1}{n+1}), \dots,
        \Phi^{-1}(\tfrac{n}{n+1})\big) & j = k \end{cases}

    for ``ties="average"``: the expectation, over independent uniform random orders
    :math:`\pi` of each column's tied values, of the covariance of :func:`copnorm`'s scores
    :math:`\tilde z`, in closed form: :math:`\bar z` are the tie-averaged scores
    (``copnorm(x, ties="average")``), and every order leaves each column's variance that of all
    n scores. No order of the samples enters it, and it costs one sort per column. This is the
    mid-rank treatment of ties with the copula's variance correction; with no ties it is the
    plain copula covariance (Ince et al. 2017). ``"random"`` (default): the covariance of one
    random order of the ties (seeded), what an infinitesimal independent jitter gives;
    ``"index"``: of the row order (the reference code's; order-dependent).

    Parameters
    ----------
    x : array_like or torch.Tensor, shape (n_samples, n_variables)
    ties : {"random", "average", "index"}
    seed : int
        Seed of the tie order (``ties="random"`` only).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        (n_variables, n_variables), float64; a tensor on ``x``'s device when ``x`` is a tensor.
    """
    t = _as_tensor(x)
    _check_samples_matrix(t)
    _check_ties(ties)
    cov = _tie_covariances(t, ties, seed, 1 if ties == "random" else 0)[0]
    return cov if isinstance(x, torch.Tensor) else cov.cpu().numpy()


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
    return _oinfo_of_blocks(torch.where(both, sub, eye), sizes, n_samples, bias_correction)


def _oinfo_of_blocks(sub: torch.Tensor, sizes: torch.Tensor, n_samples: int,
                     bias_correction: bool) -> torch.Tensor:
    """O-information (nats) of each covariance block of ``sub`` (B, s, s), ``sizes`` (B,)
    variables each (the rest an identity padding); the formula of :func:`_direct_values`."""
    b, s = sub.shape[:2]
    eye = torch.eye(s, dtype=sub.dtype, device=sub.device).expand(b, s, s)
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


#: Elements (batch x size x size) per batched factorisation in the direct route. 8 MB chunks
#: stay below glibc's mmap threshold, so their memory is reused instead of being mapped afresh
#: (and page-faulted in) for every chunk: 1.6x faster than 64 MB chunks on the benchmark.
_DIRECT_CHUNK_ELEMENTS = 1 << 20


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
# the block lattice: every union of groups of variables (bins of neurons)


#: Most memory the block lattice may hold for one level's factor columns; past it
#: :func:`_union_fits` is false and callers take the direct route.
UNION_MAX_BYTES = 1 << 30


def _union_fits(group_sizes: Sequence[int], min_size: int) -> bool:
    """Whether :func:`_union_values` stays within :data:`UNION_MAX_BYTES` (an upper bound)."""
    sizes = sorted(group_sizes, reverse=True)
    n, g = sum(sizes), len(sizes)
    for c in range(1, g - min_size):
        with_children = math.comb(g - 1, c)  # nodes whose largest group is not the last
        if with_children * (n + 1) * sum(sizes[:c]) * 8 > UNION_MAX_BYTES:
            return False
    return True


def _complement_levels(n_groups: int, max_level: int) -> list[list[tuple[int, ...]]]:
    """Subsets of range(n_groups) by size 0..max_level, each level sorted by largest member.

    Sorted so that the parents that can take group b (largest member < b) are a prefix.
    """
    levels = [[()]]
    for _ in range(max_level):
        levels.append([node + (b,) for b in range(n_groups) for node in levels[-1]
                       if (node[-1] if node else -1) < b])
    return levels


def _union_values(cov: torch.Tensor, groups: Sequence[Sequence[int]], n_samples: int,
                  min_size: int, max_size: int, bias_correction: bool) -> torch.Tensor:
    r"""O-information (nats) of the union of every multiplet of groups, in the order of
    ``_all_multiplets(len(groups), min_size, max_size)``.

    Works on the precision :math:`\Theta = \Sigma^{-1}`. For a union :math:`M` with complement
    :math:`C` (the variables of the groups left out),

    .. math::

        \log\det\Sigma_M = \log\det\Sigma + \log\det\Theta_{CC}, \qquad
        (\Sigma_M^{-1})_{jj} = \Theta_{jj} - \lVert W_{j\cdot} \rVert^2, \quad
        W = \Theta_{MC} L_C^{-\top}, \; L_C L_C^\top = \Theta_{CC}

    (block inversion). Complements are grown one group at a time, as a lattice: adding group
    :math:`b` to :math:`C` extends :math:`L_C` by one block row, and :math:`W` by the columns
    :math:`(\Theta_{\cdot b} - W W_{b\cdot}^\top) L_b^{-\top}` with :math:`L_b` the Cholesky
    factor of the Schur complement :math:`\Theta_{bb} - W_{b\cdot} W_{b\cdot}^\top`; every
    :math:`\lVert W_{j\cdot}\rVert^2` is the parent's plus that of the new columns. A node keeps
    only the rows of the variables outside it, so the work per multiplet is one
    (rows x width) by (width x group) product, with no factorisation larger than one group. All
    nodes of a level that add the same group are one batched operation. Groups are taken
    largest first, which minimises that work.
    """
    device = cov.device
    n_groups = len(groups)
    by_size = sorted(range(n_groups), key=lambda g: (-len(groups[g]), g))  # new -> old id
    members = [torch.as_tensor(list(groups[g]), dtype=torch.int64) for g in by_size]
    sizes = [len(m) for m in members]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n = int(starts[-1])
    order = torch.cat(members).to(device)  # variables grouped, largest group first
    chol = torch.linalg.cholesky(cov[order][:, order])  # (n, n)
    precision = torch.cholesky_inverse(chol)  # (n, n)
    # an extra zero row / unit entries for padding rows, which then add nothing anywhere
    precision = torch.cat([precision, precision.new_zeros(1, n)])  # (n + 1, n)
    log_var = torch.cat([torch.log(torch.diagonal(cov)[order]), cov.new_zeros(1)])  # (n + 1,)
    logdet_cov = 2.0 * torch.log(torch.diagonal(chol)).sum()

    wanted = _all_multiplets(n_groups, min_size, max_size)
    position = {tuple(sorted(by_size.index(g) for g in m)): i for i, m in enumerate(wanted)}
    out = torch.empty(len(wanted), dtype=torch.float64, device=device)
    top = n_groups - min_size
    levels = _complement_levels(n_groups, top)

    def width(node):
        return int(sum(sizes[g] for g in node))

    # level 0: the empty complement; rows = all variables (+ one padding row)
    rows = torch.arange(n + 1, device=device).unsqueeze(0)  # (B, r + 1) variable of each row
    w = cov.new_zeros(1, n + 1, 0)  # (B, r + 1, width)
    conditional = torch.cat([torch.diagonal(precision[:n]), cov.new_ones(1)]).unsqueeze(0)
    logdet_prec = cov.new_zeros(1)  # (B,)
    for c in range(top + 1):
        nodes = levels[c]
        if n_groups - c <= max_size:
            omega = 0.5 * ((log_var[rows] - torch.log(conditional)).sum(1)
                           - 2.0 * (logdet_cov + logdet_prec))  # (B,)
            k = torch.as_tensor([n - width(node) for node in nodes], device=device)
            if bias_correction:
                omega = omega - _oinfo_bias(k, n_samples)
            # two variables: identically 0, set exactly as in the direct route
            omega = torch.where(k == 2, torch.zeros_like(omega), omega)
            index = [position[tuple(g for g in range(n_groups) if g not in node)]
                     for node in nodes]
            out[torch.as_tensor(index, device=device)] = omega
        if c == top:
            break
        rows, w, conditional, logdet_prec = _grow_complements(
            precision, nodes, rows, w, conditional, logdet_prec, sizes, starts,
            keep_factors=c + 1 < top)
    return out


def _grow_complements(precision, nodes, rows, w, conditional, logdet_prec, sizes, starts,
                      keep_factors):
    """One level of :func:`_union_values`: every node joined with each larger group.

    A node holds ``rows`` (B, r + 1), the variable of each of its rows (``n`` for padding; the
    last row always pads), ``w`` (B, r + 1, width) its factor columns, zero past its own width,
    ``conditional`` (B, r + 1), and ``logdet_prec`` (B,). A child's columns are the new ones
    first, then the parent's: their order is immaterial to every product, and that way they stay
    packed at the front with no copy beyond the child's own.
    """
    device = precision.device
    n = precision.shape[1]
    n_groups = len(sizes)
    r_pad = rows.shape[1] - 1  # the parent level's padding row
    lasts = np.array([node[-1] if node else -1 for node in nodes])
    widths = np.array([sum(sizes[g] for g in node) for node in nodes], dtype=np.int64)
    takes = [b for b in range(n_groups) if (lasts < b).any()]
    # rows of the child with the narrowest complement, plus the padding row
    n_rows = n + 1 - min(int(widths[lasts < b].min()) + sizes[b] for b in takes)
    stored = [b for b in takes if keep_factors and b < n_groups - 1]
    width_next = max((sizes[b] + w.shape[2] for b in stored), default=0)
    w_next = w.new_empty(sum(int((lasts < b).sum()) for b in stored), n_rows, width_next)
    kept = torch.arange(n_rows, device=device).unsqueeze(0)  # (1, r' + 1)
    new_rows, new_conditional, new_logdet = [], [], []
    at = 0
    for b in takes:
        count = int((lasts < b).sum())  # parents: a prefix of the level
        s = sizes[b]
        lo = torch.as_tensor(starts[b] - widths[:count], device=device)  # (B,) b's first row
        rows_b = lo.unsqueeze(1) + torch.arange(s, device=device)  # (B, s)
        wp = w[:count]  # (B, r + 1, width)
        wb = torch.gather(wp, 1, rows_b.unsqueeze(2).expand(-1, -1, wp.shape[2]))  # (B, s, width)
        theta = precision[rows[:count], starts[b]:starts[b] + s]  # (B, r + 1, s)
        resid = torch.baddbmm(theta, wp, wb.transpose(1, 2), alpha=-1.0)  # (B, r + 1, s)
        pivot = torch.gather(resid, 1, rows_b.unsqueeze(2).expand(-1, -1, s))  # (B, s, s)
        factor = torch.linalg.cholesky(pivot)  # (B, s, s)
        cols = torch.linalg.solve_triangular(factor.transpose(1, 2), resid, upper=True,
                                             left=False)  # (B, r + 1, s)  resid L^-T
        new_logdet.append(logdet_prec[:count] + 2.0 * torch.log(
            torch.diagonal(factor, dim1=1, dim2=2)).sum(1))
        cond = conditional[:count] - (cols * cols).sum(2)  # (B, r + 1)
        # the child keeps the parent's rows but b's: the rows after b move up by s
        keep = (kept + s * (kept >= lo.unsqueeze(1))).clamp(max=r_pad)  # (B, r' + 1)
        keep[:, -1] = r_pad
        new_rows.append(torch.gather(rows[:count], 1, keep))
        new_conditional.append(torch.gather(cond, 1, keep))
        if b in stored:
            # whole rows are picked from the flattened (node, row) axis: one contiguous copy
            # per row, much cheaper than an element-wise gather
            picked = (keep + (r_pad + 1) * torch.arange(count, device=device).unsqueeze(1))
            combined = torch.cat([cols, wp], dim=2).flatten(0, 1)  # (B (r + 1), s + width)
            block = w_next[at:at + count]  # (B, r' + 1, w')
            block[:, :, :s + wp.shape[2]] = combined.index_select(0, picked.flatten()).view(
                count, n_rows, s + wp.shape[2])
            block[:, :, s + wp.shape[2]:] = 0.0
            at += count
    return (torch.cat(new_rows), w_next if stored else None, torch.cat(new_conditional),
            torch.cat(new_logdet))


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

    The copula covariance of ``x`` (:func:`copula_covariance`) is taken once; every entropy
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
    ties : {"random", "average", "index"}
        Ties in the ranks, see :func:`copula_covariance`: ``"random"`` (default) takes one random
        order of each column's tied values (``seed``); ``"average"`` the covariance averaged
        over every order; ``"index"`` the row order, as the reference code (order-dependent).
        :func:`grokscope.measures.multiplets.oinfo_search` averages over several random orders.
    seed : int
        Seed of the random tie order.
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
    if copnormed:
        cov = _covariance(t)
    else:
        constant = torch.nonzero(t.amax(dim=0) == t.amin(dim=0)).flatten()
        if len(constant):
            raise GrokscopeError(f"x: column {int(constant[0])} is constant; O-information is "
                                 "undefined for a constant variable (drop it)")
        _check_ties(ties)
        cov = _tie_covariances(t, ties, seed, 1 if ties == "random" else 0)[0]
    return oinfo_multiplets_from_cov(cov, t.shape[0], min_size, max_size, units,
                                     bias_correction, ridge=ridge)
