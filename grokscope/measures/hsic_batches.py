"""The variables of the HSIC estimators and the minibatches they are estimated on.

A variable holds the samples of one side of a dependence measure as they were given, never a
converted copy of all of them: real features ``(n, d)`` in their own dtype, or token ids
``(n, T)`` that stand for their concatenated one-hot codes (:class:`TokenInputs`; integer
labels are token ids of one position). Each minibatch's rows are gathered, and real ones
converted to float64, only when its kernel is built.

A pass is a random order of the samples cut into consecutive minibatches (:func:`pass_orders`),
and the value of an estimator is the mean over the minibatches of each pass (:func:`pass_means`).
Minibatches of equal size form a group, and a group is worked through in chunks of at most
:data:`CHUNK_BYTES` of temporaries (:func:`chunks`), so memory grows with the batch size, not
with the number of samples. See :mod:`grokscope.measures.hsic` for the method and its sources.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from numbers import Integral, Real

import torch

from grokscope.errors import GrokscopeError
from grokscope.measures.thread_independent import fixed_order_sum

KERNELS = ("gaussian", "linear")
BANDWIDTHS = ("fixed", "median")

#: Temporaries of one chunk of minibatches (gathered rows, kernel matrices, factors): 64 MiB. A
#: chunk holds at least one minibatch, so a single batch larger than this still runs.
CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True, eq=False)
class TokenInputs:
    r"""Integer token ids read as the concatenation of their positions' one-hot codes.

    Sample :math:`i` with tokens :math:`(v_{i1}, \dots, v_{iT})` stands for the vector
    :math:`x_i \in \{0, 1\}^{T V}` with a one at :math:`(t, v_{it})` for each position
    :math:`t`, without that vector ever being built: two such vectors have

    .. math::

        x_i^\top x_j = \#\{t : v_{it} = v_{jt}\}, \qquad
        \lVert x_i - x_j \rVert^2 = 2\,\#\{t : v_{it} \ne v_{jt}\},

    so their kernels follow from Hamming distances, and the Gaussian kernel's dimension is
    :math:`d = T V`.

    Parameters
    ----------
    tokens : array_like of int, shape (n, ...)
        Non-negative token ids; trailing axes are flattened into the ``T`` positions.
    vocabulary : int, optional
        ``V``, the size of each position's one-hot code (default: the largest id + 1, the code a
        one-hot encoding of these samples would have). Give the data set's own when measuring a
        subset, so that every subset has the kernel of the whole.
    """

    tokens: torch.Tensor
    vocabulary: int | None = None

    def __post_init__(self):
        tokens = torch.as_tensor(self.tokens)
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool or tokens.ndim == 0:
            raise GrokscopeError(f"tokens: expected integer token ids, one row per sample, got {tokens.dtype} "
                                 f"of shape {tuple(tokens.shape)}")
        tokens = tokens.reshape(tokens.shape[0], -1).to(torch.int64)  # (n, T)
        if tokens.numel() and int(tokens.min()) < 0:
            raise GrokscopeError("tokens: token ids must be non-negative")
        largest = int(tokens.max()) if tokens.numel() else -1
        vocabulary = largest + 1 if self.vocabulary is None else self.vocabulary
        if not (_is_integer(vocabulary) and vocabulary > largest and vocabulary >= 1):
            raise GrokscopeError(f"vocabulary: must be an integer above every token id ({largest}), got {vocabulary!r}")
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "vocabulary", int(vocabulary))

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, index) -> TokenInputs:
        """The samples ``index`` selects (a mask or indices), with the same vocabulary."""
        return TokenInputs(self.tokens[index], self.vocabulary)

    def to(self, device) -> TokenInputs:
        return TokenInputs(self.tokens.to(device), self.vocabulary)


def as_hsic_inputs(x) -> torch.Tensor | TokenInputs:
    """A model's inputs as nHSIC's ``x``: real inputs as a tensor (flattened to ``(n, d)`` by the
    estimators), integer inputs as :class:`TokenInputs` (so that the Gaussian kernel compares
    which tokens are equal rather than how far apart their ids are), of the largest id + 1."""
    x = torch.as_tensor(x)
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        return x
    if x.numel() and int(x.min()) < 0:
        raise GrokscopeError("hsic: integer inputs must be non-negative token ids")
    return TokenInputs(x)


@dataclass(frozen=True, eq=False)
class Variable:
    """One side of a dependence measure: its samples, as given, and its kernel.

    ``vocabulary`` None: ``samples`` are real features ``(n, d)`` of any real dtype.
    Otherwise ``samples`` are token ids ``(n, T)`` standing for one-hot codes of ``T * vocabulary``
    entries (see :class:`TokenInputs`).
    """

    samples: torch.Tensor
    kernel: str
    vocabulary: int | None = None

    @property
    def n(self) -> int:
        return self.samples.shape[0]

    @property
    def dim(self) -> int:
        """The dimension of the vectors the kernel compares (the one-hot one for tokens)."""
        width = self.samples.shape[1]
        return width if self.vocabulary is None else width * self.vocabulary

    @property
    def is_tokens(self) -> bool:
        return self.vocabulary is not None

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """The rows of the minibatches ``index`` ``(C, m)``: ``(C, m, d)`` float64 features or
        ``(C, m, T)`` token ids."""
        rows = self.samples[index]
        return rows if self.is_tokens else rows.to(torch.float64)

    def finite(self) -> bool:
        # A sum is nan or inf whenever a term is (accumulated in float64: no overflow of a
        # float32 sum), one reduction instead of a boolean copy of the samples.
        return self.is_tokens or bool(torch.isfinite(self.samples.sum(dtype=torch.float64)))


Variables = dict[str, Variable]


def as_variable(a, name: str, kernel: str | None) -> Variable:
    """The variable of ``a``: :class:`TokenInputs`, integer labels ``(n,)`` (codes of their
    distinct values, as tokens of one position: one-hot codes, linear kernel by default), or
    real features (``(n, ...)``, trailing axes flattened; Gaussian kernel by default)."""
    if isinstance(a, TokenInputs):
        return Variable(a.tokens, resolve_kernel(kernel, False, f"kernel_{name}"), a.vocabulary)
    a = torch.as_tensor(a)
    if a.is_complex() or a.dtype == torch.bool:
        raise GrokscopeError(f"{name}: expected real features or integer labels, got dtype {a.dtype}")
    if a.ndim == 0:
        raise GrokscopeError(f"{name}: expected one row per sample, got a scalar")
    if a.ndim == 1 and not a.is_floating_point():
        # Codes 0..K-1 from the distinct values, so any label values work.
        distinct, codes = torch.unique(a, return_inverse=True)  # (K,), (n,)
        return Variable(codes[:, None], resolve_kernel(kernel, True, f"kernel_{name}"), len(distinct))
    return Variable(a.reshape(a.shape[0], -1), resolve_kernel(kernel, False, f"kernel_{name}"))


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
    """Validated variables on the first variable's device, each with its kernel."""
    out: Variables = {}
    device = None
    for name, value in named.items():
        variable = as_variable(value, name, kernels[name])
        device = variable.samples.device if device is None else device
        out[name] = Variable(variable.samples.to(device), variable.kernel, variable.vocabulary)
    first = next(iter(out))
    n = out[first].n
    for name, variable in out.items():
        if variable.n != n:
            raise GrokscopeError(f"{name}: has {variable.n} samples but {first} has {n}")
    if n < 2:
        raise GrokscopeError(f"{first}: needs at least 2 samples, got {n}")
    return out


