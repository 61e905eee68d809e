"""When a run memorised, when it generalised, and which of Liu et al.'s four phases it is in.

Pure functions on a run's history table (one row per evaluation: ``step``, ``train_acc``,
``test_acc``, ...). No files, no printing.

Liu, Kitouni, Nolte, Michaud, Tegmark & Williams, "Towards Understanding Grokking: An Effective
Theory of Representation Learning", NeurIPS 2022 (Sec. 4 and App. A, Table 1) sort runs into four
phases from two threshold crossings: whether training and validation accuracy exceed 90% within
the step budget (10^5 steps there), and whether validation follows training by less than 10^3
steps. grokscope keeps their rule and their delay but crosses a stricter accuracy threshold by
default (0.99, the threshold the trainer's summary and the seed papers report) so that the phase,
the memorisation step and the generalisation step in a report all come from the same crossing.
"""

from __future__ import annotations

import math

from grokscope.errors import GrokscopeError

#: Accuracy both splits must reach (Liu et al. use 0.9; see the module docstring).
DEFAULT_THRESHOLD = 0.99
#: Steps from memorisation to generalisation at and beyond which a run "groks" (Liu et al.: 10^3).
DEFAULT_DELAY = 1000

PHASES = ("comprehension", "grokking", "memorization", "confusion")
METRICS = ("memorization_step", "generalization_step", "grokking_gap")

_REQUIRED = ("step", "train_acc", "test_acc")


def grokking_summary(
    history,
    threshold: float = DEFAULT_THRESHOLD,
    delay: int = DEFAULT_DELAY,
    horizon: int | None = None,
) -> dict:
    r"""Memorisation step, generalisation step, their gap and the run's learning phase.

    .. math::

        t_\mathrm{mem} = \min\{t : \mathrm{acc}_\mathrm{train}(t) \ge \theta\}, \qquad
        t_\mathrm{gen} = \min\{t : \mathrm{acc}_\mathrm{test}(t) \ge \theta\}, \qquad
        \Delta = t_\mathrm{gen} - t_\mathrm{mem}

    over the evaluated steps :math:`t \le T` (the horizon), and the phase of Liu et al. (2022,
    App. A, Table 1):

    - *confusion*: :math:`t_\mathrm{mem}` does not exist (training accuracy never reaches
      :math:`\theta`);
    - *memorization*: :math:`t_\mathrm{mem}` exists, :math:`t_\mathrm{gen}` does not;
    - *grokking*: both exist and :math:`\Delta \ge` ``delay``;
    - *comprehension*: both exist and :math:`\Delta <` ``delay`` (including a test split that
      crosses first, :math:`\Delta < 0`).

    Parameters
    ----------
    history : pandas.DataFrame
        One row per evaluation with columns ``step``, ``train_acc`` and ``test_acc`` (accuracies
        in [0, 1]); any row order.
    threshold : float
        :math:`\theta`, in (0, 1]. Default 0.99 (Liu et al. use 0.9).
    delay : int
        Gap in steps from which a run that generalised counts as grokking. Default 1000 (Liu et
        al.'s :math:`10^3`).
    horizon : int, optional
        Ignore evaluations after this step (Liu et al.'s budget is :math:`10^5` steps). Default:
        the whole history, so runs of different lengths are judged on what they trained.

    Returns
    -------
    dict
        ``memorization_step``, ``generalization_step`` (int, or None when never reached),
        ``grokking_gap`` (int or None), ``phase`` (one of :data:`PHASES`) and ``last_step`` (the
        last evaluated step considered).
    """
    history = _checked(history, threshold, delay, horizon)
    memorization = _first_step_at_least(history, "train_acc", threshold)
    generalization = _first_step_at_least(history, "test_acc", threshold)
    gap = generalization - memorization if memorization is not None and generalization is not None else None
    return {
        "memorization_step": memorization,
        "generalization_step": generalization,
        "grokking_gap": gap,
        "phase": _phase(memorization, generalization, delay),
        "last_step": int(history["step"].iloc[-1]),
    }


def grokking_rows(
    history,
    threshold: float = DEFAULT_THRESHOLD,
    delay: int = DEFAULT_DELAY,
    horizon: int | None = None,
) -> list[dict]:
    """The summary of :func:`grokking_summary` as rows of a tidy measure table.

    One row per metric in :data:`METRICS` with ``step`` = the last evaluated step, ``value`` a
    float (NaN where the accuracy never reached the threshold), ``split`` and ``layer`` None, and
    the run's ``phase`` on every row. The caller adds ``run`` and the hyperparameter columns.
    """
    summary = grokking_summary(history, threshold=threshold, delay=delay, horizon=horizon)
    return [
        {
            "step": summary["last_step"],
            "metric": metric,
            "value": math.nan if summary[metric] is None else float(summary[metric]),
            "split": None,
            "layer": None,
            "phase": summary["phase"],
        }
        for metric in METRICS
    ]


