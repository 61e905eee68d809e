r"""Most synergistic and most redundant multiplets of a layer's neurons (Clauw et al. 2024).

For one checkpoint: the hidden neurons (columns of the features, post-activation values on the
training samples) are clustered into ``n_bins`` bins by Ward agglomerative clustering; every
combination of bins (a *multiplet*) gets an O-information :math:`\Omega` (see
:mod:`grokscope.measures.oinfo`); synergy is the lowest :math:`\Omega` found, redundancy the
highest.

Two ways to turn a multiplet of bins into variables:

* ``variables="neurons"`` (the authors' code): the union of the neurons of its bins, each neuron
  one variable. The copula covariance of all neurons is taken once; each multiplet is a
  principal sub-matrix of it.
* ``variables="bins"`` (the paper's text): each bin is one variable, the mean of its neurons'
  activations; the bin means are copula-normalised and every multiplet of bins is evaluated on
  the lattice of :func:`grokscope.measures.oinfo.oinfo_values_from_cov`.

Ties: post-ReLU features are 40-50% exact zeros, whose ranks have no order. By default each
reported multiplet's value is the mean of its O-information over ``tie_draws`` random orders of
the tied values (an infinitesimal independent jitter; seeded), the multiplets being found by one
search on the mean of those orders' covariances, and ``value_sd`` is the spread over the orders.
The reference code's row order (``ties="index"``) and the closed-form average over every order
(``ties="average"``) are there for comparison; docs/oinfo.md compares all three.

Degenerate data: constant (dead) neurons are dropped before clustering (their entropy is
:math:`-\infty`), and so are neurons that are linear combinations of the live neurons before them
(duplicates, and every neuron past the rank when there are fewer training samples than neurons:
:func:`independent_columns`); both are counted in ``n_excluded``. Bins left with no live neuron
(possible only with given ``labels``) are left out of the search, and ``n_bins`` says how many bins
took part; a covariance that is still singular after the copula transform raises
:class:`GrokscopeError` unless ``ridge > 0``.

References
----------
Clauw, K., Stramaglia, S., & Marinazzo, D. (2024). Information-theoretic progress measures reveal
grokking is an emergent phase transition. ICML 2024 Workshop on Mechanistic Interpretability.

Rosas, F. E., Mediano, P. A. M., Gastpar, M., & Jensen, H. J. (2019). Phys. Rev. E 100, 032305.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral

import numpy as np
import torch

from grokscope.errors import GrokscopeError
from grokscope.measures.binning import (  # noqa: F401  (public names of this module)
    _live_bins,
    cluster_neurons,
    independent_columns,
    neuron_bins,
)
from grokscope.measures.copula import TieCovariances, _check_ties
from grokscope.measures.entropy import _check_positive_definite
from grokscope.measures.inputs import _as_tensor, _check_samples_matrix, _check_units, _unit_scale
from grokscope.measures.lattice import LATTICE_MAX_VARIABLES, _all_multiplets
from grokscope.measures.oinfo import oinfo_values_from_cov
from grokscope.measures.oinfo_direct import _direct_values_chunked, _oinfo_of_blocks
from grokscope.measures.searches import _annealing, _best_per_size, _greedy
from grokscope.measures.union_lattice import _union_values


#: Largest number of bins searched exhaustively by ``search="auto"`` in neurons mode: the union
#: lattice visits all 2^bins unions, each step costing up to (neurons)^2 x (bin size) flops, so
#: 12 bins cost about 4 times the default 10; past it ``auto`` is greedy, and says so.
AUTO_EXHAUSTIVE_NEURON_BINS = 12

_VARIABLES = ("neurons", "bins")
_SEARCHES = ("auto", "exhaustive", "greedy", "annealing")


# --------------------------------------------------------------------------------------------
# the per-checkpoint entry point


def _reported(best_low, best_high, per_size) -> list[tuple[str, str, tuple[int, ...], float]]:
    """(metric, scope, multiplet, value) of each row: the overall extremes first (chosen on the
    searched values), then, with ``per_size``, each size's."""
    low = min(best_low.values(), key=lambda mv: mv[1])
    high = max(best_high.values(), key=lambda mv: mv[1])
    entries = [("synergy", "overall", *low), ("redundancy", "overall", *high)]
    if per_size:
        for size in sorted(best_low):
            entries.append(("synergy", "size", *best_low[size]))
            entries.append(("redundancy", "size", *best_high[size]))
    return entries


