r"""The union lattice: O-information of every union of groups of variables (bins of neurons).

The neurons mode of :func:`grokscope.measures.multiplets.oinfo_search`: each multiplet of bins is
the union :math:`M` of their neurons, every neuron one variable. Its O-information needs
:math:`\log\det\Sigma_M` and, for each neuron :math:`j \in M`, :math:`(\Sigma_M^{-1})_{jj}` (the
leave-one-out entropies, :mod:`.oinfo_direct`). Both come from the precision
:math:`\Theta = \Sigma^{-1}` of all the neurons and the complement :math:`C` of the union (the
neurons of the bins left out), by block inversion:

.. math::

    \log\det\Sigma_M = \log\det\Sigma + \log\det\Theta_{CC}, \qquad
    (\Sigma_M^{-1})_{jj} = \Theta_{jj} - \lVert W_{j\cdot} \rVert^2, \quad
    W = \Theta_{MC} L_C^{-\top}, \; L_C L_C^\top = \Theta_{CC}.

The complements are walked depth first, one bin added at a time in a fixed order of the bins
(largest first), so that every subset of bins is visited once, from its prefix. Adding bin
:math:`b` to :math:`C` is one block step of a Cholesky factorisation: the Schur complement
:math:`S_b = \Theta_{bb} - W_{b\cdot} W_{b\cdot}^\top` (factor :math:`L_b`) adds
:math:`\log\det S_b` to :math:`\log\det\Theta_{CC}`, and the new columns of :math:`W` are
:math:`(\Theta_{\cdot b} - W W_{b\cdot}^\top) L_b^{-\top}`, each
:math:`\lVert W_{j\cdot}\rVert^2` the parent's plus that of the new columns. A node keeps only
the rows of the neurons outside it, so the step costs one (rows x |C|) by (|C| x |b|) product
and one triangular solve: :math:`k \cdot |C| \cdot |b|` flops with :math:`k` the union's
neurons, of order :math:`n^3` over the whole walk for :math:`n` neurons in a fixed number of
bins. Only the current path's factors are held (one :math:`W` per level, at most 10 levels for
10 bins: about :math:`1.7 n^2` floats for equal bins) plus the children of one node being
grown at a time, in blocks of at most :data:`CHILD_BLOCK_BYTES`, so memory is bounded by a few
:math:`n \times n` matrices whatever the number of multiplets. The same numbers as the direct
route (:mod:`.oinfo_direct`), to rounding.

References
----------
Rosas, F. E., Mediano, P. A. M., Gastpar, M., & Jensen, H. J. (2019). Quantifying high-order
interdependencies via multivariate extensions of the mutual information. Phys. Rev. E 100, 032305.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from grokscope.errors import GrokscopeError
from grokscope.measures.entropy import _oinfo_bias
from grokscope.measures.lattice import _all_multiplets
from grokscope.measures.thread_independent import on_one_thread

#: Children of one node are grown together in blocks of consecutive groups holding at most this
#: many variables (a group larger than it is a block of its own): one product, one factorisation
#: of their block-diagonal Schur complements and one triangular solve per block instead of one
#: per child, which saves calls on narrow layers and costs at most this many extra rows of
#: triangular solve on wide ones.
CHILD_BLOCK_ROWS = 256
#: ... and at most this many bytes of (block rows x node rows) float64, which bounds the walk's
#: memory on wide layers.
CHILD_BLOCK_BYTES = 1 << 24


def _union_values(cov: torch.Tensor, groups: Sequence[Sequence[int]], n_samples: int,
                  min_size: int, max_size: int, bias_correction: bool) -> torch.Tensor:
    r"""O-information (nats) of the union of every multiplet of groups, in the order of
    ``_all_multiplets(len(groups), min_size, max_size)``: the depth-first walk of the module
    docstring,

    .. math::

        \Omega(M) = \tfrac12 \Big[ \sum_{j \in M} \log \Sigma_{jj}
            - 2 \big(\log\det\Sigma + \log\det\Theta_{CC}\big)
            - \sum_{j \in M} \log\big(\Theta_{jj} - \lVert W_{j\cdot}\rVert^2\big) \Big] - \beta(k)

    with :math:`\beta(k)` the bias of :math:`k = |M|` variables (zero without
    ``bias_correction``); two variables give exactly 0.
    """
    return _Walk(cov, groups, n_samples, min_size, max_size, bias_correction).run()


class _Walk:
    """The constants of one walk and its output; :meth:`_grow` visits one node's children."""

    def __init__(self, cov, groups, n_samples, min_size, max_size, bias_correction):
        self.device = cov.device
        self.n_groups = len(groups)
        # walk order: largest group first (its columns then enter W earliest, where W is narrow)
        self.by_size = sorted(range(self.n_groups), key=lambda g: (-len(groups[g]), g))
        members = [torch.as_tensor(list(groups[g]), dtype=torch.int64) for g in self.by_size]
        self.sizes = [len(m) for m in members]
        self.starts = [0]
        for size in self.sizes:
            self.starts.append(self.starts[-1] + size)
        n = self.starts[-1]
        order = torch.cat(members).to(self.device)  # variables grouped, in walk order
        sub = cov[order][:, order]  # (n, n)
        chol = on_one_thread(torch.linalg.cholesky, sub)
        self.precision = on_one_thread(torch.cholesky_inverse, chol)  # (n, n)
        self.logdet_cov = float(2.0 * torch.log(torch.diagonal(chol)).sum())
        del chol
        log_var = torch.log(torch.diagonal(sub))
        self.group_log_var = [float(log_var[a:b].sum()) for a, b in zip(self.starts, self.starts[1:])]
        del sub
        sizes = torch.arange(1, n + 1, device=self.device)
        self.bias = (_oinfo_bias(sizes, n_samples) if bias_correction
                     else torch.zeros(n, dtype=torch.float64, device=self.device)).tolist()
        self.min_size, self.max_size = min_size, max_size
        wanted = _all_multiplets(self.n_groups, min_size, max_size)
        self.position = {sum(1 << g for g in m): i for i, m in enumerate(wanted)}
        self.out = torch.empty(len(wanted), dtype=torch.float64, device=self.device)
        self.full = (1 << self.n_groups) - 1
        self.top = self.n_groups - min_size  # the largest complement visited
        self._layouts: dict = {}

    def run(self) -> torch.Tensor:
        n = self.starts[-1]
        log_var_sum = sum(self.group_log_var)
        self.found: list[tuple[int, float]] = []  # (position, value) of each union visited
        self.failures: list[torch.Tensor] = []  # the info of each block's factorisation
        if self.n_groups <= self.max_size:  # the union of every group: the empty complement
            log_precision = float(torch.log(torch.diagonal(self.precision)).sum())
            self._record(0, self.n_groups, log_var_sum, log_precision, 0.0, n)
        if self.top > 0:
            self._grow(-1, 0, 0, torch.arange(n, device=self.device), self.precision.new_zeros(n, 0),
                       torch.diagonal(self.precision).clone(), 0.0, log_var_sum)
        if self.failures and bool(torch.stack(self.failures).any()):
            raise GrokscopeError("cov: a union of bins has a numerically singular covariance "
                                 "(pass ridge > 0 to regularise)")
        positions, values = zip(*self.found)
        self.out[torch.as_tensor(positions, device=self.device)] = torch.tensor(
            values, dtype=torch.float64, device=self.device)
        return self.out

    def _record(self, complement: int, n_bins: int, log_var_sum: float,
                log_precision_sum: float, logdet_prec: float, k: int) -> None:
        """The O-information of the union of the ``n_bins`` groups outside ``complement`` (a
        bitmask over the groups' own ids), from its terms: the sum of log variances, of log
        conditional precisions, the log det of the complement's precision block, and its
        number of variables."""
        if not self.min_size <= n_bins <= self.max_size:
            return
        omega = 0.0 if k == 2 else (0.5 * (log_var_sum - log_precision_sum - 2.0 * (
            self.logdet_cov + logdet_prec)) - self.bias[k - 1])  # two variables: exactly 0
        self.found.append((self.position[self.full ^ complement], omega))

    def _grow(self, last: int, complement: int, depth: int, rows: torch.Tensor,
              w: torch.Tensor, conditional: torch.Tensor, logdet_prec: float,
              log_var_sum: float) -> None:
        r"""Visit the children of the node whose complement is ``complement`` (bitmask over the
        groups' own ids; largest member ``last`` in walk order, ``depth`` members) and, depth
        first, their subtrees.

        ``rows`` (r,): the node's variables (those outside its complement) in walk order;
        ``w`` (r, |C|): the factor columns :math:`W`; ``conditional`` (r,):
        :math:`\Theta_{jj} - \lVert W_{j\cdot}\rVert^2`; ``logdet_prec``:
        :math:`\log\det\Theta_{CC}`; ``log_var_sum``: the sum of the rows' log variances.
        The groups after ``last`` are all outside the complement: the tail of ``rows``.
        """
        r = rows.shape[0]
        children = list(range(last + 1, self.n_groups))
        while children:
            block = [children.pop(0)]
            while children and self._fits(block[0], children[0], r):
                block.append(children.pop(0))
            self._grow_block(tuple(block), complement, depth, rows, w, conditional, logdet_prec,
                             log_var_sum)

    def _fits(self, first: int, last: int, r: int) -> bool:
        """Whether groups first..last make one block of children of a node with r rows."""
        count = self.starts[last + 1] - self.starts[first]
        return count <= CHILD_BLOCK_ROWS and count * r * 8 <= CHILD_BLOCK_BYTES

    def _layout(self, block: tuple[int, ...]):
        """Each variable's child in a block of children, as a boolean (b, children) and a float
        one-hot, and the block-diagonal of their Schur complements (b, b); cached per block."""
        if block not in self._layouts:
            device = self.device
            sizes = torch.as_tensor([self.sizes[g] for g in block], device=device)
            owner = torch.repeat_interleave(torch.arange(len(block), device=device), sizes)
            mine = owner.unsqueeze(1) == torch.arange(len(block), device=device)  # (b, children)
            diagonal = owner.unsqueeze(1) == owner.unsqueeze(0)  # (b, b)
            self._layouts[block] = (mine, mine.to(torch.float64), ~diagonal)
        return self._layouts[block]

    def _grow_block(self, block, complement, depth, rows, w, conditional, logdet_prec,
                    log_var_sum) -> None:
        """One block of consecutive children of :meth:`_grow`'s node: their Schur complements
        and new factor columns all at once, then each child's subtree."""
        r = rows.shape[0]
        mine, one_hot, off_diagonal = self._layout(block)
        lo, hi = self.starts[block[0]], self.starts[block[-1] + 1]
        first_row = r - self.starts[-1] + lo  # the block's first variable among the rows
        theta = torch.index_select(self.precision[:, lo:hi], 0, rows)  # (r, b)
        if w.shape[1]:
            theta = torch.addmm(theta, w, w[first_row:first_row + hi - lo].T, alpha=-1.0)
        # the children's Schur complements, block-diagonal: its factor is theirs, side by side
        pivots = theta[first_row:first_row + hi - lo].masked_fill(off_diagonal, 0.0)  # (b, b)
        factor, info = on_one_thread(torch.linalg.cholesky_ex, pivots)
        self.failures.append(info)  # checked once at the end: no wait for each
        columns = torch.linalg.solve_triangular(factor.mT, theta, upper=True, left=False)  # (r, b)
        child_conditional = torch.addmm(conditional.unsqueeze(1), columns.square(), one_hot,
                                        alpha=-1.0)  # (r, children)
        # a child's own rows leave it: their terms become log 1 = 0
        child_conditional[first_row:first_row + hi - lo].masked_fill_(mine, 1.0)
        log_precision = torch.log(child_conditional).sum(0).tolist()
        logdets = (torch.log(torch.diagonal(factor)) @ one_hot).tolist()
        for i, g in enumerate(block):
            child = complement | 1 << self.by_size[g]
            child_logdet = logdet_prec + 2.0 * logdets[i]
            child_var = log_var_sum - self.group_log_var[g]
            size = self.sizes[g]
            self._record(child, self.n_groups - depth - 1, child_var, log_precision[i],
                         child_logdet, r - size)
            if depth + 1 < self.top and g < self.n_groups - 1:
                a = first_row + self.starts[g] - lo  # the child's rows: a..a + size
                self._grow(g, child, depth + 1, torch.cat([rows[:a], rows[a + size:]]),
                           _without_rows(w, columns[:, a - first_row:a - first_row + size], a),
                           torch.cat([child_conditional[:a, i], child_conditional[a + size:, i]]),
                           child_logdet, child_var)


def _without_rows(w: torch.Tensor, new: torch.Tensor, start: int) -> torch.Tensor:
    """``[w, new]`` (r, c + s) without rows start..start + s, in one copy: a child's factor
    columns, its parent's and its own, over the rows that stay outside its complement."""
    r, c = w.shape
    s = new.shape[1]
    out = w.new_empty(r - s, c + s)
    out[:start, :c] = w[:start]
    out[start:, :c] = w[start + s:]
    out[:start, c:] = new[:start]
    out[start:, c:] = new[start + s:]
    return out
