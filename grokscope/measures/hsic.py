r"""Kernel dependence measures: normalised HSIC (NOCCO), plain HSIC and CKA.

All of them are estimated the way Sakamoto & Sato estimate the nHSIC information plane: on
minibatches of ``batch_size`` samples, averaged over the minibatches. Their public code
(github.com/keitaroskmt/collapse-dynamics: ``calc_nhsic_plane`` in
``src/information_plane/nhsic.py`` with ``nhsic_num_iter: 3`` in ``config/train.yaml``, and the
test loader of ``src/dataset.py``; the NOCCO class is that of github.com/keitaroskmt/E2E-info
``src/hsic/hsic.py``) makes three passes over a *shuffled* test loader (``shuffle=True``,
``drop_last=False``): each pass is a fresh random order of the samples cut into consecutive
batches, the last, smaller batch kept, and the value is the unweighted mean over all batches of
all passes. Here pass ``p``'s order is the ``p``-th ``torch.randperm(n)`` of a generator seeded
with ``seed`` (:func:`pass_orders`), so the value is reproducible and does not depend on the order
in which the samples are stored; ``per_pass=True`` returns each pass's mean, whose spread says how
much the choice of batches moves the value. ``seed=None`` batches the samples in their stored
order in every pass, as the authors' code did before it shuffled (and grokscope before it
followed): modular-arithmetic samples are stored by operand, so that order fills each batch with
related samples and gives another value. Which split to pass is the caller's choice (the authors
use the test split).

Kernels, on a minibatch :math:`z_1, \dots, z_m` of ``d``-dimensional vectors:

.. math::

    k_{\text{gauss}}(a, b) = \exp\!\left(-\frac{\lVert a - b \rVert^2}{2 \sigma^2 d}\right),
    \qquad k_{\text{lin}}(a, b) = a^\top b,
    \qquad \tilde K = H K H, \quad H = I_m - \tfrac{1}{m} \mathbf{1}\mathbf{1}^\top

Integer labels become one-hot codes, whose linear kernel is :math:`[y_i = y_j]`.

Deliberate differences from the authors' code: every kernel is centred on both sides
(:math:`HKH`, Fukumizu et al.'s definition; their Gaussian kernel is centred on one side only,
:math:`KH`, and their linear label kernel not at all); everything is computed in float64; a
final batch of a single sample (whose centred kernel is zero) is dropped. On synthetic data of the
default run's shape, their exact formulas (in float64) and these agree to 1e-12 for
nHSIC(T; X) and to 3e-6 relative for nHSIC(T; Y).

All batches of equal size, of every pass, are computed together as ``(B, m, m)`` tensors: one
batched matmul for the distances, one batched Cholesky factorisation per variable, no Python
loop per batch. Over a checkpoint series only the representation changes:
:func:`hsic_reference` computes the input and label operators once and :func:`hsic_measures`
accepts it in place of ``x``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from numbers import Integral, Real

import torch

from grokscope.errors import GrokscopeError

KERNELS = ("gaussian", "linear")
BANDWIDTHS = ("fixed", "median")

Variables = dict[str, tuple[torch.Tensor, str]]  # name -> ((n, d) float64 samples, kernel)


# --- inputs ------------------------------------------------------------------------------------


def _as_variable(a, name: str) -> tuple[torch.Tensor, bool]:
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


def _check_options(sigma, batch_size, bandwidth, seed, eps=1e-5, passes=1) -> None:
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


def _resolve_kernel(kernel: str | None, is_labels: bool, name: str) -> str:
    if kernel is None:
        return "linear" if is_labels else "gaussian"
    if kernel not in KERNELS:
        raise GrokscopeError(f"{name}: unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    return kernel


def _variables(named: dict[str, object], kernels: dict[str, str | None]) -> Variables:
    """Validated ``(n, d)`` tensors on the first variable's device, each with its kernel."""
    out: Variables = {}
    device = None
    for name, value in named.items():
        z, is_labels = _as_variable(value, name)
        device = z.device if device is None else device
        out[name] = (z.to(device), _resolve_kernel(kernels[name], is_labels, f"kernel_{name}"))
    first = next(iter(out))
    n = out[first][0].shape[0]
    for name, (z, _) in out.items():
        if z.shape[0] != n:
            raise GrokscopeError(f"{name}: has {z.shape[0]} samples but {first} has {n}")
    if n < 2:
        raise GrokscopeError(f"{first}: needs at least 2 samples, got {n}")
    return out


def _check_labels(y) -> None:
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


