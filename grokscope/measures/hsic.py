r"""Kernel dependence measures: normalised HSIC (NOCCO), plain HSIC and CKA.

This module holds the method and the public estimators; the variables and their minibatches live
in :mod:`grokscope.measures.hsic_batches`, the kernels in :mod:`grokscope.measures.hsic_kernels`
and the precomputed input side (:class:`HsicReference`) in :mod:`grokscope.measures.hsic_plane`.

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

Integer labels become one-hot codes, whose linear kernel is :math:`[y_i = y_j]`. Token ids
(:class:`TokenInputs`, what :func:`as_hsic_inputs` makes of a model's integer inputs) stand for
the concatenation of their positions' one-hot codes, :math:`d = T V` for ``T`` positions of a
vocabulary of ``V``, and their kernels come from Hamming distances without any vector of that
size being built:

.. math::

    \lVert a - b \rVert^2 = 2\,\#\{t : a_t \ne b_t\}, \qquad a^\top b = \#\{t : a_t = b_t\}

(both exact integers, so the values are those of the one-hot vectors; labels are tokens of one
position).

Deliberate differences from the authors' code: every kernel is centred on both sides
(:math:`HKH`, Fukumizu et al.'s definition; their Gaussian kernel is centred on one side only,
:math:`KH`, and their linear label kernel not at all); everything is computed in float64; a
final batch of a single sample (whose centred kernel is zero) is dropped. On synthetic data of the
default run's shape, their exact formulas (in float64) and these agree to 1e-12 for
nHSIC(T; X) and to 3e-6 relative for nHSIC(T; Y).

Minibatches of equal size, of every pass, are computed together as ``(C, m, m)`` tensors, in
chunks of at most 64 MiB of temporaries (:data:`~grokscope.measures.hsic_batches.CHUNK_BYTES`):
one batched matmul (or one comparison per token position) for the distances, one batched
Cholesky factorisation per variable, no Python loop per batch, and memory bounded by the batch
size rather than the number of samples (each chunk's rows are gathered, and converted to
float64, only when its kernels are built). Over a checkpoint series only the representation
changes: :func:`hsic_reference` computes the input and label operators once (keeping them,
``8 * passes * n * batch_size`` bytes per variable) and :func:`hsic_measures` accepts it in
place of ``x``.
"""

from __future__ import annotations

import inspect
import math

import torch

from grokscope.errors import GrokscopeError
from grokscope.measures.hsic_batches import (  # noqa: F401 - the public names of hsic_batches, importable from here
    BANDWIDTHS,
    KERNELS,
    TokenInputs,
    all_finite,
    as_hsic_inputs,
    check_options,
    distinct_orders,
    pass_means,
    pass_orders,
    validated_variables,
    walk_minibatches,
)
from grokscope.measures.hsic_kernels import centred_gram, trace_products
from grokscope.measures.hsic_plane import (
    HsicReference,
    build_reference,
    direct_measures,
    measures_against,
    reference_variables,
)


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
    x : array_like, shape (n, ...), or (n,) of int, or TokenInputs
        Features, integer labels (one-hot codes; any label values), or token ids (their
        positions' one-hot codes, compared by Hamming distance).
    kernel_t, kernel_x : {"gaussian", "linear"}
        Kernels; ``kernel_x=None`` picks ``"linear"`` for integer labels, ``"gaussian"`` for
        features and tokens.
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


def _check_reference_options(reference: HsicReference, given: dict[str, object]) -> None:
    """Options given beside a reference must be left at their defaults or match it."""
    defaults = inspect.signature(hsic_measures).parameters
    for name, value in given.items():
        if value != defaults[name].default and value != getattr(reference, name):
            raise GrokscopeError(
                f"{name}: the reference was built with {name}={getattr(reference, name)!r}, not "
                f"{value!r}; set it in hsic_reference"
            )


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
    checkpoints: every checkpoint is then measured on the same batches. It keeps every operator,
    ``8 * passes * n * batch_size`` bytes per variable (see :class:`HsicReference`), and nothing
    of the inputs.

    Parameters
    ----------
    x : array_like, shape (n, ...), or (n,) of int, or TokenInputs
        The network's input (or labels), as in :func:`nhsic`.
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
    check_options(sigma, batch_size, bandwidth, seed, eps, passes)
    named, kernels = reference_variables(x, y, kernel_x)
    return build_reference(validated_variables(named, kernels), sigma, eps, batch_size, bandwidth, passes, seed)


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
    x : array_like, shape (n, ...), TokenInputs, or HsicReference
        The network's input (as in :func:`nhsic`), or a reference built from it (then leave ``y`` out and the other
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
        t_variable = validated_variables({"t": t}, {"t": kernel_t})["t"]
        if t_variable.n != x.n_samples:
            raise GrokscopeError(f"t: has {t_variable.n} samples but the reference has {x.n_samples}")
        return {name: _result(v, per_pass) for name, v in measures_against(x, t_variable).items()}
    check_options(sigma, batch_size, bandwidth, seed, eps, passes)
    named, kernels = reference_variables(x, y, kernel_x)
    variables = validated_variables({"t": t, **named}, {"t": kernel_t, **kernels})
    t_variable = variables.pop("t")
    values = direct_measures(variables, t_variable, sigma, eps, batch_size, bandwidth, passes, seed)
    return {name: _result(v, per_pass) for name, v in values.items()}


def _plain_traces(t, x, pairs, kernel_t, kernel_x, sigma, batch_size, bandwidth, passes, seed):
    r"""Each pass's mean of :math:`\operatorname{tr}(\tilde K_A \tilde K_B) / (m-1)^2` over its
    minibatches, ``(passes,)``, for each pair ``(A, B)`` of ``pairs`` (``"t"``, ``"x"``), keyed
    ``A + B``; ``None`` if ``t`` or ``x`` is not finite."""
    check_options(sigma, batch_size, bandwidth, seed, passes=passes)
    variables = validated_variables({"t": t, "x": x}, {"t": kernel_t, "x": kernel_x})
    if not all_finite(variables):
        return None
    orders = distinct_orders(variables["t"].n, batch_size, passes, seed)

    def traces(group: int, part: slice, index: torch.Tensor) -> dict[str, torch.Tensor]:
        grams = {name: centred_gram(v, index, sigma, bandwidth) for name, v in variables.items()}
        scale = (index.shape[1] - 1) ** 2
        return {a + b: trace_products(grams[a], grams[b]) / scale for a, b in pairs}

    values = walk_minibatches(orders, batch_size, list(variables.values()), 3, traces)
    return {name: pass_means(v, orders.shape[0], passes) for name, v in values.items()}


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
    values = _plain_traces(t, x, [("t", "x")], kernel_t, kernel_x, sigma, batch_size, bandwidth, passes, seed)
    if values is None:
        return _result(torch.full((passes,), math.nan, dtype=torch.float64), per_pass)
    return _result(values["tx"], per_pass)


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
    pairs = [("t", "x"), ("t", "t"), ("x", "x")]
    values = _plain_traces(t, x, pairs, kernel_t, kernel_x, sigma, batch_size, bandwidth, passes, seed)
    if values is None:
        return _result(torch.full((passes,), math.nan, dtype=torch.float64), per_pass)
    return _result(values["tx"] / torch.sqrt(values["tt"] * values["xx"]), per_pass)
