r"""Coarse-graining a network's weights and coding the result: truncation ranks, quantisation,
serialisation of the integer codes and their compressed size (DeMoss et al.; the method is
described in :mod:`grokscope.measures.complexity`).
"""

from __future__ import annotations

import bz2
import lzma
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from grokscope.errors import GrokscopeError
from grokscope.measures.weights import shared_entries, spectral_summary
from grokscope.measures.thread_independent import on_one_thread

COMPRESSORS = ("bz2", "lzma")
#: Bin sizes 2^(j/16): 4.4% apart, finer than the cliffs of the loss in the bin size.
BINS_PER_OCTAVE = 16
#: The finest bin searched, relative to the largest stored magnitude: float32's resolution.
FINEST_RELATIVE_BIN = 2.0 ** -24

_INT_TYPES = (np.int8, np.int16, np.int32, np.int64)


def quantise(values, bin_size: float) -> torch.Tensor:
    r"""Integer codes :math:`\operatorname{round}(x / \Delta)` (half to even), as int64.

    The quantised value is ``codes * bin_size``; it differs from ``values`` by at most
    :math:`\Delta/2` per entry.
    """
    if not bin_size > 0:
        raise GrokscopeError(f"bin size: must be positive, got {bin_size}")
    values = as_tensor(values)
    return torch.round(values.to(torch.float64) / bin_size).to(torch.int64)


def truncation_rank(singular_values, tau: float, rtol: float | None = None) -> int:
    r"""The smallest rank :math:`k` with :math:`\sum_{i\le k} s_i \ge \tau \sum_i s_i`.

    Singular values at or below ``rtol`` times the largest count as zero (default: their number
    times float64's machine epsilon; :class:`CoarseGraining` passes the larger dimension, as
    ``numpy.linalg.matrix_rank`` does), so ``tau = 1`` gives the numerical rank, not the full
    dimension. ``tau <= 0`` or a zero matrix gives 0.
    """
    s = as_tensor(singular_values).to(torch.float64).flatten()
    if not 0.0 <= tau <= 1.0:
        raise GrokscopeError(f"tau: must lie in [0, 1], got {tau}")
    if len(s) == 0 or not bool(s.max() > 0):
        return 0
    if rtol is None:
        rtol = len(s) * torch.finfo(torch.float64).eps
    s = torch.sort(s, descending=True).values
    rank = int((s > s[0] * rtol).sum())
    return rank_reaching(torch.cumsum(s[:rank], 0), tau)


def rank_reaching(cumulative: torch.Tensor, tau: float) -> int:
    """The smallest k with cumulative[k-1] >= tau * total, from running sums of singular values."""
    if tau <= 0 or len(cumulative) == 0:
        return 0
    # The total is the running sum's own last entry, so tau = 1 is reached exactly at the rank.
    return int(torch.searchsorted(cumulative, tau * cumulative[-1])) + 1


def as_tensor(values) -> torch.Tensor:
    if isinstance(values, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(values))
    return torch.as_tensor(values)


def low_rank_saves(rank: int, shape: Sequence[int]) -> bool:
    """Whether factors of ``rank`` hold fewer entries than the full ``shape`` matrix."""
    rows, cols = shape
    return rank * (rows + cols) < rows * cols


def serialise(codes: Sequence[torch.Tensor]) -> bytes:
    """Integer codes as bytes: each array row-major, little-endian, in the narrowest signed integer
    type that holds it (int8 when every code lies in [-128, 127], ...), arrays concatenated."""
    parts = []
    for array in codes:
        values = array.detach().to("cpu", torch.int64).numpy()
        kind = np.int64
        if values.size:
            low, high = int(values.min()), int(values.max())
            kind = next(t for t in _INT_TYPES if np.iinfo(t).min <= low and high <= np.iinfo(t).max)
        parts.append(np.ascontiguousarray(values, dtype=np.dtype(kind).newbyteorder("<")).tobytes())
    return b"".join(parts)


def compressed_bits(data: bytes, compressor: str = "bz2") -> int:
    """Size in bits of ``data`` compressed by bz2 (level 9, the authors' call) or lzma (xz, preset 6)."""
    if compressor == "bz2":
        return 8 * len(bz2.compress(data, 9))
    if compressor == "lzma":
        return 8 * len(lzma.compress(data))
    raise GrokscopeError(f"--compressor: unknown {compressor!r}; known: {', '.join(COMPRESSORS)}")


# --- coarse-graining a state dict ----------------------------------------------------------


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.shape == b.shape and a.device == b.device and bool(torch.equal(a, b)))


@dataclass
class _Matrix:
    u: torch.Tensor  # (m, r)
    s: torch.Tensor  # (r,)
    vh: torch.Tensor  # (r, n)
    rank: int  # numerical rank
    cumulative: torch.Tensor  # (rank,): running sums of the singular values


