"""The README pipeline on a terminal: one live progress display (the last command's), the
others' progress as plain lines, "waiting for paths on stdin" instead of 0/0, and train's
summary saying what was not reached."""

from __future__ import annotations

import os
import re
import select
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# rich hides the cursor once when it starts a live display (and shows it again at the end).
LIVE_DISPLAY_STARTS = "\x1b[?25l"


def on_a_terminal(command: str, cwd: Path, timeout: float = 600, exit_code: int = 0) -> str:
    """Everything ``command`` (a shell line) writes to a pseudo-terminal that is its stdin,
    stdout and stderr, as the terminal receives it."""
    pytest.importorskip("pty")
    import fcntl
    import struct
    import termios

    main, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TERM": "xterm-256color",
           "COLUMNS": "160", "GROKSCOPE_PROGRESS_EVERY": "0"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(["bash", "-c", command], stdin=terminal, stdout=terminal, stderr=terminal,
                               cwd=cwd, env=env, start_new_session=True)
    os.close(terminal)
    received = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(main, 1 << 16)
            except OSError:  # every writer has closed the terminal
                break
            if not chunk:
                break
            received += chunk
        elif process.poll() is not None:
            break
    process.wait(timeout=60)
    os.close(main)
    assert process.returncode == exit_code, received.decode(errors="replace")
    return received.decode(errors="replace")


@pytest.mark.slow
def test_only_one_command_of_the_pipeline_draws_live(tmp_path):
    grokscope = shlex.join([sys.executable, "-m", "grokscope"])
    screen = on_a_terminal(
        f"{grokscope} train --p 5 --width 8 --steps 30 --save-every 10 --save-log 0 --out runs"
        f" | {grokscope} probe - | {grokscope} measure - --metric weights", cwd=tmp_path)
    # One of the three holds the terminal's display; the two others say how far they are in
    # plain lines ("probe: ...", "measure: ...", "add-p5: ..." with GROKSCOPE_PROGRESS_EVERY=0).
    assert screen.count(LIVE_DISPLAY_STARTS) == 1, screen
    plain = {label for label in ("add-p5: ", "probe: ", "measure: ") if label in screen}
    assert len(plain) >= 2, screen
    assert not re.search(r"\b0/0\b", screen), screen  # (accuracies read 0.100/0.200)
    assert "at step None" not in screen
    assert "test acc not reached" in screen or "test acc at step" in screen


@pytest.mark.slow
def test_a_command_alone_on_the_terminal_draws_live(tmp_path):
    grokscope = shlex.join([sys.executable, "-m", "grokscope"])
    screen = on_a_terminal(f"{grokscope} train --p 5 --width 8 --steps 20 --save-every 10 --save-log 0 --out runs",
                           cwd=tmp_path)
    assert screen.count(LIVE_DISPLAY_STARTS) == 1, screen
    # 20 steps of p=5 with 8 units do not generalise: the summary says so in words.
    assert "99% test acc not reached" in screen, screen


@pytest.mark.slow
def test_a_command_waiting_on_stdin_says_so(tmp_path):
    grokscope = shlex.join([sys.executable, "-m", "grokscope"])
    screen = on_a_terminal(f"sleep 4 | {grokscope} measure - --metric weights", cwd=tmp_path, exit_code=2)
    assert "waiting for paths on stdin" in screen, screen
    assert not re.search(r"\b0/0\b", screen), screen
    assert "-: no paths on standard input" in screen
