r"""Whether per-run features predict a binary label: leave-one-out logistic regression.

:func:`leave_one_out` gives the leave-one-out accuracy, the leave-pair-out ROC AUC (Airola et al.
2011) and a label-permutation p-value of an L2-regularised logistic regression; the early-synergy
test of Clauw et al. (2024) (:mod:`.early_synergy`) runs it on per-run features.

References
----------
Airola, A., Pahikkala, T., Waegeman, W., De Baets, B., & Salakoski, T. (2011). An experimental
comparison of cross-validation techniques for estimating the area under the ROC curve.
Computational Statistics & Data Analysis, 55(4), 1828-1844.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from grokscope.errors import GrokscopeError


@dataclass(frozen=True)
class Evaluation:
    """Cross-validated performance of one feature set (see :func:`leave_one_out`).

    ``accuracy``: share of runs whose leave-one-out prediction is right; ``chance``: the majority
    class's share (the accuracy of always guessing it); ``auc``: leave-pair-out ROC AUC;
    ``auc_loo``: ROC AUC of the pooled leave-one-out scores (biased low on small samples);
    ``p_value``: share of label permutations whose ``auc`` reaches the observed one (+1
    corrected; NaN without permutations); ``auc_low``, ``auc_high``: the 95 % bootstrap interval
    of ``auc`` (NaN without bootstraps); ``scores``: each run's leave-one-out logit.
    """

    accuracy: float
    chance: float
    auc: float
    auc_loo: float
    p_value: float
    permutations: int
    scores: np.ndarray
    auc_low: float = math.nan
    auc_high: float = math.nan


def leave_one_out(features, labels, *, permutations: int = 0, seed: int = 0, regularisation: float = 1.0,
                  bootstraps: int = 0) -> Evaluation:
    r"""Leave-one-out accuracy and ROC AUC of a binary label from per-run features, with a
    label-permutation p-value.

    The classifier is an L2-regularised logistic regression on standardised features (mean and
    standard deviation of the training runs of each fold), fitted by Newton's method:

    .. math::

        \min_{w, b}\ \frac{1}{2C}\|w\|^2 + \sum_{j \in \text{train}}
        \left[\log(1 + e^{w^\top x_j + b}) - y_j (w^\top x_j + b)\right]

    (``C`` = ``regularisation``, scikit-learn's default 1; the intercept :math:`b` is not
    penalised), the same objective as ``sklearn.linear_model.LogisticRegression(C=C)``.

    * *accuracy*: each run is predicted by the model fitted on all the others, and counted right
      when :math:`[w^\top x_i + b \ge 0] = y_i`;
    * *auc* (leave-pair-out, Airola et al. 2011): for every pair of a positive run :math:`i` and a
      negative run :math:`j`, the model fitted without both scores them, and
      :math:`\mathrm{AUC} = \frac{1}{n_+ n_-}\sum_{i,j} ([s_i > s_j] + \tfrac12 [s_i = s_j])`;
    * *auc_loo*: the same Mann-Whitney statistic over the leave-one-out scores of all runs pooled.
      On small samples it is biased low: without the held-out run the fit leans towards the other
      class, so features of pure noise give a pooled AUC well below 1/2 (about 0.4 for 27 runs and
      4 features). The leave-pair-out AUC has no such bias; it is the one tested;
    * *p_value*: the labels are shuffled ``permutations`` times (seeded), the leave-pair-out AUC is
      recomputed on each, and :math:`p = (1 + \#\{\mathrm{AUC}_\pi \ge \mathrm{AUC}\}) / (1 + N)`:
      the chance of so high an AUC if the features carried nothing about the label;
    * *auc_low*, *auc_high*: the 2.5 and 97.5 percentiles of the AUC over ``bootstraps``
      stratified resamples of the runs (positives and negatives each drawn with replacement,
      seeded), each the mean of the resampled pairs' wins :math:`[s_i > s_j] + \tfrac12 [s_i = s_j]`
      from the leave-pair-out fits above. The fits are not redone per resample (a run drawn twice
      would sit in its own training fold), so the interval is that of the AUC's pair sampling
      given the fits, as for the AUC of fixed scores (Efron & Tibshirani 1993, ch. 13).

    A fold whose training runs are all of one class predicts that class (score :math:`\pm 30`).

    Parameters
    ----------
    features : array_like, shape (n_runs, n_features)
        Finite values.
    labels : array_like of bool or {0, 1}, shape (n_runs,)
    permutations : int
        Label permutations for the p-value (0: none).
    seed : int
        Seeds the permutations and the bootstrap.
    regularisation : float
        ``C``, the inverse L2 strength.
    bootstraps : int
        Resamples for the AUC's interval (0: none).

    Returns
    -------
    Evaluation

    References
    ----------
    Airola, A., Pahikkala, T., Waegeman, W., De Baets, B., & Salakoski, T. (2011). An experimental
    comparison of cross-validation techniques for estimating the area under the ROC curve.
    Computational Statistics & Data Analysis, 55(4), 1828-1844.
    """
    x = np.asarray(features, dtype=float)
    y = np.asarray(labels).astype(int)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise GrokscopeError(f"features, labels: need (runs, features) and (runs,), got {x.shape} and {y.shape}")
    if len(y) < 3:
        raise GrokscopeError(f"leave-one-out needs at least 3 runs, got {len(y)}")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise GrokscopeError("labels: must be 0/1 (or booleans)")
    if not np.isfinite(x).all():
        raise GrokscopeError("features: must be finite")
    if permutations < 0:
        raise GrokscopeError(f"permutations: must be >= 0, got {permutations}")
    if bootstraps < 0:
        raise GrokscopeError(f"bootstraps: must be >= 0, got {bootstraps}")
    if not regularisation > 0:
        raise GrokscopeError(f"regularisation: must be positive, got {regularisation}")
    n = len(y)
    held_out = np.eye(n, dtype=bool)  # (n folds, n runs): fold i leaves run i out
    scores = _fit_scores(x, np.broadcast_to(y, (n, n)), ~held_out, regularisation)[held_out]  # (n,)
    accuracy = float(np.mean((scores >= 0).astype(int) == y))
    chance = float(max(y.mean(), 1 - y.mean()))
    wins = _pair_wins(x, y, regularisation)  # (positives, negatives)
    auc = float(wins.mean()) if wins.size else math.nan
    low, high = _bootstrap_interval(wins, bootstraps, seed) if wins.size and bootstraps else (math.nan, math.nan)
    p_value = math.nan
    if permutations and not math.isnan(auc):
        rng = np.random.default_rng(seed)
        shuffled = np.stack([rng.permutation(y) for _ in range(permutations)])  # (P, n)
        chunk = max(1, 4096 // max(1, int(y.sum() * (n - y.sum()))))
        null = np.concatenate([_leave_pair_out_auc(x, shuffled[i:i + chunk], regularisation)
                               for i in range(0, permutations, chunk)])
        p_value = float((1 + np.sum(null >= auc - 1e-12)) / (1 + permutations))
    return Evaluation(accuracy, chance, auc, _auc(y, scores), p_value, permutations, scores, low, high)


def _pair_wins(x: np.ndarray, y: np.ndarray, regularisation: float) -> np.ndarray:
    """(positives, negatives): 1, 1/2 or 0 as the positive run outscores, ties or loses to the
    negative one under the fit without both."""
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if not len(positives) or not len(negatives):
        return np.zeros((len(positives), len(negatives)))
    train, i, j = _pair_folds(y)
    scores = _fit_scores(x, np.broadcast_to(y, train.shape), train, regularisation)  # (pairs, n)
    rows = np.arange(len(i))
    wins = (scores[rows, i] > scores[rows, j]) + 0.5 * (scores[rows, i] == scores[rows, j])
    return wins.reshape(len(positives), len(negatives))


def _bootstrap_interval(wins: np.ndarray, bootstraps: int, seed: int) -> tuple[float, float]:
    """The 95 % percentile interval of the mean of ``wins`` over stratified resamples of its rows
    (positives) and columns (negatives)."""
    rng = np.random.default_rng([seed, 1])  # a stream of its own, apart from the permutations'
    n_pos, n_neg = wins.shape
    rows = rng.multinomial(n_pos, np.full(n_pos, 1.0 / n_pos), size=bootstraps)  # (B, n+): times drawn
    columns = rng.multinomial(n_neg, np.full(n_neg, 1.0 / n_neg), size=bootstraps)  # (B, n-)
    aucs = np.einsum("bi,ij,bj->b", rows, wins, columns) / (n_pos * n_neg)  # (B,)
    low, high = np.percentile(aucs, [2.5, 97.5])
    return float(low), float(high)


def _leave_pair_out_auc(x: np.ndarray, labels: np.ndarray, regularisation: float) -> np.ndarray:
    """Leave-pair-out AUC for each row of ``labels`` (P, n): one fold per (positive, negative) pair."""
    n = x.shape[0]
    folds, fold_labels, owners = [], [], []
    for row, y in enumerate(labels):
        if not (y == 1).any() or not (y == 0).any():
            continue
        train, i, j = _pair_folds(y)
        folds.append((train, i, j))
        fold_labels.append(np.broadcast_to(y, (len(i), n)))
        owners.append(np.full(len(i), row))
    aucs = np.full(len(labels), math.nan)
    if not folds:
        return aucs
    train = np.concatenate([f[0] for f in folds])
    scores = _fit_scores(x, np.concatenate(fold_labels), train, regularisation)  # (F, n)
    rows = np.arange(len(train))
    first = np.concatenate([f[1] for f in folds])
    second = np.concatenate([f[2] for f in folds])
    wins = (scores[rows, first] > scores[rows, second]) + 0.5 * (scores[rows, first] == scores[rows, second])
    owner = np.concatenate(owners)
    aucs[np.unique(owner)] = np.bincount(owner, weights=wins)[np.unique(owner)] / np.bincount(owner)[np.unique(owner)]
    return aucs


def _pair_folds(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One fold per (positive, negative) pair of ``y``: which runs it trains on (pairs, n), and
    the pair's positive and negative run (pairs,), positives outer."""
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    i, j = np.repeat(positives, len(negatives)), np.tile(negatives, len(positives))  # (pairs,)
    train = np.ones((len(i), len(y)), dtype=bool)
    train[np.arange(len(i)), i] = False
    train[np.arange(len(i)), j] = False
    return train, i, j


