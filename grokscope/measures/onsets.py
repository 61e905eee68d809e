r"""Where a progress measure changes regime: its peak, its steepest change and a change point, and
the spread of a lead or lag over seeds.

A measure's curve is read in log step, as every seed paper draws it: the checkpoints of a run are
spaced unevenly (every N steps plus log-spaced ones), so each curve is first put on one even
grid of :data:`PER_DECADE` points per decade of step (:func:`log_grid`: linear interpolation in
:math:`\log_{10}` step between measured steps), so that a decade weighs the same whatever the
checkpoint schedule. The events are then found on that grid and reported at the measured step
nearest to them (in log step), so every event is a step at which the measure was measured:

* **peak** (:func:`peak`): the measured step of the global maximum of :math:`s\,v(t)`, with the
  sign :math:`s = +1` (the largest value) for every measure but synergy, whose peak is its lowest
  O-information (:math:`s = -1`, the most synergistic step); no grid involved;
* **steepest change** (:func:`steepest_change`): the grid point of the largest
  :math:`|\mathrm{d}\bar v / \mathrm{d}\log_{10} t|`, :math:`\bar v` the grid values after a
  centred running mean over :data:`SMOOTHING_POINTS` grid points (0.15 decade), the derivative by
  central differences;
* **change point** (:func:`change_point`): the break of the best two-segment piecewise-linear
  least-squares fit in log step (Quandt 1958's two-phase regression, each segment its own line,
  the break exhaustive over the grid, each segment at least :data:`MIN_SEGMENT_POINTS` grid
  points, a quarter decade): the first grid point of the second segment.

Over seeds, :func:`bootstrap_interval` gives the mean of a lead or lag with a percentile
bootstrap interval (Efron & Tibshirani 1993, ch. 13) from a seeded generator.

Pure functions on arrays (numpy: a curve has at most a few thousand points): no files, no
printing.

References
----------
Quandt, R. E. (1958). The estimation of the parameters of a linear regression system obeying two
separate regimes. Journal of the American Statistical Association, 53(284), 873-880.

Bai, J., & Perron, P. (1998). Estimating and testing linear models with multiple structural
changes. Econometrica, 66(1), 47-78.

Efron, B., & Tibshirani, R. J. (1993). An Introduction to the Bootstrap. Chapman & Hall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from grokscope.errors import GrokscopeError

#: Points per decade of step of the even log grid every curve is put on before its steepest
#: change and change point are found.
PER_DECADE = 20
#: Grid points of the running mean before differentiating: 3 points, 0.15 decade.
SMOOTHING_POINTS = 3
#: Fewest grid points of each segment of the two-segment fit: 5 points, a quarter decade, so a
#: segment is a regime rather than one outlier.
MIN_SEGMENT_POINTS = 5
#: Bootstrap resamples and the interval's coverage, the defaults of ``grokscope onsets``.
RESAMPLES = 2000
CONFIDENCE = 0.95

EVENTS = ("peak", "steepest", "change_point")


@dataclass(frozen=True)
class Event:
    """One regime change of a curve: its ``name`` (one of :data:`EVENTS`), the measured ``step``,
    the measured ``value`` there and ``slope``: for ``steepest`` the smoothed
    :math:`\\mathrm{d}v/\\mathrm{d}\\log_{10} t` there, for ``change_point`` the fitted slope after
    the break minus the slope before it (per decade), NaN for ``peak``. ``step`` is None where the
    curve is too short for the event (fewer than two finite values at steps > 0, or a grid too
    short for two segments)."""

    name: str
    step: int | None
    value: float = math.nan
    slope: float = math.nan


def _curve(steps, values) -> tuple[np.ndarray, np.ndarray]:
    """Finite values at steps > 0 (the axis is log step), sorted by step; a step measured twice is an
    error (two curves mixed)."""
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if steps.shape != values.shape or steps.ndim != 1:
        raise GrokscopeError(f"onsets: steps and values must be 1-D of one length, got {steps.shape} and {values.shape}")
    keep = np.isfinite(values) & np.isfinite(steps) & (steps > 0)
    steps, values = steps[keep], values[keep]
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    if len(steps) > 1 and np.any(np.diff(steps) == 0):
        raise GrokscopeError(f"onsets: step {int(steps[np.flatnonzero(np.diff(steps) == 0)[0]])} has two values "
                             "(two curves mixed in one)")
    return steps, values


def log_grid(steps, values, per_decade: int = PER_DECADE) -> tuple[np.ndarray, np.ndarray]:
    r"""A curve on an even grid in log step, by linear interpolation between measured steps.

    .. math::

        x_k = \log_{10} t_1 + k / m, \quad k = 0, \dots, \lfloor m (\log_{10} t_n - \log_{10} t_1) \rfloor,
        \qquad \tilde v_k = \text{the piecewise-linear interpolant of } (\log_{10} t_i, v_i) \text{ at } x_k

    with :math:`m` = ``per_decade`` and :math:`t_1 < \dots < t_n` the measured steps > 0 with a
    finite value.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The grid :math:`x_k` (log10 step) and the values there; both empty where fewer than two
        finite values at steps > 0 remain.
    """
    if per_decade < 1:
        raise GrokscopeError(f"onsets: per_decade must be >= 1, got {per_decade}")
    steps, values = _curve(steps, values)
    if len(steps) < 2:
        return np.empty(0), np.empty(0)
    x = np.log10(steps)
    grid = x[0] + np.arange(int(math.floor((x[-1] - x[0]) * per_decade + 1e-9)) + 1) / per_decade
    return grid, np.interp(grid, x, values)


def running_mean(values, points: int = SMOOTHING_POINTS) -> np.ndarray:
    r"""Centred running mean over ``points`` (odd) neighbours; at the ends over those that exist.

    .. math:: \bar v_k = \frac{1}{|W_k|} \sum_{j \in W_k} v_j, \qquad
              W_k = \{j : |j - k| \le (w - 1)/2,\ 0 \le j < n\}
    """
    values = np.asarray(values, dtype=np.float64)
    if points < 1 or points % 2 == 0:
        raise GrokscopeError(f"onsets: the running mean needs an odd number of points, got {points}")
    half = points // 2
    total = np.concatenate([[0.0], np.cumsum(values)])
    index = np.arange(len(values))
    low, high = np.maximum(index - half, 0), np.minimum(index + half + 1, len(values))
    return (total[high] - total[low]) / (high - low)


def _nearest_measured(steps: np.ndarray, x: float) -> int:
    """The measured step nearest to log10 step ``x`` (the earlier one on a tie)."""
    return int(steps[int(np.argmin(np.abs(np.log10(steps) - x)))])


def peak(steps, values, sign: int = 1) -> Event:
    r"""The measured step of the curve's global extreme in the direction ``sign``.

    .. math:: t_\mathrm{peak} = \operatorname{arg\,max}_{t_i} \; s\, v_i

    (the first such step on a tie), :math:`s` = ``sign``: +1 the maximum, -1 the minimum (synergy's
    lowest O-information); no step from fewer than two finite values at steps > 0.
    """
    if sign not in (1, -1):
        raise GrokscopeError(f"onsets: sign must be 1 or -1, got {sign}")
    steps, values = _curve(steps, values)
    if len(steps) < 2:
        return Event("peak", None)
    best = int(np.argmax(sign * values))
    return Event("peak", int(steps[best]), float(values[best]))


def steepest_change(steps, values, per_decade: int = PER_DECADE, points: int = SMOOTHING_POINTS) -> Event:
    r"""The step of the curve's steepest change in log step, after light smoothing.

    .. math::

        k^* = \operatorname{arg\,max}_k \left| \frac{\bar v_{k+1} - \bar v_{k-1}}{x_{k+1} - x_{k-1}} \right|

    on the grid of :func:`log_grid` smoothed by :func:`running_mean` (one-sided differences at the
    ends), reported at the measured step nearest to :math:`x_{k^*}`; ``slope`` is the derivative
    there, in units of the value per decade of step.
    """
    measured, raw = _curve(steps, values)
    grid, on_grid = log_grid(measured, raw, per_decade)
    if len(grid) < 2:
        return Event("steepest", None)
    slope = np.gradient(running_mean(on_grid, points), grid)
    best = int(np.argmax(np.abs(slope)))
    step = _nearest_measured(measured, grid[best])
    return Event("steepest", step, float(raw[measured == step][0]), float(slope[best]))


@dataclass(frozen=True)
class TwoSegmentFit:
    """The best two-segment fit of :func:`two_segment_fit`: the second segment starts at index
    ``start``; ``sse`` its residual sum of squares; ``left`` and ``right`` each segment's
    (intercept, slope)."""

    start: int
    sse: float
    left: tuple[float, float]
    right: tuple[float, float]


def two_segment_fit(x, y, min_points: int = MIN_SEGMENT_POINTS) -> TwoSegmentFit | None:
    r"""Two-phase regression (Quandt 1958): the split of ordered points into two runs, each fitted by
    its own least-squares line, with the least total squared error, over every split.

    .. math::

        b^* = \operatorname{arg\,min}_{m \le b \le n - m}
              \Big[\min_{a, c} \sum_{i < b} (y_i - a - c x_i)^2 + \min_{a', c'} \sum_{i \ge b} (y_i - a' - c' x_i)^2\Big]

    with :math:`m` = ``min_points``; each segment's error from prefix sums of :math:`1, x, y,
    x^2, xy, y^2` (all splits in :math:`O(n)`). The first best split wins a tie.

    Returns
    -------
    TwoSegmentFit or None
        None where fewer than :math:`2m` points are given.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if min_points < 2:
        raise GrokscopeError(f"onsets: each segment needs at least 2 points to fit a line, got {min_points}")
    n = len(x)
    if n < 2 * min_points:
        return None
    # Centre both axes so the sums of squares do not cancel catastrophically.
    xc, yc = x - x.mean(), y - y.mean()
    sums = np.stack([np.ones(n), xc, yc, xc * xc, xc * yc, yc * yc])
    prefix = np.concatenate([np.zeros((6, 1)), np.cumsum(sums, axis=1)], axis=1)
    splits = np.arange(min_points, n - min_points + 1)
    left, right = prefix[:, splits], prefix[:, [n]] - prefix[:, splits]
    sse = _line_sse(left) + _line_sse(right)
    best = int(np.argmin(sse))
    start = int(splits[best])
    return TwoSegmentFit(start, float(sse[best]), _line(x[:start], y[:start]), _line(x[start:], y[start:]))


def _line_sse(s: np.ndarray) -> np.ndarray:
    """Residual sum of squares of the least-squares line through points given by their sums
    (count, x, y, xx, xy, yy): :math:`S_{yy} - S_{xy}^2 / S_{xx}` about the means."""
    count, sx, sy, sxx, sxy, syy = s
    cxx = sxx - sx * sx / count
    cxy = sxy - sx * sy / count
    cyy = syy - sy * sy / count
    with np.errstate(divide="ignore", invalid="ignore"):
        explained = np.where(cxx > 0, cxy * cxy / cxx, 0.0)
    return np.maximum(cyy - explained, 0.0)


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


def change_point(steps, values, per_decade: int = PER_DECADE, min_points: int = MIN_SEGMENT_POINTS) -> Event:
    r"""The change point of a curve: where the best two-segment fit in log step breaks.

    :func:`two_segment_fit` on the grid of :func:`log_grid`; the event is the measured step
    nearest to the second segment's first grid point :math:`x_{b^*}`, ``slope`` the change of
    slope there, :math:`c' - c` (value per decade).
    """
    measured, raw = _curve(steps, values)
    grid, on_grid = log_grid(measured, raw, per_decade)
    fit = two_segment_fit(grid, on_grid, min_points)
    if fit is None:
        return Event("change_point", None)
    step = _nearest_measured(measured, grid[fit.start])
    return Event("change_point", step, float(raw[measured == step][0]), fit.right[1] - fit.left[1])


def curve_events(steps, values, sign: int = 1) -> list[Event]:
    """Every event of :data:`EVENTS` of one curve (``sign``: :func:`peak`'s direction)."""
    return [peak(steps, values, sign), steepest_change(steps, values), change_point(steps, values)]


def bootstrap_interval(values, resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                       seed: int = 0) -> tuple[float, float, float]:
    r"""The mean of ``values`` (one per seed) and its percentile bootstrap interval.

    .. math::

        \bar v = \frac1n \sum_i v_i, \qquad
        \bar v^{*b} = \frac1n \sum_i v_{I_{bi}}, \quad I_{bi} \sim \mathcal U\{0, \dots, n-1\},
        \qquad [\,Q_{(1-c)/2}(\bar v^{*}),\ Q_{(1+c)/2}(\bar v^{*})\,]

    over :math:`B` = ``resamples`` resamples drawn at once as a :math:`B \times n` index matrix by
    ``numpy.random.default_rng(seed).integers``, :math:`Q` numpy's linear-interpolation quantile
    (Efron & Tibshirani 1993, ch. 13). Non-finite values (a seed that never generalised) are left
    out first.

    Returns
    -------
    (float, float, float)
        Mean, low, high; the interval is NaN with fewer than 2 finite values (no spread to
        resample), everything NaN with none.
    """
    if resamples < 1:
        raise GrokscopeError(f"onsets: resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise GrokscopeError(f"onsets: confidence must lie in (0, 1), got {confidence}")
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    index = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    means = values[index].mean(axis=1)
    low, high = np.quantile(means, [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return mean, float(low), float(high)
