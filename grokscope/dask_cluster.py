"""Starting a local Dask cluster and reaching an existing scheduler, for :mod:`grokscope.execution`.

Dask is optional (``pip install 'grokscope[dask]'``): nothing here imports it at module level.
"""

from __future__ import annotations

import os

from grokscope.errors import GrokscopeError

# How long to wait for a scheduler before saying it cannot be reached.
CONNECT_TIMEOUT_S = 10


def quiet() -> None:
    """Dask's own log lines (worker starts, closes, slow event loops) are not grokscope's to print."""
    import logging
    import warnings

    import dask

    warnings.filterwarnings("ignore", module=r"distributed(\.|$)")
    dask.config.set({"distributed.admin.tick.limit": "1h"})
    for name in ("distributed", "distributed.nanny", "distributed.worker", "distributed.scheduler",
                 "distributed.core", "distributed.comm", "distributed.client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def start_local_cluster(workers: int):
    """(cluster, client) of a local Dask cluster of ``workers`` processes, one thread each."""

    quiet()
    # Workers of our own cluster start with glibc's default allocator behaviour rather than
    # Dask's MALLOC_TRIM_THRESHOLD_ (see undo_malloc_trim_threshold).
    import dask

    dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})
    # The workers ignore Ctrl-C from their first instant (grokscope.worker_signals says how),
    # while this process takes it at any instant of a start that takes tens of seconds on a busy
    # machine: the cluster starts in a thread and this one waits for it. An interrupted start is
    # left behind: the command exits at once, and the workers, whose parent is gone, end
    # themselves. A Ctrl-C that ends the command before the cluster has closed leaves
    # multiprocessing's resource tracker to free the cluster's semaphores, which it would say on
    # stderr: its warning is filtered too.
    # Python resolves a filter's category before site-packages (and an editable install's finder)
    # are on its path, so the workers are also given the folder that holds this package. Both
    # variables are this cluster's workers' alone: they are put back once it has started, so no
    # later child of this process ignores Ctrl-C.
    filters = ["ignore::UserWarning:multiprocessing.resource_tracker", "ignore::grokscope.worker_signals.WorkerCtrlC"]
    saved = {name: os.environ.get(name) for name in ("PYTHONWARNINGS", "PYTHONPATH")}
    present = saved["PYTHONWARNINGS"] or ""
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [present] + [f for f in filters if f not in present]))
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, saved["PYTHONPATH"]]))
    try:
        return _start_in_a_thread(workers)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _start_in_a_thread(workers: int):
    """Start the cluster in a thread; this one waits in short steps, so a Ctrl-C is taken at once."""
    from distributed import Client, LocalCluster

    started: dict = {}

    def start() -> None:
        cluster = client = None
        try:
            # The scheduler serves HTTP whatever the dashboard; on a port of its own choosing, so
            # that another cluster on Dask's default port 8787 costs no warning.
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   silence_logs=50, dashboard_address=None,
                                   scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
            client = Client(cluster)
            started["cluster"] = (cluster, client)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            started["error"] = exc
            for half in (client, cluster):  # no worker outlives a failed start
                if half is not None:
                    try:
                        half.close()
                    except Exception:  # noqa: BLE001 - closing what half started: nothing more to do
                        pass

    import threading

    starter = threading.Thread(target=start, name="grokscope: starting a local Dask cluster", daemon=True)
    starter.start()
    while starter.is_alive():
        starter.join(0.05)  # short waits: a Ctrl-C is raised here between them
    if "error" in started:
        raise started["error"]
    return started["cluster"]


def connect(address: str, option: str):
    """(client, host -> task slots, number of workers) of an existing Dask scheduler; mistakes
    are GrokscopeErrors naming ``option``."""
    try:
        from distributed import Client
    except ImportError:
        raise GrokscopeError(f"{option}: running on a Dask scheduler needs Dask's distributed package: "
                             "pip install 'grokscope[dask]'") from None
    quiet()
    _check_reachable(address, option)
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GrokscopeError(f"{option}: cannot reach the Dask scheduler at {address} ({reason})") from None
    workers = client.scheduler_info(n_workers=-1)["workers"] if _takes_n_workers(client) \
        else client.scheduler_info()["workers"]
    hosts: dict[str, int] = {}
    for info in workers.values():
        host = host_of(info.get("host") or info["id"])
        hosts[host] = hosts.get(host, 0) + int(info.get("nthreads", 1))
    return client, hosts, len(workers)


def _check_reachable(address: str, option: str) -> None:
    """A TCP address nobody listens on is said at once; Dask's client would retry it until its
    timeout."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "") or parts.hostname is None:
        return  # tls://, ucx://, inproc://: left to Dask
    try:
        port = parts.port or 8786
        with socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise GrokscopeError(f"{option}: cannot reach the Dask scheduler at {address} ({reason})") from None


def _takes_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def host_of(address: str) -> str:
    """The host name of a Dask address (``tcp://10.0.0.5:40000`` -> ``10.0.0.5``)."""
    from urllib.parse import urlsplit

    return urlsplit(address).hostname or address


_malloc_restored = False
# glibc's mallopt parameters, and the ceiling its adaptive mmap threshold rises to on 64-bit Linux.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_ADAPTIVE_MMAP_CEILING = 32 * 1024 * 1024


def undo_malloc_trim_threshold() -> None:
    """A worker started by a Dask nanny has ``MALLOC_TRIM_THRESHOLD_`` set, which switches off
    glibc's adaptive mmap threshold: every large temporary array is then mapped and unmapped
    again, and a measure task spent 4.5x the system time of the same task in the command's
    process. Set the thresholds where the adaptive ones end up, once per process."""
    global _malloc_restored
    if _malloc_restored or "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    _malloc_restored = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _ADAPTIVE_MMAP_CEILING)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * _ADAPTIVE_MMAP_CEILING)
    except (OSError, AttributeError):  # not glibc: nothing to undo
        pass
