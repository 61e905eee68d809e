r"""Intrinsic complexity of a network: the description length of its weights after the best lossy
compression that keeps the training loss within a tolerance, and the spectral-entropy penalty.

This module holds the method and the search; the coarse-graining and its coding live in
:mod:`grokscope.measures.coarse_graining`, the losses, the bound and the penalty in
:mod:`grokscope.measures.complexity_losses` (every public name of both is importable from here).

DeMoss, Sapora, Foerster, Hawes & Posner, "The Complexity Dynamics of Grokking" (arXiv:2412.09810;
Physica D 482, 134859, 2025); the authors' code is github.com/brantondemoss/GrokkingComplexity.

**Coarse-graining** :math:`C_{\tau,\Delta}`. Every weight matrix :math:`W \in \mathbb{R}^{m\times n}`
with singular values :math:`s_1 \ge s_2 \ge \dots` is truncated to the smallest rank :math:`k`
whose singular values reach a fraction :math:`\tau` of their sum,

.. math::

    k(\tau) = \min\Big\{k : \sum_{i \le k} s_i \ge \tau \sum_i s_i\Big\},

and stored as the two factors :math:`A = U_k \operatorname{diag}(s_{1..k})` (:math:`m \times k`)
and :math:`B = V_k^\top` (:math:`k \times n`) when that saves entries, :math:`k(m+n) < mn`;
otherwise the full matrix is kept. Every stored array (factors, full matrices, biases and other
vectors) is then quantised with one global bin size :math:`\Delta`,
:math:`q(x) = \Delta \operatorname{round}(x / \Delta)`, so the network evaluated is
:math:`q(A)\,q(B)` (or :math:`q(W)`). The integer codes
:math:`\operatorname{round}(x/\Delta)` are serialised (row-major, each array in the narrowest of
int8/16/32/64 that holds its codes, arrays in state-dict order, factor :math:`A` before
:math:`B`) and compressed with a general-purpose compressor (bz2 as the authors, or lzma).

Where this differs from the authors' code (read for these facts, not copied): their rank is one
less (``searchsorted`` keeps the singular values whose running sum stays *below* tau), they
pickle the quantised float32 values where grokscope serialises the integer codes, and they return
an infeasibility penalty when no point of their search meets the tolerance where grokscope falls
back to the identity.

**Complexity** at tolerance :math:`\varepsilon`: the smallest compressed size, in bits,

.. math::

    K_\varepsilon(\theta) = \min_{(\tau, \Delta)} \big|\operatorname{compress}(C_{\tau,\Delta}(\theta))\big|
    \quad\text{subject to}\quad L(C_{\tau,\Delta}(\theta)) \le L(\theta) + \varepsilon,

with :math:`L` the loss on the whole training set (the authors' code evaluates the last
minibatch; the constraint is one-sided as theirs: a coarse-grained network may do better), or on
a fixed, seeded subsample of it for large models (``model_loss(..., subsample=N, seed=s)``; the
result records ``loss_samples`` and ``loss_seed``). The identity (the float weights compressed
as they are) is always a candidate, so :math:`K_\varepsilon \le` ``raw_bits``. A tied tensor
(one tensor under several names, as GPT-2's output layer and embedding) is coded, counted and
perturbed once (:class:`CoarseGraining`).

**Search over** :math:`(\tau, \Delta)`. The authors maximise with Bayesian optimisation (62 loss
evaluations per checkpoint, :math:`\tau \in [0, 1]`, :math:`\Delta \in [10^{-3}, 1]` log-uniform).
grokscope searches a fixed grid deterministically instead: :math:`\tau` in ``taus`` (default
0, 0.05, ..., 1) and :math:`\Delta = 2^{j/q}` for integer :math:`j` (``bins_per_octave`` q,
default 16: steps of 4.4%), from :math:`2^{-24}` times the largest stored magnitude (float32
resolution) to the first :math:`\Delta` that rounds every code to zero. Grid values of
:math:`\tau` that give the same ranks are one configuration. The search assumes three
monotonicities, which rounding to a coarser grid and truncating more nearly always obey, and
checks nothing else:

1. feasibility is monotone in :math:`\Delta`: if :math:`\Delta_j` meets the tolerance, every finer
   :math:`\Delta` does, so each configuration has a largest feasible :math:`\Delta^*`;
2. the compressed size does not grow with :math:`\Delta` (coarser codes, smaller numbers), so a
   configuration's best point is :math:`\Delta^*`;
3. a configuration with no feasible :math:`\Delta` has none at smaller :math:`\tau` either.

It walks the configurations from the largest :math:`\tau` down. The first gets :math:`\Delta^*`
by bisecting the bin range. Each next one starts from the previous :math:`\Delta^*`: if that bin
is feasible it gallops to coarser bins; if not, its own :math:`\Delta^*` lies below, so (by 2)
its best size is at least its size one bin below: one compression, and when that is no smaller
than the best so far the configuration is skipped. Otherwise it gallops to finer bins (checking
the finest bin after two misses) and bisects, and the configuration's size at its
:math:`\Delta^*` is compressed. The walk stops at the first configuration with no feasible bin
(by 3). Under 1-3 the result is the optimum of the whole grid, whatever bin each gallop starts
from (``tests/test_complexity.py`` checks it against brute force), and the same every time
(on one machine: another BLAS may round a boundary loss the other way); on the default run it
costs about 30 loss evaluations and 10 compressions per checkpoint (``benchmarks/complexity.py``).
Loss evaluations and compressions are cached, so a rate-distortion curve over several tolerances
shares them. ``max_loss_evaluations`` (default 64) bounds each tolerance's new evaluations: where
it runs out, the result is the smallest feasible point evaluated so far (``exhausted``).

**Generalisation bound** (the paper's Occam bound, for a hypothesis described in :math:`K` bits
and a loss in [0, 1], with probability :math:`1-\delta` over :math:`n` training samples):

.. math::

    R(h) \le \hat R(h) + \sqrt{\frac{K + 2\log K + \log(1/\delta)}{2n}}

with :math:`\hat R` the coarse-grained network's training error (0-1 loss) and :math:`K` the
complexity in bits. It is vacuous (above 1) unless :math:`K` is well below :math:`2n`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Integral
from dataclasses import dataclass, field

from grokscope.errors import GrokscopeError
from grokscope.measures.coarse_graining import (  # noqa: F401 - the coding's public names, importable from here
    BINS_PER_OCTAVE,
    COMPRESSORS,
    FINEST_RELATIVE_BIN,
    CoarseGraining,
    compressed_bits,
    low_rank_saves,
    quantise,
    serialise,
    truncation_rank,
)
from grokscope.measures.complexity_losses import (  # noqa: F401 - likewise
    DEFAULT_DELTA,
    Loss,
    generalisation_bound,
    ModelError,
    ModelLoss,
    model_error,
    model_loss,
    spectral_entropy_penalty,
    training_subsample,
)

#: 0, 0.05, ..., 1: about what the authors' 62 evaluations over two parameters resolve.
DEFAULT_TAUS = tuple(i / 20 for i in range(21))
#: The most new loss evaluations one tolerance's search makes: about the authors' budget (62 per
#: checkpoint), nearly twice what the search needs on the default run (at most 35 at tolerance 0.1,
#: docs/complexity.md), so it binds only where the gallops go astray, and bounds the cost there.
DEFAULT_MAX_LOSS_EVALUATIONS = 64


# --- the search ----------------------------------------------------------------------------


@dataclass
class Complexity:
    """The complexity of one network at one tolerance, and how it was reached."""

    bits: float  # the smallest compressed size found, K
    tau: float  # the largest grid tau giving the chosen configuration (1.0: nothing truncated)
    bin_size: float  # Delta (0 for the identity: the float weights compressed as they are)
    loss: float  # the coarse-grained network's training loss
    original_loss: float
    raw_bits: float  # the float weights compressed as they are
    tolerance: float
    compressor: str
    ranks: dict[str, int] = field(default_factory=dict)  # per matrix, the rank it was coded at
    error: float = math.nan  # the coarse-grained network's training error, if an error callable was given
    spectra: dict[str, dict[str, float]] = field(default_factory=dict)  # per matrix, from the same SVDs
    loss_evaluations: int = 0  # new loss evaluations this search made (cached ones not counted)
    compressions: int = 0
    max_loss_evaluations: int | None = None  # the search's budget of new loss evaluations (None: none)
    exhausted: bool = False  # the budget ran out: bits is the best point evaluated, an upper bound of the grid's
    loss_samples: int | None = None  # training samples the loss was evaluated on (None: not told by the loss)
    loss_seed: int | None = None  # the seed that chose them (None: all samples, or not told)


class _BudgetSpent(Exception):
    """The search's budget of loss evaluations is spent."""


