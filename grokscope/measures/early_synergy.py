r"""Early-synergy features of a run and whether they predict grokking (Clauw et al. 2024, §7).

Clauw, Stramaglia & Marinazzo observe that runs which go on to generalise (weight decay 0.1 and 2,
initialisation scale alpha 8) show an early peak of synergy among hidden neurons, and runs that
do not (weight decay 10 and 50, alpha 1 and 50) do not, and call it a hypothesis that needs "a
variety of models and statistical tests". This module turns the claim into numbers:

* :func:`~grokscope.measures.grokking.transient_end`: where a run's summaries may start. At initialisation the hidden
  features are random, and random ReLU features are strongly synergistic (-2 bits on the default
  run at step 0, against -0.3 to -0.7 at the peaks that follow); that is not the network's doing.
* :func:`first_synergy_peak`: height, step and width of the first peak of the synergy curve
  after that transient, optionally using only the steps up to a cutoff (so that a prediction
  uses nothing the run has not yet shown).
* :func:`loss_features`: the loss-curves-only baseline over the same window.
* :func:`leave_one_out`: leave-one-out accuracy and ROC AUC of a label from per-run features,
  with a label-permutation p-value.

Pure functions on arrays and history frames: no files, no printing.

References
----------
Clauw, K., Stramaglia, S., & Marinazzo, D. (2024). Information-theoretic progress measures reveal
grokking is an emergent phase transition. ICML 2024 Workshop on Mechanistic Interpretability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from grokscope.errors import GrokscopeError
# The initial-transient rule is the one every summary uses (report's synergy_min too).
from grokscope.measures.grokking import TRANSIENT_LOSS_DROP, transient_end  # noqa: F401

#: Clauw et al.'s smoothing of their progress curves: an exponential moving average that gives
#: the newest checkpoint this weight (grokscope plot phases --smooth, default 0.1).
SMOOTHING = 0.1
#: A synergy peak of the smoothed curve must rise at least this far (bits) above the higher of
#: the troughs around it. On the default weight-decay-2 run (207 checkpoints, 201 after the
#: transient) the synergy minimum moves by 0.16 bits (standard deviation) from one checkpoint to
#: the next, seven times its tie spread (0.023); smoothed with weight 0.1 the step-to-step move
#: is 0.013 bits, so a 0.1-bit rise is several checkpoints moving the same way, not one outlier
#: (docs/early-synergy.md).
MIN_PROMINENCE_BITS = 0.1
#: ... and at least this many (smoothed) tie spreads (value_sd) at the peak, where rows carry one.
MIN_PROMINENCE_SDS = 2.0

PEAK_FEATURES = ("peak_height", "peak_bits", "peak_step", "peak_width")
LOSS_FEATURES = ("train_loss", "test_loss", "test_loss_min")


@dataclass(frozen=True)
class SynergyPeak:
    """The first synergy peak of a window of a run, or its absence (``found`` false).

    ``height``: the peak's prominence on the run's min-max scale over the window, in [0, 1];
    ``bits``: the same prominence in bits (the O-information's units); ``synergy``: the smoothed
    synergy :math:`-\\Omega` at the peak; ``step``: where it is; ``width``: its width at half
    prominence, in steps; ``window``: (first, last) step of the window; ``n_steps``: measured
    steps in it. Without a peak: height, bits and width 0, step and synergy NaN.
    """

    found: bool
    height: float
    bits: float
    synergy: float
    step: float
    width: float
    window: tuple[int, int]
    n_steps: int

    def features(self) -> dict[str, float]:
        """The peak as :data:`PEAK_FEATURES` (``peak_step`` NaN when there is no peak)."""
        return {"peak_height": self.height, "peak_bits": self.bits, "peak_step": self.step,
                "peak_width": self.width}


def first_synergy_peak(steps, omega, sd=None, *, start: int = 1, until: float | None = None,
                       smooth: float = SMOOTHING, min_prominence: float = MIN_PROMINENCE_BITS,
                       min_sds: float = MIN_PROMINENCE_SDS) -> SynergyPeak:
    r"""Height, step and width of the first synergy peak after the initial transient.

    The synergy curve is :math:`s(t) = -\Omega_{\min}(t)`, the negated lowest O-information of the
    run's multiplets at each measured step (up = more synergy, as Clauw et al. plot it), on the
    window :math:`W = \{t : t_0 \le t \le t_c\}` (``start``, ``until``), smoothed as Clauw et al.
    smooth it, by an exponential moving average over the measured steps,
    :math:`\tilde s_1 = s_1,\ \tilde s_i = (1 - a)\,\tilde s_{i-1} + a\, s_i` (``smooth`` :math:`a`;
    1 = no smoothing). It is causal: nothing after a step enters its value, and nothing after
    :math:`t_c` enters at all. A *peak* is a measured step where :math:`\tilde s` is higher than at
    both neighbours, with a prominence (the rise above the higher of the lowest points on either
    side before a higher value or the window's edge; ``scipy.signal.find_peaks``)

    .. math::

        p \ge \max(p_{\min},\ k\, \tilde\sigma),

    :math:`p_{\min}` = ``min_prominence`` (bits), :math:`\tilde\sigma` the rows' ``sd`` (the spread
    over random orders of tied activations) smoothed alike, at the peak, and :math:`k` =
    ``min_sds``. The first peak is the earliest. Its features:

    * height :math:`h = p / (\max_W s - \min_W s)`: the prominence on Clauw et al.'s scale, the
      curve min-max normalised (over the window: they normalise over the whole run, which a
      prediction may not look at) and then smoothed, as ``grokscope plot phases`` draws it;
    * bits: :math:`p` itself;
    * step: the peak's step (of the smoothed curve, so it lags the raw one by a few checkpoints);
    * width: the peak's extent at half prominence, in steps, between the points where
      :math:`\tilde s` (linearly interpolated between measured steps) crosses
      :math:`\tilde s_\text{peak} - p/2`.

    A peak needs a measured step on each side inside the window: a curve still rising at
    :math:`t_c` has no peak yet.

    Parameters
    ----------
    steps : array_like of int, shape (n,)
        Measured steps, any order (sorted here).
    omega : array_like of float, shape (n,)
        :math:`\Omega_{\min}` at each step (synergy rows' ``value``); NaN steps are dropped.
    sd : array_like of float, shape (n,), optional
        The rows' ``value_sd``; NaN or absent: only ``min_prominence`` applies.
    start : int
        :math:`t_0`, e.g. :func:`transient_end` of the run's history.
    until : float, optional
        :math:`t_c`, the last step that may be used (default: all).
    smooth : float
        :math:`a` in (0, 1] (:data:`SMOOTHING`, Clauw et al.'s 0.1).
    min_prominence : float
        :math:`p_{\min}`, in the units of ``omega`` (:data:`MIN_PROMINENCE_BITS`).
    min_sds : float
        :math:`k` (:data:`MIN_PROMINENCE_SDS`).

    Returns
    -------
    SynergyPeak
    """
    from scipy.signal import find_peaks, peak_widths

    steps = np.asarray(steps, dtype=float)
    omega = np.asarray(omega, dtype=float)
    sd = np.full_like(omega, np.nan) if sd is None else np.asarray(sd, dtype=float)
    if not steps.shape == omega.shape == sd.shape or steps.ndim != 1:
        raise GrokscopeError(f"steps, omega, sd: need three 1-D arrays of one length, got shapes "
                             f"{steps.shape}, {omega.shape}, {sd.shape}")
    if min_prominence < 0 or min_sds < 0:
        raise GrokscopeError("min_prominence, min_sds: must be non-negative")
    if not 0.0 < smooth <= 1.0:
        raise GrokscopeError(f"smooth: must lie in (0, 1], got {smooth}")
    last = np.inf if until is None else float(until)
    keep = (steps >= start) & (steps <= last) & np.isfinite(omega)
    order = np.argsort(steps[keep], kind="stable")
    t, s, spread = steps[keep][order], -omega[keep][order], sd[keep][order]
    window = (int(t[0]), int(t[-1])) if len(t) else (int(start), int(start))
    none = SynergyPeak(False, 0.0, 0.0, math.nan, math.nan, 0.0, window, len(t))
    span = float(s.max() - s.min()) if len(t) else 0.0
    if len(t) < 3 or span <= 0:
        return none
    smoothed, spread = _moving_average(s, smooth), _moving_average(np.nan_to_num(spread, nan=0.0), smooth)
    peaks, properties = find_peaks(smoothed, prominence=(min_prominence, None))
    prominences = properties["prominences"]
    good = np.flatnonzero(prominences >= np.maximum(min_prominence, min_sds * spread[peaks]))
    if not len(good):
        return none
    first = int(good[0])
    index = int(peaks[first])
    prominence = float(prominences[first])
    bases = tuple(properties[key][[first]] for key in ("prominences", "left_bases", "right_bases"))
    _, _, left, right = peak_widths(smoothed, [index], rel_height=0.5, prominence_data=bases)
    positions = np.arange(len(t), dtype=float)
    width = float(np.interp(right[0], positions, t) - np.interp(left[0], positions, t))
    return SynergyPeak(True, prominence / span, prominence, float(smoothed[index]), float(t[index]), width,
                       window, len(t))


def _moving_average(values: np.ndarray, weight: float) -> np.ndarray:
    """The exponential moving average ``m_0 = v_0, m_i = (1 - w) m_{i-1} + w v_i``."""
    averaged = np.empty_like(values)
    current = values[0]
    for i, value in enumerate(values):
        current = value if i == 0 else (1.0 - weight) * current + weight * value
        averaged[i] = current
    return averaged


def loss_features(history, *, start: int = 1, until: float | None = None) -> dict[str, float]:
    r"""The loss-curves-only baseline: what the training and test loss show over a window.

    .. math::

        \log L_\mathrm{train}(t_c'), \qquad \log L_\mathrm{test}(t_c'), \qquad
        \log \min_{t_0 \le t \le t_c'} L_\mathrm{test}(t)

    with :math:`t_c'` the last evaluated step at or before ``until`` (natural logarithms;
    ``train_loss``, ``test_loss``, ``test_loss_min``). The same window as
    :func:`first_synergy_peak`, so the two feature sets see the same stretch of training.

    Parameters
    ----------
    history : pandas.DataFrame
        One row per evaluation with ``step``, ``train_loss`` and ``test_loss``.
    start, until : int, float
        The window, as in :func:`first_synergy_peak`.

    Returns
    -------
    dict
        :data:`LOSS_FEATURES` -> float (NaN where the window has no finite loss).
    """
    missing = [c for c in ("step", "train_loss", "test_loss") if c not in getattr(history, "columns", ())]
    if missing:
        raise GrokscopeError(f"history: no column {missing[0]!r} (the loss baseline needs step, train_loss, test_loss)")
    last = np.inf if until is None else float(until)
    rows = history[(history["step"] >= start) & (history["step"] <= last)].sort_values("step", kind="stable")
    rows = rows[np.isfinite(rows["train_loss"].to_numpy(dtype=float))
                & np.isfinite(rows["test_loss"].to_numpy(dtype=float))]
    if rows.empty:
        return dict.fromkeys(LOSS_FEATURES, math.nan)

    def log(value: float) -> float:
        return math.log(value) if value > 0 else math.log(np.finfo(float).tiny)

    return {"train_loss": log(float(rows["train_loss"].iloc[-1])),
            "test_loss": log(float(rows["test_loss"].iloc[-1])),
            "test_loss_min": log(float(rows["test_loss"].min()))}


@dataclass(frozen=True)
class Evaluation:
    """Cross-validated performance of one feature set (see :func:`leave_one_out`).

    ``accuracy``: share of runs whose leave-one-out prediction is right; ``chance``: the majority
    class's share (the accuracy of always guessing it); ``auc``: leave-pair-out ROC AUC;
    ``auc_loo``: ROC AUC of the pooled leave-one-out scores (biased low on small samples);
    ``p_value``: share of label permutations whose ``auc`` reaches the observed one (+1
    corrected; NaN without permutations); ``scores``: each run's leave-one-out logit.
    """

    accuracy: float
    chance: float
    auc: float
    auc_loo: float
    p_value: float
    permutations: int
    scores: np.ndarray


def leave_one_out(features, labels, *, permutations: int = 0, seed: int = 0, regularisation: float = 1.0,
                  ) -> Evaluation:
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
      the chance of so high an AUC if the features carried nothing about the label.

    A fold whose training runs are all of one class predicts that class (score :math:`\pm 30`).

    Parameters
    ----------
    features : array_like, shape (n_runs, n_features)
        Finite values.
    labels : array_like of bool or {0, 1}, shape (n_runs,)
    permutations : int
        Label permutations for the p-value (0: none).
    seed : int
        Seeds the permutations.
    regularisation : float
        ``C``, the inverse L2 strength.

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
    if not regularisation > 0:
        raise GrokscopeError(f"regularisation: must be positive, got {regularisation}")
    n = len(y)
    held_out = np.eye(n, dtype=bool)  # (n folds, n runs): fold i leaves run i out
    scores = _fit_scores(x, np.broadcast_to(y, (n, n)), ~held_out, regularisation)[held_out]  # (n,)
    accuracy = float(np.mean((scores >= 0).astype(int) == y))
    chance = float(max(y.mean(), 1 - y.mean()))
    auc = _leave_pair_out_auc(x, y[None, :], regularisation)[0]
    p_value = math.nan
    if permutations and not math.isnan(auc):
        rng = np.random.default_rng(seed)
        shuffled = np.stack([rng.permutation(y) for _ in range(permutations)])  # (P, n)
        chunk = max(1, 4096 // max(1, int(y.sum() * (n - y.sum()))))
        null = np.concatenate([_leave_pair_out_auc(x, shuffled[i:i + chunk], regularisation)
                               for i in range(0, permutations, chunk)])
        p_value = float((1 + np.sum(null >= auc - 1e-12)) / (1 + permutations))
    return Evaluation(accuracy, chance, auc, _auc(y, scores), p_value, permutations, scores)


def _leave_pair_out_auc(x: np.ndarray, labels: np.ndarray, regularisation: float) -> np.ndarray:
    """Leave-pair-out AUC for each row of ``labels`` (P, n): one fold per (positive, negative) pair."""
    n = x.shape[0]
    folds, fold_labels, owners = [], [], []
    for row, y in enumerate(labels):
        positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        if not len(positives) or not len(negatives):
            continue
        i, j = np.repeat(positives, len(negatives)), np.tile(negatives, len(positives))  # (pairs,)
        train = np.ones((len(i), n), dtype=bool)
        train[np.arange(len(i)), i] = False
        train[np.arange(len(i)), j] = False
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
