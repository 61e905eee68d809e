"""Where the parallel work of ``train``, ``probe`` and ``measure`` runs, and with how many threads.

Every command hands its work over as :class:`Task` objects (a top-level function and plain
arguments: a training run, a group of checkpoints) and gets the results back as they complete,
in the command's process, which alone writes tables and prints. Three places run them:

- in the command's own process (``--workers 1``, the default), one after another;
- a local pool of ``--workers N`` processes: an embedded ``distributed.LocalCluster`` (one
  thread per worker process) when Dask is installed (``pip install 'grokscope[dask]'``), else a
  spawned :class:`concurrent.futures.ProcessPoolExecutor`;
- an existing Dask scheduler (``--scheduler tcp://HOST:PORT`` or ``GROKSCOPE_SCHEDULER``), whose
  workers may be on other machines (docs/scaling.md). They must see the same files at the same
  paths and have grokscope installed.

Tasks are pure apart from their own atomic files (``train``, ``probe``): rerunning one gives the
same result, which is what lets Dask rerun the tasks of a worker that died elsewhere.

Threads: each task sets torch's intra-op threads before it starts, so that the workers of one
machine never ask for more threads than its cores (:func:`task_threads`); ``--threads`` overrides.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from grokscope import dask_cluster
from grokscope.errors import GrokscopeError

SCHEDULER_ENV = "GROKSCOPE_SCHEDULER"


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (what taskset, SLURM and containers pin),
    lowered to the cgroup's CPU quota where one is set (``cpu.max``, Kubernetes limits)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def idle_cores(cores: int) -> int:
    """Cores not taken by other processes: ``cores`` less the one-minute load average (read
    before this command starts its own work), at least 1. Threads beyond it wait on each other:
    an OpenMP thread that is descheduled stalls every step at its barrier."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores
    return max(1, min(cores, int(cores - load + 0.5)))


@dataclass(frozen=True)
class Threads:
    """Intra-op threads per task, and why (said on stderr when it is not the plain share)."""

    per_task: int
    reason: str = ""
    # Said on stderr by the command: the workers asked for cannot run faster than fewer would.
    warning: str = ""


