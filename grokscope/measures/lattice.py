r"""The lattice: O-information of every multiplet of up to 22 variables from one covariance.

The log-determinant of every subset is obtained from a smaller one's by one Gaussian-elimination
step, a whole range of bitmasks at a time (:func:`_subset_logdets`), into a table indexed by
bitmask. Every leave-one-out entropy of a :math:`k`-subset is then the entropy of a
:math:`(k-1)`-subset already in the table, so each O-information is a gather (Rosas et al. 2019
for the quantity; see :mod:`.oinfo`). The multiplets themselves are returned as arrays
(:class:`Multiplets`), not as one Python tuple each.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from grokscope.measures.entropy import _oinfo_bias

#: Largest number of variables for which the bitmask lattice is used (its table holds 2**n floats).
LATTICE_MAX_VARIABLES = 22


#: Most variables a bitmask (int64) holds.
MASK_MAX_VARIABLES = 63


def _all_multiplets(n: int, min_size: int, max_size: int) -> list[tuple[int, ...]]:
    """Every multiplet of range(n) with min_size..max_size members: sizes ascending,
    lexicographic within a size."""
    return [c for k in range(min_size, max_size + 1) for c in itertools.combinations(range(n), k)]


class Multiplets(Sequence):
    """Multiplets of variables, held as arrays: sizes ascending, lexicographic within a size.

    ``masks`` (count,) int64: bit ``j`` set when variable ``j`` is a member (up to
    :data:`MASK_MAX_VARIABLES` variables); :meth:`members` (count, largest size) int64, each
    row's variables ascending then -1; ``sizes`` (count,). Indexing and iteration give tuples of
    ints, and ``==`` compares with a list of tuples, so it reads like the list it replaces;
    building those tuples is left to callers who want them.
    """

    def __init__(self, n_variables: int, masks: np.ndarray | None = None,
                 members: np.ndarray | None = None) -> None:
        self.n_variables = int(n_variables)
        self._masks = None if masks is None else np.asarray(masks, dtype=np.int64)
        self._members = None if members is None else np.asarray(members, dtype=np.int64)
        self._sizes_range: tuple[int, int] | None = None  # set when it is every multiplet

    @classmethod
    def every(cls, n: int, min_size: int, max_size: int) -> Multiplets:
        """Every multiplet of range(n) with min_size..max_size members."""
        if n <= MASK_MAX_VARIABLES:
            every = cls(n, masks=torch.cat(_lexicographic_masks(n, min_size, max_size,
                                                                "cpu")).numpy())
        else:
            tuples = _all_multiplets(n, min_size, max_size)
            members = np.full((len(tuples), max_size), -1, dtype=np.int64)
            for row, multiplet in enumerate(tuples):
                members[row, :len(multiplet)] = multiplet
            every = cls(n, members=members)
        every._sizes_range = (min_size, max_size)
        return every

    @property
    def masks(self) -> np.ndarray:
        if self._masks is None:
            raise ValueError(f"{self.n_variables} variables do not fit a 64-bit mask")
        return self._masks

    @property
    def sizes(self) -> np.ndarray:
        if self._masks is None:
            return (self._members >= 0).sum(axis=1)
        bits = (self._masks[:, None] >> np.arange(self.n_variables)) & 1
        return bits.sum(axis=1)

    def members(self) -> np.ndarray:
        """(count, largest size) the variables of each multiplet, ascending, padded with -1."""
        if self._members is None:
            bits = ((self._masks[:, None] >> np.arange(self.n_variables)) & 1).astype(bool)
            width = int(bits.sum(axis=1).max()) if len(bits) else 0
            # each row's set bits first, in order: a stable sort of "not a member"
            order = np.argsort(~bits, axis=1, kind="stable")[:, :width]
            self._members = np.where(np.take_along_axis(bits, order, axis=1), order, -1)
        return self._members

    def __len__(self) -> int:
        return len(self._masks if self._masks is not None else self._members)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Multiplets(self.n_variables,
                              None if self._masks is None else self._masks[index],
                              None if self._members is None else self._members[index])
        if self._masks is not None:
            mask = int(self._masks[index])
            return tuple(j for j in range(self.n_variables) if mask >> j & 1)
        row = self._members[index]
        return tuple(int(v) for v in row[row >= 0])

    def __iter__(self):
        if self._sizes_range is not None:  # every multiplet: itertools writes the tuples fastest
            low, high = self._sizes_range
            return itertools.chain.from_iterable(
                itertools.combinations(range(self.n_variables), k) for k in range(low, high + 1))
        members, sizes = self.members(), self.sizes
        return iter([tuple(row[:size]) for row, size in zip(members.tolist(), sizes.tolist())])

    def __eq__(self, other) -> bool:
        if isinstance(other, Multiplets):
            return len(self) == len(other) and bool(np.array_equal(self.members(),
                                                                   other.members()))
        return isinstance(other, Sequence) and list(self) == [tuple(m) for m in other]

    def __repr__(self) -> str:
        return f"Multiplets({len(self)} of {self.n_variables} variables)"


def _subset_logdets(cov: torch.Tensor) -> torch.Tensor:
    r"""Table T with T[mask] = log det cov[S, S] for every subset S (bit j of mask: j in S).

    With :math:`c_j(S)` the variance of :math:`j` given :math:`S \subseteq \{0..j-1\}`,

    .. math::

        T[S \cup \{j\}] = T[S] + \log c_j(S),

    so the masks from :math:`2^j` to :math:`2^{j+1}` are the masks below :math:`2^j` plus one
    contiguous vector. The conditional covariances :math:`K_{ij}(S) = \operatorname{cov}(i, j
    \mid S)`, :math:`i \le j`, :math:`S \subseteq \{0..i-1\}`, come by one step of Gaussian
    elimination on the largest member :math:`h` of :math:`S` (:math:`S = S' \cup \{h\}`):

    .. math::

        K_{ij}(S) = K_{ij}(S') - K_{hi}(S')\, K_{hj}(S') / K_{hh}(S'),

    again a contiguous block (the masks of :math:`S` from :math:`2^h` to :math:`2^{h+1}`) for
    all :math:`j` at once: :math:`n^2/2` vector operations, :math:`2^{n+1}` numbers in all.
    """
    n = cov.shape[0]
    # conditional[i] (n - i, 2^i): row j - i holds K_ij(S) for every mask S below 2^i
    conditional = []
    for i in range(n):
        k = cov.new_empty(n - i, 1 << i)
        k[:, 0] = cov[i, i:]
        for h in range(i):
            width = 1 << h
            kh = conditional[h]  # (n - h, 2^i') with 2^h columns used
            k[:, width:2 * width] = k[:, :width] - kh[i - h:, :width] * (
                kh[i - h, :width] / kh[0, :width])
        conditional.append(k)
    table = cov.new_zeros(1 << n)
    for j in range(n):
        width = 1 << j
        table[width:2 * width] = table[:width] + torch.log(conditional[j][0])
    return table


def _lexicographic_masks(n: int, min_size: int, max_size: int, device) -> list[torch.Tensor]:
    """Bitmasks of the k-subsets of range(n) in lexicographic order, for each k in the range.

    Lex(a, k), the k-subsets of {a, ..., n-1}, is those holding a (a joined to Lex(a+1, k-1))
    followed by those that do not (Lex(a+1, k)); built from a = n down to 0.
    """
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    lex = [torch.zeros(1, dtype=torch.int64, device=device)] + [empty] * max_size  # a = n
    for a in range(n - 1, -1, -1):
        lex = [lex[0]] + [torch.cat([lex[k - 1] | (1 << a), lex[k]])
                          for k in range(1, max_size + 1)]
    return lex[min_size:max_size + 1]


def _lattice_values(cov: torch.Tensor, n_samples: int, min_size: int, max_size: int,
                    bias_correction: bool, masks: torch.Tensor | None = None) -> torch.Tensor:
    """O-information (nats) of every multiplet, sizes ascending, lexicographic within a size
    (or of the given ``masks``).

    The leave-one-out sum is built for all 2^n bitmasks at once, one vectorised pass per
    variable j: seen as a (2^(n-1-j), 2, 2^j) array, the masks holding j are the slice
    [:, 1, :] and the same masks without j the slice [:, 0, :], so nothing is gathered; so is
    every mask's value, and the multiplets asked for are one gather.
    """
    n = cov.shape[0]
    device = cov.device
    table = _subset_logdets(cov)  # (2^n,)
    # sum over members j of [log var_j - log det S_{-j}], accumulated term by term so that for
    # two variables the terms are exact negatives and the O-information is exactly 0
    loo = torch.zeros(1 << n, dtype=torch.float64, device=device)  # (2^n,)
    size = torch.zeros(1 << n, dtype=torch.int64, device=device)  # (2^n,) members of each mask
    for j in range(n):
        loo.view(-1, 2, 1 << j)[:, 1, :] += table[1 << j] - table.view(-1, 2, 1 << j)[:, 0, :]
        size[1 << j:2 << j] = size[:1 << j] + 1
    # bias[k] of k variables; sizes 0 and 1 are never asked for
    bias = torch.zeros(n + 1, dtype=torch.float64, device=device)
    if bias_correction:
        bias[1:] = _oinfo_bias(torch.arange(1, n + 1, device=device), n_samples)
    values = 0.5 * ((size - 2) * table + loo) - bias[size]  # (2^n,)
    if masks is None:
        masks = torch.cat(_lexicographic_masks(n, min_size, max_size, device))
    return values[masks]