def _distinct_orders(n: int, batch_size: int | None, passes: int, seed: int | None) -> torch.Tensor:
    """The pass orders that give different batches, ``(P, n)``: one when every pass sees the same
    batches (the stored order; or one batch of all the samples, whose value no order changes)."""
    if seed is None or batch_size is None or batch_size >= n:
        return torch.arange(n)[None]
    return pass_orders(n, passes=passes, seed=seed)


def _batches(z: torch.Tensor, orders: torch.Tensor, batch_size: int | None) -> list[torch.Tensor]:
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


def _pass_means(values: list[torch.Tensor], n_orders: int, passes: int) -> torch.Tensor:
    """``(passes,)``: each pass's mean over its batches, from per-batch ``values`` (one tensor per
    group of :func:`_batches` over ``n_orders`` distinct orders, repeated if fewer than passes)."""
    per_order = torch.cat([v.reshape(n_orders, -1) for v in values], dim=1).mean(dim=1)  # (P,)
    return per_order.expand(passes) if n_orders < passes else per_order


# --- kernels -----------------------------------------------------------------------------------


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


def _centred_gram(z: torch.Tensor, kernel: str, sigma: float, bandwidth: str) -> torch.Tensor:
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


def _grams(z: torch.Tensor, kernel: str, orders, batch_size, sigma: float, bandwidth: str) -> list[torch.Tensor]:
    return [_centred_gram(batch, kernel, sigma, bandwidth) for batch in _batches(z, orders, batch_size)]


def _nocco_operator(centred: torch.Tensor, eps: float) -> torch.Tensor:
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


def _batch_nocco(operators_a: list[torch.Tensor], operators_b: list[torch.Tensor]) -> list[torch.Tensor]:
    # tr(R_A R_B) = sum_ij (R_A)_ij (R_B)_ij since R_B is symmetric.
    return [(a * b).sum(dim=(1, 2)) for a, b in zip(operators_a, operators_b)]  # (batches,) per group


def _batch_hsic(grams_a: list[torch.Tensor], grams_b: list[torch.Tensor]) -> list[torch.Tensor]:
    return [(a * b).sum(dim=(1, 2)) / (a.shape[-1] - 1) ** 2 for a, b in zip(grams_a, grams_b)]  # per group


def _finite(variables: Variables) -> bool:
    # A sum is nan or inf whenever a term is: one reduction instead of a boolean copy.
    return all(bool(torch.isfinite(z.sum())) for z, _ in variables.values())


def _centred_grams(variables, orders, sigma, batch_size, bandwidth) -> dict[str, list[torch.Tensor]]:
    return {name: _grams(z, kernel, orders, batch_size, sigma, bandwidth) for name, (z, kernel) in variables.items()}


# --- public functions --------------------------------------------------------------------------


def _result(per_pass: torch.Tensor, keep_passes: bool):
    """A pass's values as returned: the array of them, or their mean as a float."""
    return per_pass.cpu().numpy() if keep_passes else float(per_pass.mean())


