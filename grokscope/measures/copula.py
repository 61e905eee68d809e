r"""Gaussian-copula normalisation: ranks, tied values and the copula covariance.

Each variable is replaced by the standard-normal scores of its ranks (:func:`copnorm`; Ince et
al. 2017), and every entropy of the O-information comes from the covariance of those scores
(:func:`copula_covariance`).

Tied values (the exact zeros of ReLU features) have no rank order; they are taken in a random
order (``ties="random"``, an infinitesimal jitter), averaged over every order in closed form
(``"average"``), or in row order (``"index"``, the reference code's, which makes the value
depend on the order in which the samples are stored). Every treatment starts from one sort of
each column (:class:`~grokscope.measures.ties.Ranks`); a random order redraws only the tied
blocks.

References
----------
Ince, R. A. A., Giordano, B. L., Kayser, C., Rousselet, G. A., Gross, J., & Schyns, P. G. (2017).
A statistical framework for neuroimaging data analysis based on mutual information estimated via
a Gaussian copula. Human Brain Mapping 38, 1541-1573.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from grokscope.errors import GrokscopeError
from grokscope.measures.inputs import _as_tensor, _check_samples_matrix
from grokscope.measures.ties import Ranks, draw_generator

_TIES = ("random", "average", "index")

#: The covariances of the random tie orders are kept for the tie spread while they take at most
#: this many bytes together; past it each is recomputed from its seed when needed (same values).
DRAW_CACHE_BYTES = 1 << 29


def constant_columns(x) -> np.ndarray:
    """Indices of the columns of ``x`` (samples, variables) that take a single value.

    Their entropy is :math:`-\\infty`, so O-information is undefined for any set holding one.
    """
    t = _as_tensor(x)
    _check_samples_matrix(t)
    constant = t.amax(dim=0) == t.amin(dim=0)  # (m,)
    return torch.nonzero(constant).flatten().cpu().numpy()


def _check_ties(ties: str) -> None:
    if ties not in _TIES:
        raise GrokscopeError(f"ties: expected one of {', '.join(_TIES)}, got {ties!r}")


def _copnorm_tensor(x: torch.Tensor, ties: str = "random", seed: int = 0) -> torch.Tensor:
    """(n, m) the copula scores of ``x`` (n, m), on its device; a random order is draw 0 of
    ``seed``."""
    _check_ties(ties)
    ranks = Ranks(x)
    if ties == "average":
        z = ranks.average_scores()
    else:
        z = ranks.index_scores()
        if ties == "random":
            ranks.draw(z, draw_generator(seed, 0))
    return z.T.to(x.device)


def copnorm(x, *, ties: str = "random", seed: int = 0):
    r"""Copula-normalise each column: standard-normal scores of its ranks.

    .. math::

        \tilde z_{ij} = \Phi^{-1}\!\left(\frac{r_{ij}}{n + 1}\right)

    with :math:`r_{ij} \in \{1, \dots, n\}` the rank of sample :math:`i` within column :math:`j`
    and :math:`\Phi^{-1}` the standard-normal quantile function (Ince et al. 2017).

    Parameters
    ----------
    x : array_like or torch.Tensor, shape (n_samples, n_variables)
    ties : {"random", "average", "index"}
        How equal values are ranked. ``"random"`` (default here) breaks ties in an independent
        uniform random order per column, fixed by ``seed``: one draw of an infinitesimal jitter,
        so the many exact zeros of ReLU features add no dependence between neurons.
        ``"average"`` gives each tied value the mean of the scores its block spans (the
        expectation over random orders; each column then has a smaller variance than the
        scores', which :func:`copula_covariance` puts back). ``"index"`` ranks tied samples in
        their row order, which is what the argsort-of-argsort of the reference code (Ince's
        ``gcmi``, ``hoi``, Clauw et al.) does: the result then depends on the order of the
        samples.
    seed : int
        Seed of the tie-breaking order (``ties="random"`` only).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        Same shape as ``x``, float64; a tensor on ``x``'s device when ``x`` is a tensor.
    """
    t = _as_tensor(x)
    _check_samples_matrix(t)
    z = _copnorm_tensor(t, ties, seed)
    return z if isinstance(x, torch.Tensor) else z.cpu().numpy()


def _covariance(z: torch.Tensor) -> torch.Tensor:
    """Sample covariance with the n - 1 denominator, as in Ince's ``gcmi``. (n, m) -> (m, m)."""
    zc = z - z.mean(dim=0, keepdim=True)  # (n, m)
    return zc.T @ zc / (z.shape[0] - 1)  # (m, m)


#: Row blocks of :func:`_gram`: each block times the rows from it on, about 1/3 fewer flops
#: than the full product (and exactly symmetric).
_GRAM_BLOCKS = 4


def _gram(z: torch.Tensor) -> torch.Tensor:
    """(m, m) ``z @ z.T`` of ``z`` (m, n), its lower block triangle computed and mirrored."""
    m = z.shape[0]
    edges = [round(i * m / _GRAM_BLOCKS) for i in range(_GRAM_BLOCKS + 1)]
    gram = z.new_empty(m, m)
    for a, b in zip(edges, edges[1:]):
        if a == b:
            continue
        product = z[a:b] @ z[a:].T  # (b - a, m - a)
        gram[a:b, a:] = product
        gram[b:, a:b] = product[:, b - a:].T
    return gram


def _score_covariance(z: torch.Tensor, mean: float) -> torch.Tensor:
    """(m, m) covariance of score rows ``z`` (m, n) whose every row has mean ``mean``."""
    n = z.shape[1]
    return (_gram(z) - n * mean * mean) / (n - 1)


class TieCovariances:
    r"""The covariance a search runs on, and the covariance of each random order of the ties.

    ``"index"``: the row-order covariance, no draws. ``"average"``: the tie-averaged covariance
    (off the diagonal, columns' tie orders are independent, so the expected product of two
    columns' scores is the product of their expected scores, the covariance of the averaged
    scores; on the diagonal every order gives a column all n scores, so its variance is
    theirs), and ``draws`` random orders for the spread. ``"random"``: the mean of the
    ``draws`` random orders' covariances. Draw :math:`r` is draw :math:`r` of ``seed``
    (:func:`~grokscope.measures.ties.draw_generator`), so draw 0 is
    ``copnorm(x, ties="random", seed=seed)``. All come from one sort of each column; the draws'
    covariances are kept while they fit in :data:`DRAW_CACHE_BYTES`, else recomputed in
    :meth:`each` (the same numbers: each draw has its own generator).
    """

    def __init__(self, x: torch.Tensor, ties: str, seed: int, draws: int) -> None:
        _check_ties(ties)
        if ties == "random" and draws < 1:
            raise GrokscopeError("tie_draws: ties='random' needs at least 1 draw")
        self.ranks = Ranks(x)
        self.device = x.device
        self.seed = int(seed)
        self.draws = 0 if ties == "index" else int(draws)
        m = self.ranks.m
        self._scores = self.ranks.index_scores()  # (m, n) CPU; the draws rewrite its tied entries
        keep = self.draws * m * m * 8 <= DRAW_CACHE_BYTES
        self._kept: list[torch.Tensor] | None = [] if keep else None
        if ties == "index":
            self.search = _score_covariance(self._scores.to(self.device), self.ranks.mean)
        elif ties == "average":
            self.search = _score_covariance(self.ranks.average_scores().to(self.device),
                                            self.ranks.mean)
            self.search.diagonal().fill_(self.ranks.variance)
            if keep:
                self._kept = [self._draw(r) for r in range(self.draws)]
        else:
            total = None
            for r in range(self.draws):
                cov = self._draw(r)
                total = cov.clone() if total is None else total.add_(cov)
                if keep:
                    self._kept.append(cov)
            self.search = total / self.draws if self.draws > 1 else total
        self.ranks.forget_order()  # every score but the draws' is made

    def _draw(self, r: int, columns: torch.Tensor | None = None) -> torch.Tensor:
        z = self.ranks.draw(self._scores, draw_generator(self.seed, r))
        if columns is not None:
            z = z[columns]
        return _score_covariance(z.to(self.device), self.ranks.mean)

    def each(self, columns: Sequence[int] | None = None) -> Iterator[torch.Tensor]:
        """Each draw's covariance, of the given columns only (default all), in draw order."""
        for r in range(self.draws):
            if self._kept is None:
                yield self._draw(r, None if columns is None else torch.as_tensor(list(columns)))
            elif columns is None:
                yield self._kept[r]
            else:
                index = torch.as_tensor(list(columns), device=self.device)
                yield self._kept[r][index][:, index]


def _tie_covariances(x: torch.Tensor, ties: str, seed: int, draws: int
                     ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """:class:`TieCovariances`' search covariance and every draw's, as a list."""
    covariances = TieCovariances(x, ties, seed, draws)
    return covariances.search, list(covariances.each())


def copula_covariance(x, *, ties: str = "random", seed: int = 0):
    r"""Covariance of the copula-normalised columns of ``x``, ties treated as ``ties`` says.

    .. math::

        \Sigma_{jk} = \mathbb{E}_\pi\left[\operatorname{cov}(\tilde z_j, \tilde z_k)\right]
        = \begin{cases} \operatorname{cov}(\bar z_j, \bar z_k) & j \ne k \\
        \operatorname{var}\big(\Phi^{-1}(\tfrac{1}{n+1}), \dots,
        \Phi^{-1}(\tfrac{n}{n+1})\big) & j = k \end{cases}

    for ``ties="average"``: the expectation, over independent uniform random orders
    :math:`\pi` of each column's tied values, of the covariance of :func:`copnorm`'s scores
    :math:`\tilde z`, in closed form: :math:`\bar z` are the tie-averaged scores
    (``copnorm(x, ties="average")``), and every order leaves each column's variance that of all
    n scores. No order of the samples enters it, and it costs one sort per column. This is the
    mid-rank treatment of ties with the copula's variance correction; with no ties it is the
    plain copula covariance (Ince et al. 2017). ``"random"`` (default): the covariance of one
    random order of the ties (seeded), what an infinitesimal independent jitter gives;
    ``"index"``: of the row order (the reference code's; order-dependent).

    Parameters
    ----------
    x : array_like or torch.Tensor, shape (n_samples, n_variables)
    ties : {"random", "average", "index"}
    seed : int
        Seed of the tie order (``ties="random"`` only).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        (n_variables, n_variables), float64; a tensor on ``x``'s device when ``x`` is a tensor.
    """
    t = _as_tensor(x)
    _check_samples_matrix(t)
    cov = TieCovariances(t, ties, seed, 1 if ties == "random" else 0).search
    return cov if isinstance(x, torch.Tensor) else cov.cpu().numpy()
