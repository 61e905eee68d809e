"""Sweeps in parallel, and threads on a busy machine.

Three parts, each printed as a table with its baseline side by side and the ratios:

  measure   a sweep of R runs x C checkpoints (o-info + collapse, features computed in memory):
            serial (the baseline: one process) against --workers 2 (an embedded local Dask
            cluster) and --scheduler (a `dask scheduler` and two `dask worker --nthreads 1`
            processes this script starts on 127.0.0.1). Wall clock of the whole command,
            start-up included; the tables are checked equal to the serial run's.
  train     a sweep of R runs: serial against --workers 2, wall clock, checkpoints checked
            bit-identical.
  threads   one full-batch training step of the default model ((a+b) mod 97, 2p -> 250 -> p),
            with the machine loaded by other processes (``--hogs`` busy-looping processes this
            script starts, on top of whatever else runs): torch's default threads (one per core,
            what grokscope train used before) against grokscope's default
            (``execution.task_threads``). Median over interleaved repeats, in one process.

    .venv/bin/python benchmarks/parallel.py --part measure --runs 4 --checkpoints 12
    .venv/bin/python benchmarks/parallel.py --part train --runs 4 --steps 300
    .venv/bin/python benchmarks/parallel.py --part threads --hogs 2 --steps 20 --repeats 5
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GROKSCOPE = [sys.executable, "-m", "grokscope"]
DASK = str(Path(sys.executable).parent / "dask")


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


LOADS: list[float] = []  # the one-minute load average as each timed command started


def run(*args, env=None) -> float:
    """Seconds one grokscope command takes, wall clock; fails loudly if the command fails."""
    LOADS.append(os.getloadavg()[0])
    started = time.perf_counter()
    done = subprocess.run([*GROKSCOPE, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise SystemExit(f"grokscope {' '.join(map(str, args))} failed:\n{done.stderr}")
    return time.perf_counter() - started


class LocalScheduler:
    """A `dask scheduler` and two single-thread `dask worker` processes on 127.0.0.1."""

    def __enter__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.address = f"tcp://127.0.0.1:{port}"
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.processes = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                            "--no-dashboard"], **quiet)]
        self.processes += [subprocess.Popen([DASK, "worker", self.address, "--nthreads", "1", "--no-dashboard",
                                             "--host", "127.0.0.1"], **quiet) for _ in range(2)]
        from distributed import Client

        with Client(self.address, timeout=120) as client:
            client.wait_for_workers(2, timeout=300)
        return self

    def __exit__(self, *exc):
        for process in self.processes:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def measure_part(args) -> None:
    import pandas as pd

    from grokscope import formats

    with tempfile.TemporaryDirectory() as folder:
        sweep = Path(folder) / "sweep"
        seeds = f"0-{args.runs - 1}"
        every = max(1, (args.measure_steps or args.steps) // args.checkpoints)
        run("train", "--p", args.p, "--steps", every * (args.checkpoints - 1), "--save-every", every,
            "--save-log", 0, "--seed", seeds, "--out", sweep, "-q")
        metric = ["--metric", "o-info,collapse", "-q"]
        copies = {name: Path(shutil.copytree(sweep, Path(folder) / name)) for name in ("serial", "workers", "pool", "dask")}
        print(f"measure: {args.runs} runs x {args.checkpoints} checkpoints, p {args.p} (width 250), o-info + "
              f"collapse, features in memory; {load()} at start")
        seconds = {"serial (baseline)": run("measure", copies["serial"], *metric)}
        seconds["--workers 2 (local Dask cluster)"] = run("measure", copies["workers"], *metric, "--workers", 2)
        with tempfile.TemporaryDirectory() as blocker:  # as if Dask were not installed
            (Path(blocker) / "distributed.py").write_text("raise ImportError('not installed')\n")
            seconds["--workers 2 (process pool, no Dask)"] = run("measure", copies["pool"], *metric, "--workers", 2,
                                                                 env={"PYTHONPATH": blocker})
        with LocalScheduler() as scheduler:
            seconds["--scheduler (2 workers x 1 thread)"] = run("measure", copies["dask"], *metric,
                                                                 "--scheduler", scheduler.address)
        for name in ("workers", "pool", "dask"):
            for run_dir in sorted(copies["serial"].iterdir()):
                for family in ("oinfo", "collapse"):
                    pd.testing.assert_frame_equal(pd.read_parquet(formats.tables.measures_path(run_dir, family)),
                                                  pd.read_parquet(formats.tables.measures_path(copies[name] / run_dir.name,
                                                                                      family)))
        table(seconds, f"tables equal to the serial run's; {load()} at the end")


def train_part(args) -> None:
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as folder:
        common = ["--steps", args.steps, "--seed", f"0-{args.runs - 1}", "-q"]
        print(f"train: {args.runs} runs of the default model, {args.steps} steps each; {load()} at start")
        seconds = {"serial (baseline)": run("train", *common, "--out", Path(folder) / "serial"),
                   "--workers 2 (local Dask cluster)": run("train", *common, "--out", Path(folder) / "workers",
                                                           "--workers", 2)}
        for checkpoint in (Path(folder) / "serial").rglob("*.safetensors"):
            other = Path(folder) / "workers" / checkpoint.relative_to(Path(folder) / "serial")
            a, b = load_file(checkpoint), load_file(other)
            assert all(a[k].numpy().tobytes() == b[k].numpy().tobytes() for k in a), checkpoint
        table(seconds, f"checkpoints bit-identical; {load()} at the end")


def hog() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        pass


def threads_part(args) -> None:
    import torch

    from grokscope import execution
    from grokscope.config import RunConfig, ScheduleConfig
    from grokscope.training import Trainer

    torch_default = torch.get_num_threads()
    hogs = [multiprocessing.Process(target=hog, daemon=True) for _ in range(args.hogs)]
    for process in hogs:
        process.start()
    try:
        time.sleep(args.settle)  # let the load average see the hogs
        ours = execution.task_threads(1)
        config = RunConfig(schedule=ScheduleConfig(steps=10**6, save_every=0, save_log=0)).resolved()
        with tempfile.TemporaryDirectory() as folder:
            trainer = Trainer(config, Path(folder) / "run", torch.device("cpu"))
            settings = {f"torch default ({torch_default} threads, baseline)": torch_default,
                        f"grokscope default ({ours.per_task} thread(s))": ours.per_task}
            times: dict[str, list[float]] = {name: [] for name in settings}
            for _ in range(args.repeats):
                for name, n in settings.items():
                    torch.set_num_threads(n)
                    trainer.train_step()  # warm-up at this thread count
                    started = time.perf_counter()
                    for _ in range(args.steps):
                        trainer.train_step()
                    times[name].append((time.perf_counter() - started) / args.steps)
        print(f"threads: one training step of the default model, {args.hogs} busy-looping processes started "
              f"beside it; {load()}; grokscope's choice: {ours.reason or 'the plain share'}")
        table({name: statistics.median(t) for name, t in times.items()},
              f"median of {args.repeats} interleaved repeats of {args.steps} steps", unit="s/step")
    finally:
        for process in hogs:
            process.kill()


def table(seconds: dict[str, float], note: str, unit: str = "s") -> None:
    """Rows with their ratio to the first (the baseline), and the load each started at."""
    baseline = next(iter(seconds.values()))
    loads = LOADS[-len(seconds):] if len(LOADS) >= len(seconds) else [math.nan] * len(seconds)
    print(f"  {'':40} {unit:>10} {'speed-up vs baseline':>22} {'load at start':>14}")
    for (name, value), started_at in zip(seconds.items(), loads):
        print(f"  {name:40} {value:>10.4f} {baseline / value:>21.2f}x {started_at:>14.1f}")
    print(f"  ({note})")
    LOADS.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("measure", "train", "threads", "all"), default="all")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--checkpoints", type=int, default=12)
    parser.add_argument("--p", type=int, default=31)
    parser.add_argument("--measure-steps", type=int, default=None,
                        help="measure: training steps of each run (default: --steps)")
    parser.add_argument("--steps", type=int, default=300, help="train: steps per run; threads: steps per repeat")
    parser.add_argument("--hogs", type=int, default=2)
    parser.add_argument("--settle", type=float, default=20.0, help="threads: seconds the hogs run before timing")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.part in ("measure", "all"):
        measure_part(args)
    if args.part in ("train", "all"):
        train_part(args)
    if args.part in ("threads", "all"):
        if args.part == "all":
            args.steps = 20
        threads_part(args)


if __name__ == "__main__":
    main()
