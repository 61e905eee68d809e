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

from grokscope import formats
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

# One run of each command in this process first: the libraries' lazy imports and first-call
# set-up then happen once here instead of in every child (and before a child becomes a user who
# may not read the interpreter's own folders).
with tempfile.TemporaryDirectory() as warm_up, contextlib.redirect_stdout(sys.stderr):
    app(["train", "--p", "3", "--width", "2", "--steps", "2", "-q", "--out", warm_up], standalone_mode=False)
    run = warm_up + "/add-p3"
    for args in (["probe", run, "-q"], ["measure", run, "--metric", "all", "--bins", "2", "-q"],
                 ["plot", "curves", run, "-o", warm_up + "/f.png"], ["report", run]):
        app(args, standalone_mode=False)

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
        env.pop(formats.atomic.KILL_HOOK_ENV, None)
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
    return {formats.atomic.KILL_HOOK_ENV: f"{n}:{signal_name}"}


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if formats.atomic._TEMPORARY.match(p.name)]


def run_files(run_dir: Path) -> dict[str, object]:
    """Every file of a run by relative path, as what must match bit for bit: run.json without its
    creation time; a safetensors file as its metadata and the raw bytes, dtype and shape of each
    tensor (safetensors orders the metadata keys differently in every process); others as bytes."""
    files = {}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        if path.name == formats.run.RUN_FILE:
            document = json.loads(path.read_bytes())
            document.pop("created")
            content = document
        elif path.suffix == ".safetensors":
            tensors, metadata = formats.tensors.load_tensors(path)
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
    pd.testing.assert_frame_equal(formats.run.read_history(run_dir), formats.run.read_history(reference), check_exact=True)


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
    committed = formats.run.resume_step(run_dir)
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
    assert not (out / "add-p5" / formats.run.RUN_FILE).exists()
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
    resume = [] if formats.run.resume_step(out / "add-p5") is None else ["--resume"]
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
    delays = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0]
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


# --- bad inputs: one line, no traceback, nothing touched ------------------------------------


@pytest.fixture(scope="module")
def interrupted(forks, tmp_path_factory) -> Path:
    """A tiny run killed at its step-8 checkpoint: committed at step 4, waiting for --resume."""
    out = tmp_path_factory.mktemp("interrupted")
    assert forks.run("train", *TINY, "--out", out, env=kill_at(8)).returncode == -signal.SIGKILL
    run_dir = out / "add-p5"
    assert formats.run.resume_step(run_dir) == 4
    for path in temporaries(run_dir):
        path.unlink()
    return run_dir


def rewrite_tensors(path: Path, change) -> None:
    tensors, metadata = formats.tensors.load_tensors(path)
    tensors, metadata = change(dict(tensors), dict(metadata))
    save_file(tensors, str(path), metadata=metadata)


def drop_step(tensors, metadata):
    metadata.pop("grokscope.step")
    return tensors, metadata


def wrong_shape(tensors, metadata):
    tensors["state.0.exp_avg"] = torch.zeros(3, 3)
    return tensors, metadata


def other_architecture(run: Path) -> None:
    wide = {"layers.0.weight": torch.zeros(16, 10), "layers.0.bias": torch.zeros(16), "layers.1.weight": torch.zeros(5, 16)}
    save_file(wide, str(formats.run.checkpoint_path(run, 4)), metadata={"format": "pt", "grokscope.step": "4"})


def read_only(run: Path) -> None:
    for folder in (run / formats.run.CHECKPOINTS_DIR, run):
        folder.chmod(0o555)


