r"""The fixed side of the nHSIC information plane: the operators of the inputs and labels,
computed once for a checkpoint series (:class:`HsicReference`), and a representation's traces
against them. See :mod:`grokscope.measures.hsic` for the method and its sources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from grokscope.measures.hsic_batches import Variables, all_finite, check_labels, distinct_orders, pass_means
from grokscope.measures.hsic_kernels import batch_grams, batch_nocco, centred_grams, nocco_operator


@dataclass(frozen=True, eq=False)
class HsicReference:
    r"""The input and label side of the nHSIC information plane, computed once.

    Over a checkpoint series the samples, and so :math:`X` and :math:`Y`, stay the same: only
    the representation :math:`T` changes. A reference holds the NOCCO operators :math:`R_X`
    (and :math:`R_Y`) of every minibatch of every pass together with the options that defined
    them, so that :func:`hsic_measures` ``(t, reference)`` computes only :math:`R_T` per
    checkpoint, on the same batches. Build it with :func:`hsic_reference`; the values are the
    same as without it.

    Attributes
    ----------
    n_samples : int
        Samples (rows) a representation must have.
    names : tuple of str
        ``("x",)`` or ``("x", "y")``: the keys ``nhsic_x``, ``nhsic_y`` of the results.
    kernel_x : str
        The kernel of ``x`` after resolving ``None``.
    sigma, eps, batch_size, bandwidth, passes, seed
        As in :func:`nhsic`; they apply to the representation's kernel too.
    finite : bool
        False if ``x`` or ``y`` held a non-finite value: every result is then ``nan``.
    orders : torch.Tensor
        ``(P, n)`` the distinct pass orders the batches were cut from (see :func:`pass_orders`;
        a single order when every pass gives the same batches).
    operators : dict[str, tuple of torch.Tensor]
        Name -> one float64 ``(B, m, m)`` tensor of :math:`R` per group of equal-size
        minibatches (empty when not finite).
    """

    n_samples: int
    names: tuple[str, ...]
    kernel_x: str
    sigma: float
    eps: float
    batch_size: int | None
    bandwidth: str
    passes: int
    seed: int | None
    finite: bool
    orders: torch.Tensor = field(repr=False)
    operators: dict[str, tuple[torch.Tensor, ...]] = field(repr=False)


def reference_variables(x, y, kernel_x) -> tuple[dict[str, object], dict[str, str | None]]:
    named, kernels = {"x": x}, {"x": kernel_x}
    if y is not None:
        check_labels(y)
        named["y"], kernels["y"] = y, "linear"
    return named, kernels


def build_reference(variables: Variables, sigma, eps, batch_size, bandwidth, passes, seed) -> HsicReference:
    """The operators of the validated ``x`` (and ``y``) variables, batched as ``t`` will be."""
    x, kernel_x = variables["x"]
    orders = distinct_orders(x.shape[0], batch_size, passes, seed)
    finite = all_finite(variables)
    operators = {}
    if finite:
        grams = centred_grams(variables, orders, sigma, batch_size, bandwidth)
        operators = {name: tuple(nocco_operator(g, eps) for g in gs) for name, gs in grams.items()}
    return HsicReference(
        n_samples=x.shape[0], names=tuple(variables), kernel_x=kernel_x, sigma=float(sigma),
        eps=float(eps), batch_size=None if batch_size is None else int(batch_size),
        bandwidth=bandwidth, passes=int(passes), seed=None if seed is None else int(seed),
        finite=finite, orders=orders, operators=operators,
    )


def measures_against(reference: HsicReference, t: torch.Tensor, kernel_t: str) -> dict[str, torch.Tensor]:
    r"""Each pass's mean of :math:`\operatorname{tr}(R_T R_V)` over its minibatches, ``(passes,)``,
    for each ``V`` of the reference; ``t`` is a validated ``(n, d)`` tensor."""
    if not (reference.finite and all_finite({"t": (t, kernel_t)})):
        nan = torch.full((reference.passes,), math.nan, dtype=torch.float64)
        return dict.fromkeys((f"nhsic_{name}" for name in reference.names), nan)
    grams_t = batch_grams(t, kernel_t, reference.orders, reference.batch_size, reference.sigma, reference.bandwidth)
    operators_t = [nocco_operator(g, reference.eps) for g in grams_t]  # (B, m, m) per batch size
    n_orders = reference.orders.shape[0]
    return {
        f"nhsic_{name}": pass_means(batch_nocco(operators_t, [r.to(t.device) for r in operators]),
                                    n_orders, reference.passes)
        for name, operators in reference.operators.items()
    }