def _checked(history, threshold: float, delay: int, horizon: int | None):
    missing = [c for c in _REQUIRED if c not in history.columns]
    if missing:
        raise GrokscopeError(f"history: no column {missing[0]!r} (needs {', '.join(_REQUIRED)})")
    if not 0.0 < threshold <= 1.0:
        raise GrokscopeError(f"threshold: must lie in (0, 1], got {threshold}")
    if delay < 0:
        raise GrokscopeError(f"delay: must be non-negative, got {delay}")
    ordered = history.sort_values("step", kind="stable")
    if horizon is not None:
        ordered = ordered[ordered["step"] <= horizon]
    if ordered.empty:
        where = "" if horizon is None else f" at or before step {horizon}"
        raise GrokscopeError(f"history: no evaluations{where}")
    return ordered


def _first_step_at_least(history, column: str, threshold: float) -> int | None:
    # NaN accuracies (an evaluation that failed) compare False, so they never count as reached.
    reached = history.loc[history[column] >= threshold, "step"]
    return int(reached.iloc[0]) if len(reached) else None


def _phase(memorization: int | None, generalization: int | None, delay: int) -> str:
    if memorization is None:
        return "confusion"
    if generalization is None:
        return "memorization"
    return "grokking" if generalization - memorization >= delay else "comprehension"


#: How far the training loss must fall from its first evaluated value (10%) for the initial
#: transient to be over: before that the network still computes its random initialisation.
TRANSIENT_LOSS_DROP = 0.1


def transient_end(history, drop: float = TRANSIENT_LOSS_DROP) -> int:
    r"""The first step after a run's initial transient, where its summaries may start.

    .. math::

        t_0 = \min\{t : L_\mathrm{train}(t) \le (1 - \delta)\, L_\mathrm{train}(t_1)\}

    with :math:`t_1` the first evaluated step and :math:`\delta` = ``drop``: the first evaluation
    at which the training loss has fallen by 10% of its initial value, i.e. the network no longer
    computes its random initialisation. Random features are strongly synergistic (on the default
    run the lowest O-information of all is at step 0, -2.0 bits, against -0.3 at the early peak
    around memorisation), so a minimum over every step would report the initialisation.

    Falls back to 1 (only step 0, the initialisation itself, is excluded) when ``history`` is
    None, has no finite ``train_loss``, or the loss never falls that far.

    Parameters
    ----------
    history : pandas.DataFrame or None
        One row per evaluation with ``step`` and ``train_loss``.
    drop : float
        Fraction of the first training loss the loss must lose, in (0, 1).

    Returns
    -------
    int
        Keep steps ``>=`` this.
    """
    if not 0.0 < drop < 1.0:
        raise GrokscopeError(f"drop: must lie in (0, 1), got {drop}")
    if history is None or "train_loss" not in getattr(history, "columns", ()) or "step" not in history.columns:
        return 1
    rows = history[["step", "train_loss"]].dropna().sort_values("step", kind="stable")
    rows = rows[rows["train_loss"].map(math.isfinite)]
    if rows.empty:
        return 1
    first = float(rows["train_loss"].iloc[0])
    fallen = rows[rows["train_loss"] <= (1.0 - drop) * first]
    return max(1, int(fallen["step"].iloc[0])) if len(fallen) else 1


def divergence_step(history) -> int | None:
    """The first evaluated step at which a run had diverged, or None.

    A row counts as diverged when its ``train_loss`` or ``weight_norm`` is NaN or infinite while
    its ``train_acc`` is known (so the loss was computed, and is not a row some logger left
    empty), or when any of those three is infinite.
    """
    if history is None or "step" not in getattr(history, "columns", ()):
        return None
    import numpy as np

    diverged = np.zeros(len(history), dtype=bool)
    known = history["train_acc"].notna().to_numpy() if "train_acc" in history.columns else diverged
    for column in ("train_loss", "weight_norm", "train_acc"):
        if column not in history.columns:
            continue
        values = history[column].to_numpy(dtype=float, na_value=np.nan)
        diverged |= np.isinf(values)
        if column != "train_acc":
            diverged |= known & np.isnan(values)
    steps = history["step"].to_numpy()[diverged]
    return int(steps.min()) if len(steps) else None
