"""The one place that decides what the user sees, and where.

stdout carries only results (paths, or rows as CSV/JSON) so commands compose in pipelines;
progress, summaries, warnings and errors go to stderr. Colour follows rich, which honours
NO_COLOR and turns itself off when stderr is not a terminal. Messages are printed as plain text,
never parsed as rich markup, so a path like ``runs/[red]/x`` is shown whole.

Progress: a live bar when stderr is a terminal; otherwise (nohup, a batch scheduler, ``2>log``)
one plain line every ``GROKSCOPE_PROGRESS_EVERY`` seconds (default 60). Neither ever captures
stdout: results reach the pipe while the bar is drawn.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Iterator

from rich.console import Console
from rich.text import Text

from grokscope.errors import GrokscopeError


@dataclass
class Output:
    quiet: bool = False
    console: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))
    # The live progress display while one is drawn on the terminal, else None.
    _live_bar: object | None = field(default=None, init=False, repr=False)

    def result(self, line: object) -> None:
        """One result (a path, a row) on stdout, flushed so a downstream command sees it now."""
        if self._live_bar is not None and _stdout_is_console_terminal():
            # stdout is the very terminal the bar is drawn on: print above the bar, not into it.
            self.console.print(Text(str(line)), soft_wrap=True)
        else:
            print(line, file=sys.stdout, flush=True)

    def rows(self, table, fmt: str) -> None:
        """A DataFrame on stdout as csv or json (one JSON object per line)."""
        if fmt == "csv":
            table.to_csv(sys.stdout, index=False)
        elif fmt == "json":
            for record in table.to_dict(orient="records"):
                print(json.dumps(record, default=_jsonable), flush=True)
        else:
            raise GrokscopeError(f"--format: unknown format {fmt!r}; known: csv, json")

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(Text(message), soft_wrap=True)

    def warn(self, message: str) -> None:
        self.console.print(Text.assemble(("warning:", "yellow"), " ", message), soft_wrap=True)

    def error(self, message: str) -> None:
        self.console.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True)

    @contextlib.contextmanager
    def progress(self, *columns_extra: str) -> Iterator["object"]:
        """A progress display on stderr: a rich bar on a terminal, plain lines otherwise, nothing with -q.

        ``columns_extra`` are format strings of the task (``"{task.fields[stats]}"``), shown after
        the bar and at the end of each plain line.
        """
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from grokscope.cli.progress import plain_lines_progress, progress_every

        live = not self.quiet and self.console.is_terminal
        every = None if self.quiet or live else progress_every()
        columns = [
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            *(TextColumn(text, markup=False) for text in columns_extra),
        ]
        bar = plain_lines_progress()(
            *columns, console=self.console, disable=not live, transient=False,
            # rich would route sys.stdout into the terminal while the bar is live, which sends a
            # pipeline's results to the screen instead of the next command.
            redirect_stdout=False, redirect_stderr=False,
            plain_every=every, plain_extra=columns_extra,
        )
        with bar:
            self._live_bar = bar if live else None
            try:
                yield bar
            finally:
                self._live_bar = None


def _stdout_is_console_terminal() -> bool:
    """Whether stdout and stderr are the same terminal."""
    try:
        if not sys.stdout.isatty():
            return False
        out, err = os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (out.st_dev, out.st_ino, out.st_rdev) == (err.st_dev, err.st_ino, err.st_rdev)


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    return str(value)
