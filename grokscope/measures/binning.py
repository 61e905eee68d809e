r"""The bins of a layer's neurons that O-information multiplets are made of (Clauw et al. 2024).

Constant (dead) neurons and neurons that are linear combinations of the live ones before them are
left out (:func:`independent_columns`); the rest are clustered by Ward's criterion on their
activations (:func:`cluster_neurons`, what the reference code's
``sklearn.cluster.AgglomerativeClustering(linkage="ward")`` does) or binned by given labels.

References
----------
Clauw, K., Stramaglia, S., & Marinazzo, D. (2024). Information-theoretic progress measures reveal
grokking is an emergent phase transition. ICML 2024 Workshop on Mechanistic Interpretability.

Ward, J. H. (1963). Hierarchical grouping to optimize an objective function. Journal of the
American Statistical Association 58, 236-244.
"""

from __future__ import annotations

import numpy as np
import torch

from grokscope.errors import GrokscopeError
from grokscope.measures.copula import _gram
from grokscope.measures.entropy import COLLINEARITY_TOLERANCE
from grokscope.measures.inputs import _as_tensor, _check_samples_matrix
from grokscope.measures.thread_independent import on_one_thread


def independent_columns(x: torch.Tensor) -> torch.Tensor:
    r"""Which columns (neurons) of ``x`` to keep so that the kept ones are linearly independent
    after centring: each column in index order is kept unless its residual variance, given the
    columns kept before it, is below ``COLLINEARITY_TOLERANCE`` of its variance,

    .. math::

        \lVert (I - P_{K}) \tilde x_j \rVert^2 \le \tau \, \lVert \tilde x_j \rVert^2

    with :math:`\tilde x_j` the centred column and :math:`P_K` the projection onto the kept
    centred columns. Drops duplicated neurons, exact linear combinations, and every neuron past
    the rank when there are fewer samples than neurons (at most ``n_samples - 1`` are kept), so
    that the covariance O-information factorises is not singular for that reason.

    Returns a boolean mask, shape (n_columns,).
    """
    centred = x.to(torch.float64)
    centred = centred - centred.mean(dim=0)  # (n_samples, n)
    n = centred.shape[1]
    norms = (centred ** 2).sum(dim=0)  # (n,)
    if n < centred.shape[0]:  # may be full rank: one factorisation of the Gram matrix tells
        gram = _gram(centred.T)  # (n, n)
        chol, info = on_one_thread(torch.linalg.cholesky_ex, gram)
        if info == 0 and bool((torch.diagonal(chol) ** 2 > COLLINEARITY_TOLERANCE * norms).all()):
            return torch.ones(n, dtype=torch.bool, device=x.device)
    return _kept_in_order(centred, norms)


#: Blocks of :func:`_kept_in_order`: columns projected together off the basis so far (one
#: product each), then in sub-blocks off the block's new vectors, then one by one.
_BLOCK_COLUMNS = (256, 32)


