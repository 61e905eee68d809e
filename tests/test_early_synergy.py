"""Early-synergy features, the loss baseline and the leave-one-out predictor, on series with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from grokscope.errors import GrokscopeError
from grokscope.measures.early_synergy import (
    first_synergy_peak,
    leave_one_out,
    loss_features,
    transient_end,
)


def history(steps, train_loss, test_loss=None):
    return pd.DataFrame({"step": steps, "train_loss": train_loss,
                         "test_loss": test_loss if test_loss is not None else train_loss})


# --- the initial transient -------------------------------------------------------------------


def test_transient_ends_where_the_training_loss_has_fallen_a_tenth():
    steps = np.arange(0, 50, 5)
    loss = 4.0 * 0.98 ** steps  # falls below 3.6 first at step 10 (4 * 0.98**10 = 3.27; step 5: 3.62)
    assert transient_end(history(steps, loss)) == 10
    # rows in any order, and a bigger drop asked for
    shuffled = history(steps, loss).sample(frac=1.0, random_state=0)
    assert transient_end(shuffled) == 10
    assert transient_end(history(steps, loss), drop=0.5) == 35  # 4 * 0.98**35 = 1.97


@pytest.mark.parametrize("frame", [None, history([0, 1, 2], [1.0, 1.0, 0.95]),
                                   history([0, 1], [math.nan, math.nan]), pd.DataFrame({"step": [0, 1]})])
def test_transient_falls_back_to_leaving_out_step_0(frame):
    assert transient_end(frame) == 1


def test_transient_rejects_a_drop_outside_0_1():
    with pytest.raises(GrokscopeError, match="drop"):
        transient_end(history([0, 1], [1.0, 0.5]), drop=1.0)


# --- the first synergy peak ------------------------------------------------------------------


def bump(t, centre, sigma, height):
    return height * np.exp(-0.5 * ((t - centre) / sigma) ** 2)


def test_a_planted_peak_is_found_with_its_height_step_and_width():
    steps = np.arange(0, 1001, 2)
    synergy = bump(steps, 300, 40, 0.6) + 0.05  # bits of -Omega; baseline 0.05
    peak = first_synergy_peak(steps, -synergy, start=10, smooth=1.0)
    assert peak.found and peak.step == 300
    assert peak.bits == pytest.approx(0.6, abs=1e-3)
    assert peak.synergy == pytest.approx(0.65, abs=1e-3)
    # the peak spans the window's whole range: height 1 on the min-max scale
    assert peak.height == pytest.approx(1.0, abs=2e-3)
    # width at half prominence of a Gaussian: 2 sqrt(2 ln 2) sigma, to the grid's resolution
    assert peak.width == pytest.approx(2 * math.sqrt(2 * math.log(2)) * 40, abs=2.0)
    assert peak.window == (10, 1000) and peak.n_steps == 496


def test_the_first_of_two_peaks_is_taken_and_its_height_is_relative_to_the_range():
    steps = np.arange(0, 2001, 5)
    synergy = bump(steps, 200, 20, 0.3) + bump(steps, 1200, 60, 1.2)
    peak = first_synergy_peak(steps, -synergy, smooth=1.0)
    assert peak.step == 200
    assert peak.bits == pytest.approx(0.3, abs=1e-3)
    assert peak.height == pytest.approx(0.3 / 1.2, abs=2e-3)


def test_the_transient_and_the_cutoff_bound_the_window():
    steps = np.arange(0, 1001, 5)
    # A huge value at initialisation decaying away, then a modest peak at 500.
    synergy = 2.0 * np.exp(-steps / 5.0) + bump(steps, 500, 30, 0.4)
    assert first_synergy_peak(steps, -synergy, start=50, smooth=1.0).step == 500
    # Up to step 450 the curve has only the decaying transient: no peak yet.
    early = first_synergy_peak(steps, -synergy, start=50, until=450, smooth=1.0)
    assert not early.found and early.height == 0 and early.bits == 0 and math.isnan(early.step)
    assert early.window == (50, 450)
    # A curve still rising at the cutoff has no peak either.
    assert not first_synergy_peak(steps, -synergy, start=50, until=500, smooth=1.0).found
    assert first_synergy_peak(steps, -synergy, start=50, until=600, smooth=1.0).step == 500


def test_wiggles_below_the_threshold_or_the_tie_spread_are_not_peaks():
    rng = np.random.default_rng(0)
    steps = np.arange(0, 400, 4)
    noise = 0.02 * rng.standard_normal(len(steps))  # +-0.02 bits: well below 0.1
    assert not first_synergy_peak(steps, -noise, smooth=1.0).found
    planted = noise + bump(steps, 200, 10, 0.15)
    assert first_synergy_peak(steps, -planted, smooth=1.0).step == pytest.approx(200, abs=8)
    # the same peak (0.15 bits planted, ~0.2 above the noise's troughs) is not one when the tie
    # spread there is 0.15 (it needs 2 spreads), but is with 1
    sd = np.full(len(steps), 0.15)
    assert not first_synergy_peak(steps, -planted, sd, smooth=1.0).found
    assert first_synergy_peak(steps, -planted, sd, min_sds=1.0, smooth=1.0).found


def test_smoothing_as_the_paper_keeps_broad_peaks_and_drops_one_checkpoint_spikes():
    steps = np.arange(0, 3000, 10)
    broad = bump(steps, 1000, 150, 0.5)
    spike = np.where(steps == 400, 0.6, 0.0)
    smoothed = first_synergy_peak(steps, -(broad + spike))
    # the spike is one checkpoint: smoothed with weight 0.1 it rises 0.06 bits, below 0.1
    assert smoothed.found and smoothed.step > 1000  # the moving average lags the raw peak
    assert smoothed.bits == pytest.approx(0.5, rel=0.15)
    raw = first_synergy_peak(steps, -(broad + spike), smooth=1.0)
    assert raw.step == 400 and raw.bits == pytest.approx(0.6, abs=1e-3)
    # the moving average is the paper's: m_i = 0.9 m_(i-1) + 0.1 v_i from the window's first value
    values = (broad + spike)[steps >= 1]  # the window starts at step 1 by default
    expected = [values[0]]
    for value in values[1:]:
        expected.append(0.9 * expected[-1] + 0.1 * value)
    assert smoothed.synergy == pytest.approx(max(expected[:int(np.argmax(expected)) + 1]), abs=1e-9)


def test_peak_input_errors():
    with pytest.raises(GrokscopeError, match="one length"):
        first_synergy_peak([1, 2, 3], [0.1, 0.2])
    assert not first_synergy_peak([1, 2], [0.1, 0.2]).found  # too few steps


# --- the loss baseline -----------------------------------------------------------------------


def test_loss_features_are_the_window_end_and_minimum_in_logs():
    frame = history([0, 10, 20, 30, 40], [4.0, 2.0, 1.0, 0.5, 0.25], [4.0, 3.0, 2.5, 3.5, 1.0])
    features = loss_features(frame, start=10, until=35)
    assert features == pytest.approx({"train_loss": math.log(0.5), "test_loss": math.log(3.5),
                                      "test_loss_min": math.log(2.5)})
    assert all(math.isnan(v) for v in loss_features(frame, start=50).values())
    with pytest.raises(GrokscopeError, match="test_loss"):
        loss_features(pd.DataFrame({"step": [0], "train_loss": [1.0]}))


# --- leave-one-out -------------------------------------------------------------------------


def test_held_out_scores_are_scikit_learns_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    x = rng.normal(size=(15, 3)) + np.array([0.0, 1.0, -2.0])
    y = (x[:, 0] + rng.normal(size=15) > 0).astype(int)
    result = leave_one_out(x, y, regularisation=0.5)
    expected = []
    for i in range(len(y)):
        train = np.arange(len(y)) != i
        mean, sd = x[train].mean(axis=0), x[train].std(axis=0)
        model = LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000).fit((x[train] - mean) / sd, y[train])
        expected.append(model.decision_function(((x[i] - mean) / sd)[None, :])[0])
    assert np.allclose(result.scores, expected, atol=1e-6)
    assert result.accuracy == np.mean((np.array(expected) >= 0) == y)


def test_separable_features_give_auc_1_and_the_smallest_p_value():
    rng = np.random.default_rng(1)
    y = np.array([1] * 8 + [0] * 7)
    x = np.c_[y * 4.0 + rng.normal(size=15), rng.normal(size=15)]  # one feature separates perfectly
    result = leave_one_out(x, y, permutations=30, seed=0)
    assert result.auc == 1.0 and result.auc_loo == 1.0 and result.accuracy == 1.0
    assert result.chance == pytest.approx(8 / 15)
    assert result.p_value == pytest.approx(1 / 31)
    # and the labels flipped: the features predict the other class just as well
    assert leave_one_out(x, 1 - y).auc == 1.0


def test_shuffled_labels_give_chance():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(16, 3))
    base = np.array([1] * 8 + [0] * 8)
    aucs, p_values = [], []
    for _ in range(40):
        result = leave_one_out(x, rng.permutation(base), permutations=19, seed=int(rng.integers(1 << 30)))
        aucs.append(result.auc)
        p_values.append(result.p_value)
    # pairs held out together keep the fit balanced: the AUC of noise is 1/2 up to sampling
    assert abs(np.mean(aucs) - 0.5) < 0.08
    # and the permutation p-values of noise are spread over (0, 1], not piled near 0
    assert 0.3 < np.mean(p_values) < 0.7
    assert np.mean(np.array(p_values) <= 0.05) < 0.2


def test_one_class_in_a_training_fold_predicts_that_class():
    x = np.arange(5.0)[:, None]
    result = leave_one_out(x, [1, 0, 0, 0, 0])
    # without its one positive the fold only knows negatives: run 0 is predicted negative
    assert result.scores[0] < 0 and result.accuracy == 0.8


@pytest.mark.parametrize("features, labels, needle", [
    (np.zeros((2, 1)), [0, 1], "at least 3"),
    (np.zeros((4, 1)), [0, 1, 2, 1], "0/1"),
    (np.full((4, 1), np.nan), [0, 1, 0, 1], "finite"),
    (np.zeros((4, 1)), [0, 1, 0], "runs"),
])
def test_leave_one_out_input_errors(features, labels, needle):
    with pytest.raises(GrokscopeError, match=needle):
        leave_one_out(features, labels)


def test_auc_is_the_brute_force_leave_pair_out_and_roc_auc_of_the_pooled_scores():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0, 0, 1, 0])
    x = np.c_[y + rng.normal(scale=0.9, size=len(y)), rng.normal(size=len(y))]  # overlapping classes

    def fitted_score(train, held):
        mean, sd = x[train].mean(axis=0), x[train].std(axis=0)
        model = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit((x[train] - mean) / sd, y[train])
        return model.decision_function((x[held] - mean) / sd)

    result = leave_one_out(x, y)
    # leave-pair-out: every (positive, negative) pair left out together, counted by hand
    wins = []
    for i in np.flatnonzero(y == 1):
        for j in np.flatnonzero(y == 0):
            train = np.ones(len(y), dtype=bool)
            train[[i, j]] = False
            s_i, s_j = fitted_score(train, [i, j])
            wins.append(1.0 if s_i > s_j + 1e-9 else 0.5 if abs(s_i - s_j) <= 1e-9 else 0.0)
    assert 0.2 < np.mean(wins) < 1.0  # the example is not trivially separable
    assert result.auc == pytest.approx(np.mean(wins), abs=1e-12)
    # the pooled leave-one-out AUC is scikit-learn's ROC AUC of the held-out scores
    pooled = [fitted_score(np.arange(len(y)) != i, [i])[0] for i in range(len(y))]
    assert result.auc_loo == pytest.approx(roc_auc_score(y, pooled), abs=1e-12)


def test_the_aucs_bootstrap_interval_is_the_spread_of_resampled_pairs():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    y = np.array([1] * 9 + [0] * 10)
    x = np.c_[y + rng.normal(scale=1.2, size=len(y)), rng.normal(size=len(y))]  # overlapping classes
    result = leave_one_out(x, y, bootstraps=4000, seed=3)
    assert result.auc_low < result.auc < result.auc_high and 0.0 <= result.auc_low and result.auc_high <= 1.0
    # Independently: the leave-pair-out wins by hand, then resampling positives and negatives by loop.
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    wins = np.zeros((len(positives), len(negatives)))
    for a, i in enumerate(positives):
        for b, j in enumerate(negatives):
            train = np.ones(len(y), dtype=bool)
            train[[i, j]] = False
            mean, sd = x[train].mean(axis=0), x[train].std(axis=0)
            model = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit((x[train] - mean) / sd, y[train])
            s_i, s_j = model.decision_function((x[[i, j]] - mean) / sd)
            wins[a, b] = 1.0 if s_i > s_j + 1e-9 else 0.5 if abs(s_i - s_j) <= 1e-9 else 0.0
    assert result.auc == pytest.approx(wins.mean(), abs=1e-12)
    draws = np.random.default_rng(11)
    resampled = [wins[np.ix_(draws.integers(0, len(positives), len(positives)),
                             draws.integers(0, len(negatives), len(negatives)))].mean() for _ in range(4000)]
    low, high = np.percentile(resampled, [2.5, 97.5])
    # Two independent streams of 4000 draws: their percentiles agree to Monte Carlo error.
    assert result.auc_low == pytest.approx(low, abs=0.03) and result.auc_high == pytest.approx(high, abs=0.03)
    assert high - low > 0.1  # 19 runs: the interval is wide, not a point
    # Separable features: every resample's AUC is 1.
    separable = leave_one_out(np.c_[y * 5.0 + rng.normal(scale=0.1, size=len(y))], y, bootstraps=200)
    assert separable.auc == separable.auc_low == separable.auc_high == 1.0
    assert np.isnan(leave_one_out(x, y).auc_low)  # no bootstraps asked: no interval
