"""Results that do not depend on the thread count: MKL's strict conditional numerical reproducibility.

torch's CPU matrix products go through MKL, which splits a reduction (the weight gradient
``h.T @ o`` sums over every training sample) differently for 1 and 2 threads, so the float sums
and with them a chaotic training trajectory followed the thread count, which follows the machine's
load. ``MKL_CBWR=AUTO,STRICT`` makes MKL sum in the same order on any thread count; MKL reads it
once, at its first call, so it must be in the environment before torch computes anything.

:func:`make_reproducible` is called first by every way into grokscope: ``python -m grokscope``
(before the CLI imports anything), ``grokscope.train`` / ``probe`` / ``measure`` from Python (on
first use), and every task on a worker (spawned pool and local Dask workers inherit the
environment; a ``dask worker`` started by hand sets it with its first task). A user's own
``MKL_CBWR`` is kept. :func:`in_effect` asks MKL which mode it runs in, so that a process whose
torch computed before grokscope was called (a notebook) is told instead of silently differing.

Imports nothing heavy at module level (``__main__`` imports it before its Ctrl-C handler is set).
"""

from __future__ import annotations

import os

MKL_MODE_VARIABLE = "MKL_CBWR"
REPRODUCIBLE_MKL_MODE = "AUTO,STRICT"
# mkl_cbwr_get(MKL_CBWR_ALL) answers the whole mode; only its STRICT flag makes the sums
# independent of the thread count (a branch alone, e.g. AVX2, still splits them by thread).
_MKL_CBWR_ALL = -1
_MKL_CBWR_STRICT = 0x10000


def make_reproducible() -> None:
    """Ask MKL for thread-count-independent results, unless the user chose a mode already."""
    os.environ.setdefault(MKL_MODE_VARIABLE, REPRODUCIBLE_MKL_MODE)


def in_effect() -> bool | None:
    """Whether MKL in this process sums in the same order on any thread count (its STRICT mode); None where torch has no MKL to ask
    (another BLAS, another platform). Asking fixes the mode from the environment if MKL has not
    started yet, so :func:`make_reproducible` comes first."""
    import ctypes

    import torch

    library = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        get_mode = ctypes.CDLL(library).mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    get_mode.argtypes = [ctypes.c_int]
    get_mode.restype = ctypes.c_int
    return bool(get_mode(_MKL_CBWR_ALL) & _MKL_CBWR_STRICT)


def record() -> dict:
    """What run.json keeps under ``"numerics"``: the MKL mode training ran with, and whether MKL
    took it. Not among the settings a rerun or ``--resume`` compares. The thread count itself is
    not kept: with the mode in effect it changes no byte, and a run trained serially and the same
    run trained as a worker's task (fewer threads) have the same run.json."""
    return {"mkl_cbwr": os.environ.get(MKL_MODE_VARIABLE), "mkl_reproducible": in_effect()}


def warning(numerics: dict) -> str | None:
    """What to tell the user when ``numerics`` (from :func:`record`) are not thread-independent."""
    if numerics["mkl_reproducible"] is not False:
        return None
    mode = numerics["mkl_cbwr"]
    if mode != REPRODUCIBLE_MKL_MODE:
        return (f"MKL_CBWR={mode} (set in the environment) is not a strict mode, so results may depend "
                f"on the thread count; MKL_CBWR={REPRODUCIBLE_MKL_MODE} makes them independent of it")
    return ("torch computed before grokscope could set MKL_CBWR=AUTO,STRICT, so results may depend on "
            "the thread count (and with it on the machine's load); set MKL_CBWR=AUTO,STRICT in the "
            "environment before Python starts, or call grokscope before using torch")