RESUME = ("train", *TINY, "--resume")
# (case, how to spoil the interrupted run, command, exit code, what the error line must name)
BAD_RESUMES = [
    ("run.json not an object", lambda r: (r / "run.json").write_text("[1, 2]"), 2, ["run.json", "not an object"]),
    ("run.json not JSON", lambda r: (r / "run.json").write_text("{"), 2, ["run.json", "not valid JSON"]),
    ("run.json without a name", lambda r: (r / "run.json").write_text('{"schema": "grokscope.run/1"}'), 2,
     ["run.json", "'name'"]),
    ("optimizer state without its step", lambda r: rewrite_tensors(r / formats.run.RESUME_FILE, drop_step), 2,
     ["resume.safetensors", "grokscope.step"]),
    ("optimizer state with a non-numeric step",
     lambda r: rewrite_tensors(r / formats.run.RESUME_FILE, lambda t, m: (t, {**m, "grokscope.step": "four"})), 2,
     ["resume.safetensors", "'four'"]),
    ("optimizer state truncated",
     lambda r: (r / formats.run.RESUME_FILE).write_bytes((r / formats.run.RESUME_FILE).read_bytes()[:100]), 2,
     ["resume.safetensors", "not a readable"]),
    ("optimizer state of another architecture", lambda r: rewrite_tensors(r / formats.run.RESUME_FILE, wrong_shape), 2,
     ["resume.safetensors", "shape"]),
    ("checkpoint of another architecture", other_architecture, 2, ["step-00000004.safetensors", "shape"]),
    ("no checkpoint at the resume step", lambda r: formats.run.checkpoint_path(r, 4).unlink(), 2,
     ["resume.safetensors", "no checkpoint"]),
    ("history missing", lambda r: (r / formats.run.HISTORY_FILE).unlink(), 2, ["history.parquet"]),
    ("history not Parquet", lambda r: (r / formats.run.HISTORY_FILE).write_text("step,loss\n"), 2,
     ["history.parquet", "not a readable Parquet"]),
    ("read-only run folder", read_only, 1, ["step-00000008.safetensors", "Permission denied"]),
    ("read-only checkpoints folder", lambda r: (r / formats.run.CHECKPOINTS_DIR).chmod(0o555), 1,
     ["checkpoints/step-00000008.safetensors", "Permission denied"]),
]
# (case, command after "train", file-size limit in bytes, exit code, what the error line must name)
BAD_NEW_RUNS = [
    # run.json (~1 kB) fits; the first checkpoint of a 64-unit model (~3 kB) does not.
    ("disk full at a checkpoint", [*TINY, "--width", "64"], 1500, 1, ["step-00000000.safetensors", "File too large"]),
    # ... and with 8 units the checkpoint (~0.8 kB) fits but the history (~4 kB) does not.
    ("disk full at the history", TINY, 2000, 1, ["history.parquet", "File too large"]),
    ("name climbing out of --out", [*TINY, "--name", "../escaped"], None, 2, ["--name", "../escaped"]),
    ("name two levels up", [*TINY, "--name", "../../escaped"], None, 2, ["--name"]),
    ("absolute name", [*TINY, "--name", "/tmp/grokscope-escaped"], None, 2, ["--name"]),
    ("name with a separator", [*TINY, "--name", "a/b"], None, 2, ["--name"]),
    ("name ..", [*TINY, "--name", ".."], None, 2, ["--name"]),
    ("name with a newline", [*TINY, "--name", "a\nb"], None, 2, ["--name"]),
]


@contextlib.contextmanager
def workspace(tmp_path: Path):
    """A folder the command may write into; as root, world-writable under /tmp so that the command
    can run as an ordinary user (root ignores the permissions a read-only test relies on)."""
    if os.geteuid() != 0:
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="grokscope-test-"))
    try:
        folder.chmod(0o777)
        yield folder
    finally:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(folder)


def snapshot(folder: Path) -> dict[str, tuple]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode)
            for p in folder.rglob("*") if p.is_file()}


def assert_one_error_line(completed: Completed, code: int, needles: list[str]) -> None:
    assert completed.returncode == code, completed.stderr
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), completed.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert completed.stdout == ""


@pytest.mark.parametrize(("case", "spoil", "code", "needles"), BAD_RESUMES, ids=[c[0] for c in BAD_RESUMES])
def test_bad_resume_inputs(forks, interrupted, tmp_path, case, spoil, code, needles):
    with workspace(tmp_path) as space:
        out = space / "runs"
        out.mkdir()
        out.chmod(0o777)
        run_dir = Path(shutil.copytree(interrupted, out / "add-p5"))
        spoil(run_dir)
        for path in run_dir.rglob("*"):
            if path.is_file():
                path.chmod(0o644)  # readable by the ordinary user the command may run as
        before = snapshot(space)
        completed = forks.run(*RESUME, "--out", out, uid=NOBODY if os.geteuid() == 0 else None)
        assert_one_error_line(completed, code, needles)
        assert snapshot(space) == before
        assert temporaries(space) == []


