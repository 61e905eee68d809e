"""What ``train``, ``probe`` and ``measure`` say while they work, and what they hand back.

They stream: each path is said the moment it is written (so that ``train | probe -`` starts on
the first run while the next one trains), progress is drawn as the work is done, and problems
are said as they are met. They say it to a :class:`Reporter`: the CLI's ``Output`` (paths on
stdout, the rest on stderr), or :class:`PlainReporter` for a caller from Python. When they are
done they return a :class:`Written`: every path said, and every piece of work that failed.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Protocol


class Progress(Protocol):
    """A progress display (rich's ``Progress`` has this shape): tasks with a description, a
    total, what is completed, and fields that the display's extra columns show."""

    def add_task(self, description: str, **fields: Any) -> Any: ...

    def update(self, task_id: Any, **fields: Any) -> None: ...

    def advance(self, task_id: Any, advance: float = 1) -> None: ...


class Reporter(Protocol):
    def result(self, line: object) -> None:
        """One result (a path written, or already there): the next command's input."""

    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def error(self, message: str) -> None: ...

    def progress(self, *columns_extra: str) -> ContextManager[Progress]:
        """A progress display; ``columns_extra`` format a task's fields (``"{task.fields[stats]}"``)."""


class NoProgress:
    """A progress display that shows nothing."""

    def add_task(self, description: str, **fields: Any) -> int:
        return 0

    def update(self, task_id: Any, **fields: Any) -> None:
        pass

    def advance(self, task_id: Any, advance: float = 1) -> None:
        pass


class PlainReporter:
    """The reporter of a caller from Python: warnings and errors as plain lines on stderr;
    results, information and progress are left to the returned :class:`Written`."""

    def result(self, line: object) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr, flush=True)

    def error(self, message: str) -> None:
        print(f"error: {message}", file=sys.stderr, flush=True)

    def progress(self, *columns_extra: str) -> ContextManager[NoProgress]:
        return contextlib.nullcontext(NoProgress())


class SilentReporter(PlainReporter):
    """Says nothing at all: a worker's task, whose messages travel back with its result."""

    def warn(self, message: str) -> None:
        pass

    def error(self, message: str) -> None:
        pass


@dataclass
class Written:
    """What a command did.

    ``paths``: every result it said, in order (runs, features files, measure tables, the combined
    table): what it wrote, and what was already there. ``failed``: one message per piece of work
    that failed (a checkpoint, a run, a worker's task) while the rest went on. ``refused``: one
    message per input refused as a whole (a series that cannot be measured, a run whose settings
    are wrong). ``table``: measure's combined rows, when asked for.
    """

    paths: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    table: Any = None

    @property
    def exit_code(self) -> int:
        """The command's exit status: 2 when an input was refused, 1 when work failed, else 0."""
        return 2 if self.refused else 1 if self.failed else 0


class Recording:
    """A reporter that passes everything on to ``reporter`` and keeps the results in ``written``."""

    def __init__(self, reporter: Reporter | None):
        self.reporter = PlainReporter() if reporter is None else reporter
        self.written = Written()

    def result(self, line: object) -> None:
        self.reporter.result(line)
        self.written.paths.append(Path(line))

    def info(self, message: str) -> None:
        self.reporter.info(message)

    def warn(self, message: str) -> None:
        self.reporter.warn(message)

    def error(self, message: str) -> None:
        self.reporter.error(message)

    def progress(self, *columns_extra: str) -> ContextManager[Progress]:
        return self.reporter.progress(*columns_extra)