def nhsic(
    t,
    x,
    *,
    kernel_t: str = "gaussian",
    kernel_x: str | None = None,
    sigma: float = 5.0,
    eps: float = 1e-5,
    batch_size: int | None = 100,
    bandwidth: str = "fixed",
    passes: int = 3,
    seed: int | None = 0,
    per_pass: bool = False,
):
    r"""Normalised HSIC (NOCCO) between a representation and an input or the labels.

    .. math::

        \mathrm{nHSIC}(T; X) = \frac{1}{P} \sum_{p=1}^{P} \frac{1}{B_p} \sum_{b=1}^{B_p}
        \operatorname{tr}(R_T^{(p,b)} R_X^{(p,b)}), \qquad
        R = \tilde K (\tilde K + m \epsilon I_m)^{-1}

    on each minibatch :math:`b` of ``m`` samples of each pass :math:`p` over a random order of
    the samples (see the module docstring for the batching and the kernels). Each :math:`R` is
    symmetric with eigenvalues in [0, 1), so a batch's value lies in [0, min(rank R_T,
    rank R_X)) and grows with the dependence between the two variables.

    Sources: Fukumizu, Gretton, Sun & Schoelkopf (2008), "Kernel measures of conditional
    dependence", NeurIPS (NOCCO); Sakamoto & Sato (2024), "End-to-end training induces
    information bottleneck through layer-role differentiation", TMLR (sigma = 5, eps = 1e-5,
    minibatches of 100 of a shuffled loader, three passes, the information plane nHSIC(T; X)
    vs nHSIC(T; Y)).

    Parameters
    ----------
    t : array_like, shape (n, ...)
        The representation; rows are samples, trailing axes are flattened.
    x : array_like, shape (n, ...), or (n,) of int
        Features, or integer labels (one-hot codes; any label values).
    kernel_t, kernel_x : {"gaussian", "linear"}
        Kernels; ``kernel_x=None`` picks ``"linear"`` for integer labels, ``"gaussian"`` for
        features.
    sigma : float
        Gaussian width relative to the square root of the dimension.
    eps : float
        Regulariser; the ridge on a batch of ``m`` samples is ``m * eps``.
    batch_size : int or None
        Minibatch size; ``None`` uses all samples at once (memory grows as ``n**2``; every pass
        is then the same).
    bandwidth : {"fixed", "median"}
        ``"median"`` replaces ``sigma**2 * d`` by each batch's median squared distance.
    passes : int
        Passes over the samples, each in a new random order (the authors make 3).
    seed : int or None
        Seed of the passes' orders (:func:`pass_orders`); ``None`` batches the samples in their
        stored order in every pass.
    per_pass : bool
        Return each pass's mean instead of their overall mean.

    Returns
    -------
    float, or numpy.ndarray of shape (passes,) with ``per_pass``
        ``nan`` if ``t`` or ``x`` holds a non-finite value.

    Raises
    ------
    GrokscopeError
        Mismatched sample counts, fewer than two samples, an invalid option, or an ``eps`` too
        small to regularise the kernels.
    """
    return hsic_measures(
        t, x, None, kernel_t=kernel_t, kernel_x=kernel_x, sigma=sigma, eps=eps,
        batch_size=batch_size, bandwidth=bandwidth, passes=passes, seed=seed, per_pass=per_pass,
    )["nhsic_x"]


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


def _reference_variables(x, y, kernel_x) -> tuple[dict[str, object], dict[str, str | None]]:
    named, kernels = {"x": x}, {"x": kernel_x}
    if y is not None:
        _check_labels(y)
        named["y"], kernels["y"] = y, "linear"
    return named, kernels


def _build_reference(variables: Variables, sigma, eps, batch_size, bandwidth, passes, seed) -> HsicReference:
    """The operators of the validated ``x`` (and ``y``) variables, batched as ``t`` will be."""
    x, kernel_x = variables["x"]
    orders = _distinct_orders(x.shape[0], batch_size, passes, seed)
    finite = _finite(variables)
    operators = {}
    if finite:
        grams = _centred_grams(variables, orders, sigma, batch_size, bandwidth)
        operators = {name: tuple(_nocco_operator(g, eps) for g in gs) for name, gs in grams.items()}
    return HsicReference(
        n_samples=x.shape[0], names=tuple(variables), kernel_x=kernel_x, sigma=float(sigma),
        eps=float(eps), batch_size=None if batch_size is None else int(batch_size),
        bandwidth=bandwidth, passes=int(passes), seed=None if seed is None else int(seed),
        finite=finite, orders=orders, operators=operators,
    )


def _check_reference_options(reference: HsicReference, given: dict[str, object]) -> None:
    """Options given beside a reference must be left at their defaults or match it."""
    defaults = inspect.signature(hsic_measures).parameters
    for name, value in given.items():
        if value != defaults[name].default and value != getattr(reference, name):
            raise GrokscopeError(
                f"{name}: the reference was built with {name}={getattr(reference, name)!r}, not "
                f"{value!r}; set it in hsic_reference"
            )


def _measures_against(reference: HsicReference, t: torch.Tensor, kernel_t: str) -> dict[str, torch.Tensor]:
    r"""Each pass's mean of :math:`\operatorname{tr}(R_T R_V)` over its minibatches, ``(passes,)``,
    for each ``V`` of the reference; ``t`` is a validated ``(n, d)`` tensor."""
    if not (reference.finite and _finite({"t": (t, kernel_t)})):
        nan = torch.full((reference.passes,), math.nan, dtype=torch.float64)
        return dict.fromkeys((f"nhsic_{name}" for name in reference.names), nan)
    grams_t = _grams(t, kernel_t, reference.orders, reference.batch_size, reference.sigma, reference.bandwidth)
    operators_t = [_nocco_operator(g, reference.eps) for g in grams_t]  # (B, m, m) per batch size
    n_orders = reference.orders.shape[0]
    return {
        f"nhsic_{name}": _pass_means(_batch_nocco(operators_t, [r.to(t.device) for r in operators]),
                                     n_orders, reference.passes)
        for name, operators in reference.operators.items()
    }