@pytest.mark.parametrize(("case", "args", "fsize", "code", "needles"), BAD_NEW_RUNS, ids=[c[0] for c in BAD_NEW_RUNS])
def test_bad_new_runs(forks, reference, tmp_path, case, args, fsize, code, needles):
    inside = tmp_path / "a" / "b"
    out = inside / "runs"
    out.mkdir(parents=True)
    (tmp_path / "a" / "keep.txt").write_text("the user's")
    before = snapshot(tmp_path)
    completed = forks.run("train", *args, "--out", out, fsize=fsize)
    assert_one_error_line(completed, code, needles)
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before
    # Nothing outside --out, and no temporary anywhere.
    assert all(name.startswith("a/b/runs/") for name in set(after) - set(before)), sorted(after)
    assert not Path("/tmp/grokscope-escaped").exists()
    assert temporaries(tmp_path) == []
    if fsize is not None:
        # Once there is room again, the same command takes the unfinished run over.
        again = forks.run("train", *args, "--out", out)
        assert again.returncode == 0, again.stderr
        if args == TINY:
            assert_same_run(out / "add-p5", reference)


# --- probe, measure, plot, report: bad inputs ------------------------------------------------


@pytest.fixture(scope="module")
def probed(forks, reference, tmp_path_factory) -> Path:
    """A copy of the reference run, probed and measured (collapse)."""
    run_dir = Path(shutil.copytree(reference, tmp_path_factory.mktemp("probed") / "add-p5"))
    for args in (("probe", run_dir, "-q"), ("measure", run_dir, "--metric", "collapse", "-q")):
        completed = forks.run(*args)
        assert completed.returncode == 0, completed.stderr
    return run_dir


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:120])


def fewer_rows(run: Path) -> None:
    path = formats.features.features_path(run, 4)
    tensors, metadata = formats.tensors.load_tensors(path)
    formats.tensors.save_tensors(path, {k: v[:-2] for k, v in tensors.items()}, metadata)


def corrupt_samples(run: Path) -> None:
    truncate(formats.features.samples_path(run))
    formats.features.features_path(run, 4).unlink()  # a step left to probe, which needs the samples


def table_without_value(run: Path) -> None:
    path = formats.tables.measures_path(run, "collapse")
    pd.read_parquet(path).drop(columns=["value"]).to_parquet(path)


def read_only_folder(folder: Path) -> None:
    folder.chmod(0o555)


# (case, run to start from, spoil, command (with {run} and {space}), exit code, what the error line
# names, whether the command may have written other files first: the steps it could measure)
BAD_INPUTS = [
    ("probe: truncated checkpoint", "reference", lambda r: truncate(formats.run.checkpoint_path(r, 4)),
     ["probe", "{run}", "-q"], 1, ["step-00000004.safetensors", "not a readable safetensors"], True),
    ("probe: run.json not an object", "reference", lambda r: (r / "run.json").write_text("[]"),
     ["probe", "{run}", "-q"], 2, ["run.json", "not an object"], False),
    ("probe: samples file corrupt", "probed", corrupt_samples,
     ["probe", "{run}", "-q"], 1, ["samples.safetensors", "not a readable"], False),
    ("probe: read-only features folder", "probed", lambda r: read_only_folder(r / formats.features.FEATURES_DIR),
     ["probe", "{run}", "--force", "-q"], 1, ["samples.safetensors", "Permission denied"], False),
    ("measure: truncated checkpoint", "reference", lambda r: truncate(formats.run.checkpoint_path(r, 4)),
     ["measure", "{run}", "--metric", "collapse,weights", "-q"], 1,
     ["step-00000004.safetensors", "not a readable safetensors"], True),
    ("measure: features of the wrong size", "probed", fewer_rows,
     ["measure", "{run}", "--metric", "hsic", "-q"], 1, ["step-00000004.safetensors", "23 rows", "25 samples"], True),
    ("measure: weights of another architecture", "reference", other_architecture,
     ["measure", "{run}", "--metric", "weights", "-q"], 1, ["step-00000004.safetensors", "another architecture"],
     True),
    ("measure: table without its value column", "probed", table_without_value,
     ["measure", "{run}", "--metric", "collapse", "--force", "-q"], 2, ["collapse.parquet", "'value'"], False),
    ("measure: table not Parquet", "probed", lambda r: formats.tables.measures_path(r, "collapse").write_text("x"),
     ["measure", "{run}", "--metric", "collapse", "-q"], 2, ["collapse.parquet", "not a readable Parquet"], False),
    ("measure: read-only measures folder", "probed", lambda r: read_only_folder(r / formats.tables.MEASURES_DIR),
     ["measure", "{run}", "--metric", "hsic", "-q"], 1, ["hsic.parquet", "Permission denied"], False),
    ("plot: table without its value column", "probed", table_without_value,
     ["plot", "collapse", "{run}", "-o", "{space}/f.png"], 2, ["collapse.parquet", "'value'"], False),
    ("plot: history not Parquet", "probed", lambda r: (r / formats.run.HISTORY_FILE).write_text("x"),
     ["plot", "curves", "{run}", "-o", "{space}/f.png"], 2, ["history.parquet", "not a readable Parquet"], False),
    ("plot: read-only output folder", "probed", lambda r: (r.parent / "figures").mkdir(mode=0o555),
     ["plot", "curves", "{run}", "-o", "{space}/figures/f.png"], 1, ["figures/f.png", "Permission denied"], False),
    ("report: run.json not an object", "probed", lambda r: (r / "run.json").write_text("[]"),
     ["report", "{run}"], 2, ["run.json", "not an object"], False),
    ("report: table without its value column", "probed", table_without_value,
     ["report", "{run}"], 2, ["collapse.parquet", "'value'"], False),
]


