"""How a command ends: one line on stderr instead of a traceback, and the exit code that says why
(2 a user's mistake, 1 a system error, 130 an interrupt), at any instant of the process; and how
its warnings show (each GrokscopeWarning once, as one ``warning:`` line)."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import warnings

import typer

from grokscope.cli.output import Output
from grokscope import interrupts
from grokscope.errors import GrokscopeError, GrokscopeWarning, describe_os_error

INTERRUPTED = "interrupted; files already written are complete, the rest were not written"
# A Ctrl-C that Python loses (raised inside an import lock's or a destructor's callback, where it
# is "ignored") still ends the process this long after it arrived.
INTERRUPT_GRACE_SECONDS = 1.0
_interrupt_reported = False
_interrupted = False
# Set by ``main``: the process is the grokscope command, not a library user's (or a test's).
_owns_process = False


def reports_user_errors(command):
    """One line on stderr instead of a traceback: a GrokscopeError exits 2, an OSError (disk full,
    read-only folder, no permission) 1, an interrupt (Ctrl-C) 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with _warnings_as_lines():
                return command(*args, **kwargs)
        except GrokscopeError as exc:
            _fail(str(exc), 2)
        except KeyboardInterrupt:
            _fail(INTERRUPTED, 130)
        except BrokenPipeError:
            # The reader of stdout went away (e.g. `| head`): nothing left to tell anyone.
            sys.stderr.close()
            raise typer.Exit(1) from None
        except OSError as exc:
            _fail(describe_os_error(exc), 1)

    return wrapper


@contextlib.contextmanager
def _warnings_as_lines():
    """A GrokscopeWarning raised anywhere in the command is one ``warning:`` line on stderr, once."""
    shown: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("always", GrokscopeWarning)
        default = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, GrokscopeWarning):
                return default(message, category, filename, lineno, file, line)
            if str(message) not in shown:
                shown.add(str(message))
                Output().warn(str(message))

        warnings.showwarning = show
        yield


def _fail(message: str, code: int):
    global _interrupt_reported
    _say(message)
    _interrupt_reported = code == 130
    raise typer.Exit(code) from None


def _say(message: str) -> None:
    """Print the error line; a second Ctrl-C meanwhile would only cut it short, so it is ignored
    (for good once ``main`` runs the process, which only exits after this)."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals are not ours to handle
        previous = None
    try:
        Output().error(message)
    finally:
        if previous is not None and not _owns_process:
            signal.signal(signal.SIGINT, previous)


def run(app) -> None:
    """Run ``app`` as the process's command: Ctrl-C turned into one line and exit code 130 at any instant."""
    global _owns_process
    _owns_process = True
    try:
        # Commands get KeyboardInterrupt, so an interrupted write removes its temporary file. Inside
        # the try: a Ctrl-C already waiting is raised within this very call (its return value's
        # conversion is Python code), and must end as any other.
        signal.signal(signal.SIGINT, _on_interrupt)
        app(prog_name="grokscope")
    except SystemExit as exc:
        # Typer turns an interrupt outside a command (while parsing options) into a silent 130.
        if exc.code == 130 and not _interrupt_reported:
            _say(INTERRUPTED)
        if _interrupted:
            _exit_now(130)
        raise
    except KeyboardInterrupt:
        _say(INTERRUPTED)
        _exit_now(130)
    finally:
        # From here the process only exits: a late Ctrl-C must not print a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _on_interrupt(signum, frame):
    """Ctrl-C: a KeyboardInterrupt where the process is, or at the next line of grokscope's code
    where it must not start (inside an import or torch), so an atomic write removes its
    temporary; and a timer that ends the process should Python lose the exception on its way up."""
    global _interrupted
    if not _interrupted:
        _interrupted = True
        import threading

        timer = threading.Timer(INTERRUPT_GRACE_SECONDS, _exit_now, args=(130, True))
        timer.daemon = True
        timer.start()
    interrupts.interrupt(frame)


def _exit_now(code: int, lost: bool = False) -> None:
    """Leave with ``code`` at once. An interrupt that passed through code Python runs as a string
    (inside some library imports) marks the process for a SIGINT death at exit (status -2, not
    130), whatever caught it since: ``os._exit`` keeps the promised status."""
    if lost and not _interrupt_reported:
        os.write(2, f"error: {INTERRUPTED}\n".encode())
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
