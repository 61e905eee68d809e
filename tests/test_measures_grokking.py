"""grokking_summary / grokking_rows on synthetic histories with planted threshold crossings."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from grokscope.errors import GrokscopeError
from grokscope.measures.grokking import METRICS, grokking_rows, grokking_summary


def history(steps, train_cross: int | None, test_cross: int | None, shuffle: bool = False) -> pd.DataFrame:
    """Accuracies that rise smoothly and first reach 0.995 exactly at the planted steps.

    Before a crossing the accuracy climbs towards 0.98 (never 0.99), from it on it is 0.995 (never 1),
    so the answer depends on the comparison and the first crossing only.
    """
    steps = np.asarray(steps)

    def accuracy(cross):
        below = 0.98 * steps / steps.max()
        return below if cross is None else np.where(steps >= cross, 0.995, below)

    frame = pd.DataFrame({
        "step": steps,
        "train_loss": 1.0,
        "train_acc": accuracy(train_cross),
        "test_loss": 2.0,
        "test_acc": accuracy(test_cross),
    })
    return frame.sample(frac=1.0, random_state=0) if shuffle else frame


STEPS = np.arange(0, 5001, 10)


def brute_force_first(frame, column, threshold):
    best = None
    for step, value in zip(frame["step"], frame[column]):
        if value >= threshold and (best is None or step < best):
            best = int(step)
    return best


@pytest.mark.parametrize(
    ("train_cross", "test_cross", "phase"),
    [
        (100, 300, "comprehension"),      # gap 200 < 1000
        (100, 3100, "grokking"),          # gap 3000 >= 1000
        (100, 1100, "grokking"),          # gap exactly the delay: grokking (Liu et al.: >= 10^3)
        (100, None, "memorization"),
        (None, None, "confusion"),
        (None, 400, "confusion"),         # test reached but train never: still no memorisation
        (500, 200, "comprehension"),      # test first: negative gap
    ],
)
def test_phases_on_planted_crossings(train_cross, test_cross, phase):
    frame = history(STEPS, train_cross, test_cross, shuffle=True)
    summary = grokking_summary(frame)
    assert summary["memorization_step"] == brute_force_first(frame, "train_acc", 0.99) == train_cross
    assert summary["generalization_step"] == brute_force_first(frame, "test_acc", 0.99) == test_cross
    expected_gap = None if train_cross is None or test_cross is None else test_cross - train_cross
    assert summary["grokking_gap"] == expected_gap
    assert summary["phase"] == phase
    assert summary["last_step"] == 5000


def test_threshold_delay_and_horizon_are_parameters():
    frame = history(STEPS, 100, 600)
    assert grokking_summary(frame)["phase"] == "comprehension"
    assert grokking_summary(frame, delay=500)["phase"] == "grokking"
    # 0.999 is above the planted plateau of 0.995: neither split ever reaches it.
    assert grokking_summary(frame, threshold=0.999)["phase"] == "confusion"
    # Liu et al.'s 0.9: the ramp before the planted step stays below 0.02, so the crossing is the same.
    assert grokking_summary(frame, threshold=0.9)["memorization_step"] == 100
    cut = grokking_summary(frame, horizon=500)
    assert cut["generalization_step"] is None and cut["phase"] == "memorization" and cut["last_step"] == 500


def test_rows_are_a_tidy_table():
    rows = grokking_rows(history(STEPS, 100, 3100))
    assert [r["metric"] for r in rows] == list(METRICS)
    assert [r["value"] for r in rows] == [100.0, 3100.0, 3000.0]
    assert all(r["step"] == 5000 and r["phase"] == "grokking" for r in rows)
    assert all(r["split"] is None and r["layer"] is None for r in rows)
    assert all(isinstance(r["value"], float) for r in rows)

    never = grokking_rows(history(STEPS, 100, None))
    assert never[0]["value"] == 100.0
    assert math.isnan(never[1]["value"]) and math.isnan(never[2]["value"])
    assert {r["phase"] for r in never} == {"memorization"}


def test_nan_accuracy_never_counts_as_reached():
    frame = history(STEPS, 100, 300)
    frame.loc[frame["step"] == 300, "test_acc"] = np.nan
    assert grokking_summary(frame)["generalization_step"] == 310


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"delay": -1}, "delay"),
        ({"horizon": -5}, "no evaluations"),
    ],
)
def test_bad_arguments_are_user_errors(kwargs, message):
    with pytest.raises(GrokscopeError, match=message):
        grokking_summary(history(STEPS, 100, 300), **kwargs)


def test_missing_column_is_named():
    with pytest.raises(GrokscopeError, match="'test_acc'"):
        grokking_summary(history(STEPS, 100, 300).drop(columns="test_acc"))