@pytest.mark.parametrize(("case", "start", "spoil", "command", "code", "needles", "partial"), BAD_INPUTS,
                         ids=[c[0] for c in BAD_INPUTS])
def test_bad_inputs_of_probe_measure_plot_report(forks, reference, probed, tmp_path, case, start, spoil, command,
                                                 code, needles, partial):
    with workspace(tmp_path) as space:
        run_dir = Path(shutil.copytree({"reference": reference, "probed": probed}[start], space / "add-p5"))
        for path in [run_dir, *run_dir.rglob("*")]:
            path.chmod(0o777 if path.is_dir() else 0o666)  # the ordinary user the command runs as may write
        spoil(run_dir)
        for path in run_dir.rglob("*"):
            if path.is_file():
                path.chmod(0o666)  # files the spoil wrote, readable by that user too
        before = snapshot(space)
        args = [a.format(run=run_dir, space=space) for a in command]
        completed = forks.run(*args, uid=NOBODY if os.geteuid() == 0 else None)
        assert completed.returncode == code, completed.stderr
        assert "Traceback" not in completed.stderr
        lines = completed.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), completed.stderr
        for needle in needles:
            assert needle in lines[0], (needle, lines[0])
        after = snapshot(space)
        assert {k: v for k, v in after.items() if k in before} == before
        new = set(after) - set(before)
        if partial:  # what it could do is kept: files of the other steps, and their paths on stdout
            assert new and all(n.startswith(("add-p5/features/", "add-p5/measures/")) for n in new), new
            assert all(Path(line).is_file() for line in completed.stdout.split())
        else:
            assert new == set() and completed.stdout == ""
        assert temporaries(space) == [] and not list(space.rglob(".*.lock"))


def test_a_full_disk_at_a_table_names_the_table_and_leaves_no_lock(forks, probed, tmp_path):
    # A file-size limit that the lock file's holder line and the error line fit in, and no
    # Parquet table does: its write fails as on a full disk.
    run_dir = Path(shutil.copytree(probed, tmp_path / "add-p5"))
    before = snapshot(tmp_path)
    completed = forks.run("measure", run_dir, "--metric", "hsic", "-q", fsize=400)
    assert_one_error_line(completed, 1, ["measures/hsic.parquet", "File too large"])
    assert ".lock" not in completed.stderr
    assert snapshot(tmp_path) == before and not list(tmp_path.rglob(".*.lock")) and temporaries(tmp_path) == []


