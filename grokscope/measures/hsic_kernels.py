r"""The kernels of the HSIC estimators, for a chunk of minibatches at once.

Each function takes or returns ``(C, m, m)`` tensors: one matrix per minibatch of ``m`` samples,
computed by one batched matmul (or, for token ids, one comparison per position) and one batched
Cholesky factorisation, no Python loop per batch. The formulas are in
:mod:`grokscope.measures.hsic`.
"""

from __future__ import annotations

import torch

from grokscope.errors import GrokscopeError
from grokscope.measures.hsic_batches import Variable
from grokscope.measures.thread_independent import fixed_order_sum, on_one_thread


def _two_width_squared(sq_dist: torch.Tensor, d: int, sigma: float, bandwidth: str) -> torch.Tensor:
    r"""The Gaussian kernel's denominator :math:`2 \sigma^2 d` for each batch, ``(C, 1, 1)``."""
    fixed = sq_dist.new_full((sq_dist.shape[0], 1, 1), 2.0 * sigma * sigma * d)
    if bandwidth == "fixed":
        return fixed
    m = sq_dist.shape[1]
    rows, cols = torch.triu_indices(m, m, offset=1, device=sq_dist.device)
    median = sq_dist[:, rows, cols].median(dim=1).values[:, None, None]  # (C, 1, 1)
    # Median heuristic: sigma^2 d := the median squared distance between distinct samples of
    # the batch. A batch whose median is 0 (mostly identical points) keeps the fixed width.
    return torch.where(median > 0, 2.0 * median, fixed)


def equal_positions(tokens: torch.Tensor) -> torch.Tensor:
    r"""For token rows ``(C, m, T)``, the number of positions at which two samples hold the same
    token, ``(C, m, m)`` float64: the inner product of their one-hot codes, exactly.

    One comparison per position: a boolean ``(C, m, m)`` at a time (comparing several positions
    at once would need a ``(C, m, m, t)`` comparison and, to sum it, an int64 copy of it).
    """
    c, m, positions = tokens.shape
    equal = torch.zeros((c, m, m), dtype=torch.float64, device=tokens.device)
    for position in range(positions):
        column = tokens[:, :, position]  # (C, m)
        equal += column[:, :, None] == column[:, None, :]
    return equal


def _squared_distances(rows: torch.Tensor, variable: Variable) -> torch.Tensor:
    """Squared distances between the vectors of each batch, ``(C, m, m)``."""
    if variable.is_tokens:
        # One-hot codes: a.b counts the equal positions and ||a||^2 = T, so ||a - b||^2 = 2 (T - a.b).
        return (rows.shape[2] - equal_positions(rows)).mul_(2.0)
    # ||a||^2 + ||b||^2 - 2 a.b from one batched matmul (the broadcast difference a - b would
    # materialise a (C, m, m, d) tensor); taking the norms from the same product's diagonal makes
    # every self-distance exactly 0.
    inner = rows @ rows.transpose(1, 2)  # (C, m, m)
    sq_norms = inner.diagonal(dim1=1, dim2=2)  # (C, m)
    return (sq_norms[:, :, None] + sq_norms[:, None, :]).sub_(inner, alpha=2.0).clamp_(min=0.0)


def centred_gram(variable: Variable, index: torch.Tensor, sigma: float, bandwidth: str) -> torch.Tensor:
    r""":math:`HKH` for each minibatch of ``variable`` whose samples ``index`` ``(C, m)`` holds,
    as ``(C, m, m)`` float64."""
    rows = variable.rows(index.to(variable.samples.device))  # (C, m, d) or (C, m, T)
    if variable.kernel == "linear":
        gram = equal_positions(rows) if variable.is_tokens else rows @ rows.transpose(1, 2)  # (C, m, m)
    else:
        sq_dist = _squared_distances(rows, variable)
        width = _two_width_squared(sq_dist, variable.dim, sigma, bandwidth)  # (C, 1, 1)
        gram = sq_dist.div_(width).neg_().exp_()  # (C, m, m)
    # HKH = K - column means - row means + grand mean, in place.
    column_means = gram.mean(dim=1, keepdim=True)  # (C, 1, m)
    row_means = gram.mean(dim=2, keepdim=True)  # (C, m, 1)
    grand_mean = row_means.mean(dim=1, keepdim=True)  # (C, 1, 1)
    return gram.sub_(column_means).sub_(row_means).add_(grand_mean)  # (C, m, m)


def nocco_operator(centred: torch.Tensor, eps: float) -> torch.Tensor:
    r""":math:`R = \tilde K (\tilde K + m\epsilon I)^{-1}` for each batch, ``(C, m, m)``.

    Computed as :math:`R = I - m\epsilon\,(\tilde K + m\epsilon I)^{-1}`: the matrix inverted is
    symmetric with eigenvalues at least :math:`m\epsilon`, so its Cholesky factorisation is
    stable, and the subtracted term has eigenvalues in (0, 1], so nothing cancels badly.
    """
    ridge = centred.shape[-1] * eps
    shifted = centred.clone()
    shifted.diagonal(dim1=-2, dim2=-1).add_(ridge)
    factor, info = on_one_thread(torch.linalg.cholesky_ex, shifted)  # (C, m, m)
    if bool((info != 0).any()):
        raise GrokscopeError(
            f"eps: {eps:g} is too small for these kernels (the regularised kernel matrix is not "
            "numerically positive definite); use a larger eps"
        )
    operator = on_one_thread(torch.cholesky_inverse, factor).mul_(-ridge)
    operator.diagonal(dim1=-2, dim2=-1).add_(1.0)
    return operator  # (C, m, m), symmetric


def trace_products(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r""":math:`\operatorname{tr}(A B)` per batch, ``(C,)``, for symmetric ``(C, m, m)`` matrices:
    :math:`\sum_{ij} A_{ij} B_{ij}`."""
    return fixed_order_sum(a * b, keep=1)