class ComplexitySearch:
    """The deterministic frontier search of the module docstring over one network.

    Holds the coarse-graining and a cache of loss evaluations, so several tolerances (a
    rate-distortion curve) share both.
    """

    def __init__(self, coarse_graining: CoarseGraining, loss: Loss, *, taus: Sequence[float] = DEFAULT_TAUS,
                 bins_per_octave: int = BINS_PER_OCTAVE, max_loss_evaluations: int | None = None):
        if bins_per_octave < 1:
            raise GrokscopeError(f"bins per octave: must be at least 1, got {bins_per_octave}")
        if max_loss_evaluations is not None and not (
                isinstance(max_loss_evaluations, Integral) and not isinstance(max_loss_evaluations, bool)
                and max_loss_evaluations >= 1):
            raise GrokscopeError(
                f"max_loss_evaluations: must be a positive integer or None, got {max_loss_evaluations!r}")
        self.max_loss_evaluations = None if max_loss_evaluations is None else int(max_loss_evaluations)
        self._allowance: int | None = None  # evaluations left to the current run
        taus = sorted({float(t) for t in taus}, reverse=True)
        if not taus or not all(0.0 <= t <= 1.0 for t in taus):
            raise GrokscopeError(f"taus: need values in [0, 1], got {taus}")
        self.grain = coarse_graining
        self.loss = loss
        self.bins_per_octave = bins_per_octave
        self.j_lo, self.j_hi = coarse_graining.bin_range(bins_per_octave)
        # Grid taus that select the same ranks are one configuration, named by its largest tau.
        self.configs: list[tuple[float, tuple]] = []
        for tau in taus:
            config = coarse_graining.ranks(tau)
            if not any(config == seen for _, seen in self.configs):
                self.configs.append((tau, config))
        self.original_loss = float(loss(coarse_graining.state))
        self._losses: dict[tuple[tuple, int], float] = {}
        self._bits: dict[tuple[tuple, int, str], int] = {}
        self.loss_evaluations = 0
        self.compressions = 0

    def bin_size(self, j: int) -> float:
        return 2.0 ** (j / self.bins_per_octave)

    def coarse_loss(self, config: tuple, j: int) -> float:
        key = (config, j)
        if key not in self._losses:
            if self._allowance is not None:
                if self._allowance <= 0:
                    raise _BudgetSpent
                self._allowance -= 1
            state, _ = self.grain.coarse(config, self.bin_size(j))
            self._losses[key] = float(self.loss(state))
            self.loss_evaluations += 1
        return self._losses[key]

    def feasible(self, config: tuple, j: int, tolerance: float) -> bool:
        value = self.coarse_loss(config, j)
        return math.isfinite(value) and value <= self.original_loss + tolerance

    def bits(self, config: tuple, j: int, compressor: str) -> int:
        key = (config, j, compressor)
        if key not in self._bits:
            self._bits[key] = compressed_bits(serialise(self.grain.coarse(config, self.bin_size(j))[1]), compressor)
            self.compressions += 1
        return self._bits[key]

    def largest_feasible_bin(self, config: tuple, tolerance: float, guess: int | None = None) -> int | None:
        """The largest feasible exponent j for ``config`` (None if even the finest bin fails),
        galloping from ``guess`` when given, else bisecting the whole range."""
        lo, hi = self.j_lo, self.j_hi

        def ok(j):
            return self.feasible(config, j, tolerance)

        # Invariant of the bisection below: ``good`` feasible, ``bad`` not, where lo - 1 counts
        # as feasible and hi + 1 as infeasible (neither is evaluated).
        if guess is None:
            good, bad = lo - 1, hi + 1
        elif ok(guess):
            good, step = guess, 1
            while True:  # gallop towards coarser bins until one fails
                probe = good + step
                if probe > hi:
                    bad = hi + 1
                    break
                if not ok(probe):
                    bad = probe
                    break
                good, step = probe, step * 2
        else:
            bad, step = guess, 1
            while True:  # gallop towards finer bins until one passes
                probe = bad - step
                if step == 2 and not ok(lo):
                    # Two misses: check the finest bin before galloping across the range, so a
                    # configuration that fails everywhere (where the walk ends) costs three.
                    return None
                if probe < lo:
                    good = lo - 1
                    break
                if ok(probe):
                    good = probe
                    break
                bad, step = probe, step * 2
        while bad - good > 1:
            middle = (good + bad) // 2
            if ok(middle):
                good = middle
            else:
                bad = middle
        return good if good >= lo else None

    def run(self, tolerance: float, compressor: str = "bz2", error: Loss | None = None) -> Complexity:
        """The complexity at one tolerance (see the module docstring)."""
        if not tolerance >= 0 or not math.isfinite(tolerance):
            raise GrokscopeError(f"--tolerance: must be a finite number >= 0, got {tolerance}")
        if compressor not in COMPRESSORS:
            raise GrokscopeError(f"--compressor: unknown {compressor!r}; known: {', '.join(COMPRESSORS)}")
        evaluations, compressions = self.loss_evaluations, self.compressions
        raw = self.grain.raw_bits(compressor)
        # The identity is always feasible: the weights as they are.
        best = (raw, 1.0, None, None)
        guess = None
        self._allowance, exhausted = self.max_loss_evaluations, False
        try:
            for tau, config in self.configs:
                if guess is not None and guess > self.j_lo and not self.feasible(config, guess, tolerance):
                    # This configuration's best bin lies below the guess, so (size falling with the
                    # bin) its best size is at least its size one bin below: if that is no better
                    # than the best so far, skip the search for its bin altogether.
                    if self.bits(config, guess - 1, compressor) >= best[0]:
                        guess -= 1
                        continue
                j = self.largest_feasible_bin(config, tolerance, guess)
                if j is None:
                    break  # no bin works here; truncating further only adds error
                guess = j
                bits = self.bits(config, j, compressor)
                if bits < best[0]:
                    best = (bits, tau, config, j)
        except _BudgetSpent:
            exhausted = True
            best = self._best_evaluated(tolerance, compressor, best)
        finally:
            self._allowance = None
        bits, tau, config, j = best
        if config is None:
            state, bin_size, loss = self.grain.state, 0.0, self.original_loss
            ranks = self.grain.stored_ranks(tuple(None for _ in self.grain.matrices))
        else:
            state, _ = self.grain.coarse(config, self.bin_size(j))
            bin_size, loss = self.bin_size(j), self.coarse_loss(config, j)
            ranks = self.grain.stored_ranks(config)
        return Complexity(
            bits=float(bits), tau=tau, bin_size=bin_size, loss=loss, original_loss=self.original_loss,
            raw_bits=float(raw), tolerance=float(tolerance), compressor=compressor, ranks=ranks,
            error=float(error(state)) if error is not None else math.nan, spectra=self.grain.spectra(),
            loss_evaluations=self.loss_evaluations - evaluations, compressions=self.compressions - compressions,
            max_loss_evaluations=self.max_loss_evaluations, exhausted=exhausted,
            loss_samples=getattr(self.loss, "samples", None), loss_seed=getattr(self.loss, "seed", None),
        )

    def _best_evaluated(self, tolerance: float, compressor: str, best: tuple) -> tuple:
        """``best`` or a smaller feasible point among those whose loss is known: per configuration
        its largest known feasible bin (by assumption 2 its smallest size among them)."""
        for tau, config in self.configs:
            known = [j for (seen, j), value in self._losses.items()
                     if seen == config and math.isfinite(value) and value <= self.original_loss + tolerance]
            if known:
                bits = self.bits(config, max(known), compressor)
                if bits < best[0]:
                    best = (bits, tau, config, max(known))
        return best


