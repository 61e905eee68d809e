"""Tasks of ``probe`` and ``measure``: consecutive checkpoints of one series, a few per worker,
and the loop that runs a batch of series' tasks and finishes each series when its last is in.

A task loads the series' model and data once and then visits its checkpoints in order, so
fewer, longer tasks repeat less loading; a few per worker balance checkpoints of uneven cost.
Where tasks run is :mod:`grokscope.execution`'s to decide.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Hashable

import numpy as np

from grokscope.execution import Executor, Outcome, Task

# Tasks per worker slot, over all series of a batch.
TASKS_PER_SLOT = 4


def chunk(steps: list[int], n_chunks: int) -> list[list[int]]:
    """``steps`` in at most ``n_chunks`` runs of consecutive steps, of near-equal length."""
    n_chunks = max(1, min(n_chunks, len(steps)))
    return [list(part) for part in np.array_split(np.asarray(steps, dtype=np.int64), n_chunks) if len(part)]


def parts_per_series(executor: Executor, n_series: int) -> int:
    """How many tasks to make of each of ``n_series`` series so that every worker has work."""
    return max(1, math.ceil(TASKS_PER_SLOT * executor.slots / max(1, n_series)))


class SeriesTasks:
    """The tasks of a batch of series, keyed by series (any hashable key of the caller's)."""

    def __init__(self) -> None:
        self.tasks: list[Task] = []
        self._left: dict[Hashable, int] = {}

    def expect(self, key: Hashable) -> None:
        """A series that is done when its tasks are, even if it has none."""
        self._left.setdefault(key, 0)

    def add(self, key: Hashable, fn: Callable[..., Any], args: tuple, *, label: str, weight: int = 1,
            what: Any = None) -> None:
        """One task of series ``key``; ``what`` comes back with its outcome."""
        self._left[key] = self._left.get(key, 0) + 1
        self.tasks.append(Task(fn, args, weight=weight, label=label, tag=(key, what)))

    def run(self, executor: Executor, on_outcome: Callable[[Hashable, Any, Outcome], None],
            on_done: Callable[[Hashable], None]) -> None:
        """Run the tasks: a series without any is done at once; then ``on_outcome(key, what,
        outcome)`` for each task as it completes, and ``on_done(key)`` after a series' last."""
        for key, left in list(self._left.items()):
            if not left:
                on_done(key)
        for outcome in executor.map(self.tasks):
            key, what = outcome.task.tag
            on_outcome(key, what, outcome)
            self._left[key] -= 1
            if not self._left[key]:
                on_done(key)