#: Most bytes of covariance blocks the tie spread factorises in one batch (several draws of a
#: set at once on narrow layers; one at a time on wide ones).
_SPREAD_BATCH_BYTES = 1 << 26


def _tie_spread(draws: TieCovariances, sets: Sequence[Sequence[int]], n_samples: int,
                bias_correction: bool, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (n - 1 denominator; NaN below two draws) of each set's
    O-information (nats) over the covariances of the random tie orders: each draw's covariance
    of the sets' variables, one batched factorisation per set for as many draws as fit in
    :data:`_SPREAD_BATCH_BYTES`."""
    if not draws.draws:
        nan = np.full(len(sets), math.nan)
        return nan, nan
    columns = sorted({int(v) for members in sets for v in members})
    local = {v: i for i, v in enumerate(columns)}
    blocks = [torch.as_tensor([local[int(v)] for v in members], device=draws.device)
              for members in sets]
    values: list[list[float]] = [[] for _ in sets]
    pending: list[list[torch.Tensor]] = [[] for _ in sets]

    def flush():
        for i, held in enumerate(pending):
            if held:
                stacked = held[0].unsqueeze(0) if len(held) == 1 else torch.stack(held)
                sizes = torch.full((len(held),), stacked.shape[1], device=draws.device)
                try:
                    values[i] += _oinfo_of_blocks(stacked, sizes, n_samples,
                                                  bias_correction).tolist()
                except torch.linalg.LinAlgError:
                    raise GrokscopeError("features: the covariance of a random tie order is "
                                         "singular (pass ridge > 0)") from None
                held.clear()

    held_bytes = 0
    every = columns == list(range(draws.ranks.m))
    for cov in draws.each(None if every else columns):
        for i, index in enumerate(blocks):
            # a set of all the columns is the covariance itself (its order does not matter)
            block = cov if len(index) == len(cov) else cov[index][:, index]
            if ridge > 0:  # a new matrix: the ridge never reaches the kept draws
                block = block + ridge * torch.eye(len(block), dtype=block.dtype,
                                                  device=block.device)
            pending[i].append(block)
            held_bytes += block.numel() * 8
        if held_bytes > _SPREAD_BATCH_BYTES:
            flush()
            held_bytes = 0
    flush()
    per_draw = np.array(values).T  # (draws, sets)
    sds = per_draw.std(axis=0, ddof=1) if draws.draws > 1 else np.full(len(sets), math.nan)
    return per_draw.mean(axis=0), sds


def oinfo_search(features, *, n_bins: int = 10, variables: str = "neurons", min_size: int = 2,
                 max_size: int | None = None, search: str = "auto", per_size: bool = False,
                 ties: str = "random", tie_draws: int = 10, seed: int = 0, units: str = "bits",
                 bias_correction: bool = True, device=None, labels=None, ridge: float = 0.0,
                 annealing_steps: int = 300) -> list[dict]:
    r"""Most synergistic and most redundant multiplet of bins of neurons, for one checkpoint.

    .. math::

        \text{synergy} = \min_{M} \Omega(M), \qquad \text{redundancy} = \max_{M} \Omega(M)

    over the multiplets :math:`M` of bins with ``min_size`` to ``max_size`` bins, where
    :math:`\Omega` is the O-information of the multiplet's variables (Rosas et al. 2019) by the
    Gaussian copula (Ince et al. 2017): the union of its bins' neurons (``variables="neurons"``,
    the reference code of Clauw et al. 2024) or one mean activation per bin (``"bins"``, the
    paper's text). In bins mode every pair of bins has :math:`\Omega = 0` exactly; pass
    ``min_size=3`` to leave pairs out.

    Parameters
    ----------
    features : array_like or torch.Tensor, shape (n_samples, n_neurons)
        Post-activation values of a layer on the training samples.
    n_bins : int
        Number of Ward clusters (ignored when ``labels`` are given).
    variables : {"neurons", "bins"}
    min_size, max_size : int
        Multiplet sizes in bins, inclusive (``max_size`` defaults to all bins).
    search : {"auto", "exhaustive", "greedy", "annealing"}
        ``"auto"`` is exhaustive up to :data:`AUTO_EXHAUSTIVE_NEURON_BINS` (12) bins in neurons
        mode or 22 bins in bins mode, whatever the number of neurons, and greedy past that: the
        choice depends on the number of bins that took part only, and every row's ``search``
        says which ran ("exhaustive" or "greedy"), so a greedy value (an upper bound of the
        synergy, a lower bound of the redundancy) is never taken for the extreme. Greedy:
        exhaustive up to size 3, then the best multiplet grows one bin at a time. Annealing: 16
        chains of ``annealing_steps`` add/remove/swap moves, seeded by ``seed``. Exhaustive
        search in neurons mode walks every union of bins depth first
        (``grokscope.measures.union_lattice._union_values``: of order width^3 flops for 10 bins,
        memory a few width x width matrices, so it stays exhaustive at any width); the
        heuristics evaluate the multiplets they visit by batched Cholesky factorisations. Both
        give the same values.
    per_size : bool
        Also return the best multiplet of each size.
    ties : {"random", "average", "index"}
        Tied activations (the exact zeros of a ReLU) in the copula ranks; see
        :func:`grokscope.measures.oinfo.copula_covariance`. ``"random"`` (default): each
        multiplet's value is the mean of its O-information over ``tie_draws`` independent
        random orders of the tied values (seeded), the multiplets being chosen by one search on
        the mean of the draws' covariances; the value then depends on the order of the samples
        only through the draws' noise, which ``value_sd`` reports. ``"average"``: the search and
        the values on the covariance averaged over every random order, in closed form (no
        order enters; but on features of the default run it is biased at 3763 samples, see
        docs/oinfo.md). ``"index"``: ties in row order, as the reference code; the value then
        depends on the order in which the samples are stored.
    tie_draws : int
        Random tie orders (seeded by ``seed``) on which every reported multiplet is evaluated;
        their standard deviation is the row's ``value_sd``, how far one arbitrary order of the
        tied values moves the value. All draws share one sort of each neuron's values; a draw
        redraws only the tied blocks (:mod:`grokscope.measures.ties`) and costs one covariance
        product and one factorisation per reported multiplet, not a search. Draw r depends only
        on (``seed``, r). Not used with ``ties="index"``.
    seed : int
        Seeds the random tie orders and the annealing.
    units : {"bits", "nats"}
    bias_correction : bool
        Ince's bias correction of every entropy (default true; the reference code has none).
    device : str or torch.device, optional
        Where to compute (default: ``features``' device).
    labels : array_like of int, shape (n_neurons,), optional
        Bin of each neuron, instead of clustering (e.g. to keep bins fixed across checkpoints).
    ridge : float
        Added to the covariance diagonal; a singular covariance (duplicated neurons) raises
        unless ``ridge > 0``.
    annealing_steps : int
        Steps per annealing chain.

    Returns
    -------
    list of dict
        One row per result with keys ``metric`` ("synergy" | "redundancy"), ``scope``
        ("overall": the extreme over all sizes; "size": the extreme among multiplets of that
        size), ``value`` (in ``units``), ``size`` (bins in the multiplet), ``bins`` (its sorted
        bin ids, "0,3,7"), ``n_neurons`` (live neurons in those bins), ``n_bins`` (bins that took
        part), ``n_excluded`` (constant or linearly dependent
        neurons dropped), ``variables``, ``search`` (the method
        that produced the row), ``value_sd`` (standard deviation of the multiplet's
        O-information over the ``draws`` random tie orders, in ``units``; NaN below two draws)
        and ``draws``. Overall rows come first, then per-size rows by size.
    """
    _check_units(units)
    if variables not in _VARIABLES:
        raise GrokscopeError(f"variables: expected one of {', '.join(_VARIABLES)}, got "
                             f"{variables!r}")
    if search not in _SEARCHES:
        raise GrokscopeError(f"search: expected one of {', '.join(_SEARCHES)}, got {search!r}")
    _check_ties(ties)
    if isinstance(tie_draws, bool) or not isinstance(tie_draws, Integral) or tie_draws < 0:
        raise GrokscopeError(f"tie_draws: must be an integer >= 0, got {tie_draws!r}")
    if ties == "random" and tie_draws < 1:
        raise GrokscopeError("tie_draws: ties='random' averages over random tie orders; it needs "
                             "at least 1")
    draws = 0 if ties == "index" else int(tie_draws)
    x = _as_tensor(features, device, name="features")
    _check_samples_matrix(x, name="features")
    n_samples = x.shape[0]

    alive, bin_of = _live_bins(x, n_bins, labels)
    n_excluded = int((~alive).sum())
    x = x[:, torch.as_tensor(alive, device=x.device)]  # (n_samples, n_alive)
    # bins with no live neuron are not searched; ids stay those of the labels
    bin_ids = np.unique(bin_of)
    bin_neurons = {int(b): np.flatnonzero(bin_of == b) for b in bin_ids}
    n_used = len(bin_ids)
    max_size = n_used if max_size is None else int(max_size)
    if min_size < 2 or max_size < min_size or max_size > n_used:
        raise GrokscopeError(f"min_size/max_size: need 2 <= min_size <= max_size <= {n_used} "
                             f"(bins with live neurons), got {min_size} and {max_size}")

    if variables == "neurons":
        local_sets = [bin_neurons[int(b)] for b in bin_ids]
        columns = x  # (n_samples, n_alive)

        def variables_of(multiplet):
            return np.concatenate([local_sets[i] for i in multiplet]).tolist()
    else:
        index = torch.as_tensor(bin_of, device=x.device)
        member = (index.unsqueeze(0) == torch.as_tensor(bin_ids, device=x.device).unsqueeze(1))
        columns = x @ member.T.to(x.dtype) / member.sum(1).to(x.dtype)  # (n_samples, n_used)

        def variables_of(multiplet):
            return list(multiplet)
    tie_covariances = TieCovariances(columns, ties, seed, draws)
    cov = _check_positive_definite(tie_covariances.search, ridge)

    def evaluate(multiplets):
        return _direct_values_chunked(cov, [variables_of(m) for m in multiplets], n_samples,
                                      bias_correction).cpu().numpy()

    if search == "auto":
        limit = AUTO_EXHAUSTIVE_NEURON_BINS if variables == "neurons" else LATTICE_MAX_VARIABLES
        search = "exhaustive" if n_used <= limit else "greedy"
    if search == "exhaustive":
        multiplets = _all_multiplets(n_used, min_size, max_size)
        if variables == "bins":
            values = oinfo_values_from_cov(cov, n_samples, min_size, max_size,
                                           bias_correction=bias_correction).cpu().numpy()
        else:
            values = _union_values(cov, local_sets, n_samples, min_size, max_size,
                                   bias_correction).cpu().numpy()
        if not np.isfinite(values).all():
            raise GrokscopeError("features: O-information is not finite; the covariance is "
                                 "numerically singular (pass ridge > 0)")
        best_low, best_high = _best_per_size(multiplets, values), _best_per_size(multiplets,
                                                                                  -values)
    elif search == "greedy":
        best_low = _greedy(evaluate, n_used, min_size, max_size)
        best_high = _greedy(lambda ms: -evaluate(ms), n_used, min_size, max_size)
    else:
        best_low = _annealing(evaluate, n_used, min_size, max_size, seed, annealing_steps)
        best_high = _annealing(lambda ms: -evaluate(ms), n_used, min_size, max_size, seed,
                               annealing_steps)
    best_high = {k: (m, -v) for k, (m, v) in best_high.items()}

    # the reported multiplets again on every random tie order
    entries = _reported(best_low, best_high, per_size)
    chosen = sorted({multiplet for _, _, multiplet, _ in entries})
    mean, sd = _tie_spread(tie_covariances, [variables_of(m) for m in chosen], n_samples,
                           bias_correction, ridge)
    over_draws = {m: (float(a), float(b)) for m, a, b in zip(chosen, mean, sd)}

    scale = _unit_scale(units)
    common = {"n_bins": n_used, "n_excluded": n_excluded, "variables": variables,
              "search": search, "draws": tie_covariances.draws}
    rows = []
    for metric, scope, multiplet, value in entries:
        draws_mean, draws_sd = over_draws[multiplet]
        bins = tuple(int(bin_ids[i]) for i in multiplet)  # positions -> the bins' own ids
        rows.append({"metric": metric, "scope": scope,
                     # random ties report the mean over their draws
                     "value": (draws_mean if ties == "random" else value) * scale,
                     "value_sd": draws_sd * scale, "size": len(bins),
                     "bins": ",".join(str(b) for b in bins),
                     "n_neurons": int(sum(len(bin_neurons[b]) for b in bins)), **common})
    return rows
