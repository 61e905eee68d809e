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

Speed: the covariance is taken once; no entropy is ever re-estimated from samples. Three routes
give the same numbers:

* the *lattice* (:func:`oinfo_multiplets_from_cov`, up to :data:`LATTICE_MAX_VARIABLES` variables):
  the log-determinant of every subset from a smaller one's by one Gaussian-elimination step, a
  contiguous range of bitmasks at a time, into a table indexed by bitmask. Every leave-one-out
  entropy of a :math:`k`-subset is then the entropy of a :math:`(k-1)`-subset already in the
  table, so each O-information is a gather; the multiplets come back as arrays
  (:class:`~grokscope.measures.lattice.Multiplets`), not one tuple each;
* the *direct* route (:func:`oinfo_of_sets`, any sets): one batched Cholesky per set of
  multiplets, with every leave-one-out log-determinant from the same factorisation,
  :math:`\log\det\Sigma_{-j} = \log\det\Sigma + \log(\Sigma^{-1})_{jj}`. Sets of different sizes
  share a batch by padding with an identity block, which adds nothing to either term;
* the *union lattice* (:mod:`.union_lattice`, every union of groups of variables: the neurons
  mode of :func:`grokscope.measures.multiplets.oinfo_search`): the same two terms from the
  precision matrix, the unions' complements walked depth first one group at a time (a Schur
  complement of one group per step), at the flop count of the walk (order :math:`n^3` for
  :math:`n` variables in a fixed number of groups) and in the memory of a few
  :math:`n \times n` matrices.

Where each part lives: copula ranks, ties and the covariance in :mod:`.copula` and :mod:`.ties`,
Gaussian entropies and the bias correction in :mod:`.entropy`, the lattice in :mod:`.lattice`,
the direct route in :mod:`.oinfo_direct`, the union lattice in :mod:`.union_lattice`; this module
holds the entry points.

References
----------
Rosas, F. E., Mediano, P. A. M., Gastpar, M., & Jensen, H. J. (2019). Quantifying high-order
interdependencies via multivariate extensions of the mutual information. Phys. Rev. E 100, 032305.

Ince, R. A. A., Giordano, B. L., Kayser, C., Rousselet, G. A., Gross, J., & Schyns, P. G. (2017).
A statistical framework for neuroimaging data analysis based on mutual information estimated via
a Gaussian copula. Human Brain Mapping 38, 1541-1573.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from grokscope.errors import GrokscopeError
from grokscope.measures.copula import (  # noqa: F401  (public names of this module)
    TieCovariances,
    _check_ties,
    _covariance,
    _tie_covariances,
    constant_columns,
    copnorm,
    copula_covariance,
)
from grokscope.measures.entropy import (  # noqa: F401
    COLLINEARITY_TOLERANCE,
    _check_positive_definite,
    gaussian_entropy,
)
from grokscope.measures.inputs import (
    _as_tensor,
    _check_samples_matrix,
    _check_sizes,
    _check_units,
    _unit_scale,
)
from grokscope.measures.lattice import (  # noqa: F401  (Multiplets: public name here)
    LATTICE_MAX_VARIABLES,
    Multiplets,
    _all_multiplets,
    _lattice_values,
)
from grokscope.measures.oinfo_direct import _direct_values_chunked


def oinfo_values_from_cov(cov: torch.Tensor, n_samples: int, min_size: int = 2,
                          max_size: int | None = None, *, bias_correction: bool = True,
                          multiplets: Multiplets | None = None) -> torch.Tensor:
    """O-information in nats of every multiplet of a checked covariance, as a tensor on its device.

    The hot-path form of :func:`oinfo_multiplets_from_cov` (same order, no checks of positive
    definiteness; ``multiplets`` when the caller already holds them): the lattice up to
    :data:`LATTICE_MAX_VARIABLES` variables, the direct route past it.
    """
    n = cov.shape[0]
    max_size = _check_sizes(n, min_size, max_size)
    if n <= LATTICE_MAX_VARIABLES:
        masks = None if multiplets is None else torch.from_numpy(multiplets.masks).to(cov.device)
        values = _lattice_values(cov, n_samples, min_size, max_size, bias_correction, masks)
    else:
        sets = _all_multiplets(n, min_size, max_size) if multiplets is None else list(multiplets)
        values = _direct_values_chunked(cov, sets, n_samples, bias_correction)
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
    multiplets : Multiplets
        Sizes ascending, lexicographic within a size, as arrays
        (:class:`~grokscope.measures.lattice.Multiplets`: ``masks``, ``members()``, ``sizes``);
        indexing or iterating gives tuples of column indices.
    values : numpy.ndarray, shape (len(multiplets),)
    """
    _check_units(units)
    c = _prepare_cov(cov, n_samples, ridge, device)
    max_size = _check_sizes(c.shape[0], min_size, max_size)
    multiplets = Multiplets.every(c.shape[0], min_size, max_size)
    values = oinfo_values_from_cov(c, n_samples, min_size, max_size,
                                   bias_correction=bias_correction, multiplets=multiplets)
    return multiplets, (values * _unit_scale(units)).cpu().numpy()


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
    multiplets : Multiplets
        Sizes ascending, lexicographic within a size, as arrays (see
        :func:`oinfo_multiplets_from_cov`); indexing or iterating gives tuples of column indices.
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
        cov = TieCovariances(t, ties, seed, 1 if ties == "random" else 0).search
    return oinfo_multiplets_from_cov(cov, t.shape[0], min_size, max_size, units,
                                     bias_correction, ridge=ridge)