def _kept_in_order(centred: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """The columns :func:`independent_columns` keeps: Gram-Schmidt in index order on the data
    (each projection done twice, which keeps the basis orthogonal to rounding), a column kept
    when its residual energy passes the tolerance. Blocked in two levels, so that most of the
    work is products with many columns at once."""
    m, n = centred.shape
    keep = torch.zeros(n, dtype=torch.bool, device=centred.device)
    basis = centred.new_empty(m, min(m, n))  # orthonormal, the kept columns' span, in order
    outer, inner = _BLOCK_COLUMNS

    def off(block, first, k):  # the block without its part in the span of basis[:, first:k]
        if k > first:
            spanned = basis[:, first:k]
            block = block - spanned @ (spanned.T @ block)
            block = block - spanned @ (spanned.T @ block)
        return block

    k = 0
    for start in range(0, n, outer):
        if k == basis.shape[1]:
            break  # the samples are spanned: every later column is a combination
        block = off(centred[:, start:start + outer], 0, k)
        block_first = k
        for sub in range(0, block.shape[1], inner):
            part = off(block[:, sub:sub + inner], block_first, k)
            part_first = k
            for t in range(part.shape[1]):
                residual = off(part[:, t:t + 1], part_first, k)[:, 0]
                energy = float(residual @ residual)
                j = start + sub + t
                if energy > COLLINEARITY_TOLERANCE * float(norms[j]) and energy > 0 \
                        and k < basis.shape[1]:
                    basis[:, k] = residual / energy ** 0.5
                    k += 1
                    keep[j] = True
    return keep


def cluster_neurons(features, n_bins: int = 10) -> np.ndarray:
    r"""Ward clustering of the neurons (columns) into ``n_bins`` bins.

    Each neuron is described by its activations over the samples (its column of ``features``)
    and the neurons are merged by Ward's criterion on Euclidean distances, the tree then cut
    into ``n_bins`` clusters: what ``sklearn.cluster.AgglomerativeClustering(linkage="ward")``
    does in the reference code of Clauw et al. The distances come from one Gram matrix of the
    centred columns, :math:`d_{ij}^2 = g_{ii} + g_{jj} - 2 g_{ij}` (computed in torch on the
    features' device, a few ms against ~35 ms for the pairwise loop), and the tree from
    ``scipy.cluster.hierarchy.linkage(method="ward")``. Bins are numbered in order of their
    first neuron, so bin 0 holds neuron 0 and the numbering does not depend on the tree's
    internal labels.

    Parameters
    ----------
    features : array_like or torch.Tensor, shape (n_samples, n_neurons)
    n_bins : int
        Number of bins, 1 <= n_bins <= n_neurons.

    Returns
    -------
    numpy.ndarray of int64, shape (n_neurons,)
        The bin of each neuron.
    """
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    x = _as_tensor(features, name="features")
    if x.ndim != 2:
        raise GrokscopeError(f"features: expected a 2-D array (samples, neurons), got shape "
                             f"{tuple(x.shape)}")
    n_neurons = x.shape[1]
    if not 1 <= n_bins <= n_neurons:
        raise GrokscopeError(f"n_bins: must be between 1 and the number of neurons "
                             f"({n_neurons}), got {n_bins}")
    if n_bins == n_neurons:
        return np.arange(n_neurons, dtype=np.int64)
    if n_bins == 1:
        return np.zeros(n_neurons, dtype=np.int64)
    # centring the points (distances do not change) keeps the Gram form from cancelling
    centred = x - x.mean(dim=1, keepdim=True)  # (n_samples, n_neurons)
    gram = _gram(centred.T)  # (n_neurons, n_neurons)
    norms = torch.diagonal(gram)  # (n_neurons,)
    squared = (norms.unsqueeze(0) + norms.unsqueeze(1) - 2.0 * gram).clamp_(min=0.0)
    squared.fill_diagonal_(0.0)
    distances = squareform(torch.sqrt(squared).cpu().numpy(), checks=False)
    raw = _cut(linkage(distances, method="ward"), n_neurons, n_bins)
    _, first, cluster = np.unique(raw, return_index=True, return_inverse=True)
    renumber = np.empty(n_bins, dtype=np.int64)
    renumber[np.argsort(first)] = np.arange(n_bins)
    return renumber[cluster.ravel()]


def _cut(tree: np.ndarray, n_leaves: int, n_clusters: int) -> np.ndarray:
    """Cluster of each leaf once the first ``n_leaves - n_clusters`` merges of a linkage
    ``tree`` are made (sklearn's cut: the last merges undone). Ids are arbitrary."""
    owner = np.arange(2 * n_leaves - 1)  # a merged node points to the node it joined
    for step, (a, b) in enumerate(tree[:n_leaves - n_clusters, :2].astype(np.int64)):
        owner[a] = owner[b] = n_leaves + step
    # a node's cluster is its top ancestor: resolve from the last merge down
    for node in range(n_leaves + (n_leaves - n_clusters) - 1, -1, -1):
        owner[node] = owner[owner[node]]
    return owner[:n_leaves]


def _live_bins(x: torch.Tensor, n_bins: int, labels) -> tuple[np.ndarray, np.ndarray]:
    """(which neurons take part, the bin of each of those): the binning every search starts from.
    Constant neurons have no entropy, and neurons that are linear combinations of earlier live
    ones carry no variable of their own (:func:`independent_columns`); neither takes part. The
    rest are Ward-clustered into ``min(n_bins, live neurons)`` bins, or binned by the given
    ``labels``."""
    alive = x.amax(dim=0) != x.amin(dim=0)  # (n_neurons,)
    alive[alive.clone()] = independent_columns(x[:, alive])
    alive = alive.cpu().numpy()
    if labels is None:
        n_alive = int(alive.sum())
        if n_alive < 2:
            raise GrokscopeError(f"features: {n_alive} non-constant neuron(s), need at least 2")
        return alive, cluster_neurons(x[:, torch.as_tensor(alive, device=x.device)], min(n_bins, n_alive))
    given = np.asarray(labels)
    if given.shape != (len(alive),) or not np.issubdtype(given.dtype, np.integer) or given.min() < 0:
        raise GrokscopeError(f"labels: expected {len(alive)} non-negative integer bin ids, one per neuron")
    return alive, given[alive]


def neuron_bins(features, n_bins: int = 10, labels=None) -> np.ndarray:
    r"""The bin of every neuron as :func:`~grokscope.measures.multiplets.oinfo_search` forms
    them, so that a reported multiplet's ``bins`` can be turned back into neurons.

    Constant (dead) and linearly dependent neurons get -1; the others the Ward bin of
    :func:`cluster_neurons` on the non-constant columns (into ``min(n_bins, live neurons)`` bins,
    numbered by their first neuron), or their given ``labels``.

    Parameters
    ----------
    features : array_like or torch.Tensor, shape (n_samples, n_neurons)
        The same features :func:`oinfo_search` was given (a layer's training-split activations).
    n_bins : int
    labels : array_like of int, shape (n_neurons,), optional

    Returns
    -------
    numpy.ndarray of int64, shape (n_neurons,)
        The neurons of multiplet ``"0,3,7"`` are ``np.flatnonzero(np.isin(bins, [0, 3, 7]))``.
    """
    x = _as_tensor(features, name="features")
    _check_samples_matrix(x, name="features")
    alive, bin_of = _live_bins(x, n_bins, labels)
    bins = np.full(len(alive), -1, dtype=np.int64)
    bins[alive] = bin_of
    return bins
