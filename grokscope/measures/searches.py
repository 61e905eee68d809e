"""Heuristic searches over multiplets of bins, for when exhaustive search is too large.

Each returns ``{size: (multiplet, value)}``, the best multiplet found of each size, for an
objective to be minimised (the caller negates the values to search for redundancy); ``evaluate``
maps a list of multiplets (tuples of bin positions) to their values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from grokscope.measures.lattice import _all_multiplets

Evaluate = Callable[[Sequence[tuple[int, ...]]], np.ndarray]


def _best_per_size(multiplets: Sequence[tuple[int, ...]], values: np.ndarray
                   ) -> dict[int, tuple[tuple[int, ...], float]]:
    best: dict[int, tuple[tuple[int, ...], float]] = {}
    for m, v in zip(multiplets, values.tolist()):
        if len(m) not in best or v < best[len(m)][1]:  # first in lexicographic order on ties
            best[len(m)] = (m, v)
    return best


def _greedy(evaluate: Evaluate, n_bins: int, min_size: int, max_size: int
            ) -> dict[int, tuple[tuple[int, ...], float]]:
    """Exhaustive up to size 3 (pairs of bins are all 0 in bins mode), then grow the best
    multiplet one bin at a time, keeping the best extension at each size."""
    seed_size = min(max(min_size, 3), max_size)
    start = _all_multiplets(n_bins, min_size, seed_size)
    best = _best_per_size(start, evaluate(start))
    current = best[seed_size][0]
    for size in range(seed_size + 1, max_size + 1):
        candidates = [tuple(sorted(current + (b,))) for b in range(n_bins) if b not in current]
        best.update(_best_per_size(candidates, evaluate(candidates)))
        current = best[size][0]
    return best


def _annealing(evaluate: Evaluate, n_bins: int, min_size: int, max_size: int, seed: int,
               n_steps: int, n_chains: int = 16) -> dict[int, tuple[tuple[int, ...], float]]:
    """Simulated annealing over multiplets of any size in [min_size, max_size].

    ``n_chains`` chains move together (their proposals are one batched evaluation); a move adds,
    removes or swaps one bin; temperatures fall geometrically from the spread of the starting
    values to a thousandth of it. The best multiplet seen of each size is kept.
    """
    rng = np.random.default_rng(seed)
    seen: dict[tuple[int, ...], float] = {}

    def values_of(multiplets: list[tuple[int, ...]]) -> list[float]:
        new = sorted({m for m in multiplets if m not in seen})
        if new:
            seen.update(zip(new, evaluate(new).tolist()))
        return [seen[m] for m in multiplets]

    chains = [tuple(sorted(rng.choice(n_bins, size=rng.integers(min_size, max_size + 1),
                                      replace=False).tolist())) for _ in range(n_chains)]
    energy = values_of(chains)
    start_temperature = float(np.std(energy)) + 1e-12
    for step in range(n_steps):
        temperature = start_temperature * 1e-3 ** (step / max(1, n_steps - 1))
        proposals = []
        for chain in chains:
            outside = [b for b in range(n_bins) if b not in chain]
            moves = (["add"] if len(chain) < max_size and outside else []) + \
                    (["remove"] if len(chain) > min_size else []) + (["swap"] if outside else [])
            move = moves[rng.integers(len(moves))] if moves else "stay"
            members = list(chain)
            if move in ("remove", "swap"):
                members.pop(rng.integers(len(members)))
            if move in ("add", "swap"):
                members.append(outside[rng.integers(len(outside))])
            proposals.append(tuple(sorted(members)))
        proposed = values_of(proposals)
        for c in range(n_chains):
            delta = proposed[c] - energy[c]
            if delta <= 0 or rng.random() < math.exp(-delta / temperature):
                chains[c], energy[c] = proposals[c], proposed[c]
    multiplets = list(seen)
    return _best_per_size(multiplets, np.array([seen[m] for m in multiplets]))