def task_threads(workers: int, threads: int | None = None) -> Threads:
    """Threads for each of ``workers`` tasks running at once on this machine.

    ``threads`` (``--threads``) is taken as given. Otherwise the usable cores are shared among
    the workers (never workers x threads > cores), and lowered to the cores that other processes
    leave idle: on a busy machine torch's default of one thread per core made one training step
    of the default model many times slower (benchmarks/threads.py).
    """
    cores = usable_cores()
    if threads is not None:
        if threads < 1:
            raise GrokscopeError(f"--threads: must be at least 1, got {threads}")
        return Threads(threads, warning=_oversubscribed(workers, threads, cores))
    share = max(1, cores // max(1, workers))
    idle = idle_cores(cores)
    busy = max(1, idle // max(1, workers))
    if busy < share:
        return Threads(busy, f"{busy} thread(s) per task: the machine is busy "
                             f"(load {os.getloadavg()[0]:.1f} on {cores} cores)", _oversubscribed(workers, busy, cores))
    return Threads(share, warning=_oversubscribed(workers, share, cores))


def _oversubscribed(workers: int, threads: int, cores: int) -> str:
    """What to say when ``workers`` x ``threads`` exceed the usable cores: the tasks then take
    turns on the cores, and more workers only cost memory (and CPU time, in torch's spinning)."""
    if workers * threads <= cores:
        return ""
    if workers > cores:
        return (f"--workers {workers}: more workers than the {cores} usable core(s), which they share; "
                f"expect no gain over --workers {cores}")
    return (f"--workers {workers} x --threads {threads}: more threads than the {cores} usable core(s); "
            f"expect no gain over --threads {max(1, cores // workers)}")


def set_threads(n: int) -> None:
    """torch's intra-op threads in this process (a task's first act), with results that do not
    depend on them (grokscope.reproducibility: also for a ``dask worker`` started by hand)."""
    from grokscope.reproducibility import make_reproducible

    make_reproducible()
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@dataclass
class Task:
    """One unit of work: ``fn(*args)`` run somewhere, its result handed back to the command.

    ``weight`` is what the task counts for in a progress bar (checkpoints, runs); ``label`` names
    it in messages; ``tag`` is the command's own (which series it belongs to)."""

    fn: Callable[..., Any]
    args: tuple = ()
    weight: int = 1
    label: str = ""
    tag: Any = None


@dataclass
class Outcome:
    """A finished task: its result, or the exception it raised (any, so that the command decides
    what a failure means: one series' error, or the whole command's)."""

    task: Task
    result: Any = None
    error: BaseException | None = None


def run_task(fn: Callable[..., Any], threads: Any, args: tuple) -> Any:
    """What runs on a worker: set the threads, then the task. ``threads`` is a number, or for a
    Dask cluster ``{"hosts": {host: slots}, "explicit": n | None}``: each task takes its
    machine's cores shared by the task slots of the workers on that machine."""
    if isinstance(threads, dict):
        threads = threads["explicit"] or _cluster_threads(threads["hosts"])
    set_threads(threads)
    dask_cluster.undo_malloc_trim_threshold()
    return fn(*args)


def _cluster_threads(hosts: dict[str, int]) -> int:
    from distributed import get_worker

    worker = get_worker()
    slots = hosts.get(dask_cluster.host_of(worker.address)) or worker.state.nthreads
    return max(1, usable_cores() // max(1, slots))


def _leave_ctrl_c_to_the_parent() -> None:
    """In a worker process: Ctrl-C reaches the whole process group, and the command alone reacts
    (saves what was done, drops the queued tasks, says one line) instead of every worker
    printing a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass
class Executor:
    """Runs :class:`Task` lists (see the module docstring); a context manager, closed on exit.

    ``in_process``: tasks run in the command's process, so a command may stream finer progress
    itself instead. ``slots``: tasks that run at once (split work into a few times as many).
    """

    kind: str  # "in-process", "pool" (spawned processes), "local-dask", "dask"
    slots: int
    threads: Threads
    description: str = ""
    _pool: Any = None
    _client: Any = None
    _cluster: Any = None
    _hosts: dict = field(default_factory=dict)
    _explicit: int | None = None

    @property
    def in_process(self) -> bool:
        return self.kind == "in-process"

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, kind, error, trace) -> None:
        # After a Ctrl-C the command has seconds to end: a local cluster's workers end with it.
        self.close(hurry=kind is KeyboardInterrupt)

    def map(self, tasks: list[Task]) -> Iterator[Outcome]:
        """Run ``tasks``; yield each :class:`Outcome` as it completes (in any order but in-process,
        where they run in order). Leaving the loop early (Ctrl-C, an error) cancels the rest."""
        if not tasks:
            return
        if self.kind == "in-process":
            for task in tasks:
                yield _outcome(task, lambda t=task: run_task(t.fn, self.threads.per_task, t.args))
        elif self.kind == "pool":
            yield from self._map_pool(tasks)
        else:
            yield from self._map_dask(tasks)

    def _map_pool(self, tasks: list[Task]) -> Iterator[Outcome]:
        from concurrent.futures import as_completed

        futures = {self._pool.submit(run_task, t.fn, self.threads.per_task, t.args): t for t in tasks}
        try:
            for future in as_completed(futures):
                yield _outcome(futures[future], future.result)
        finally:
            for future in futures:
                future.cancel()

    def _map_dask(self, tasks: list[Task]) -> Iterator[Outcome]:
        from distributed import as_completed

        spec = (self.threads.per_task if self.kind == "local-dask"
                else {"hosts": self._hosts, "explicit": self._explicit})
        # pure=False: two tasks with equal arguments (a rerun) are still two tasks; Dask reruns a
        # task whose worker died on another worker by itself.
        futures = {self._client.submit(run_task, t.fn, spec, t.args, pure=False): t for t in tasks}
        try:
            for future in as_completed(list(futures)):
                yield _outcome(futures[future], future.result)
                future.release()
        finally:
            pending = [f for f in futures if not f.done()]
            if pending:
                self._client.cancel(pending)

    def close(self, hurry: bool = False) -> None:
        """Stop the workers of a local pool or cluster, disconnect from a scheduler; ``hurry``:
        wait at most half a second for each (a Ctrl-C is promised an end within 2 s)."""
        timeout = {"timeout": 0.5} if hurry else {}
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._client is not None:
            try:
                self._client.close(**timeout)
            except Exception:  # a scheduler already gone: nothing left to close
                pass
            self._client = None
        if self._cluster is not None:
            try:
                self._cluster.close(**timeout)
            except Exception:
                pass
            self._cluster = None


def _outcome(task: Task, get: Callable[[], Any]) -> Outcome:
    try:
        return Outcome(task, get())
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - handed to the command, which names the task
        return Outcome(task, error=exc)


def resolve_scheduler(scheduler: str | None) -> str | None:
    """``--scheduler``, else ``GROKSCOPE_SCHEDULER``, else None (run on this machine)."""
    address = scheduler if scheduler is not None else os.environ.get(SCHEDULER_ENV) or None
    return address.strip() if address else None


def open_executor(workers: int = 1, scheduler: str | None = None, threads: int | None = None) -> Executor:
    """The executor a command asked for: ``--scheduler`` (or ``GROKSCOPE_SCHEDULER``) an existing
    Dask cluster; else ``--workers N`` local processes; else the command's own process.
    Mistakes (no Dask installed, an unreachable scheduler, ``--workers 0``) are GrokscopeErrors
    naming the option."""
    if workers < 1:
        raise GrokscopeError(f"--workers: must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise GrokscopeError(f"--threads: must be at least 1, got {threads}")
    address = resolve_scheduler(scheduler)
    if address is not None:
        return _connect(address, threads, "--scheduler" if scheduler is not None else SCHEDULER_ENV)
    per_task = task_threads(workers, threads)
    if workers == 1:
        return Executor("in-process", 1, per_task)
    try:
        import distributed  # noqa: F401
    except ImportError:
        return _spawn_pool(workers, per_task)
    return _local_cluster(workers, per_task)


def _spawn_pool(workers: int, per_task: Threads) -> Executor:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked torch with live thread pools can deadlock.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_leave_ctrl_c_to_the_parent)
    return Executor("pool", workers, per_task, f"{workers} local processes", _pool=pool)


def _local_cluster(workers: int, per_task: Threads) -> Executor:
    cluster, client = dask_cluster.start_local_cluster(workers)
    return Executor("local-dask", workers, per_task, f"a local Dask cluster of {workers} processes",
                    _client=client, _cluster=cluster)


def _connect(address: str, threads: int | None, option: str) -> Executor:
    client, hosts, n_workers = dask_cluster.connect(address, option)
    slots = max(1, sum(hosts.values()))
    per_task = Threads(threads) if threads else Threads(0, "")
    return Executor("dask", slots, per_task, f"the Dask scheduler at {address} ({n_workers} workers)",
                    _client=client, _hosts=hosts, _explicit=threads)


def failure_message(outcome: Outcome) -> str:
    """One line for a task that failed: its own message for a GrokscopeError or OSError, else
    what happened (a worker that died every time it ran it, ...)."""
    error = outcome.error
    if isinstance(error, GrokscopeError):
        return str(error)
    if isinstance(error, OSError):
        from grokscope.errors import describe_os_error

        return describe_os_error(error)
    name = type(error).__name__
    if name == "KilledWorker":
        return f"{outcome.task.label}: the workers running it died each time it was tried"
    if name == "BrokenProcessPool":
        return f"{outcome.task.label}: a worker process died while running it"
    detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{outcome.task.label}: {name}" + (f": {detail}" if detail else "")
