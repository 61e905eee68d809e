"""Progress for logs: rich's progress bar that also prints a plain line every so often, for
stderr that is not a terminal (nohup, a batch scheduler, ``2>log``), where a live bar shows nothing."""

from __future__ import annotations

import functools
import time

from rich.text import Text

PROGRESS_EVERY_ENV = "GROKSCOPE_PROGRESS_EVERY"
# A batch log wants a sign of life, not a line per step: one a minute reads like `tail -f`.
DEFAULT_PROGRESS_EVERY_S = 60.0


def progress_every() -> float:
    """Seconds between plain progress lines (``GROKSCOPE_PROGRESS_EVERY``)."""
    from grokscope.config import seconds_from_env

    return seconds_from_env(PROGRESS_EVERY_ENV, DEFAULT_PROGRESS_EVERY_S)


@functools.cache
def plain_lines_progress():
    """The progress class, built on first use: rich.progress is not imported for ``--help``."""
    from rich.progress import Progress

    class PlainLinesProgress(Progress):
        """rich's Progress that, when ``plain_every`` is set, also prints a plain line per task
        at most every ``plain_every`` seconds (for logs, where a live bar shows nothing)."""

        def __init__(self, *columns, plain_every: float | None = None, plain_extra=(), **kwargs):
            super().__init__(*columns, **kwargs)
            self._plain_every = plain_every
            self._plain_extra = plain_extra
            self._last_line: dict = {}

        def add_task(self, *args, **kwargs):
            task_id = super().add_task(*args, **kwargs)
            self._last_line[task_id] = time.monotonic()
            return task_id

        def update(self, task_id, **kwargs) -> None:
            super().update(task_id, **kwargs)
            self._plain_line(task_id)

        def advance(self, task_id, advance: float = 1) -> None:
            super().advance(task_id, advance)
            self._plain_line(task_id)

        def _plain_line(self, task_id) -> None:
            if self._plain_every is None:
                return
            now = time.monotonic()
            if now - self._last_line.get(task_id, now) < self._plain_every:
                return
            self._last_line[task_id] = now
            with self._lock:
                task = self._tasks[task_id]
                parts = [f"{task.description}: {task.completed:g}/{task.total:g}" if task.total is not None
                         else f"{task.description}: {task.completed:g}"]
                if task.total:
                    parts[0] += f" ({100 * task.completed / task.total:.0f}%)"
                parts.append(f"{_duration(task.elapsed)} elapsed")
                if task.time_remaining is not None and not task.finished:
                    parts.append(f"~{_duration(task.time_remaining)} left")
                extra = "  ".join(text.format(task=task) for text in self._plain_extra).strip()
            line = ", ".join(parts) + (f"  {extra}" if extra else "")
            self.console.print(Text(line), soft_wrap=True)

    return PlainLinesProgress


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
