"""Ctrl-C at any instant of ``measure --workers 2``'s start-up (its local Dask cluster starting):
exit 130 with one line, no worker's traceback, no worker left behind."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
# Far above the 2 s promised (docs/reliability.md): a bound on a hang, not a timing measure on a
# shared machine. The bug it guards against ran on for a minute.
HANG_S = 20

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    subprocess.run([sys.executable, "-m", "grokscope", "train", "--p", "7", "--width", "16", "--steps", "20",
                    "--save-every", "10", "--save-log", "0", "--out", str(out), "-q"], env=ENV, check=True,
                   capture_output=True, timeout=600)
    return out / "add-p7"


def group_members(pgid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def test_ctrl_c_at_random_instants_of_a_local_cluster_start_exits_130_with_one_line(trained):
    instants = sorted(random.Random(22).uniform(0.5, 12.0) for _ in range(3))
    for instant in instants:
        command = subprocess.Popen([sys.executable, "-m", "grokscope", "measure", str(trained), "--metric", "collapse",
                                    "--workers", "2", "--force"], env=ENV, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        time.sleep(instant)
        os.killpg(command.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
        try:
            _, stderr = command.communicate(timeout=HANG_S)
        except subprocess.TimeoutExpired:
            os.killpg(command.pid, signal.SIGKILL)
            pytest.fail(f"Ctrl-C at {instant:.1f} s: still running {HANG_S} s later")
        left = []
        for _ in range(50):  # the workers end once their parent is gone
            left = group_members(command.pid)
            if not left:
                break
            time.sleep(0.2)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        if command.returncode == 0:
            continue  # the whole command was done before the instant: nothing to interrupt
        assert command.returncode == 130, (instant, stderr)
        assert stderr.strip().splitlines() == [
            "error: interrupted; files already written are complete, the rest were not written"], (instant, stderr)
        assert left == [], instant
