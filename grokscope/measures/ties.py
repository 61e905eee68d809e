r"""The rank order of every column and its tied blocks, from one sort, and the random tie orders.

A column's copula scores are the standard-normal quantiles of ranks 1..n placed in rank order.
Where values are tied (the exact zeros of ReLU features) the ranks of a block of equal values
are unordered; :class:`Ranks` sorts each column once (value, then row) and keeps which rank
positions lie in a block of two or more. From that one sort come the three treatments of ties:

* ``"index"``: the row order the sort leaves, the scores of the reference code;
* ``"average"``: each tied value gets the mean score of its block (:meth:`Ranks.average_scores`);
* ``"random"``: draw :math:`r` assigns every tied block's scores to its rows in an independent
  uniform random order (:meth:`Ranks.draw`). Only the tied positions are redrawn, in place:
  untied scores never move, so a draw costs one permutation of each tied block, one scatter of
  the tied scores and the covariance product.

Draw :math:`r` of seed :math:`s` depends only on :math:`(s, r)`, through its own generator
(:func:`draw_generator`), so a draw can be recomputed without the ones before it. Ranks are
computed on the CPU, in NumPy (whose sorts and fancy indexing are several times faster than
torch's there), whatever the device of the data; scores come back as CPU tensors.

References
----------
Ince, R. A. A., Giordano, B. L., Kayser, C., Rousselet, G. A., Gross, J., & Schyns, P. G. (2017).
A statistical framework for neuroimaging data analysis based on mutual information estimated via
a Gaussian copula. Human Brain Mapping 38, 1541-1573.
"""

from __future__ import annotations

import numpy as np
import torch

#: Tied blocks at least this long are permuted by one ``torch.randperm`` each (linear time);
#: the shorter ones all together by one sort of random keys, which costs less than a call each.
LONG_BLOCK = 256


def normal_scores(n: int) -> np.ndarray:
    """(n,) the standard-normal quantiles of ranks 1..n: every column's scores, in rank order."""
    return torch.special.ndtri(torch.arange(1, n + 1, dtype=torch.float64) / (n + 1.0)).numpy()


def draw_generator(seed: int, draw: int) -> torch.Generator:
    """The CPU generator of draw ``draw`` of seed ``seed`` (the CPU, so any device gets the same
    orders); seeded from the pair by NumPy's SeedSequence, so draws are independent streams."""
    state = np.random.SeedSequence([int(seed), int(draw)]).generate_state(1, np.uint64)[0]
    return torch.Generator(device="cpu").manual_seed(int(state) >> 1)


def value_keys(a: np.ndarray) -> np.ndarray:
    """(m, n) int64 keys in [0, 2^32) with the order and the ties of each column of ``a`` (n, m).

    Values that are all exact float32 (stored features always are) are keyed by their float32
    bits made monotone (negatives' bits flipped, positives' sign bit set), with no sort at all;
    others by the rank of their value's first occurrence, from one argsort.
    """
    single = a.astype(np.float32)
    if np.array_equal(single, a):
        bits = np.ascontiguousarray((single + np.float32(0.0)).T).view(np.uint32)  # -0.0 -> 0.0
        keys = np.where(bits >> 31, ~bits, bits | np.uint32(1 << 31))
        return keys.astype(np.int64)
    at = np.ascontiguousarray(a.T)  # (m, n)
    by_value = np.argsort(at, axis=1)
    ordered = np.take_along_axis(at, by_value, axis=1)
    starts = np.ones(at.shape, dtype=bool)  # first of its run of equals
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    first = np.maximum.accumulate(np.where(starts, np.arange(at.shape[1]), 0), axis=1)
    keys = np.empty_like(first)
    np.put_along_axis(keys, by_value, first, axis=1)
    return keys


