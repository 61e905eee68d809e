"""``grokscope probe`` as a function: store every probed layer's activations of every checkpoint.

Series are probed as their paths arrive (``train | probe -`` starts on the first run while the
next one trains): each batch is planned (:mod:`~grokscope.pipeline.probe_plan`) and probed in
this process or on the executor's workers (:mod:`~grokscope.pipeline.probe_run`); every features
file is said as it is written, and those already stored too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable, Sequence

from grokscope.errors import GrokscopeError
from grokscope.pipeline.reporter import Recording, Reporter, Written

DTYPES = ("float32", "float64", "float16", "bfloat16")


def probe(paths: Iterable[str], *, model: str | None = None, data: Path | None = None,
          layers: Sequence[str] | None = None, out: Path | None = None, steps: str | None = None,
          force: bool = False, device: str = "auto", batch_size: int | None = None, dtype: str = "float32",
          storage: str = "float32", allow_global: Sequence[str] = (), workers: int = 1, scheduler: str | None = None,
          threads: int | None = None, max_memory: str | int | None = None,
          reporter: Reporter | None = None) -> Written:
    """Probe ``paths`` (runs, series, folders of them, single checkpoints, ``-`` for paths on
    stdin) as ``grokscope probe`` does, with its options by the same names (``layers`` is
    ``--layer``; ``batch_size`` None is :data:`grokscope.features.DEFAULT_BATCH_SIZE`; ``max_memory`` bounds
    a forward pass's activations, :func:`grokscope.memory.memory_budget`). Returns the features files (see :class:`~grokscope.pipeline.reporter.Written`;
    ``failed`` names the checkpoints that could not be probed)."""
    import torch

    from grokscope import execution, formats
    from grokscope.devices import resolve_device
    from grokscope.discovery import iter_series, parse_steps
    from grokscope.features import DEFAULT_BATCH_SIZE
    from grokscope.memory import memory_budget
    from grokscope.pipeline.probe_plan import plan_series, with_home
    from grokscope.pipeline.probe_run import Probing, probe_elsewhere, probe_series

    say = Recording(reporter)
    started = time.perf_counter()
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    if dtype not in DTYPES:
        raise GrokscopeError(f"--dtype: unknown {dtype!r}; known: {', '.join(DTYPES)}")
    if storage not in formats.features.STORAGE_DTYPES:
        raise GrokscopeError(f"--storage: unknown {storage!r}; known: {', '.join(formats.features.STORAGE_DTYPES)}")
    if batch_size < 1:
        raise GrokscopeError(f"--batch-size: must be positive, got {batch_size}")
    compute_dtype = getattr(torch, dtype)
    selection = parse_steps(steps)
    torch_device = resolve_device(device)
    if dtype in ("float16", "bfloat16"):
        say.warn(f"--dtype {dtype}: activations are rounded to half precision; rank-based estimators will see ties")
    if storage != "float32":
        say.warn(f"--storage {storage}: features are stored rounded to half precision; measures computed from "
                 "them see ties (measure computes float32 features in memory where none are stored)")
    inputs = formats.inputs.InputPaths(paths)
    probing = Probing(say, device, dtype, batch_size, force, storage, memory_budget(max_memory))
    plans = probing.plans
    with execution.open_executor(workers, scheduler, threads) as executor, say.progress() as bar:
        if executor.threads.warning:
            say.warn(executor.threads.warning)
        if executor.in_process:
            execution.set_threads(executor.threads.per_task)
        task = bar.add_task("probe", total=0)
        total = 0
        for batch in iter_series(inputs):
            found = with_home(batch, model, data, out, already=len(plans))
            new = [plan_series(s, selection, layers, force, model, data, list(allow_global or []), say, storage)
                   for s in found]
            plans += new
            total += sum(len(p.todo) for p in new)
            bar.update(task, total=total)
            if not executor.in_process:
                bar.update(task, description=f"probe on {executor.description}")
                probe_elsewhere(new, probing, executor, lambda n: bar.advance(task, n))
                continue
            for plan in new:
                bar.update(task, description=str(plan.context.name))
                probe_series(plan, probing, torch_device, compute_dtype, lambda: bar.advance(task))
    _summary(probing, time.perf_counter() - started, inputs.waited)
    return say.written


def _summary(probing, elapsed: float, waited_s: float) -> None:
    from grokscope.pipeline.probe_run import size_text

    plans = probing.plans
    n_samples = {p.n_samples for p in plans if p.n_samples}
    n_layers = {len(p.keys) for p in plans if p.keys}
    waited = f", {waited_s:.1f}s more waiting for input" if waited_s >= 0.05 else ""
    probing.say.info(
        f"probe: {probing.probed} probed, {probing.skipped} already stored, {probing.failed} failed "
        f"({len(plans)} series, {_span(n_samples)} samples, {_span(n_layers)} layers, "
        f"{size_text(probing.bytes)} written) in {elapsed - waited_s:.1f}s{waited}"
    )


def _span(values: set) -> str:
    if not values:
        return "0"
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"