def _fit_scores(x: np.ndarray, y: np.ndarray, train: np.ndarray, regularisation: float,
                max_iterations: int = 100) -> np.ndarray:
    """Logits of every run under each fold's fit: x (n, d); y and train (F, n), one row per fold
    (its labels and which runs it trains on). Batched Newton steps on the objective of
    :func:`leave_one_out`, in the standardised coordinates of each fold's training runs."""
    from scipy.special import expit

    weight = train.astype(float)  # (F, n)
    count = weight.sum(axis=1, keepdims=True)  # (F, 1)
    mean = weight @ x / count  # (F, d)
    centred = x[None, :, :] - mean[:, None, :]  # (F, n, d)
    scale = np.sqrt(np.einsum("fn,fnd->fd", weight, centred ** 2) / count)  # (F, d)
    scale = np.where(scale > 1e-12 * (1.0 + np.abs(mean)), scale, 1.0)  # a constant feature stays 0
    z = np.concatenate([centred / scale[:, None, :], np.ones(centred.shape[:2] + (1,))], axis=2)  # (F, n, d+1)
    d = x.shape[1]
    penalty = np.diag(np.r_[np.full(d, 1.0 / regularisation), 0.0])  # (d+1, d+1): no penalty on the intercept
    positives = np.einsum("fn,fn->f", weight, y)
    one_class = (positives == 0) | (positives == count[:, 0])  # (F,)
    beta = np.zeros((len(z), d + 1))
    active = ~one_class
    for _ in range(max_iterations):
        if not active.any():
            break
        za, wa, ya, ba = z[active], weight[active], y[active], beta[active]
        p = expit(np.einsum("fnd,fd->fn", za, ba))  # (A, n); expit: no overflow for separable folds
        gradient = np.einsum("fnd,fn->fd", za, wa * (p - ya)) + ba @ penalty
        hessian = np.einsum("fnd,fn,fne->fde", za, wa * p * (1.0 - p), za) + penalty  # (A, d+1, d+1)
        step = np.linalg.solve(hessian, gradient[..., None])[..., 0]
        beta[active] = ba - step
        done = np.abs(step).max(axis=1) < 1e-10
        index = np.flatnonzero(active)
        active[index[done]] = False
    scores = np.einsum("fnd,fd->fn", z, beta)
    scores[one_class] = np.where(positives[one_class] > 0, 30.0, -30.0)[:, None]
    return scores


def _auc(y: np.ndarray, scores: np.ndarray) -> float:
    positive, negative = scores[y == 1], scores[y == 0]
    if not len(positive) or not len(negative):
        return math.nan
    greater = (positive[:, None] > negative[None, :]).sum()
    ties = (positive[:, None] == negative[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positive) * len(negative)))
