"""What measuring meets besides values: unreadable checkpoints, warnings, NaN and why."""

from __future__ import annotations

import math
from dataclasses import dataclass

from grokscope.families import FAMILY_LABELS, FAMILY_METRICS
from grokscope.families.options import SPLIT_NAMES, SPLITS, MeasureOptions


@dataclass(frozen=True)
class Problem:
    """Something met while measuring a series, for the command to report.

    ``kind``: "error", a checkpoint or file that could not be read (that step has no rows and the
    command exits 1); "warning", a message as it is; "nan", ``family`` (None: every family) could
    not be computed at ``step`` because of ``message`` (its rows are NaN; reported once per
    reason, with the steps it hit).
    """

    kind: str
    message: str
    family: str | None = None
    step: int | None = None

    @classmethod
    def of(cls, item) -> "Problem":
        """A Problem, also from the ``(kind, message)`` pairs that row functions return."""
        return item if isinstance(item, Problem) else cls(*item)


def describe_failure(exc: BaseException) -> str:
    """Why a family could not be computed, in one line: a foreseen failure (a user's setting, a
    singular matrix) by its message, any other also by its kind."""
    from grokscope.errors import GrokscopeError

    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, GrokscopeError) or type(exc).__name__ == "LinAlgError":
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def describe_nan(root, family: str | None, reason: str, steps: list[int]) -> str:
    """One warning for every step where a family could not be computed for the same reason."""
    shown = ", ".join(str(s) for s in steps[:5]) + (f" and {len(steps) - 5} more" if len(steps) > 5 else "")
    what = "every measure is" if family is None else f"{FAMILY_LABELS.get(family, family)} is"
    return f"{root}: {what} NaN at step{'s' if len(steps) > 1 else ''} {shown}: {reason}"


def nan_rows(family: str, layers: list[str], options: MeasureOptions) -> list[dict]:
    """Placeholder rows for a checkpoint where a family could not be computed (non-finite features,
    a singular covariance, ...): NaN values rather than no rows, a crash or the loss of the others."""
    splits = {"collapse": options.split, "hsic": options.hsic_split, "oinfo": "train"}[family]
    metrics = FAMILY_METRICS[family]
    if family == "hsic":
        prefix = "nhsic" if options.hsic_estimator == "nocco" else options.hsic_estimator
        metrics = (f"{prefix}_x", f"{prefix}_y")
    extra = {"scope": "overall"} if family == "oinfo" else {}
    return [{"metric": m, "value": math.nan, "split": SPLIT_NAMES[code], "layer": layer, **extra}
            for layer in layers for code in SPLITS[splits] for m in metrics]