class CoarseGraining:
    r"""The SVDs of a state dict's matrices, computed once, and the coarse-grained networks
    :math:`C_{\tau,\Delta}` built from them (see the module docstring).

    Parameters
    ----------
    state : Mapping[str, array_like]
        A state dict. Entries named in ``names`` (default: every floating-point entry) are
        coded; the rest (integer buffers, masks you leave out) pass through unchanged.
    names : sequence of str, optional
        The entries that make up the description, e.g. ``[n for n, _ in model.named_parameters()]``
        so that floating buffers are not counted.
    tied : sequence of sequences of str, optional
        Names that are one tensor of the model (tied weights, e.g. ``parameter_groups(model)``
        of :mod:`grokscope.features`); default: the entries of ``state`` that share memory
        (:func:`~grokscope.measures.weights.shared_entries`), as a tied weight loaded from a
        checkpoint or taken from ``model.state_dict()`` does.

    Notes
    -----
    A tied tensor is coded, counted and perturbed once: under the first of its names in
    ``names`` (or in ``state``), while every coarse-grained state dict gives all of its names the
    same tensor object, so that ``torch.func.functional_call`` sees one value for them.
    """

    def __init__(self, state: Mapping, names: Sequence[str] | None = None,
                 tied: Sequence[Sequence[str]] | None = None):
        if not isinstance(state, Mapping):
            raise GrokscopeError(f"state: expected a mapping of names to arrays, got {type(state).__name__}")
        self.state = {k: as_tensor(v).detach() for k, v in state.items()}
        groups = shared_entries(state) if tied is None else [tuple(g) for g in tied]
        #: Name -> every name of ``state`` that is the same tensor (itself included).
        self.aliases: dict[str, tuple[str, ...]] = {}
        for group in groups:
            present = tuple(n for n in group if n in self.state)
            for name in present:
                if not _same_values(self.state[name], self.state[present[0]]):
                    raise GrokscopeError(f"state: {present[0]!r} and {name!r} are one tied tensor but hold "
                                         "different values")
                self.aliases[name] = present
                self.state[name] = self.state[present[0]]  # one tensor object per tied tensor
        if names is None:
            names = [k for k, v in self.state.items() if v.is_floating_point()]
        missing = [n for n in names if n not in self.state]
        if missing:
            raise GrokscopeError(f"state: no entry {missing[0]!r}")
        self.names = []
        coded: set[str] = set()
        for name in names:
            if name not in coded:
                self.names.append(name)
                coded.update(self.aliases.get(name, (name,)))
        if not self.names:
            raise GrokscopeError("state: holds no floating-point parameters")
        self.finite = all(bool(torch.isfinite(self.state[n]).all()) for n in self.names)
        self.matrices: dict[str, _Matrix] = {}
        largest = 0.0
        for name in self.names:
            value = self.state[name].to(torch.float64)
            largest = max(largest, float(value.abs().max()) if value.numel() else 0.0)
            if value.ndim != 2 or not self.finite:
                continue
            u, s, vh = on_one_thread(torch.linalg.svd, value, full_matrices=False)  # (m, r) (r,) (r, n)
            rank = truncation_rank(s, 1.0, rtol=max(value.shape) * torch.finfo(torch.float64).eps)
            self.matrices[name] = _Matrix(u, s, vh, rank, torch.cumsum(s[:rank], 0))
            if len(s):
                largest = max(largest, float((u * s).abs().max()), float(vh.abs().max()))
        #: The largest magnitude any stored array can hold (a full matrix, a factor or a vector).
        self.largest = largest

    # -- configurations ------------------------------------------------------------------

    def ranks(self, tau: float) -> tuple[int | None, ...]:
        """Per matrix (in order), the truncation rank at ``tau`` if it is stored as factors, or
        None where the full matrix is kept: the configuration that ``tau`` selects."""
        config = []
        for name, matrix in self.matrices.items():
            rank = rank_reaching(matrix.cumulative, tau)
            config.append(rank if low_rank_saves(rank, self.state[name].shape) else None)
        return tuple(config)

    def coarse(self, config: tuple[int | None, ...], bin_size: float) -> tuple[dict, list[torch.Tensor]]:
        """The coarse-grained state dict (each entry in its original dtype and device) and the
        integer codes that describe it, in serialisation order."""
        ranks = dict(zip(self.matrices, config))
        state = dict(self.state)
        codes = []
        for name in self.names:
            value = self.state[name]
            rank = ranks.get(name)
            if rank is not None:
                matrix = self.matrices[name]
                a = quantise(matrix.u[:, :rank] * matrix.s[:rank], bin_size)  # (m, k)
                b = quantise(matrix.vh[:rank], bin_size)  # (k, n)
                codes += [a, b]
                coarse = (a.to(torch.float64) * bin_size) @ (b.to(torch.float64) * bin_size)  # (m, n)
            else:
                q = quantise(value, bin_size)
                codes.append(q)
                coarse = q.to(torch.float64) * bin_size
            coarse = coarse.to(value.dtype)
            for alias in self.aliases.get(name, (name,)):
                state[alias] = coarse
        return state, codes

    def stored_ranks(self, config: tuple[int | None, ...]) -> dict[str, int]:
        """Per matrix, the rank of its coarse-grained version before quantisation."""
        return {name: (matrix.rank if rank is None else rank)
                for (name, matrix), rank in zip(self.matrices.items(), config)}

    def raw_bits(self, compressor: str = "bz2") -> int:
        """The compressed size of the weights as they are (their own dtype), for scale."""
        data = b"".join(self.state[n].detach().cpu().contiguous().numpy().tobytes() for n in self.names)
        return compressed_bits(data, compressor)

    def spectra(self) -> dict[str, dict[str, float]]:
        """Spectral entropy, effective rank and stable rank per matrix, from the same SVDs."""
        return {name: spectral_summary(matrix.s) for name, matrix in self.matrices.items()}

    # -- the bin grid ----------------------------------------------------------------------

    def bin_range(self, bins_per_octave: int = BINS_PER_OCTAVE) -> tuple[int, int]:
        r"""Exponents ``(j_lo, j_hi)`` of the searched bins :math:`2^{j/q}`: from float32
        resolution of the largest stored magnitude to the first bin that zeroes every code."""
        if self.largest == 0:
            return 0, 0  # nothing to code: every bin gives the same all-zero network
        high = math.ceil(bins_per_octave * math.log2(2 * self.largest))
        low = math.floor(bins_per_octave * math.log2(self.largest * FINEST_RELATIVE_BIN))
        return low, high
