"""The variables of the HSIC estimators and the minibatches they are estimated on.

A variable is an ``(n, d)`` float64 tensor of samples with its kernel's name; integer labels
become one-hot codes. A pass is a random order of the samples cut into consecutive minibatches
(:func:`pass_orders`), and the value of an estimator is the mean over the minibatches of each
pass (:func:`pass_means`). See :mod:`grokscope.measures.hsic` for the method and its sources.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch

from grokscope.errors import GrokscopeError

KERNELS = ("gaussian", "linear")
BANDWIDTHS = ("fixed", "median")

Variables = dict[str, tuple[torch.Tensor, str]]  # name -> ((n, d) float64 samples, kernel)




def as_variable(a, name: str) -> tuple[torch.Tensor, bool]:
    """``(n, d)`` float64 samples, and whether they were integer labels (then one-hot)."""
    a = torch.as_tensor(a)
    if a.is_complex() or a.dtype == torch.bool:
        raise GrokscopeError(f"{name}: expected real features or integer labels, got dtype {a.dtype}")
    if a.ndim == 0:
        raise GrokscopeError(f"{name}: expected one row per sample, got a scalar")
    if a.ndim == 1 and not a.is_floating_point():
        # Codes 0..K-1 from the distinct values, so any label values work.
        _, codes = torch.unique(a, return_inverse=True)  # (n,)
        return torch.nn.functional.one_hot(codes).to(torch.float64), True
    return a.reshape(a.shape[0], -1).to(torch.float64), False


def _is_integer(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_positive(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def check_options(sigma, batch_size, bandwidth, seed, eps=1e-5, passes=1) -> None:
    if not _is_positive(sigma):
        raise GrokscopeError(f"sigma: must be a positive number, got {sigma!r}")
    if not _is_positive(eps):
        raise GrokscopeError(f"eps: must be a positive number, got {eps!r}")
    if batch_size is not None and not (_is_integer(batch_size) and batch_size >= 2):
        raise GrokscopeError(f"batch_size: must be an integer >= 2 or None, got {batch_size!r}")
    if bandwidth not in BANDWIDTHS:
        raise GrokscopeError(f"bandwidth: unknown {bandwidth!r}; choose one of {', '.join(BANDWIDTHS)}")
    if seed is not None and not _is_integer(seed):
        raise GrokscopeError(f"seed: must be an integer or None, got {seed!r}")
    if not (_is_integer(passes) and passes >= 1):
        raise GrokscopeError(f"passes: must be an integer >= 1, got {passes!r}")


def resolve_kernel(kernel: str | None, is_labels: bool, name: str) -> str:
    if kernel is None:
        return "linear" if is_labels else "gaussian"
    if kernel not in KERNELS:
        raise GrokscopeError(f"{name}: unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    return kernel


def validated_variables(named: dict[str, object], kernels: dict[str, str | None]) -> Variables:
    """Validated ``(n, d)`` tensors on the first variable's device, each with its kernel."""
    out: Variables = {}
    device = None
    for name, value in named.items():
        z, is_labels = as_variable(value, name)
        device = z.device if device is None else device
        out[name] = (z.to(device), resolve_kernel(kernels[name], is_labels, f"kernel_{name}"))
    first = next(iter(out))
    n = out[first][0].shape[0]
    for name, (z, _) in out.items():
        if z.shape[0] != n:
            raise GrokscopeError(f"{name}: has {z.shape[0]} samples but {first} has {n}")
    if n < 2:
        raise GrokscopeError(f"{first}: needs at least 2 samples, got {n}")
    return out


def check_labels(y) -> None:
    y_tensor = torch.as_tensor(y)
    if y_tensor.ndim != 1 or y_tensor.is_floating_point() or y_tensor.is_complex():
        raise GrokscopeError(
            f"y: expected 1-D integer labels, got shape {tuple(y_tensor.shape)} of {y_tensor.dtype}"
        )


def pass_orders(n: int, *, passes: int = 3, seed: int | None = 0) -> torch.Tensor:
    """``(passes, n)`` int64: the order of the samples in each pass over the minibatches.

    Pass ``p`` is the ``p``-th ``torch.randperm(n)`` of a CPU generator seeded with ``seed`` (so
    the same on every device); ``seed=None`` keeps the stored order in every pass. With a batch
    size ``m``, batch ``b`` of pass ``p`` holds the samples ``orders[p, b * m:(b + 1) * m]``; the
    last batch holds the remainder and is dropped if that is a single sample.
    """
    if seed is None:
        return torch.arange(n).expand(passes, n)
    generator = torch.Generator().manual_seed(int(seed))
    return torch.stack([torch.randperm(n, generator=generator) for _ in range(passes)])


def distinct_orders(n: int, batch_size: int | None, passes: int, seed: int | None) -> torch.Tensor:
    """The pass orders that give different batches, ``(P, n)``: one when every pass sees the same
    batches (the stored order; or one batch of all the samples, whose value no order changes)."""
    if seed is None or batch_size is None or batch_size >= n:
        return torch.arange(n)[None]
    return pass_orders(n, passes=passes, seed=seed)


def batches(z: torch.Tensor, orders: torch.Tensor, batch_size: int | None) -> list[torch.Tensor]:
    """The minibatches of ``z`` ``(n, d)`` in each order of ``orders`` ``(P, n)``, grouped by size:
    the full batches of every pass as one ``(P * B, m, d)`` tensor, pass after pass, then the
    remainders as ``(P, r, d)`` if they hold at least two samples."""
    n = z.shape[0]
    orders = orders.to(z.device)
    if batch_size is None or batch_size >= n:
        return [z[orders]]  # (P, n, d)
    full = n - n % batch_size
    groups = [z[orders[:, :full]].reshape(-1, int(batch_size), z.shape[1])]  # (P * B, m, d)
    if n - full >= 2:
        groups.append(z[orders[:, full:]])  # (P, r, d)
    return groups


def pass_means(values: list[torch.Tensor], n_orders: int, passes: int) -> torch.Tensor:
    """``(passes,)``: each pass's mean over its batches, from per-batch ``values`` (one tensor per
    group of :func:`batches` over ``n_orders`` distinct orders, repeated if fewer than passes)."""
    per_order = torch.cat([v.reshape(n_orders, -1) for v in values], dim=1).mean(dim=1)  # (P,)
    return per_order.expand(passes) if n_orders < passes else per_order


def all_finite(variables: Variables) -> bool:
    # A sum is nan or inf whenever a term is: one reduction instead of a boolean copy.
    return all(bool(torch.isfinite(z.sum())) for z, _ in variables.values())
