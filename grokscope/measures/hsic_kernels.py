r"""The kernels of the HSIC estimators, for all the minibatches of a group at once.

Each function takes or returns ``(B, m, m)`` tensors: one matrix per minibatch of ``m`` samples,
computed by one batched matmul and one batched Cholesky factorisation, no Python loop per batch.
The formulas are in :mod:`grokscope.measures.hsic`.
"""

from __future__ import annotations

import torch

from grokscope.errors import GrokscopeError
from grokscope.measures.hsic_batches import Variables, batches


def _two_width_squared(sq_dist: torch.Tensor, d: int, sigma: float, bandwidth: str) -> torch.Tensor:
    r"""The Gaussian kernel's denominator :math:`2 \sigma^2 d` for each batch, ``(B, 1, 1)``."""
    fixed = sq_dist.new_full((sq_dist.shape[0], 1, 1), 2.0 * sigma * sigma * d)
    if bandwidth == "fixed":
        return fixed
    m = sq_dist.shape[1]
    rows, cols = torch.triu_indices(m, m, offset=1, device=sq_dist.device)
    median = sq_dist[:, rows, cols].median(dim=1).values[:, None, None]  # (B, 1, 1)
    # Median heuristic: sigma^2 d := the median squared distance between distinct samples of
    # the batch. A batch whose median is 0 (mostly identical points) keeps the fixed width.
    return torch.where(median > 0, 2.0 * median, fixed)


def centred_gram(z: torch.Tensor, kernel: str, sigma: float, bandwidth: str) -> torch.Tensor:
    r""":math:`HKH` for each batch of ``z`` ``(B, m, d)``, as ``(B, m, m)``."""
    if kernel == "linear":
        gram = z @ z.transpose(1, 2)  # (B, m, m)
    else:
        # ||a||^2 + ||b||^2 - 2 a.b from one batched matmul (the broadcast difference a - b
        # would materialise a (B, m, m, d) tensor); taking the norms from the same product's
        # diagonal makes every self-distance exactly 0.
        inner = z @ z.transpose(1, 2)  # (B, m, m)
        sq_norms = inner.diagonal(dim1=1, dim2=2)  # (B, m)
        sq_dist = (sq_norms[:, :, None] + sq_norms[:, None, :]).sub_(inner, alpha=2.0).clamp_(min=0.0)
        width = _two_width_squared(sq_dist, z.shape[2], sigma, bandwidth)  # (B, 1, 1)
        gram = sq_dist.div_(width).neg_().exp_()  # (B, m, m)
    # HKH = K - column means - row means + grand mean, in place.
    column_means = gram.mean(dim=1, keepdim=True)  # (B, 1, m)
    row_means = gram.mean(dim=2, keepdim=True)  # (B, m, 1)
    grand_mean = row_means.mean(dim=1, keepdim=True)  # (B, 1, 1)
    return gram.sub_(column_means).sub_(row_means).add_(grand_mean)  # (B, m, m)


def batch_grams(z: torch.Tensor, kernel: str, orders, batch_size, sigma: float, bandwidth: str) -> list[torch.Tensor]:
    return [centred_gram(batch, kernel, sigma, bandwidth) for batch in batches(z, orders, batch_size)]


def nocco_operator(centred: torch.Tensor, eps: float) -> torch.Tensor:
    r""":math:`R = \tilde K (\tilde K + m\epsilon I)^{-1}` for each batch, ``(B, m, m)``.

    Computed as :math:`R = I - m\epsilon\,(\tilde K + m\epsilon I)^{-1}`: the matrix inverted is
    symmetric with eigenvalues at least :math:`m\epsilon`, so its Cholesky factorisation is
    stable, and the subtracted term has eigenvalues in (0, 1], so nothing cancels badly.
    """
    ridge = centred.shape[-1] * eps
    shifted = centred.clone()
    shifted.diagonal(dim1=-2, dim2=-1).add_(ridge)
    factor, info = torch.linalg.cholesky_ex(shifted)  # (B, m, m)
    if bool((info != 0).any()):
        raise GrokscopeError(
            f"eps: {eps:g} is too small for these kernels (the regularised kernel matrix is not "
            "numerically positive definite); use a larger eps"
        )
    operator = torch.cholesky_inverse(factor).mul_(-ridge)
    operator.diagonal(dim1=-2, dim2=-1).add_(1.0)
    return operator  # (B, m, m), symmetric


def batch_nocco(operators_a: list[torch.Tensor], operators_b: list[torch.Tensor]) -> list[torch.Tensor]:
    # tr(R_A R_B) = sum_ij (R_A)_ij (R_B)_ij since R_B is symmetric.
    return [(a * b).sum(dim=(1, 2)) for a, b in zip(operators_a, operators_b)]  # (batches,) per group


def batch_hsic(grams_a: list[torch.Tensor], grams_b: list[torch.Tensor]) -> list[torch.Tensor]:
    return [(a * b).sum(dim=(1, 2)) / (a.shape[-1] - 1) ** 2 for a, b in zip(grams_a, grams_b)]  # per group



def centred_grams(variables, orders, sigma, batch_size, bandwidth) -> dict[str, list[torch.Tensor]]:
    return {name: batch_grams(z, kernel, orders, batch_size, sigma, bandwidth)
            for name, (z, kernel) in variables.items()}

