"""Parallel work on a real Dask cluster: a `dask scheduler` and two `dask worker` processes on
localhost. measure and train on it give exactly what a serial run gives, also when a worker is
killed mid-run; a corrupt checkpoint is named and the rest completes; mistakes are one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from safetensors import safe_open
from typer.testing import CliRunner

from grokscope import execution, formats
from grokscope.cli import app

pytest.importorskip("distributed")

DASK = str(Path(sys.executable).parent / "dask")
GROKSCOPE = [sys.executable, "-m", "grokscope"]
SWEEP = ["--p", "11", "--width", "24", "--steps", "40", "--save-every", "4", "--save-log", "0"]
# o-info with a few bins and draws keeps each task well under a second on a loaded 2-core box,
# while every feature family is measured.
MEASURE = ["--metric", "collapse,hsic,o-info,weights", "--bins", "4", "--tie-draws", "2", "-q"]
FAMILIES = ("collapse", "hsic", "oinfo", "weights")


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A scheduler and its workers, each a process of its own; ``stop`` ends every one."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen] = []
        self.workers: dict[str, subprocess.Popen] = {}
        self._start([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"],
                    "scheduler")

    def _start(self, command: list[str], name: str) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "w")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def add_worker(self, name: str) -> None:
        # --no-nanny: a SIGKILL ends the worker for good (a nanny would restart it).
        self.workers[name] = self._start([DASK, "worker", self.address, "--nthreads", "1", "--no-nanny",
                                          "--no-dashboard", "--host", "127.0.0.1", "--name", name], name)

    def client(self):
        from distributed import Client

        return Client(self.address, timeout=60)

    def wait_for_workers(self, names: set[str], timeout: float = 180) -> None:
        with self.client() as client:
            deadline = time.monotonic() + timeout
            while {w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()} != names:
                if time.monotonic() > deadline:
                    logs = {p.name: p.read_text()[-2000:] for p in self.log_dir.iterdir()}
                    raise AssertionError(f"workers {names} did not join: {logs}")
                time.sleep(0.2)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, request):
    cluster = Cluster(tmp_path_factory.mktemp("dask-logs"))
    request.addfinalizer(cluster.stop)  # before anything can fail: no process outlives the tests
    for name in ("a", "b"):
        cluster.add_worker(name)
    cluster.wait_for_workers({"a", "b"})
    return cluster


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep")
    result = invoke("train", *SWEEP, "--weight-decay", "0.1,2", "--out", str(out), "-q")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def serial_tables(sweep, tmp_path_factory) -> dict:
    out = Path(shutil.copytree(sweep, tmp_path_factory.mktemp("serial") / "runs"))
    result = invoke("measure", str(out), *MEASURE, "--threads", "1")
    assert result.exit_code == 0, result.output
    return tables_of(out)


def tables_of(out: Path) -> dict:
    return {(run.name, family): pd.read_parquet(formats.tables.measures_path(run, family))
            for run in sorted(out.iterdir()) for family in FAMILIES}


def grokscope(*args, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*GROKSCOPE, *map(str, args)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})}, **kwargs)


def assert_same_tables(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for key in expected:
        pd.testing.assert_frame_equal(got[key], expected[key], obj=str(key))


def test_measure_on_a_scheduler_equals_a_serial_run(cluster, sweep, serial_tables, tmp_path):
    out = Path(shutil.copytree(sweep, tmp_path / "runs"))
    done = grokscope("measure", out, *MEASURE, "--scheduler", cluster.address)
    assert done.returncode == 0, done.stderr
    expected = {str(formats.tables.measures_path(run, f)) for run in out.iterdir() for f in FAMILIES}
    assert set(done.stdout.split()) == expected
    assert_same_tables(tables_of(out), serial_tables)


def test_a_worker_killed_mid_run_loses_nothing(cluster, sweep, serial_tables, tmp_path):
    out = Path(shutil.copytree(sweep, tmp_path / "runs"))
    command = subprocess.Popen([*GROKSCOPE, "measure", str(out), *MEASURE, "--scheduler", cluster.address],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with cluster.client() as client:
            victim = None
            deadline = time.monotonic() + 300
            while victim is None and time.monotonic() < deadline and command.poll() is None:
                busy = client.processing()  # worker address -> keys of the tasks it runs now
                names = {address: info["name"]
                         for address, info in client.scheduler_info(n_workers=-1)["workers"].items()}
                victim = next((names[a] for a, keys in busy.items() if keys and names.get(a) == "a"), None)
                time.sleep(0.05)
            assert victim == "a", "worker a never ran a task of the measure"
            os.killpg(cluster.workers["a"].pid, signal.SIGKILL)  # with a task of the measure running
        stdout, stderr = command.communicate(timeout=600)
    finally:
        if command.poll() is None:
            command.kill()
    assert command.returncode == 0, stderr
    assert_same_tables(tables_of(out), serial_tables)
    cluster.add_worker("a2")  # the next tests get two workers again
    cluster.wait_for_workers({"b", "a2"})


def test_a_corrupt_checkpoint_is_named_and_the_rest_is_measured(cluster, sweep, serial_tables, tmp_path):
    out = Path(shutil.copytree(sweep, tmp_path / "runs"))
    run = sorted(out.iterdir())[0]
    broken = formats.run.checkpoint_path(run, 16)
    broken.write_bytes(broken.read_bytes()[:100])
    done = grokscope("measure", out, *MEASURE, "--scheduler", cluster.address)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors and all(str(broken) in line for line in errors), done.stderr
    for (name, family), expected in serial_tables.items():
        got = pd.read_parquet(formats.tables.measures_path(out / name, family))
        if name == run.name:
            expected = expected[expected["step"] != 16].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected, obj=f"{name} {family}")


def test_train_on_a_scheduler_is_bit_identical_to_serial(cluster, tmp_path):
    args = [*SWEEP, "--weight-decay", "0.1,2", "--seed", "0-1", "-q"]
    serial = invoke("train", *args, "--out", str(tmp_path / "serial"), "--threads", "1")
    assert serial.exit_code == 0, serial.output
    done = grokscope("train", *args, "--out", tmp_path / "dask", "--scheduler", cluster.address)
    assert done.returncode == 0, done.stderr
    runs = sorted(p.name for p in (tmp_path / "serial").iterdir())
    assert len(runs) == 4 and sorted(Path(p).name for p in done.stdout.split()) == runs
    for name in runs:
        same_run_files(tmp_path / "serial" / name, tmp_path / "dask" / name)


def test_probe_on_a_scheduler_writes_the_same_files_as_serial(cluster, sweep, tmp_path):
    serial, dask = (Path(shutil.copytree(sweep, tmp_path / name)) for name in ("serial", "dask"))
    assert invoke("probe", str(serial), "-q", "--threads", "1").exit_code == 0
    done = grokscope("probe", dask, "-q", "--scheduler", cluster.address)
    assert done.returncode == 0, done.stderr
    for run in sorted(serial.iterdir()):
        files = sorted(p.name for p in (run / formats.features.FEATURES_DIR).iterdir())
        assert len(files) == 12  # samples and 11 checkpoints
        assert {str(dask / run.name / formats.features.FEATURES_DIR / f) for f in files if f.startswith("step-")} <= \
            set(done.stdout.split())
        for name in files:
            assert (run / formats.features.FEATURES_DIR / name).read_bytes() == \
                (dask / run.name / formats.features.FEATURES_DIR / name).read_bytes(), name


def same_run_files(a: Path, b: Path) -> None:
    """Every file of two runs equal: tensors by their bytes, run.json but its creation time, the
    rest byte for byte."""
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for file in files:
        if file.suffix == ".safetensors":
            with safe_open(a / file, "pt") as x, safe_open(b / file, "pt") as y:
                assert x.metadata() == y.metadata() and sorted(x.keys()) == sorted(y.keys())
                for key in x.keys():
                    assert x.get_tensor(key).numpy().tobytes() == y.get_tensor(key).numpy().tobytes(), (file, key)
        elif file.name == "run.json":
            first, second = (json.loads((r / file).read_text()) for r in (a, b))
            first.pop("created"), second.pop("created")
            assert first == second
        else:
            assert (a / file).read_bytes() == (b / file).read_bytes(), file


@pytest.mark.parametrize("kill", [1, 3, 6])  # before run.json; before the first commit; after it
def test_a_rerun_train_task_takes_over_what_its_killed_attempt_left(tmp_path, kill):
    from grokscope.pipeline.runs import train_run

    tiny = ["--p", "5", "--width", "8", "--steps", "12", "--save-every", "4", "--save-log", "0", "-q"]
    assert invoke("train", *tiny, "--out", str(tmp_path / "whole"), "--threads", "1").exit_code == 0
    killed = grokscope("train", *tiny, "--out", tmp_path / "killed", "--threads", "1",
                       env={formats.atomic.KILL_HOOK_ENV: f"{kill}:SIGKILL"})
    assert killed.returncode == -signal.SIGKILL
    run_dir = tmp_path / "killed" / "add-p5"
    config = formats.run.read_run(tmp_path / "whole" / "add-p5")
    # What Dask does when the worker running the task died: the same task again, planned "new".
    execution.set_threads(1)
    train_run(run_dir, config, "new", "cpu")
    same_run_files(tmp_path / "whole" / "add-p5", run_dir)


def test_tasks_on_a_scheduler_share_the_cores_among_the_workers_of_a_host(cluster):
    import torch

    with execution.open_executor(scheduler=cluster.address) as executor:
        assert executor.slots == 2  # two single-thread workers on this host
        [outcome] = executor.map([execution.Task(torch.get_num_threads)])
        assert outcome.result == max(1, execution.usable_cores() // 2)
    with execution.open_executor(scheduler=cluster.address, threads=3) as executor:
        [outcome] = executor.map([execution.Task(torch.get_num_threads)])
        assert outcome.result == 3


def test_an_unreachable_scheduler_is_one_line(sweep, tmp_path):
    nobody = f"tcp://127.0.0.1:{free_port()}"
    for args, env, named in ((["--scheduler", nobody], {}, "--scheduler"),
                             ([], {execution.SCHEDULER_ENV: nobody}, execution.SCHEDULER_ENV)):
        done = grokscope("measure", sweep, "--metric", "weights", *args, env=env)
        assert done.returncode == 2
        [line] = done.stderr.splitlines()
        assert line.startswith(f"error: {named}: cannot reach the Dask scheduler at {nobody} (")
        assert not any((run / formats.tables.MEASURES_DIR).exists() for run in sweep.iterdir())


def test_without_dask_workers_use_a_process_pool_and_scheduler_is_refused(sweep, serial_tables, tmp_path):
    blocker = tmp_path / "no-dask"
    blocker.mkdir()
    (blocker / "distributed.py").write_text("raise ImportError('distributed is not installed')\n")
    env = {"PYTHONPATH": str(blocker)}
    out = Path(shutil.copytree(sweep, tmp_path / "runs"))
    done = grokscope("measure", out, *MEASURE, "--workers", "2", env=env)
    assert done.returncode == 0, done.stderr
    assert_same_tables(tables_of(out), serial_tables)
    refused = grokscope("measure", out, "--metric", "weights", "--scheduler", "tcp://127.0.0.1:1", env=env)
    assert refused.returncode == 2 and refused.stderr.splitlines() == [
        "error: --scheduler: running on a Dask scheduler needs Dask's distributed package: "
        "pip install 'grokscope[dask]'"]


def test_ctrl_c_with_local_workers_is_one_line_and_keeps_what_was_measured(sweep, serial_tables, tmp_path):
    out = Path(shutil.copytree(sweep, tmp_path / "runs"))
    # Its own process group, as a shell gives a command: Ctrl-C reaches the command and its workers.
    command = subprocess.Popen([*GROKSCOPE, "measure", str(out), *MEASURE, "--workers", "2"], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                               env={**os.environ, "GROKSCOPE_SAVE_EVERY": "0"})
    try:
        deadline = time.monotonic() + 300
        while not list(out.rglob("oinfo.parquet")) and time.monotonic() < deadline and command.poll() is None:
            time.sleep(0.05)
        assert command.poll() is None, "measure ended before it could be interrupted"
        os.killpg(command.pid, signal.SIGINT)
        stdout, stderr = command.communicate(timeout=120)
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)
    assert command.returncode == 130
    assert stderr.splitlines() == ["error: interrupted; files already written are complete, the rest were not written"]
    for (name, family), expected in serial_tables.items():  # saved tables hold whole, equal steps
        path = formats.tables.measures_path(out / name, family)
        if path.is_file():
            got = pd.read_parquet(path)
            pd.testing.assert_frame_equal(got, expected[expected["step"].isin(set(got["step"]))].reset_index(drop=True))
    deadline = time.monotonic() + 60  # and no worker process outlives the command
    while time.monotonic() < deadline:
        try:
            os.killpg(command.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("worker processes of the interrupted command are still running")


def test_task_threads_never_oversubscribe_the_cores():
    cores = execution.usable_cores()
    for workers in range(1, cores + 1):
        threads = execution.task_threads(workers).per_task
        assert 1 <= threads and workers * threads <= cores
    assert execution.task_threads(4, threads=3).per_task == 3


def test_the_model_running_checkpoint_families_on_a_scheduler_equal_a_serial_run(cluster, sweep, tmp_path):
    """complexity and fourier run the model per checkpoint and are shared out among the workers."""
    families = ("complexity", "fourier")
    args = ["--metric", ",".join(families), "--steps", "every:3", "-q"]
    serial = Path(shutil.copytree(sweep, tmp_path / "serial"))
    done = grokscope("measure", serial, *args, "--threads", "1")
    assert done.returncode == 0, done.stderr
    pooled = Path(shutil.copytree(sweep, tmp_path / "pooled"))
    done = grokscope("measure", pooled, *args, "--scheduler", cluster.address)
    assert done.returncode == 0, done.stderr
    for run in sorted(serial.iterdir()):
        for family in families:
            expected = pd.read_parquet(formats.tables.measures_path(run, family))
            assert len(expected) and expected["step"].nunique() > 1
            pd.testing.assert_frame_equal(pd.read_parquet(formats.tables.measures_path(pooled / run.name, family)), expected)


def test_workers_that_cannot_gain_are_named_and_those_that_can_are_not():
    from grokscope.execution import _oversubscribed, task_threads, usable_cores

    assert _oversubscribed(2, 1, 2) == "" and _oversubscribed(1, 2, 2) == "" and _oversubscribed(4, 4, 16) == ""
    assert _oversubscribed(3, 1, 2) == ("--workers 3: more workers than the 2 usable core(s), which they share; "
                                        "expect no gain over --workers 2")
    assert _oversubscribed(2, 2, 2) == ("--workers 2 x --threads 2: more threads than the 2 usable core(s); "
                                        "expect no gain over --threads 1")
    cores = usable_cores()
    # The default share never oversubscribes: workers x threads <= cores whenever workers <= cores.
    for workers in range(1, cores + 1):
        chosen = task_threads(workers)
        assert workers * chosen.per_task <= cores and chosen.warning == ""
    assert "more workers than" in task_threads(cores + 1).warning