def test_a_read_only_run_is_measured_into_elsewhere(forks, probed, tmp_path):
    with workspace(tmp_path) as space:
        run_dir = Path(shutil.copytree(probed, space / "add-p5"))
        shutil.rmtree(run_dir / formats.tables.MEASURES_DIR)
        for path in [run_dir, *run_dir.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        before = snapshot(space)
        user = NOBODY if os.geteuid() == 0 else None
        out = space / "elsewhere.parquet"
        table_run = forks.run("measure", run_dir, "--metric", "collapse,hsic", "-o", out, "-q", uid=user)
        assert table_run.returncode == 0, table_run.stderr
        assert table_run.stdout.split() == [str(out)] and len(pd.read_parquet(out)) > 0
        rows = forks.run("measure", run_dir, "--metric", "rnc1", "--format", "csv", uid=user)
        assert rows.returncode == 0, rows.stderr
        assert rows.stdout.startswith("run,step,metric,value")
        assert {k: v for k, v in snapshot(space).items() if k in before} == before
        assert not (run_dir / formats.tables.MEASURES_DIR).exists()


# --- probe and measure killed at any write ----------------------------------------------------

# measure --metric collapse,weights,grokking with a save after every checkpoint
# (GROKSCOPE_SAVE_EVERY=0) of the 4-checkpoint TINY run: grokking and weights (step 0), weights
# (steps 4, 8, 12), then collapse (steps 0, 4, 8, 12): 9 renames.
MEASURE = ("measure", "--metric", "collapse,weights,grokking", "-q")
MEASURE_RENAMES = 9
SAVE_EACH_STEP = {"GROKSCOPE_SAVE_EVERY": "0"}
# probe: samples.safetensors, then one features file per checkpoint.
PROBE_RENAMES = 5


def tables_of(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_parquet(p) for p in sorted((run_dir / formats.tables.MEASURES_DIR).glob("*.parquet"))}


@pytest.fixture(scope="module")
def measured(forks, reference, tmp_path_factory) -> dict[str, pd.DataFrame]:
    run_dir = Path(shutil.copytree(reference, tmp_path_factory.mktemp("measured") / "add-p5"))
    completed = forks.run(*MEASURE[:1], run_dir, *MEASURE[1:], env=SAVE_EACH_STEP)
    assert completed.returncode == 0, completed.stderr
    return tables_of(run_dir)


def test_measure_makes_exactly_the_expected_renames(forks, reference, tmp_path):
    for kill, code in ((MEASURE_RENAMES + 1, 0), (MEASURE_RENAMES, -signal.SIGKILL)):
        run_dir = Path(shutil.copytree(reference, tmp_path / str(kill) / "add-p5"))
        completed = forks.run(*MEASURE[:1], run_dir, *MEASURE[1:], env={**SAVE_EACH_STEP, **kill_at(kill)})
        assert completed.returncode == code, completed.stderr


@pytest.mark.parametrize("kill", range(1, MEASURE_RENAMES + 1))
@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGINT"])
def test_measure_killed_at_any_write_keeps_its_saves_and_completes_to_the_same_tables(
        forks, reference, measured, tmp_path, kill, signal_name):
    run_dir = Path(shutil.copytree(reference, tmp_path / "add-p5"))
    killed = forks.run(*MEASURE[:1], run_dir, *MEASURE[1:], env={**SAVE_EACH_STEP, **kill_at(kill, signal_name)})
    if signal_name == "SIGKILL":
        assert killed.returncode == -signal.SIGKILL
    else:  # Ctrl-C: one line, and what was measured is saved on the way out
        assert killed.returncode == 130 and killed.stderr.splitlines() == [
            "error: interrupted; files already written are complete, the rest were not written"]
    saved = tables_of(run_dir)
    for family, table in saved.items():  # every save holds whole steps, equal to an unbroken run's
        steps = set(table["step"])
        expected = measured[family][measured[family]["step"].isin(steps)].reset_index(drop=True)
        pd.testing.assert_frame_equal(table, expected)
    # The rerun computes only the rest: a checkpoint whose steps are all saved may even be gone.
    done = set.intersection(*(set(t["step"]) for f, t in saved.items() if f != "grokking")) \
        if {"collapse", "weights"} <= set(saved) else set()
    for step in done - {max(s for s, _ in formats.run.list_checkpoints(run_dir))}:
        truncate(formats.run.checkpoint_path(run_dir, step))
    again = forks.run(*MEASURE[:1], run_dir, *MEASURE[1:])
    assert again.returncode == 0, again.stderr
    result = tables_of(run_dir)
    assert sorted(result) == sorted(measured)
    for family in measured:
        pd.testing.assert_frame_equal(result[family], measured[family])
    assert temporaries(run_dir) == [] and not list(run_dir.rglob(".*.lock"))


@pytest.fixture(scope="module")
def probed_files(forks, reference, tmp_path_factory) -> dict[str, bytes]:
    run_dir = Path(shutil.copytree(reference, tmp_path_factory.mktemp("probe-reference") / "add-p5"))
    completed = forks.run("probe", run_dir, "-q")
    assert completed.returncode == 0, completed.stderr
    return {p.name: p.read_bytes() for p in (run_dir / formats.features.FEATURES_DIR).iterdir()}


def test_probe_makes_exactly_the_expected_renames(forks, reference, tmp_path):
    for kill, code in ((PROBE_RENAMES + 1, 0), (PROBE_RENAMES, -signal.SIGKILL)):
        run_dir = Path(shutil.copytree(reference, tmp_path / str(kill) / "add-p5"))
        assert forks.run("probe", run_dir, "-q", env=kill_at(kill)).returncode == code


@pytest.mark.parametrize("kill", range(1, PROBE_RENAMES + 1))
def test_probe_killed_at_any_write_completes_to_the_same_files(forks, reference, probed_files, tmp_path, kill):
    run_dir = Path(shutil.copytree(reference, tmp_path / "add-p5"))
    assert forks.run("probe", run_dir, "-q", env=kill_at(kill)).returncode == -signal.SIGKILL
    kept = {p.name: p.read_bytes() for p in (run_dir / formats.features.FEATURES_DIR).iterdir() if not p.name.startswith(".")}
    assert all(probed_files[name] == data for name, data in kept.items())  # whole files only
    again = forks.run("probe", run_dir, "-q")
    assert again.returncode == 0, again.stderr
    assert {p.name: p.read_bytes() for p in (run_dir / formats.features.FEATURES_DIR).iterdir()} == probed_files
    assert temporaries(run_dir) == []


# --- atomic writes: temporaries -------------------------------------------------------------


def test_a_symlink_at_the_temporary_name_is_never_followed(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".run.json.tmp-planted").symlink_to(victim)
    (folder / ".run.json.tmp-dangling").symlink_to(tmp_path / "created-outside")
    # The names are random; make the first two draws land on the planted links.
    draws = iter([".run.json.tmp-planted", ".run.json.tmp-dangling"])
    drawn = formats.atomic._temporary_name
    monkeypatch.setattr(formats.atomic, "_temporary_name", lambda path: next(draws, None) or drawn(path))

    formats.atomic.write_text(folder / "run.json", "{}")
    assert (folder / "run.json").read_text() == "{}" and not (folder / "run.json").is_symlink()
    assert victim.read_text() == "the user's"
    assert not (tmp_path / "created-outside").exists()
    assert (folder / ".run.json.tmp-planted").is_symlink()  # not ours: left alone


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen(["sleep", "60"])
    here = formats.atomic._host_tag()
    elsewhere = "0" * 8 if here != "0" * 8 else "1" * 8
    try:
        stale = [
            f".x.json.tmp-{here}-{dead.pid}-0a1b2c3d",  # this machine, writer gone
            f".step-00000004.safetensors.tmp-{dead.pid}",  # an older grokscope's name, writer gone
            f".old.png.tmp-{elsewhere}-{dead.pid}-0a1b2c3d",  # another machine's, two days old
        ]
        kept = [
            f".z.json.tmp-{here}-{live.pid}-0a1b2c3d",  # its writer is still running
            f".new.png.tmp-{elsewhere}-{dead.pid}-0a1b2c3d",  # another machine's, fresh: cannot tell
            f".notes.tmp-{dead.pid}",  # the user's, merely alike
            ".x.json.tmp-abc", f"x.json.tmp-{dead.pid}", f".x.json.tmp-{here}-{dead.pid}", "data.csv",
        ]
        for name in stale + kept:
            (tmp_path / name).write_text("")
        two_days_ago = time.time() - 2 * 24 * 3600
        os.utime(tmp_path / stale[2], (two_days_ago, two_days_ago))
        folder = f".d.json.tmp-{here}-{dead.pid}-0a1b2c3d"
        (tmp_path / folder).mkdir()  # a folder is never a temporary of ours

        formats.atomic.write_text(tmp_path / "x.json", "{}")  # the first write into a folder cleans it
        left = {p.name for p in tmp_path.iterdir()}
        assert left == {*kept, "x.json", folder}
    finally:
        live.kill()
        live.wait()


def test_files_honour_the_umask(forks, tmp_path):
    for umask in (0o027, 0o002):
        out = tmp_path / oct(umask)
        assert forks.run("train", *TINY, "--out", out, umask=umask).returncode == 0
        for path in [out, *out.rglob("*")]:
            wanted = (0o777 if path.is_dir() else 0o666) & ~umask
            assert path.stat().st_mode & 0o777 == wanted, (path, oct(path.stat().st_mode))


# --- NaN ------------------------------------------------------------------------------------


def test_divergence_is_said_once_when_training_and_when_resuming(forks, tmp_path):
    # lr 1e30: after one step the weights overflow float32; the first evaluation (step 2) sees it.
    args = ["train", *TINY, "--lr", "1e30", "--out", tmp_path]
    killed = forks.run(*args, env=kill_at(9))
    assert killed.returncode == -signal.SIGKILL
    assert killed.stderr.count("diverged") == 1 and "from step 2 on" in killed.stderr, killed.stderr
    resumed = forks.run(*args, "--resume")
    assert resumed.returncode == 0
    lines = resumed.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning:") and "diverged" in lines[0], resumed.stderr
    assert "from step 4 on" in lines[0]  # the step it resumed from already held NaN


# --- output: stdout is never captured, logs get plain lines, messages are not markup ---------


def test_results_reach_stdout_while_a_progress_bar_is_live(capsys):
    import io

    from rich.console import Console

    from grokscope.cli.output import Output

    terminal = io.StringIO()
    output = Output(console=Console(file=terminal, force_terminal=True, width=100))
    with output.progress() as bar:
        task = bar.add_task("probe", total=2)
        output.result("runs/a/features/step-00000001.safetensors")
        bar.advance(task)
    assert capsys.readouterr().out == "runs/a/features/step-00000001.safetensors\n"
    assert "step-00000001" not in terminal.getvalue()
    assert "probe" in terminal.getvalue()  # the bar was drawn on the terminal all the same


@pytest.mark.slow
def test_pipeline_with_stderr_on_a_terminal_sends_paths_down_the_pipe(tmp_path):
    """The README's pipeline as typed in a terminal: stderr a pseudo-terminal (live progress bars),
    stdout pipes. probe's paths must reach measure, which must write its table."""
    master, slave = pty.openpty()
    terminal = []

    def drain():  # a terminal that nobody reads would block the bars
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            terminal.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TERM": "xterm-256color", "COLUMNS": "120"}
    grokscope = [sys.executable, "-m", "grokscope"]
    out = tmp_path / "runs"
    train = subprocess.Popen([*grokscope, "train", "--p", "5", "--width", "8", "--steps", "20", "--save-every", "10",
                              "--save-log", "0", "--out", str(out)], stdout=subprocess.PIPE, stderr=slave, env=env)
    probe = subprocess.Popen([*grokscope, "probe", "-"], stdin=train.stdout, stdout=subprocess.PIPE, stderr=slave,
                             env=env)
    train.stdout.close()
    measure = subprocess.Popen([*grokscope, "measure", "-", "--metric", "collapse"], stdin=probe.stdout,
                               stdout=subprocess.PIPE, stderr=slave, env=env)
    probe.stdout.close()
    stdout, _ = measure.communicate(timeout=600)
    assert (train.wait(timeout=60), probe.wait(timeout=60), measure.returncode) == (0, 0, 0)
    os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    assert stdout.decode().split() == [str(out / "add-p5" / "measures" / "collapse.parquet")]
    assert len(formats.features.list_features(out / "add-p5")) == 3
    assert b"\x1b[" in b"".join(terminal)  # the bars really were live on the terminal


def test_logs_get_a_plain_progress_line_every_n_seconds(forks, tmp_path):
    every_update = forks.run("train", *[a for a in TINY if a != "-q"], "--out", tmp_path / "a",
                             env={"GROKSCOPE_PROGRESS_EVERY": "0", "NO_COLOR": "1"})
    assert every_update.returncode == 0
    import re

    progress = [line for line in every_update.stderr.splitlines()
                if re.match(r"^add-p5: \d+/12 \(\d+%\), \d+:\d\d elapsed", line)]
    assert len(progress) >= 6, every_update.stderr  # one per evaluation (every 2 steps)
    assert "loss" in progress[-1] and "12/12 (100%)" in progress[-1]
    assert "\x1b" not in every_update.stderr

    # The default (a line a minute) prints none in a run of a second; -q none at all.
    default = forks.run("train", *[a for a in TINY if a != "-q"], "--out", tmp_path / "b")
    assert default.returncode == 0 and "/12 (" not in default.stderr
    quiet = forks.run("train", *TINY, "--out", tmp_path / "c", env={"GROKSCOPE_PROGRESS_EVERY": "0"})
    assert quiet.returncode == 0 and quiet.stderr == ""
    bad = forks.run("train", *[a for a in TINY if a != "-q"], "--out", tmp_path / "d",
                    env={"GROKSCOPE_PROGRESS_EVERY": "soon"})
    assert_one_error_line(bad, 2, ["GROKSCOPE_PROGRESS_EVERY", "'soon'"])


def test_messages_are_never_read_as_markup(tmp_path, capsys):
    from grokscope.cli.output import Output

    output = Output()
    output.error("runs/[red]x[/red]/run.json: broken")
    output.warn("a [/] b")
    output.info("[bold]c")
    assert capsys.readouterr().err.splitlines() == [
        "error: runs/[red]x[/red]/run.json: broken", "warning: a [/] b", "[bold]c",
    ]
    result = CliRunner().invoke(app, ["train", *[a for a in TINY if a != "-q"], "--name", "[bold]a[red]b",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "[bold]a[red]b")
    assert f"{tmp_path / '[bold]a[red]b'}: 12 steps" in result.stderr


# --- run identity: every setting a column, --data absolute ----------------------------------


def test_every_hyperparameter_is_a_column(tmp_path):
    import dataclasses

    from grokscope.config import RunConfig, hyperparameter_columns, hyperparameters
    from grokscope.plotting.summary import COLUMNS

    result = CliRunner().invoke(app, ["train", *TINY, "--train-size", "10", "--batch-size", "4", "--beta2", "0.95",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    config = formats.run.read_run(tmp_path / "add-p5")
    columns = hyperparameters(config)
    assert columns["train_size"] == 10 and columns["train_fraction"] is None
    assert columns["batch_size"] == 4 and columns["beta2"] == 0.95 and columns["steps"] == 12
    # Every field of the task, model and optimizer settings has its column (name-> task/optimizer).
    for part in (config.task, config.model, config.optim):
        for item in dataclasses.fields(part):
            assert {"name": None, "path": "data", "kind": "model"}.get(item.name, item.name) in columns or item.name == "name"
    assert tuple(columns) == hyperparameter_columns()
    assert set(hyperparameter_columns()) <= set(COLUMNS)

    report = CliRunner().invoke(app, ["report", str(tmp_path), "--format", "json"])
    assert report.exit_code == 0, report.output
    row = json.loads(report.stdout)
    assert row["train_size"] == 10 and row["train_fraction"] is None and row["batch_size"] == 4


def test_data_is_stored_absolute(tmp_path, monkeypatch):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    np.savez(tmp_path / "data.npz", X=x, y=(x[:, 0] > 0).astype(np.int64))
    monkeypatch.chdir(tmp_path)
    args = ["train", "--task", "npz", "--data", "data.npz", "--width", "4", "--steps", "2", "--save-log", "0", "-q",
            "--out", str(tmp_path / "runs")]
    assert CliRunner().invoke(app, args).exit_code == 0
    stored = json.loads((tmp_path / "runs" / "npz" / "run.json").read_text())
    assert stored["task"]["path"] == str(tmp_path / "data.npz")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    from grokscope.tasks import load_task

    assert len(load_task(formats.run.read_run(tmp_path / "runs" / "npz").task).y) == 30


@pytest.mark.slow
def test_safetensors_files_are_the_same_bytes_in_every_process(tmp_path):
    # The library orders its header's keys differently in each process; a resumed run must still
    # write the bytes an unbroken one would.
    import subprocess
    import sys

    script = ("import sys, torch\nfrom grokscope import formats\n"
              "formats.tensors.save_tensors(sys.argv[1], {'w': torch.arange(6.).reshape(2, 3), 'b': torch.ones(2), "
              "'m': torch.zeros(3, dtype=torch.bool)}, {'grokscope.step': '3', 'format': 'pt', 'a': 'b', 'z': 'y'})\n")
    paths = [tmp_path / f"{i}.safetensors" for i in range(3)]
    for path in paths:
        subprocess.run([sys.executable, "-c", script, str(path)], check=True)
    assert len({path.read_bytes() for path in paths}) == 1
    from safetensors import safe_open

    with safe_open(str(paths[0]), framework="pt") as handle:
        assert handle.metadata() == {"grokscope.step": "3", "format": "pt", "a": "b", "z": "y"}
        assert handle.get_tensor("w").tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