def check_labels(y) -> None:
    y_tensor = torch.as_tensor(y)
    if y_tensor.ndim != 1 or y_tensor.is_floating_point() or y_tensor.is_complex():
        raise GrokscopeError(
            f"y: expected 1-D integer labels, got shape {tuple(y_tensor.shape)} of {y_tensor.dtype}"
        )


def all_finite(variables: Variables) -> bool:
    return all(variable.finite() for variable in variables.values())


# --- passes and minibatches ----------------------------------------------------------------


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


def batch_groups(orders: torch.Tensor, batch_size: int | None) -> list[torch.Tensor]:
    """The sample indices of the minibatches of each order of ``orders`` ``(P, n)``, grouped by
    size: the full batches of every pass as one ``(P * B, m)`` tensor, pass after pass, then the
    remainders as ``(P, r)`` if they hold at least two samples."""
    n = orders.shape[1]
    if batch_size is None or batch_size >= n:
        return [orders]  # (P, n)
    full = n - n % batch_size
    groups = [orders[:, :full].reshape(-1, int(batch_size))]  # (P * B, m)
    if n - full >= 2:
        groups.append(orders[:, full:])  # (P, r)
    return groups


def chunks(group: torch.Tensor, variables: list[Variable], matrices: int) -> Iterator[tuple[slice, torch.Tensor]]:
    """Consecutive slices of a group's minibatches ``(G, m)`` and their indices ``(C, m)``, each
    chunk's temporaries within :data:`CHUNK_BYTES`: the rows of ``variables`` and ``matrices``
    float64 ``(m, m)`` matrices per minibatch."""
    m = group.shape[1]
    row_bytes = sum(8 * v.samples.shape[1] for v in variables)
    per_batch = m * row_bytes + matrices * 8 * m * m
    size = max(1, CHUNK_BYTES // per_batch)
    for start in range(0, group.shape[0], size):
        part = slice(start, min(start + size, group.shape[0]))
        yield part, group[part]


def walk_minibatches(orders: torch.Tensor, batch_size: int | None, variables: list[Variable], matrices: int,
                     statistics: Callable[[int, slice, torch.Tensor], dict[str, torch.Tensor]]
                     ) -> dict[str, list[torch.Tensor]]:
    """Per-batch values of ``statistics`` over every minibatch of ``orders``, chunk by chunk.

    ``statistics(group, part, index)`` gets the number of a group of :func:`batch_groups`, the
    slice of its minibatches in this chunk and their indices ``(C, m)``, and returns named
    ``(C,)`` values; the result holds, per name, one tensor of values per group (on the CPU),
    ready for :func:`pass_means`.
    """
    out: dict[str, list[torch.Tensor]] = {}
    for number, group in enumerate(batch_groups(orders, batch_size)):
        parts: dict[str, list[torch.Tensor]] = {}
        for part, index in chunks(group, variables, matrices):
            for name, values in statistics(number, part, index).items():
                parts.setdefault(name, []).append(values.cpu())
        for name, values in parts.items():
            out.setdefault(name, []).append(torch.cat(values))
    return out


def pass_means(values: list[torch.Tensor], n_orders: int, passes: int) -> torch.Tensor:
    """``(passes,)``: each pass's mean over its batches, from per-batch ``values`` (one tensor per
    group of :func:`batch_groups` over ``n_orders`` distinct orders, repeated if fewer than passes)."""
    per_batch = torch.cat([v.reshape(n_orders, -1) for v in values], dim=1)  # (P, batches)
    per_order = fixed_order_sum(per_batch, keep=1) / per_batch.shape[1]  # (P,)
    return per_order.expand(passes) if n_orders < passes else per_order