class Ranks:
    """Every column's rank order and tied blocks of ``x`` (n, m), from one sort, on the CPU.

    ``order[j, p]`` is the row at rank ``p`` of column ``j``, ties in row order. Scores come in
    the (m, n) layout, one row per column, as CPU float64 tensors; ``mean`` is the mean of the
    n scores, the mean of every column whatever the order of its ties.
    """

    def __init__(self, x: torch.Tensor) -> None:
        n, m = x.shape
        self.m, self.n = m, n
        # value key and row packed into one int64 (key < 2^32, row < 2^31), so that one sort of
        # plain integers orders by value, ties by row
        packed = value_keys(x.detach().cpu().numpy())
        packed <<= 31
        packed |= np.arange(n)
        packed.sort(axis=1)
        value = packed >> 31
        self.order = packed & ((1 << 31) - 1)  # (m, n) rows by value, ties by row
        del packed
        first = np.empty((m, n), dtype=bool)  # first of its block of equal values
        first[:, 0] = True
        np.not_equal(value[:, 1:], value[:, :-1], out=first[:, 1:])
        del value
        self.first = first
        self.scores = normal_scores(n)  # (n,) in rank order
        self.mean = float(self.scores.mean())
        self.variance = float(self.scores.var(ddof=1))
        tied = ~first
        tied[:, :-1] |= ~first[:, 1:]  # (m, n) rank positions in a block of two or more
        positions = np.flatnonzero(tied)  # (T,) flat rank positions
        del tied
        # where each tied score goes: the flat (column, row) of its rank in row order
        rank = positions % n
        self.targets = positions - rank + self.order.ravel()[positions]  # (T,)
        self.tied_scores = self.scores[rank]  # (T,)
        # the tied blocks, as runs of 0..T-1: the long ones by (start, length), the short ones by
        # their members and block ids
        starts = np.flatnonzero(first.ravel()[positions])  # (B,)
        lengths = np.diff(starts, append=len(positions))  # (B,)
        del positions, rank
        long = lengths >= LONG_BLOCK
        self.long_blocks = list(zip(starts[long].tolist(), lengths[long].tolist()))
        short_lengths = lengths[~long]
        block = np.repeat(np.arange(len(short_lengths)), short_lengths)  # (S,) short block of each
        offset = np.arange(len(block)) - np.repeat(np.cumsum(short_lengths) - short_lengths,
                                                   short_lengths)  # place inside its block
        self.short_members = np.repeat(starts[~long], short_lengths) + offset  # (S,) in 0..T-1
        self.short_blocks = block << 32  # (S,) the block id above 32 random bits

    def index_scores(self) -> torch.Tensor:
        """(m, n) scores with ties in row order (``ties="index"``)."""
        z = torch.empty((self.m, self.n), dtype=torch.float64)
        return z.scatter_(1, torch.from_numpy(self.order),
                          torch.from_numpy(self.scores).expand(self.m, self.n))

    def average_scores(self) -> torch.Tensor:
        """(m, n) scores, each tied value the mean score of the ranks its block spans: its
        expectation under a uniform random order of the block (``ties="average"``)."""
        block = np.cumsum(self.first, axis=1) - 1  # (m, n) block of each rank
        block += (np.arange(self.m) * self.n)[:, None]  # one id per (column, block)
        sums = np.bincount(block.ravel(), weights=np.tile(self.scores, self.m),
                           minlength=self.m * self.n)
        counts = np.bincount(block.ravel(), minlength=self.m * self.n)
        mean = (sums[block] / counts[block])  # (m, n) in rank order
        z = torch.empty((self.m, self.n), dtype=torch.float64)
        return z.scatter_(1, torch.from_numpy(self.order), torch.from_numpy(mean))

    def forget_order(self) -> None:
        """Drop the rank order and the block starts, which only the index and averaged scores
        need: the draws keep what they use (a few numbers per tied entry)."""
        del self.order, self.first

    def draw(self, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Write one random order of every tied block into the CPU tensor ``z`` (m, n) of scores
        from :meth:`index_scores` or an earlier draw (their untied entries are the same)."""
        targets = np.empty_like(self.targets)  # (T,) where each tied score goes in this draw
        for start, length in self.long_blocks:
            targets[start:start + length] = self.targets[start:start + length][
                torch.randperm(length, generator=generator).numpy()]
        if len(self.short_members):
            # 32 random bits under the block id: one sort keeps the blocks in place and shuffles
            # each (two equal keys in a block, chance ~length^2 / 2^33, keep their order)
            noise = torch.randint(0, 1 << 32, (len(self.short_members),), generator=generator)
            shuffled = np.argsort(self.short_blocks | noise.numpy(), kind="stable")
            targets[self.short_members] = self.targets[self.short_members[shuffled]]
        z.view(-1).numpy()[targets] = self.tied_scores
        return z
