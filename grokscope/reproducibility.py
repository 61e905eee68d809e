"""Results that do not depend on the thread count: the MKL mode that sums in one order on this CPU.

torch's CPU matrix products go through MKL, which may split a reduction (the weight gradient
``h.T @ o`` sums over every training sample) differently for 1 and 2 threads, so the float sums
and with them a chaotic training trajectory followed the thread count, which follows the machine's
load. Which of MKL's modes sums in one order depends on the processor (measured with torch
2.13's MKL, float32 and float64 products of 64-20,000 rows by 16-1,024 columns, 1 against 2
threads):

* on Intel, ``MKL_CBWR=AUTO,STRICT`` (strict conditional numerical reproducibility) does; the
  default splits the sums;
* on AMD, MKL's default (no ``MKL_CBWR``: its mode is "off") gave the same bits in all 336
  products, and every conditional mode (``AUTO``, ``COMPATIBLE``, ``AVX2``, with or without
  ``STRICT``) split 30 of them, all float64 (a 3,764 x 250 covariance among them).

:func:`make_reproducible` sets the strict mode where it is the one (Intel, or a processor it cannot
tell), and nothing where MKL's default is. MKL reads the mode once, at its first call, so this must
happen before torch computes anything. It is called first by every way into grokscope: ``python
-m grokscope`` (before the CLI imports anything), ``grokscope.train`` / ``probe`` / ``measure``
from Python (on first use), and every task on a worker (spawned pool and local Dask workers
inherit the environment; a ``dask worker`` started by hand sets it with its first task). A user's
own ``MKL_CBWR`` is kept. :func:`in_effect` asks MKL which mode it runs in, so that a process
whose torch computed before grokscope was called (a notebook) is told instead of silently
differing.

Imports nothing heavy at module level (``__main__`` imports it before its Ctrl-C handler is set).
"""

from __future__ import annotations

import os

MKL_MODE_VARIABLE = "MKL_CBWR"
REPRODUCIBLE_MKL_MODE = "AUTO,STRICT"
# mkl_cbwr_get(MKL_CBWR_ALL) answers the whole mode: its STRICT flag on Intel (a branch alone,
# e.g. AVX2, still splits the sums by thread), "off" (MKL's default) on AMD.
_MKL_CBWR_ALL = -1
_MKL_CBWR_STRICT = 0x10000
_MKL_CBWR_OFF = 0x1
# Processors whose MKL sums in one order only in its default mode (the module docstring).
_DEFAULT_MODE_VENDORS = ("AuthenticAMD", "HygonGenuine")


def cpu_vendor() -> str | None:
    """The processor's vendor string (``GenuineIntel``, ``AuthenticAMD``), None where
    /proc/cpuinfo does not say (another platform)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return None


def reproducible_mode() -> str | None:
    """The ``MKL_CBWR`` whose sums do not follow the thread count here: ``AUTO,STRICT``, or None
    (no variable: MKL's default) on AMD."""
    return None if cpu_vendor() in _DEFAULT_MODE_VENDORS else REPRODUCIBLE_MKL_MODE


def make_reproducible() -> None:
    """Ask MKL for thread-count-independent results, unless the user chose a mode already."""
    mode = reproducible_mode()
    if mode is not None:
        os.environ.setdefault(MKL_MODE_VARIABLE, mode)


def in_effect() -> bool | None:
    """Whether MKL in this process runs the mode that sums in the same order on any thread count
    here (:func:`reproducible_mode`); None where torch has no MKL to ask (another BLAS, another
    platform). Asking fixes the mode from the environment if MKL has not started yet, so
    :func:`make_reproducible` comes first."""
    import ctypes

    import torch

    library = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        get_mode = ctypes.CDLL(library).mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    get_mode.argtypes = [ctypes.c_int]
    get_mode.restype = ctypes.c_int
    mode = get_mode(_MKL_CBWR_ALL)
    if reproducible_mode() is None:
        return mode == _MKL_CBWR_OFF
    return bool(mode & _MKL_CBWR_STRICT)


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
    mode, wanted = numerics["mkl_cbwr"], reproducible_mode()
    if wanted is None:
        return (f"MKL_CBWR={mode} (set in the environment) makes MKL's float64 sums depend on the thread "
                f"count on this {cpu_vendor()} processor, whose MKL sums in one order only in its default "
                f"mode: unset MKL_CBWR")
    if mode != wanted:
        return (f"MKL_CBWR={mode} (set in the environment) is not a strict mode, so results may depend "
                f"on the thread count; MKL_CBWR={wanted} makes them independent of it")
    return (f"torch computed before grokscope could set MKL_CBWR={wanted}, so results may depend on "
            f"the thread count (and with it on the machine's load); set MKL_CBWR={wanted} in the "
            f"environment before Python starts, or call grokscope before using torch")
