"""Where a Ctrl-C may become a KeyboardInterrupt.

Python runs a signal handler between two bytecodes of whatever Python code is running, and the
exception it raises starts from there. Two such places must not see it:

- an import: a native module whose initialisation is cut short stays half made (numpy's
  ``cannot load module more than once per process`` at the next import);
- torch's own Python code, which its C++ calls: pybind11 turns an exception it cannot hand back
  into ``std::terminate`` (SIGABRT, exit status -6; seen at a ``train`` process's start).

An interrupt that arrives there is held, and raised at the next line the program's own code
(grokscope's, or ``__main__``'s) runs once control is back in it.
"""

from __future__ import annotations

import sys
from types import FrameType

_HELD_IN = ("torch", "importlib", "_frozen_importlib", "_frozen_importlib_external")


def interrupt(frame: FrameType | None) -> None:
    """Raise KeyboardInterrupt now if ``frame`` (where the signal handler runs) is a safe place
    for it; else arrange for it to be raised in the innermost frame of the program's own code.

    A process that already traces (a debugger, coverage) gets the interrupt now: its tracer is
    not ours to replace.
    """
    target, held = _where_to_raise(frame)
    if not held or sys.gettrace() is not None:
        raise KeyboardInterrupt
    if target is not None:
        _raise_at_next_line(target)
    # No frame of ours on the stack (the interpreter's shutdown): the caller's timer ends it.


def _where_to_raise(frame: FrameType | None) -> tuple[FrameType | None, bool]:
    """The innermost frame of the program's own code, and whether a frame inside it is one where
    an exception must not start."""
    held = False
    while frame is not None and not _is_programs(frame):
        held = held or _must_not_raise_in(frame)
        frame = frame.f_back
    return frame, held


def _module(frame: FrameType) -> str:
    return frame.f_globals.get("__name__") or ""


def _is_programs(frame: FrameType) -> bool:
    name = _module(frame)
    return name == "__main__" or name == "grokscope" or name.startswith("grokscope.")


def _must_not_raise_in(frame: FrameType) -> bool:
    # A module's top level runs only while it is imported.
    return _module(frame).split(".")[0] in _HELD_IN or frame.f_code.co_name == "<module>"


def _raise_at_next_line(target: FrameType) -> None:
    def at_line(frame, event, arg):
        if event in ("line", "return"):
            frame.f_trace = None
            sys.settrace(None)
            raise KeyboardInterrupt
        return at_line

    def at_call(frame, event, arg):
        return None  # frames called meanwhile are not traced: only the target's lines count

    target.f_trace = at_line
    sys.settrace(at_call)
