r"""The block lattice: O-information of every union of groups of variables (bins of neurons).

The neurons mode of :func:`grokscope.measures.multiplets.oinfo_search`: each multiplet of bins is
the union of their neurons. Both terms of the O-information come from the precision matrix, each
union's complement grown one group at a time (a Schur complement of one group per step), so
nothing larger than one group is ever factorised.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from grokscope.measures.entropy import _oinfo_bias
from grokscope.measures.lattice import _all_multiplets


#: Most memory the block lattice may hold for one level's factor columns; past it
#: :func:`_union_fits` is false and callers take the direct route.
UNION_MAX_BYTES = 1 << 30


def _union_fits(group_sizes: Sequence[int], min_size: int) -> bool:
    """Whether :func:`_union_values` stays within :data:`UNION_MAX_BYTES` (an upper bound)."""
    sizes = sorted(group_sizes, reverse=True)
    n, g = sum(sizes), len(sizes)
    for c in range(1, g - min_size):
        with_children = math.comb(g - 1, c)  # nodes whose largest group is not the last
        if with_children * (n + 1) * sum(sizes[:c]) * 8 > UNION_MAX_BYTES:
            return False
    return True


def _complement_levels(n_groups: int, max_level: int) -> list[list[tuple[int, ...]]]:
    """Subsets of range(n_groups) by size 0..max_level, each level sorted by largest member.

    Sorted so that the parents that can take group b (largest member < b) are a prefix.
    """
    levels = [[()]]
    for _ in range(max_level):
        levels.append([node + (b,) for b in range(n_groups) for node in levels[-1]
                       if (node[-1] if node else -1) < b])
    return levels


def _union_values(cov: torch.Tensor, groups: Sequence[Sequence[int]], n_samples: int,
                  min_size: int, max_size: int, bias_correction: bool) -> torch.Tensor:
    r"""O-information (nats) of the union of every multiplet of groups, in the order of
    ``_all_multiplets(len(groups), min_size, max_size)``.

    Works on the precision :math:`\Theta = \Sigma^{-1}`. For a union :math:`M` with complement
    :math:`C` (the variables of the groups left out),

    .. math::

        \log\det\Sigma_M = \log\det\Sigma + \log\det\Theta_{CC}, \qquad
        (\Sigma_M^{-1})_{jj} = \Theta_{jj} - \lVert W_{j\cdot} \rVert^2, \quad
        W = \Theta_{MC} L_C^{-\top}, \; L_C L_C^\top = \Theta_{CC}

    (block inversion). Complements are grown one group at a time, as a lattice: adding group
    :math:`b` to :math:`C` extends :math:`L_C` by one block row, and :math:`W` by the columns
    :math:`(\Theta_{\cdot b} - W W_{b\cdot}^\top) L_b^{-\top}` with :math:`L_b` the Cholesky
    factor of the Schur complement :math:`\Theta_{bb} - W_{b\cdot} W_{b\cdot}^\top`; every
    :math:`\lVert W_{j\cdot}\rVert^2` is the parent's plus that of the new columns. A node keeps
    only the rows of the variables outside it, so the work per multiplet is one
    (rows x width) by (width x group) product, with no factorisation larger than one group. All
    nodes of a level that add the same group are one batched operation. Groups are taken
    largest first, which minimises that work.
    """
    device = cov.device
    n_groups = len(groups)
    by_size = sorted(range(n_groups), key=lambda g: (-len(groups[g]), g))  # new -> old id
    members = [torch.as_tensor(list(groups[g]), dtype=torch.int64) for g in by_size]
    sizes = [len(m) for m in members]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n = int(starts[-1])
    order = torch.cat(members).to(device)  # variables grouped, largest group first
    chol = torch.linalg.cholesky(cov[order][:, order])  # (n, n)
    precision = torch.cholesky_inverse(chol)  # (n, n)
    # an extra zero row / unit entries for padding rows, which then add nothing anywhere
    precision = torch.cat([precision, precision.new_zeros(1, n)])  # (n + 1, n)
    log_var = torch.cat([torch.log(torch.diagonal(cov)[order]), cov.new_zeros(1)])  # (n + 1,)
    logdet_cov = 2.0 * torch.log(torch.diagonal(chol)).sum()

    wanted = _all_multiplets(n_groups, min_size, max_size)
    position = {tuple(sorted(by_size.index(g) for g in m)): i for i, m in enumerate(wanted)}
    out = torch.empty(len(wanted), dtype=torch.float64, device=device)
    top = n_groups - min_size
    levels = _complement_levels(n_groups, top)

    def width(node):
        return int(sum(sizes[g] for g in node))

    # level 0: the empty complement; rows = all variables (+ one padding row)
    rows = torch.arange(n + 1, device=device).unsqueeze(0)  # (B, r + 1) variable of each row
    w = cov.new_zeros(1, n + 1, 0)  # (B, r + 1, width)
    conditional = torch.cat([torch.diagonal(precision[:n]), cov.new_ones(1)]).unsqueeze(0)
    logdet_prec = cov.new_zeros(1)  # (B,)
    for c in range(top + 1):
        nodes = levels[c]
        if n_groups - c <= max_size:
            omega = 0.5 * ((log_var[rows] - torch.log(conditional)).sum(1)
                           - 2.0 * (logdet_cov + logdet_prec))  # (B,)
            k = torch.as_tensor([n - width(node) for node in nodes], device=device)
            if bias_correction:
                omega = omega - _oinfo_bias(k, n_samples)
            # two variables: identically 0, set exactly as in the direct route
            omega = torch.where(k == 2, torch.zeros_like(omega), omega)
            index = [position[tuple(g for g in range(n_groups) if g not in node)]
                     for node in nodes]
            out[torch.as_tensor(index, device=device)] = omega
        if c == top:
            break
        rows, w, conditional, logdet_prec = _grow_complements(
            precision, nodes, rows, w, conditional, logdet_prec, sizes, starts,
            keep_factors=c + 1 < top)
    return out


def _grow_complements(precision, nodes, rows, w, conditional, logdet_prec, sizes, starts,
                      keep_factors):
    """One level of :func:`_union_values`: every node joined with each larger group.

    A node holds ``rows`` (B, r + 1), the variable of each of its rows (``n`` for padding; the
    last row always pads), ``w`` (B, r + 1, width) its factor columns, zero past its own width,
    ``conditional`` (B, r + 1), and ``logdet_prec`` (B,). A child's columns are the new ones
    first, then the parent's: their order is immaterial to every product, and that way they stay
    packed at the front with no copy beyond the child's own.
    """
    device = precision.device
    n = precision.shape[1]
    n_groups = len(sizes)
    r_pad = rows.shape[1] - 1  # the parent level's padding row
    lasts = np.array([node[-1] if node else -1 for node in nodes])
    widths = np.array([sum(sizes[g] for g in node) for node in nodes], dtype=np.int64)
    takes = [b for b in range(n_groups) if (lasts < b).any()]
    # rows of the child with the narrowest complement, plus the padding row
    n_rows = n + 1 - min(int(widths[lasts < b].min()) + sizes[b] for b in takes)
    stored = [b for b in takes if keep_factors and b < n_groups - 1]
    width_next = max((sizes[b] + w.shape[2] for b in stored), default=0)
    w_next = w.new_empty(sum(int((lasts < b).sum()) for b in stored), n_rows, width_next)
    kept = torch.arange(n_rows, device=device).unsqueeze(0)  # (1, r' + 1)
    new_rows, new_conditional, new_logdet = [], [], []
    at = 0
    for b in takes:
        count = int((lasts < b).sum())  # parents: a prefix of the level
        s = sizes[b]
        lo = torch.as_tensor(starts[b] - widths[:count], device=device)  # (B,) b's first row
        rows_b = lo.unsqueeze(1) + torch.arange(s, device=device)  # (B, s)
        wp = w[:count]  # (B, r + 1, width)
        wb = torch.gather(wp, 1, rows_b.unsqueeze(2).expand(-1, -1, wp.shape[2]))  # (B, s, width)
        theta = precision[rows[:count], starts[b]:starts[b] + s]  # (B, r + 1, s)
        resid = torch.baddbmm(theta, wp, wb.transpose(1, 2), alpha=-1.0)  # (B, r + 1, s)
        pivot = torch.gather(resid, 1, rows_b.unsqueeze(2).expand(-1, -1, s))  # (B, s, s)
        factor = torch.linalg.cholesky(pivot)  # (B, s, s)
        cols = torch.linalg.solve_triangular(factor.transpose(1, 2), resid, upper=True,
                                             left=False)  # (B, r + 1, s)  resid L^-T
        new_logdet.append(logdet_prec[:count] + 2.0 * torch.log(
            torch.diagonal(factor, dim1=1, dim2=2)).sum(1))
        cond = conditional[:count] - (cols * cols).sum(2)  # (B, r + 1)
        # the child keeps the parent's rows but b's: the rows after b move up by s
        keep = (kept + s * (kept >= lo.unsqueeze(1))).clamp(max=r_pad)  # (B, r' + 1)
        keep[:, -1] = r_pad
        new_rows.append(torch.gather(rows[:count], 1, keep))
        new_conditional.append(torch.gather(cond, 1, keep))
        if b in stored:
            # whole rows are picked from the flattened (node, row) axis: one contiguous copy
            # per row, much cheaper than an element-wise gather
            picked = (keep + (r_pad + 1) * torch.arange(count, device=device).unsqueeze(1))
            combined = torch.cat([cols, wp], dim=2).flatten(0, 1)  # (B (r + 1), s + width)
            block = w_next[at:at + count]  # (B, r' + 1, w')
            block[:, :, :s + wp.shape[2]] = combined.index_select(0, picked.flatten()).view(
                count, n_rows, s + wp.shape[2])
            block[:, :, s + wp.shape[2]:] = 0.0
            at += count
    return (torch.cat(new_rows), w_next if stored else None, torch.cat(new_conditional),
            torch.cat(new_logdet))
