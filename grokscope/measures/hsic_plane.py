r"""The fixed side of the nHSIC information plane: the operators of the inputs and labels,
computed once for a checkpoint series (:class:`HsicReference`), and a representation's traces
against them. See :mod:`grokscope.measures.hsic` for the method and its sources.

Both work through each group of minibatches chunk by chunk (:func:`~grokscope.measures.
hsic_batches.chunks`): the samples are never gathered or converted all at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from grokscope.measures.hsic_batches import (
    Variable,
    Variables,
    all_finite,
    batch_groups,
    check_labels,
    chunks,
    distinct_orders,
    pass_means,
    walk_minibatches,
)
from grokscope.measures.hsic_kernels import centred_gram, nocco_operator, trace_products


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

    Notes
    -----
    The operators are what a reference is for, so it keeps all of them: per variable,
    ``passes * n / batch_size`` matrices of ``batch_size**2`` float64, i.e.
    ``8 * passes * n * batch_size`` bytes (one pass when every pass gives the same batches), 4.8 MB
    for ``x`` at 2,000 samples, 3 passes of 100; whatever the inputs' dimension, since the inputs
    themselves are not kept.
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


def _operators(variable: Variable, groups: list[torch.Tensor], sigma, eps, bandwidth) -> tuple[torch.Tensor, ...]:
    """:math:`R` of every minibatch of ``groups``, one ``(G, m, m)`` tensor per group, built chunk by chunk."""
    out = []
    for group in groups:
        m = group.shape[1]
        operators = torch.empty((group.shape[0], m, m), dtype=torch.float64, device=variable.samples.device)
        for part, index in chunks(group, [variable], matrices=4):
            operators[part] = nocco_operator(centred_gram(variable, index, sigma, bandwidth), eps)
        out.append(operators)
    return tuple(out)


def build_reference(variables: Variables, sigma, eps, batch_size, bandwidth, passes, seed) -> HsicReference:
    """The operators of the validated ``x`` (and ``y``) variables, batched as ``t`` will be."""
    x = variables["x"]
    orders = distinct_orders(x.n, batch_size, passes, seed)
    finite = all_finite(variables)
    operators = {}
    if finite:
        groups = batch_groups(orders, batch_size)
        operators = {name: _operators(v, groups, sigma, eps, bandwidth) for name, v in variables.items()}
    return HsicReference(
        n_samples=x.n, names=tuple(variables), kernel_x=x.kernel, sigma=float(sigma),
        eps=float(eps), batch_size=None if batch_size is None else int(batch_size),
        bandwidth=bandwidth, passes=int(passes), seed=None if seed is None else int(seed),
        finite=finite, orders=orders, operators=operators,
    )


def measures_against(reference: HsicReference, t: Variable) -> dict[str, torch.Tensor]:
    r"""Each pass's mean of :math:`\operatorname{tr}(R_T R_V)` over its minibatches, ``(passes,)``,
    for each ``V`` of the reference; ``t`` is a validated variable. :math:`R_T` is built chunk by
    chunk of minibatches and dropped once its traces are taken."""
    if not (reference.finite and t.finite()):
        nan = torch.full((reference.passes,), math.nan, dtype=torch.float64)
        return dict.fromkeys((f"nhsic_{name}" for name in reference.names), nan)

    def traces(group: int, part: slice, index: torch.Tensor) -> dict[str, torch.Tensor]:
        operator_t = nocco_operator(centred_gram(t, index, reference.sigma, reference.bandwidth), reference.eps)
        return {f"nhsic_{name}": trace_products(operator_t, operators[group][part].to(operator_t.device))
                for name, operators in reference.operators.items()}

    values = walk_minibatches(reference.orders, reference.batch_size, [t], 3 + len(reference.names), traces)
    return {name: pass_means(v, reference.orders.shape[0], reference.passes) for name, v in values.items()}


def direct_measures(variables: Variables, t: Variable, sigma, eps, batch_size, bandwidth, passes, seed
                    ) -> dict[str, torch.Tensor]:
    """As :func:`measures_against` a reference of ``variables``, without keeping their operators:
    every :math:`R` of a chunk of minibatches is dropped once its traces are taken."""
    orders = distinct_orders(t.n, batch_size, passes, seed)
    if not (t.finite() and all_finite(variables)):
        nan = torch.full((passes,), math.nan, dtype=torch.float64)
        return dict.fromkeys((f"nhsic_{name}" for name in variables), nan)

    def traces(group: int, part: slice, index: torch.Tensor) -> dict[str, torch.Tensor]:
        def operator(variable: Variable) -> torch.Tensor:
            return nocco_operator(centred_gram(variable, index, sigma, bandwidth), eps)

        operator_t = operator(t)
        return {f"nhsic_{name}": trace_products(operator_t, operator(v)) for name, v in variables.items()}

    values = walk_minibatches(orders, batch_size, [t, *variables.values()], 3 + 2 * len(variables), traces)
    return {name: pass_means(v, orders.shape[0], passes) for name, v in values.items()}
