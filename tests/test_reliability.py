"""Reliability (docs/reliability.md): train killed at every write resumes bit for bit; bad inputs,
full disks, read-only folders and Ctrl-C give one line and no traceback; nothing is written
outside --out or through a planted symlink; temporaries are cleaned and honour the umask; results
reach a pipe while a progress bar holds the terminal.

Commands that must really die (SIGKILL, SIGINT, a file-size limit, another user) run in forked
children of one helper process that has imported grokscope and torch once: a fresh interpreter
per kill would cost seconds each.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from grokscope import store
from grokscope.cli import app

TINY = ["--p", "5", "--width", "8", "--steps", "12", "--save-every", "4", "--save-log", "0", "--eval-every", "2", "-q"]
# run.json, then three writes (checkpoint, history, optimizer state) at steps 0, 4, 8 and 12.
TINY_RENAMES = 13
NOBODY = 65534

# The helper: reads one JSON request per line, forks a child that runs `grokscope ARGS` through
# grokscope.cli.main (the console script's path) with the request's environment, limits and
# user, and answers with the child's exit code (negative: killed by that signal).
FORK_SERVER = r"""
import contextlib, json, os, resource, signal, sys, tempfile
import torch
torch.set_num_threads(1)
from grokscope.cli import app, main

# One run in this process first: the libraries' lazy imports and first-call set-up then happen
# once here instead of in every child.
with tempfile.TemporaryDirectory() as warm_up, contextlib.redirect_stdout(sys.stderr):
    app(["train", "--p", "3", "--width", "2", "--steps", "2", "-q", "--out", warm_up], standalone_mode=False)

