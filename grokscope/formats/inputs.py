"""Command-line input paths, with ``-`` standing for the paths on standard input."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable, Iterator

from grokscope.errors import GrokscopeError

STDIN = "-"


class InputPaths:
    """Command-line paths, with ``-`` standing for the paths on standard input (one per line).

    Iterating gives batches of paths as they become available: the command-line paths first (all
    checked to exist before anything is done), then, for ``-``, the lines that have arrived on
    stdin each time the pipe is read, so a command reading ``-`` starts on the first path while
    the command before it is still writing the next. ``waited`` is the time spent waiting for
    stdin (not work). ``-`` that gives no path at all is an error: the command before the pipe
    wrote nothing, most likely because it failed.
    """

    def __init__(self, paths: Iterable[str]):
        self.raw = list(paths)
        self.waited = 0.0

    def __iter__(self) -> Iterator[list[Path]]:
        named = [Path(raw) for raw in self.raw if raw != STDIN]
        for path in named:
            _require_exists(path)
        if STDIN not in self.raw:
            if named:
                yield named
            return
        before = self.raw[: self.raw.index(STDIN)]
        after = [Path(raw) for raw in self.raw[self.raw.index(STDIN) + 1:] if raw != STDIN]
        if before:
            yield [Path(raw) for raw in before]
        received = 0
        for lines in self._stdin_batches():
            batch = [Path(line) for line in lines]
            for path in batch:
                _require_exists(path)
            received += len(batch)
            yield batch
        if received == 0:
            raise GrokscopeError("-: no paths on standard input (did the command before the pipe fail?)")
        if after:
            yield after

    def _stdin_batches(self) -> Iterator[list[str]]:
        import select
        import time

        try:
            fd = sys.stdin.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None  # a stream without a file descriptor (tests): read it whole
        if fd is None:
            lines = [line.strip() for line in sys.stdin.read().splitlines()]
            yield [line for line in lines if line]
            return
        pending = b""
        while True:
            started = time.monotonic()
            select.select([fd], [], [])  # wait for the next path (or the end of input)
            self.waited += time.monotonic() - started
            chunk = os.read(fd, 1 << 16)
            ended = not chunk
            pending += chunk
            # Take whatever else has arrived already, so one batch holds every path written so far.
            while not ended and select.select([fd], [], [], 0)[0]:
                chunk = os.read(fd, 1 << 16)
                ended = not chunk
                pending += chunk
            *complete, pending = pending.split(b"\n")
            if ended:
                complete.append(pending)
            lines = [os.fsdecode(line).strip() for line in complete]
            lines = [line for line in lines if line]
            if lines:
                yield lines
            if ended:
                return


def _require_exists(path: Path) -> None:
    if not path.exists():
        raise GrokscopeError(f"{path}: no such file or directory")


def expand_inputs(paths: Iterable[str]) -> list[Path]:
    """Command-line paths, with ``-`` replaced by every path on standard input (see
    :class:`InputPaths`, which gives them as they arrive)."""
    return [path for batch in InputPaths(paths) for path in batch]
