r"""Gaussian entropies of the copula covariance, Ince's bias correction, singular covariances.

The entropy of a set of copula-normalised variables is that of a Gaussian with their covariance,
:math:`H(Z) = \tfrac12 \log\det(2 \pi e \Sigma_Z)`, minus Ince's analytic bias correction.

References
----------
Ince, R. A. A., Giordano, B. L., Kayser, C., Rousselet, G. A., Gross, J., & Schyns, P. G. (2017).
A statistical framework for neuroimaging data analysis based on mutual information estimated via
a Gaussian copula. Human Brain Mapping 38, 1541-1573.
"""

from __future__ import annotations

import math

import torch

from grokscope.errors import GrokscopeError
from grokscope.measures.inputs import _as_tensor, _check_units, _unit_scale
from grokscope.measures.thread_independent import on_one_thread

#: A variable whose residual variance, given the variables before it, is below this fraction of
#: its variance is taken as a linear combination of them (a singular covariance).
COLLINEARITY_TOLERANCE = 1e-10


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
    chol, info = on_one_thread(torch.linalg.cholesky_ex, c)
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
    chol, info = on_one_thread(torch.linalg.cholesky_ex, cov)
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
