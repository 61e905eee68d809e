"""Onsets on planted structure: peaks, steepest changes and change points recovered within a stated
tolerance; the two-segment fit and the bootstrap against brute-force loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from grokscope.errors import GrokscopeError
from grokscope.measures import onsets

# The tolerance every planted event is recovered within: a tenth of a decade of step (26%), two
# grid points of the 20-per-decade grid.
TOLERANCE_DECADES = 0.1


def schedule(last: int = 4000, every: int = 100, log_points: int = 30) -> np.ndarray:
    """A checkpoint schedule like train's: every ``every`` steps plus log-spaced ones (uneven in
    log step: sparse early, dense late)."""
    log_spaced = np.unique(np.round(np.logspace(0, np.log10(last), log_points)).astype(int))
    return np.union1d(np.arange(0, last + 1, every), log_spaced)


def decades_apart(a: int, b: float) -> float:
    return abs(math.log10(a) - math.log10(b))


@pytest.mark.parametrize("planted", [30, 170, 900])
def test_a_planted_sigmoid_in_log_step_is_found_by_steepest_change_and_change_point(planted):
    steps = schedule()
    x = np.log10(np.maximum(steps, 1))
    rng = np.random.default_rng(planted)
    values = np.tanh((x - math.log10(planted)) / 0.08) + rng.normal(0, 0.02, len(steps))
    steepest = onsets.steepest_change(steps, values)
    assert decades_apart(steepest.step, planted) <= TOLERANCE_DECADES
    assert steepest.slope > 0
    assert steepest.value == values[steps == steepest.step][0]
    # a jump is a change of level; the two-line fit breaks at it
    assert decades_apart(onsets.change_point(steps, values).step, planted) <= TOLERANCE_DECADES


@pytest.mark.parametrize("planted", [50, 400, 1500])
def test_a_planted_kink_is_the_change_point(planted):
    """Flat, then falling linearly in log step (a loss that starts to fall): the kink is the
    change point and the slope change is the planted one."""
    steps = schedule()
    x = np.log10(np.maximum(steps, 1))
    rng = np.random.default_rng(planted)
    values = 3.0 - 2.0 * np.maximum(x - math.log10(planted), 0.0) + rng.normal(0, 0.01, len(steps))
    event = onsets.change_point(steps, values)
    assert decades_apart(event.step, planted) <= TOLERANCE_DECADES
    assert event.slope == pytest.approx(-2.0, abs=0.3)


def test_the_peak_is_the_global_extreme_in_the_stated_direction():
    steps = schedule()
    x = np.log10(np.maximum(steps, 1))
    bump = np.exp(-((x - math.log10(300)) / 0.2) ** 2)
    high = onsets.peak(steps, bump)
    assert high.step == steps[np.argmax(bump)] and decades_apart(high.step, 300) <= TOLERANCE_DECADES
    assert high.value == pytest.approx(bump.max()) and math.isnan(high.slope)
    # synergy is read the other way: its peak is the lowest O-information
    low = onsets.peak(steps, -bump, sign=-1)
    assert low.step == high.step and low.value == pytest.approx(-bump.max())
    # step 0 is not on a log axis: a larger value there is ignored
    with_start = bump.copy()
    with_start[steps == 0] = 10.0
    assert onsets.peak(steps, with_start).step == high.step


def test_two_segment_fit_is_the_best_split_of_a_brute_force_search():
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(0, 3, 40))
    y = np.where(x < 1.7, 0.5 * x, 4 - x) + rng.normal(0, 0.1, 40)
    fit = onsets.two_segment_fit(x, y, min_points=4)
    best = None
    for start in range(4, 40 - 4 + 1):
        sse = 0.0
        for part in (slice(0, start), slice(start, 40)):
            coef = np.polyfit(x[part], y[part], 1)
            sse += float(np.sum((y[part] - np.polyval(coef, x[part])) ** 2))
        if best is None or sse < best[1] - 1e-12:
            best = (start, sse)
    assert fit.start == best[0]
    assert fit.sse == pytest.approx(best[1], rel=1e-9)
    assert fit.right[1] == pytest.approx(np.polyfit(x[fit.start:], y[fit.start:], 1)[0])
    assert onsets.two_segment_fit(x[:7], y[:7], min_points=4) is None


def test_running_mean_against_a_loop():
    values = np.random.default_rng(1).normal(size=11)
    expected = [values[max(0, k - 2):k + 3].mean() for k in range(11)]
    np.testing.assert_allclose(onsets.running_mean(values, 5), expected, rtol=1e-12)
    np.testing.assert_allclose(onsets.running_mean(values, 1), values, rtol=1e-12)


def test_log_grid_is_even_in_log_step_and_exact_on_a_curve_linear_in_log_step():
    steps = np.array([0, 1, 3, 10, 40, 100, 1000])
    values = 2.0 * np.log10(np.maximum(steps, 1)) + 1.0
    values[0] = np.nan
    grid, on_grid = onsets.log_grid(steps, values, per_decade=10)
    assert grid[0] == 0.0 and grid[-1] == pytest.approx(3.0) and len(grid) == 31
    np.testing.assert_allclose(np.diff(grid), 0.1)
    np.testing.assert_allclose(on_grid, 2.0 * grid + 1.0)


def test_short_or_empty_curves_give_no_step_and_mixed_curves_are_an_error():
    assert all(e.step is None for e in onsets.curve_events([0, 5], [1.0, 2.0]))
    assert onsets.change_point([1, 2], [1.0, 2.0]).step is None  # 0.3 decade: 7 grid points, not two segments of 5
    assert onsets.peak([1, 2, 3], [np.nan, 2.0, 1.0]).step == 2
    with pytest.raises(GrokscopeError, match="two values"):
        onsets.peak([1, 2, 2], [1.0, 2.0, 3.0])


def test_bootstrap_interval_against_a_brute_force_loop():
    values = np.array([0.3, -0.1, 0.25, 0.8, np.nan, 0.05])
    mean, low, high = onsets.bootstrap_interval(values, resamples=500, confidence=0.9, seed=7)
    finite = values[np.isfinite(values)]
    index = np.random.default_rng(7).integers(0, len(finite), size=(500, len(finite)))
    means = []
    for row in index:
        total = 0.0
        for i in row:
            total += finite[i]
        means.append(total / len(row))
    means.sort()

    def quantile(q):  # linear interpolation between order statistics
        position = q * (len(means) - 1)
        below = int(math.floor(position))
        above = min(below + 1, len(means) - 1)
        return means[below] + (position - below) * (means[above] - means[below])

    assert mean == pytest.approx(sum(finite) / len(finite))
    assert low == pytest.approx(quantile(0.05)) and high == pytest.approx(quantile(0.95))
    assert onsets.bootstrap_interval(values, 500, 0.9, seed=7) == (mean, low, high)  # seeded
    assert onsets.bootstrap_interval(values, 500, 0.9, seed=8) != (mean, low, high)
    single = onsets.bootstrap_interval([2.0, np.nan])
    assert single[0] == 2.0 and math.isnan(single[1]) and math.isnan(single[2])
    assert all(math.isnan(v) for v in onsets.bootstrap_interval([np.nan]))


def test_bootstrap_interval_covers_a_known_mean_about_as_often_as_it_says():
    rng = np.random.default_rng(3)
    covered = 0
    for trial in range(200):
        sample = rng.normal(1.5, 1.0, 30)
        _, low, high = onsets.bootstrap_interval(sample, resamples=1000, confidence=0.9, seed=trial)
        covered += low <= 1.5 <= high
    # 90% nominal; the percentile interval runs a little short at n = 30; 200 trials: sd 2 points
    assert 0.82 <= covered / 200 <= 0.96