for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(request["cwd"])
            os.environ.update(request["env"])
            for fd, name in ((1, "stdout"), (2, "stderr")):
                target = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
                os.dup2(target, fd)
            if request.get("fsize") is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (request["fsize"], request["fsize"]))
            if request.get("uid") is not None:
                os.setgroups([])
                os.setgid(request["uid"])
                os.setuid(request["uid"])
            os.umask(request.get("umask", 0o022))
            sys.argv = ["grokscope", *request["args"]]
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps(os.waitstatus_to_exitcode(status)), flush=True)
"""


class Completed:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


class ForkServer:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.pop(store.KILL_HOOK_ENV, None)
        self.process = subprocess.Popen([sys.executable, "-c", FORK_SERVER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env)
        self.count = 0

    def run(self, *args, cwd: Path | None = None, env: dict | None = None, fsize: int | None = None,
            uid: int | None = None, umask: int = 0o022) -> Completed:
        self.count += 1
        stdout, stderr = self.workdir / f"{self.count}.out", self.workdir / f"{self.count}.err"
        request = {"args": [str(a) for a in args], "cwd": str(cwd or self.workdir), "env": env or {},
                   "stdout": str(stdout), "stderr": str(stderr), "fsize": fsize, "uid": uid, "umask": umask}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        returncode = json.loads(self.process.stdout.readline())
        return Completed(returncode, stdout.read_text(), stderr.read_text())

    def close(self):
        self.process.stdin.close()
        self.process.wait()


@pytest.fixture(scope="module")
def forks(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("forks")
    os.chmod(workdir, 0o777)  # children running as another user write their output here too
    server = ForkServer(workdir)
    yield server
    server.close()


def kill_at(n: int, signal_name: str = "SIGKILL") -> dict:
    return {store.KILL_HOOK_ENV: f"{n}:{signal_name}"}


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if store._TEMPORARY.match(p.name)]


def run_files(run_dir: Path) -> dict[str, object]:
    """Every file of a run by relative path, as what must match bit for bit: run.json without its
    creation time; a safetensors file as its metadata and the raw bytes, dtype and shape of each
    tensor (safetensors orders the metadata keys differently in every process); others as bytes."""
    files = {}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        if path.name == store.RUN_FILE:
            document = json.loads(path.read_bytes())
            document.pop("created")
            content = document
        elif path.suffix == ".safetensors":
            tensors, metadata = store.load_tensors(path)
            content = (metadata, {k: (v.dtype, tuple(v.shape), v.numpy().tobytes()) for k, v in tensors.items()})
        else:
            content = path.read_bytes()
        files[str(path.relative_to(run_dir))] = content
    return files


def assert_same_run(run_dir: Path, reference: Path) -> None:
    got, want = run_files(run_dir), run_files(reference)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], f"{name} differs from the uninterrupted run"
    # Byte equality covers it; the frame check says which rows differ if it ever fails.
    pd.testing.assert_frame_equal(store.read_history(run_dir), store.read_history(reference), check_exact=True)


@pytest.fixture(scope="module")
def reference(forks, tmp_path_factory) -> Path:
    """The uninterrupted tiny run every interrupted one must equal."""
    out = tmp_path_factory.mktemp("reference")
    completed = forks.run("train", *TINY, "--out", out)
    assert completed.returncode == 0, completed.stderr
    return out / "add-p5"


# --- SIGKILL at every write -----------------------------------------------------------------


def test_uninterrupted_run_makes_exactly_the_expected_renames(forks, reference, tmp_path):
    # The kill instants below are meaningful only if they cover every write: the (N+1)th rename
    # must not exist, and the Nth must (it kills).
    assert forks.run("train", *TINY, "--out", tmp_path / "a", env=kill_at(TINY_RENAMES + 1)).returncode == 0
    assert forks.run("train", *TINY, "--out", tmp_path / "b", env=kill_at(TINY_RENAMES)).returncode == -signal.SIGKILL


@pytest.mark.parametrize("kill", range(1, TINY_RENAMES + 1))
def test_killed_at_any_write_recovers_bit_for_bit(forks, reference, tmp_path, kill):
    out = tmp_path / "runs"
    killed = forks.run("train", *TINY, "--out", out, env=kill_at(kill))
    assert killed.returncode == -signal.SIGKILL
    run_dir = out / "add-p5"
    assert temporaries(run_dir), "the kill should land with a temporary written but not renamed"
    committed = store.resume_step(run_dir)
    if committed is None:
        # Killed before its first save was committed: the same command starts it over.
        again = forks.run("train", *TINY, "--out", out)
    else:
        plain = forks.run("train", *TINY, "--out", out)
        assert plain.returncode == 2 and "--resume" in plain.stderr
        again = forks.run("train", *TINY, "--out", out, "--resume")
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == [str(run_dir)]
    assert "Traceback" not in again.stderr
    assert temporaries(out) == []
    assert_same_run(run_dir, reference)


@pytest.mark.parametrize(("first", "second"), [(3, 1), (6, 2), (9, 3), (12, 1)])
def test_killed_twice_including_while_resuming(forks, reference, tmp_path, first, second):
    out = tmp_path / "runs"
    assert forks.run("train", *TINY, "--out", out, env=kill_at(first)).returncode == -signal.SIGKILL
    assert forks.run("train", *TINY, "--out", out, "--resume", env=kill_at(second)).returncode == -signal.SIGKILL
    again = forks.run("train", *TINY, "--out", out, "--resume")
    assert again.returncode == 0, again.stderr
    assert temporaries(out) == []
    assert_same_run(out / "add-p5", reference)


def test_a_start_killed_before_run_json_is_taken_over_with_resume_too(forks, reference, tmp_path):
    out = tmp_path / "runs"
    assert forks.run("train", *TINY, "--out", out, env=kill_at(1)).returncode == -signal.SIGKILL
    assert not (out / "add-p5" / store.RUN_FILE).exists()
    again = forks.run("train", *TINY, "--out", out, "--resume")
    assert again.returncode == 0, again.stderr
    assert_same_run(out / "add-p5", reference)


def test_an_unfinished_start_of_other_settings_is_not_taken_over(forks, tmp_path):
    out = tmp_path / "runs"
    assert forks.run("train", *TINY, "--out", out, env=kill_at(3)).returncode == -signal.SIGKILL
    before = run_files(out / "add-p5")
    other = forks.run("train", *TINY, "--lr", "0.01", "--out", out)
    assert other.returncode == 2 and "already exists" in other.stderr
    assert run_files(out / "add-p5") == before


# --- SIGINT -------------------------------------------------------------------------------


@pytest.mark.parametrize("kill", [2, 6, 13])
def test_ctrl_c_at_a_write_is_one_line_130_and_resumable(forks, reference, tmp_path, kill):
    out = tmp_path / "runs"
    interrupted = forks.run("train", *TINY, "--out", out, env=kill_at(kill, "SIGINT"))
    assert interrupted.returncode == 130
    lines = interrupted.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), interrupted.stderr
    assert temporaries(out) == [], "an interrupted write removes its temporary"
    resume = [] if store.resume_step(out / "add-p5") is None else ["--resume"]
    assert forks.run("train", *TINY, "--out", out, *resume).returncode == 0
    assert_same_run(out / "add-p5", reference)


def test_ctrl_c_at_any_instant_of_a_real_process(tmp_path):
    """SIGINT at spread instants of real `python -m grokscope train` processes (imports included):
    exit 130 (or 0 if it had finished) and at most one line, never a traceback."""
    command = [sys.executable, "-m", "grokscope", "train", "--p", "5", "--width", "8", "--steps", "400",
               "--save-every", "1", "--save-log", "0", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Not earlier: during Python's own start-up, before any grokscope code runs (tens of
    # milliseconds, more on a loaded machine), an interrupt is the interpreter's to report.
    delays = [1.0, 2.0, 4.0]
    processes = []
    for index, delay in enumerate(delays):
        process = subprocess.Popen(command + ["--out", str(tmp_path / str(index))], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=env)
        processes.append((delay, time.monotonic(), process))
    for delay, started, process in processes:
        time.sleep(max(0.0, started + delay - time.monotonic()))
        process.send_signal(signal.SIGINT)
    for delay, _, process in processes:
        stdout, stderr = process.communicate(timeout=300)
        assert "Traceback" not in stderr, (delay, stderr)
        assert process.returncode in (0, 130), (delay, process.returncode, stderr)
        if process.returncode == 130:
            lines = stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: interrupted"), (delay, stderr)
    assert temporaries(tmp_path) == []
