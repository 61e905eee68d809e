r"""The lattice: O-information of every multiplet of up to 22 variables from one covariance.

The log-determinant of every subset is obtained from its prefix's by one Gaussian-elimination
step (the Cholesky factor of a subset is its prefix's plus one row), all subsets of a level in a
few batched tensor operations, into a table indexed by bitmask. Every leave-one-out entropy of a
:math:`k`-subset is then the entropy of a :math:`(k-1)`-subset already in the table, so each
O-information is a gather (Rosas et al. 2019 for the quantity; see :mod:`.oinfo`).
"""

from __future__ import annotations

import itertools

import torch

from grokscope.measures.entropy import _oinfo_bias

#: Largest number of variables for which the bitmask lattice is used (its table holds 2**n floats).
LATTICE_MAX_VARIABLES = 22


def _all_multiplets(n: int, min_size: int, max_size: int) -> list[tuple[int, ...]]:
    """Every multiplet of range(n) with min_size..max_size members: sizes ascending,
    lexicographic within a size."""
    return [c for k in range(min_size, max_size + 1) for c in itertools.combinations(range(n), k)]


def _subset_logdets(cov: torch.Tensor, max_size: int) -> torch.Tensor:
    """Table T with T[mask] = log det cov[S, S] for every subset S of size <= max_size.

    Subsets are grown in increasing variable order; a node is (its bitmask, its log-determinant,
    the covariance of the variables after its largest one conditioned on it). Adding variable j
    is one step of Gaussian elimination on that conditional covariance: the pivot is the
    conditional variance of j, whose log is the increment of the log-determinant, and the
    rank-one downdate is the child's conditional covariance. Nodes are grouped by their largest
    variable so that each group, and all its children at once, is one batched tensor operation.
    """
    n = cov.shape[0]
    device = cov.device
    table = torch.zeros(1 << n, dtype=torch.float64, device=device)  # (2^n,)
    bits = torch.ones(1, dtype=torch.int64, device=device) << torch.arange(n, device=device)
    # groups[m] = (masks (B,), logdets (B,), conditional covariance of the variables > m (B, r, r))
    groups = {-1: (torch.zeros(1, dtype=torch.int64, device=device),
                   torch.zeros(1, dtype=torch.float64, device=device),
                   cov.unsqueeze(0))}
    for level in range(max_size):
        children: dict[int, list] = {}
        for m, (masks, logdets, cond) in groups.items():
            pivots = torch.diagonal(cond, dim1=-2, dim2=-1)  # (B, r)
            child_logdets = logdets.unsqueeze(1) + torch.log(pivots)  # (B, r)
            child_masks = masks.unsqueeze(1) | bits[m + 1:]  # (B, r)
            table[child_masks.flatten()] = child_logdets.flatten()
            r = cond.shape[-1]
            if level + 1 == max_size or r < 2:
                continue
            # downdated[b, a] = cond[b] - cond[b, :, a] cond[b, a, :] / cond[b, a, a]: the
            # conditional covariance once variable m+1+a joins the conditioning set
            scaled_rows = cond / pivots.unsqueeze(2)  # (B, r, r)
            downdated = cond.unsqueeze(1) - cond.unsqueeze(3) * scaled_rows.unsqueeze(2)  # (B,r,r,r)
            for a in range(r - 1):  # the child adding variable m+1+a keeps the variables after it
                children.setdefault(m + 1 + a, []).append(
                    (child_masks[:, a], child_logdets[:, a], downdated[:, a, a + 1:, a + 1:]))
        groups = {j: (torch.cat([c[0] for c in parts]), torch.cat([c[1] for c in parts]),
                      torch.cat([c[2] for c in parts]))
                  for j, parts in children.items()}
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
                    bias_correction: bool) -> torch.Tensor:
    """O-information (nats) of every multiplet, sizes ascending, lexicographic within a size.

    The leave-one-out sum is built for all 2^n bitmasks at once, one vectorised pass per
    variable j: seen as a (2^(n-1-j), 2, 2^j) array, the masks holding j are the slice
    [:, 1, :] and the same masks without j the slice [:, 0, :], so nothing is gathered.
    """
    n = cov.shape[0]
    device = cov.device
    table = _subset_logdets(cov, max_size)  # (2^n,)
    # sum over members j of [log var_j - log det S_{-j}], accumulated term by term so that for
    # two variables the terms are exact negatives and the O-information is exactly 0
    loo = torch.zeros(1 << n, dtype=torch.float64, device=device)  # (2^n,)
    for j in range(n):
        loo.view(-1, 2, 1 << j)[:, 1, :] += table[1 << j] - table.view(-1, 2, 1 << j)[:, 0, :]
    sizes = torch.arange(min_size, max_size + 1, device=device)
    bias = _oinfo_bias(sizes, n_samples) if bias_correction else torch.zeros(len(sizes))
    values = []
    for k, masks, b in zip(sizes.tolist(), _lexicographic_masks(n, min_size, max_size, device),
                           bias.tolist()):
        values.append(0.5 * ((k - 2) * table[masks] + loo[masks]) - b)  # (C(n, k),)
    return torch.cat(values)
