r"""The direct route: O-information of any list of sets, one batched factorisation per chunk.

.. math::

    \Omega = \tfrac12 \Big[ \sum_j \log \Sigma_{jj} - 2 \log\det\Sigma
             - \sum_j \log(\Sigma^{-1})_{jj} \Big] - \beta(k)

every leave-one-out log-determinant from the same Cholesky factorisation,
:math:`\log\det\Sigma_{-j} = \log\det\Sigma + \log(\Sigma^{-1})_{jj}`. Sets of different sizes
share a batch by padding with an identity block, which adds nothing to either term.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from grokscope.measures.entropy import _oinfo_bias
from grokscope.measures.thread_independent import on_one_thread


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
    chol = on_one_thread(torch.linalg.cholesky, sub)  # (B, s, s)
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (B,)
    precision_diag = _precision_diagonal(chol)  # (B, s)
    log_var = torch.log(torch.diagonal(sub, dim1=-2, dim2=-1))  # (B, s)
    omega = 0.5 * ((log_var - torch.log(precision_diag)).sum(1) - 2.0 * logdet)  # (B,)
    if bias_correction:
        omega = omega - _oinfo_bias(sizes, n_samples)
    # For two variables the O-information is identically 0 (H(Z1) + H(Z2) - H(Z2) - H(Z1));
    # the formula above only reaches 0 up to rounding, so it is set exactly.
    return torch.where(sizes == 2, torch.zeros_like(omega), omega)


#: Columns of the inverse Cholesky factor computed at a time by :func:`_precision_diagonal`.
_INVERSE_COLUMNS = 256


def _precision_diagonal(chol: torch.Tensor) -> torch.Tensor:
    r"""(B, s) the diagonal of :math:`\Sigma^{-1} = L^{-\top} L^{-1}` from the Cholesky factors
    ``chol`` (B, s, s): the squared column norms of :math:`L^{-1}`, a few columns at a time.
    Columns j of :math:`L^{-1}` vanish above row j, so a block of columns from ``start`` only
    solves the trailing triangle: about s^3 / 3 flops in all, and memory of one block."""
    b, s = chol.shape[:2]
    out = chol.new_empty(b, s)
    eye = torch.eye(s, dtype=chol.dtype, device=chol.device)
    for start in range(0, s, _INVERSE_COLUMNS):
        stop = min(s, start + _INVERSE_COLUMNS)
        columns = torch.linalg.solve_triangular(
            chol[:, start:, start:], eye[start:, start:stop].expand(b, s - start, stop - start),
            upper=False)  # (B, s - start, stop - start)
        out[:, start:stop] = (columns * columns).sum(dim=1)
    return out


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