@torch.no_grad()
def hsic_reference(
    x,
    y=None,
    *,
    kernel_x: str | None = None,
    sigma: float = 5.0,
    eps: float = 1e-5,
    batch_size: int | None = 100,
    bandwidth: str = "fixed",
    passes: int = 3,
    seed: int | None = 0,
) -> HsicReference:
    r"""Precompute the input (and label) side of :func:`hsic_measures` for many representations.

    Computes, on every minibatch of every pass, :math:`R_X = \tilde K_X (\tilde K_X +
    m\epsilon I_m)^{-1}` (and :math:`R_Y`) once; ``hsic_measures(t, reference)`` then costs one
    :math:`R_T` per batch instead of three. Use it when the same samples are measured at many
    checkpoints: every checkpoint is then measured on the same batches.

    Parameters
    ----------
    x : array_like, shape (n, ...), or (n,) of int
        The network's input (or labels), as in :func:`hsic_measures`.
    y : array_like of int, shape (n,), or None
        Labels; ``None`` leaves ``nhsic_y`` out.
    kernel_x, sigma, eps, batch_size, bandwidth, passes, seed
        As in :func:`nhsic`; ``sigma``, ``bandwidth``, ``batch_size``, ``passes`` and ``seed``
        also apply to every representation measured against this reference.

    Returns
    -------
    HsicReference
        On the device of ``x``.

    Raises
    ------
    GrokscopeError
        As :func:`hsic_measures`.
    """
    _check_options(sigma, batch_size, bandwidth, seed, eps, passes)
    named, kernels = _reference_variables(x, y, kernel_x)
    return _build_reference(_variables(named, kernels), sigma, eps, batch_size, bandwidth, passes, seed)


@torch.no_grad()
def hsic_measures(
    t,
    x,
    y=None,
    *,
    kernel_t: str = "gaussian",
    kernel_x: str | None = None,
    sigma: float = 5.0,
    eps: float = 1e-5,
    batch_size: int | None = 100,
    bandwidth: str = "fixed",
    passes: int = 3,
    seed: int | None = 0,
    per_pass: bool = False,
) -> dict:
    r"""The nHSIC information plane: :math:`\mathrm{nHSIC}(T; X)` and :math:`\mathrm{nHSIC}(T; Y)`.

    Both use the same minibatches and share :math:`R_T`, computed once. ``y`` always uses the
    linear kernel on one-hot labels; everything else is as in :func:`nhsic`. Over a series of
    representations of the same samples, pass ``x`` as an :class:`HsicReference` (from
    :func:`hsic_reference`) so that :math:`R_X` and :math:`R_Y` are not recomputed each time.

    Parameters
    ----------
    t : array_like, shape (n, ...)
        The representation.
    x : array_like, shape (n, ...), or HsicReference
        The network's input, or a reference built from it (then leave ``y`` out and the other
        options at their defaults: they are the reference's).
    y : array_like of int, shape (n,), or None
        Labels; ``None`` leaves ``nhsic_y`` out.
    kernel_t, kernel_x, sigma, eps, batch_size, bandwidth, passes, seed, per_pass
        As in :func:`nhsic`.

    Returns
    -------
    dict
        ``{"nhsic_x": ..., "nhsic_y": ...}``: floats, or arrays of each pass's mean with
        ``per_pass``; ``nan`` values if any input is non-finite.

    Raises
    ------
    GrokscopeError
        As :func:`nhsic`; if ``y`` is not a 1-D integer array; with a reference, if ``y`` is
        given, ``t`` has another number of samples, or an option contradicts the reference.
    """
    if isinstance(x, HsicReference):
        if y is not None:
            raise GrokscopeError("y: the reference already fixes the labels; pass y=None with a reference")
        _check_reference_options(x, {"kernel_x": kernel_x, "sigma": sigma, "eps": eps, "batch_size": batch_size,
                                     "bandwidth": bandwidth, "passes": passes, "seed": seed})
        t_variable = _variables({"t": t}, {"t": kernel_t})["t"]
        if t_variable[0].shape[0] != x.n_samples:
            raise GrokscopeError(f"t: has {t_variable[0].shape[0]} samples but the reference has {x.n_samples}")
        values = _measures_against(x, *t_variable)
        return {name: _result(v, per_pass) for name, v in values.items()}
    _check_options(sigma, batch_size, bandwidth, seed, eps, passes)
    named, kernels = _reference_variables(x, y, kernel_x)
    variables = _variables({"t": t, **named}, {"t": kernel_t, **kernels})
    t_variable = variables.pop("t")
    if not _finite({"t": t_variable}):  # no operators to compute for a diverged checkpoint
        nan = torch.full((passes,), math.nan, dtype=torch.float64)
        return {f"nhsic_{name}": _result(nan, per_pass) for name in variables}
    reference = _build_reference(variables, sigma, eps, batch_size, bandwidth, passes, seed)
    return {name: _result(v, per_pass) for name, v in _measures_against(reference, *t_variable).items()}


