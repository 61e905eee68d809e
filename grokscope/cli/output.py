"""The one place that decides what the user sees, and where.

stdout carries only results (paths, or rows as CSV/JSON) so commands compose in pipelines;
progress, summaries, warnings and errors go to stderr. Colour follows rich, which honours
NO_COLOR and turns itself off when stderr is not a terminal.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass, field
from typing import Iterator

from rich.console import Console

from grokscope.errors import GrokscopeError


@dataclass
class Output:
    quiet: bool = False
    console: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))

    def result(self, line: object) -> None:
        """One result (a path, a row) on stdout, flushed so a downstream command sees it now."""
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
            self.console.print(message, soft_wrap=True)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)

    def error(self, message: str) -> None:
        self.console.print(f"[red]error:[/red] {message}", soft_wrap=True)

    @contextlib.contextmanager
    def progress(self, *columns_extra: str) -> Iterator["object"]:
        """A rich progress bar on stderr (hidden with -q)."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            *(TextColumn(text) for text in columns_extra),
        ]
        with Progress(*columns, console=self.console, disable=self.quiet, transient=False) as bar:
            yield bar


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    return str(value)