def rate_distortion(state: Mapping, loss: Loss, tolerances: Sequence[float], *, compressor: str = "bz2",
                    error: Loss | None = None, names: Sequence[str] | None = None,
                    taus: Sequence[float] = DEFAULT_TAUS, bins_per_octave: int = BINS_PER_OCTAVE,
                    max_loss_evaluations: int | None = DEFAULT_MAX_LOSS_EVALUATIONS,
                    tied: Sequence[Sequence[str]] | None = None) -> list[Complexity]:
    r"""The complexity :math:`K_\varepsilon` of one network at each tolerance :math:`\varepsilon`.

    Parameters
    ----------
    state : Mapping[str, array_like]
        The network's state dict.
    loss : callable
        ``loss(state) -> float``: the training loss of the network with the given state dict (all
        of the training set). :func:`model_loss` builds one from an ``nn.Module``.
    tolerances : sequence of float
        :math:`\varepsilon \ge 0`, in the loss's units.
    compressor : {"bz2", "lzma"}
    error : callable, optional
        ``error(state) -> float``, the training error in [0, 1] (for the generalisation bound);
        evaluated once, at the chosen point.
    names : sequence of str, optional
        Entries of ``state`` that are coded (default: every floating-point one).
    taus, bins_per_octave
        The search grid (see the module docstring).
    max_loss_evaluations : int or None
        The most new loss evaluations each tolerance's search may make (besides the one of the
        original network; None: no bound). When it runs out the result is the smallest feasible
        point evaluated (``exhausted``), a valid size but possibly above the grid's optimum.
    tied : sequence of sequences of str, optional
        Names that are one tensor (see :class:`CoarseGraining`): coded and counted once.

    Returns
    -------
    list of Complexity
        One per tolerance, in order. A network with non-finite weights or loss gives NaN sizes.
    """
    grain = CoarseGraining(state, names, tied)
    if not grain.finite:
        return [_undefined(loss, tolerance, compressor, math.nan, max_loss_evaluations) for tolerance in tolerances]
    search = ComplexitySearch(grain, loss, taus=taus, bins_per_octave=bins_per_octave,
                              max_loss_evaluations=max_loss_evaluations)
    if not math.isfinite(search.original_loss):
        return [_undefined(loss, tolerance, compressor, search.original_loss, max_loss_evaluations)
                for tolerance in tolerances]
    return [search.run(tolerance, compressor, error) for tolerance in tolerances]


def complexity(state: Mapping, loss: Loss, tolerance: float, **options) -> Complexity:
    """The complexity at one tolerance: :func:`rate_distortion` with a single tolerance."""
    return rate_distortion(state, loss, [tolerance], **options)[0]


def _undefined(loss: Loss, tolerance: float, compressor: str, original_loss: float,
               max_loss_evaluations: int | None) -> Complexity:
    """The NaN result of a network whose weights or loss are not finite."""
    return Complexity(bits=math.nan, tau=math.nan, bin_size=math.nan, loss=math.nan, original_loss=original_loss,
                      raw_bits=math.nan, tolerance=float(tolerance), compressor=compressor,
                      max_loss_evaluations=max_loss_evaluations, loss_samples=getattr(loss, "samples", None),
                      loss_seed=getattr(loss, "seed", None))