def _plain_grams(t, x, kernel_t, kernel_x, sigma, batch_size, bandwidth, passes, seed):
    """Validated ``t`` and ``x`` as centred Gram matrices of their shared minibatches, and the
    number of distinct pass orders; ``None`` grams if either is not finite."""
    _check_options(sigma, batch_size, bandwidth, seed, passes=passes)
    variables = _variables({"t": t, "x": x}, {"t": kernel_t, "x": kernel_x})
    if not _finite(variables):
        return None, 1
    orders = _distinct_orders(variables["t"][0].shape[0], batch_size, passes, seed)
    return _centred_grams(variables, orders, sigma, batch_size, bandwidth), orders.shape[0]


@torch.no_grad()
def hsic(
    t,
    x,
    *,
    kernel_t: str = "gaussian",
    kernel_x: str | None = None,
    sigma: float = 5.0,
    batch_size: int | None = 100,
    bandwidth: str = "fixed",
    passes: int = 3,
    seed: int | None = 0,
    per_pass: bool = False,
):
    r"""The biased HSIC estimator, averaged over minibatches and passes.

    .. math::

        \mathrm{HSIC}(T, X) = \frac{1}{(m-1)^2} \operatorname{tr}(\tilde K_T \tilde K_X)

    Source: Gretton, Bousquet, Smola & Schoelkopf (2005), "Measuring statistical dependence
    with Hilbert-Schmidt norms", ALT. Kernels, batching and options as in :func:`nhsic`.

    Returns
    -------
    float, or numpy.ndarray of shape (passes,) with ``per_pass``
        ``nan`` if ``t`` or ``x`` holds a non-finite value.
    """
    grams, n_orders = _plain_grams(t, x, kernel_t, kernel_x, sigma, batch_size, bandwidth, passes, seed)
    if grams is None:
        return _result(torch.full((passes,), math.nan, dtype=torch.float64), per_pass)
    return _result(_pass_means(_batch_hsic(grams["t"], grams["x"]), n_orders, passes), per_pass)


@torch.no_grad()
def cka(
    t,
    x,
    *,
    kernel_t: str = "gaussian",
    kernel_x: str | None = None,
    sigma: float = 5.0,
    batch_size: int | None = 100,
    bandwidth: str = "fixed",
    passes: int = 3,
    seed: int | None = 0,
    per_pass: bool = False,
):
    r"""Centred kernel alignment, in [0, 1].

    .. math::

        \mathrm{CKA}(T, X) = \frac{\overline{\mathrm{HSIC}}(T, X)}
            {\sqrt{\overline{\mathrm{HSIC}}(T, T)\, \overline{\mathrm{HSIC}}(X, X)}}

    with :math:`\overline{\mathrm{HSIC}}` the biased HSIC averaged over the minibatches of one
    pass (the minibatch CKA of Nguyen, Raghu & Kornblith 2021, with the biased estimator; with
    ``batch_size=None`` it is the CKA of Kornblith, Norouzi, Lee & Hinton 2019), then averaged
    over the passes. Invariant to isotropic scaling with linear kernels or the median
    bandwidth, not with a fixed Gaussian width. Options as in :func:`nhsic`.

    Returns
    -------
    float, or numpy.ndarray of shape (passes,) with ``per_pass``
        ``nan`` if ``t`` or ``x`` holds a non-finite value or either kernel is constant.
    """
    grams, n_orders = _plain_grams(t, x, kernel_t, kernel_x, sigma, batch_size, bandwidth, passes, seed)
    if grams is None:
        return _result(torch.full((passes,), math.nan, dtype=torch.float64), per_pass)
    cross = _pass_means(_batch_hsic(grams["t"], grams["x"]), n_orders, passes)
    self_t = _pass_means(_batch_hsic(grams["t"], grams["t"]), n_orders, passes)
    self_x = _pass_means(_batch_hsic(grams["x"], grams["x"]), n_orders, passes)
    return _result(cross / torch.sqrt(self_t * self_x), per_pass)
