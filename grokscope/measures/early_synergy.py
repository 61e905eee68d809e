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
* :func:`leave_one_out` (from :mod:`.crossval`): leave-one-out accuracy and ROC AUC of a label
  from per-run features, with a label-permutation p-value.

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
from grokscope.measures.crossval import Evaluation, leave_one_out  # noqa: F401  (public names here)
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
