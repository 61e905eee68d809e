"""Turn checkpoint series into feature matrices: every hidden layer's activations on every sample."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import typer

from grokscope.cli.output import Output
from grokscope.errors import GrokscopeError

EPILOG = """\
Examples:

  grokscope probe runs/              # every run below runs/, all checkpoints

  grokscope train --out runs/ | grokscope probe - | grokscope measure -

  grokscope probe runs/add-p97 --steps 0-1000,every:5 --device cuda

  grokscope probe ckpts/ --model net.py:build --data data.npz | grokscope measure - --metric all

  grokscope probe hf-run/ --data data.npz --layer transformer.h.0@-1   # Trainer: model from config.json

  grokscope probe lightning_logs/version_0/checkpoints --model net.py:build --data data.npz

  grokscope probe runs/ --steps every:10 --workers 2      # two worker processes

Writes RUN/features/step-NNNNNNNN.safetensors, one float32 matrix per
hidden layer with rows as in RUN/features/samples.safetensors, and prints
each features file on stdout, those already stored too (skipped unless
--force). They are large (9.4 MB a checkpoint on the default run) and
measure does not need them: probe the steps you want on disk, or use
--storage float16. With -, paths are probed as they arrive. Another tool's
series (checkpoint-500/, epoch=3-step=500.ckpt, step500.pt, a file holding
a whole run, ...) gets SERIES/features/ (unless --out) and a
features/probe.json recording --model, --data and --layer, so measure,
plot and report need none of them. --steps takes steps '1200', ranges
'0-1000' or '2000-', and 'every:K' (every K-th of the chosen
checkpoints). See docs/probe.md and docs/your-checkpoints.md.
"""

DTYPES = ("float32", "float64", "float16", "bfloat16")


def probe(
    paths: List[str] = typer.Argument(..., metavar="PATH...", help="Runs, checkpoint series (folders or single files), folders of them, single checkpoints, or - to read paths from stdin."),
    model: Optional[str] = typer.Option(None, "--model", help="Other tools' series: package.module:factory or file.py:factory, a callable returning the untrained nn.Module (not needed where checkpoints carry a Hugging Face config.json)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Other tools' series: an .npz with X, y and optionally split (0 train, 1 test; default all train)."),
    layer: Optional[List[str]] = typer.Option(None, "--layer", help="Layer to store (repeatable). Runs: layers.i (default all hidden layers). Other models: a module name for its output, NAME:input for its input, then @-1 / @0 / @all for a token position of a sequence output (default: the input of the last nn.Linear, last token). The penultimate layer is always stored."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Home for a single series written by another tool: its features/ (and later measures/) go here (default: the series folder)."),
    steps: Optional[str] = typer.Option(None, "--steps", help="Checkpoints to probe: '1200', '0-1000', '2000-', 'every:5', comma-separated (default all)."),
    force: bool = typer.Option(False, "--force", help="Recompute features that are already stored (and accept a new --model or --data)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    batch_size: int = typer.Option(16384, "--batch-size", help="Samples per forward pass."),
    dtype: str = typer.Option("float32", "--dtype", help="Compute dtype: float32, float64, float16, bfloat16. Files are float32 either way (see --storage); half precision rounds activations into ties that rank-based estimators suffer from."),
    storage: str = typer.Option("float32", "--storage", help="Dtype of the stored features: float32 (the format's default) or float16 (half the disk; rounds activations into ties). measure needs no stored features: it computes them in memory."),
    allow_global: Optional[List[str]] = typer.Option(None, "--allow-global", help="Let pickled checkpoints hold this class (module.Name, repeatable; e.g. argparse.Namespace in Lightning hyperparameters). Only for files you trust."),
    workers: int = typer.Option(1, "--workers", "-j", help="Probe checkpoints in N local worker processes (a local Dask cluster when Dask is installed)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Probe on an existing Dask scheduler, e.g. tcp://head:8786 (or set GROKSCOPE_SCHEDULER); its workers write the features files, so they need the series' folders at the same paths. See docs/scaling.md."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads per task (default: the cores shared among the workers, fewer on a busy machine)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr; only paths on stdout."),
) -> None:
    """Store the hidden-layer activations of every checkpoint on every train and test sample."""
    import torch

    from grokscope import discovery, features, formats

    output = Output(quiet=quiet)
    started = time.perf_counter()
    if dtype not in DTYPES:
        raise GrokscopeError(f"--dtype: unknown {dtype!r}; known: {', '.join(DTYPES)}")
    if storage not in formats.features.STORAGE_DTYPES:
        raise GrokscopeError(f"--storage: unknown {storage!r}; known: {', '.join(formats.features.STORAGE_DTYPES)}")
    if batch_size < 1:
        raise GrokscopeError(f"--batch-size: must be positive, got {batch_size}")
    compute_dtype = getattr(torch, dtype)
    selection = discovery.parse_steps(steps)
    torch_device = features.resolve_device(device)
    if dtype in ("float16", "bfloat16"):
        output.warn(f"--dtype {dtype}: activations are rounded to half precision; rank-based estimators will see ties")
    if storage != "float32":
        output.warn(f"--storage {storage}: features are stored rounded to half precision; measures computed from "
                    "them see ties (measure computes float32 features in memory where none are stored)")

    from grokscope import execution

    inputs = formats.inputs.InputPaths(paths)
    tally = {"probed": 0, "skipped": 0, "failed": 0, "bytes": 0}
    plans: list[_Plan] = []
    with execution.open_executor(workers, scheduler, threads) as executor, output.progress() as bar:
        if executor.in_process:
            execution.set_threads(executor.threads.per_task)
        task = bar.add_task("probe", total=0)
        total = 0
        # Series are probed as their paths arrive: `train | probe -` starts on the first run
        # while the next one trains.
        for batch in discovery.iter_series(inputs):
            found = _with_home(batch, model, data, out, already=len(plans))
            new = [_plan(s, selection, layer, force, model, data, allow_global or [], output, storage) for s in found]
            plans += new
            total += sum(len(p.todo) for p in new)
            bar.update(task, total=total)
            if not executor.in_process:
                bar.update(task, description=f"probe on {executor.description}")
                _probe_elsewhere(new, executor, device, dtype, batch_size, force, output, tally,
                                 lambda n: bar.advance(task, n), storage,
                                 on_first_file=lambda path, n: _warn_size(output, plans, tally, path, n))
                continue
            for plan in new:
                bar.update(task, description=str(plan.context.name))
                _probe_series(plan, torch_device, compute_dtype, batch_size, force, output, tally,
                              lambda: bar.advance(task), storage,
                              on_first_file=lambda path, n: _warn_size(output, plans, tally, path, n))

    n_samples = {p.n_samples for p in plans if p.n_samples}
    n_layers = {len(p.keys) for p in plans if p.keys}
    elapsed = time.perf_counter() - started
    waited = f", {inputs.waited:.1f}s more waiting for input" if inputs.waited >= 0.05 else ""
    output.info(
        f"probe: {tally['probed']} probed, {tally['skipped']} already stored, {tally['failed']} failed "
        f"({len(plans)} series, {_span(n_samples)} samples, {_span(n_layers)} layers, "
        f"{_size(tally['bytes'])} written) in {elapsed - inputs.waited:.1f}s{waited}"
    )
    if tally["failed"]:
        raise typer.Exit(1)


@dataclass
class _Plan:
    """One series: its context, the checkpoints chosen, those still to compute, the layers."""

    context: object
    chosen: list
    todo: list
    keys: list
    n_samples: int = 0


def _with_home(found, model, data, out, already: int = 0):
    """The series to probe, ``--out`` giving a single foreign series its home (``already``: series
    that earlier batches of stdin named)."""
    from dataclasses import replace

    foreign = [s for s in found if not s.is_run]
    if (model is not None or data is not None) and found and not foreign:
        raise GrokscopeError("--model/--data: only for series written by other tools; grokscope runs rebuild theirs from run.json")
    if out is None:
        return found
    if len(found) + already != 1 or found[0].is_run:
        raise GrokscopeError("--out: only for a single series written by another tool; a grokscope run's features live in RUN/features")
    return [replace(found[0], home=out)]


def _plan(found, selection, layer, force, model, data, allow_globals, output, storage: str = "float32") -> _Plan:
    from grokscope import formats
    from grokscope.context import SeriesContext

    for step in selection.missing([c.step for c in found.chosen()]):
        output.warn(f"{found.root}: no checkpoint at step {step}")
    chosen = found.chosen(selection.select)
    if found.is_run:
        context = SeriesContext.open(found)
    else:
        context = SeriesContext.for_probe(found, model=model, data=data, layers=layer, allow_globals=allow_globals,
                                          force=force)
    keys, _ = context.layer_keys(layer or None)
    folder = found.features_dir
    todo = [c for c in chosen if force or not _stored(folder / formats.steps.step_file_name(c.step), keys, storage)]
    return _Plan(context, chosen, todo, keys)


def _stored(path: Path, keys, storage: str) -> bool:
    """Whether a features file holds the layers, in the dtype asked for (a float16 file does not
    count for a float32 probe, nor the other way round)."""
    from grokscope import features, formats

    if not features.holds_layers(path, keys):
        return False
    return formats.features.features_storage(formats.features.features_metadata(path)) == storage


# Above this, probe says how much it is about to write, and that measure does not need it.
LARGE_FEATURES_BYTES = 1 << 30


def _warn_size(output, plans, tally, path: Path, n_todo: int) -> None:
    """Once per command, after the first file written: its size times the files still to write,
    when that is large (every checkpoint of the default run: ~200 x 9.4 MB)."""
    if tally.get("size_told"):
        return
    tally["size_told"] = True
    remaining = sum(len(p.todo) for p in plans) - tally["probed"] - tally["failed"]
    estimate = path.stat().st_size * max(remaining, n_todo)
    if estimate > LARGE_FEATURES_BYTES:
        output.warn(f"about {_size(estimate)} of features to write ({_size(path.stat().st_size)} a checkpoint); "
                    "measure does not need them (it computes features in memory), so probe only the steps you "
                    "want on disk (--steps every:K) or store them as float16 (--storage float16)")


def _prepare(plan: _Plan, force: bool, **extractor_options):
    """What every checkpoint of a series needs, once: its extractor (returned), and the samples
    file and probe record written beside the features. Raises GrokscopeError."""
    from grokscope import features, formats

    context = plan.context
    extractor = context.extractor(plan.keys, **extractor_options)
    samples = context.data()[1]
    features.save_samples(context.series.features_dir, samples, force=force)
    if context.record is not None:
        formats.features.write_probe_record(context.series.features_dir, context.record)
    plan.n_samples = len(samples)
    return extractor


def _probe_series(plan: _Plan, device, dtype, batch_size, force, output, tally, advance, storage="float32",
                  on_first_file=None) -> None:
    from grokscope import formats, logs

    context = plan.context
    folder = context.series.features_dir
    todo = set(plan.todo)
    tally["skipped"] += len(plan.chosen) - len(todo)
    extractor = None
    if todo:
        try:
            extractor = _prepare(plan, force, device=device, dtype=dtype, batch_size=batch_size)
        except GrokscopeError as exc:
            output.error(str(exc))
            tally["failed"] += len(todo)
            for _ in todo:
                advance()
            return
    for checkpoint in plan.chosen:
        path = folder / formats.steps.step_file_name(checkpoint.step)
        if checkpoint not in todo:
            output.result(path)
            continue
        try:
            _probe_checkpoint(extractor, context, checkpoint, device, dtype, storage)
            tally["bytes"] += path.stat().st_size
            if on_first_file is not None:
                on_first_file(path, len(todo))
        except GrokscopeError as exc:
            output.error(str(exc))
            tally["failed"] += 1
        else:
            output.result(path)
            tally["probed"] += 1
        advance()
    if context.record is not None and todo:
        _write_history(folder, logs.probed_history_path(folder))


def _probe_checkpoint(extractor, context, checkpoint, device, dtype, storage: str) -> Path:
    """Compute one checkpoint's features and write its features file (atomically); its path."""
    from grokscope import features, formats

    path = context.series.features_dir / formats.steps.step_file_name(checkpoint.step)
    item = features.compute_checkpoint(extractor, checkpoint, device)
    extra = {"grokscope.compute_dtype": str(dtype).removeprefix("torch."),
             "grokscope.checkpoint": _source(checkpoint, context.series.root),
             "grokscope.positions": json.dumps(extractor.positions)}
    if item.evaluation is not None:
        extra["grokscope.eval"] = json.dumps(item.evaluation)
    formats.features.save_features(path, checkpoint.step, item.layers, item.penultimate, extra, storage=storage)
    return path


def probe_checkpoints(series, keys: list, steps: list[int], device: str, dtype: str, batch_size: int,
                      storage: str) -> list[tuple[int, str | None, str | None, int]]:
    """A worker's task: probe the checkpoints of ``series`` at ``steps`` (the model built once)
    and write their features files. Returns (step, path or None, error or None, bytes) per
    checkpoint. Writing the same file twice gives the same bytes, so a rerun task is harmless."""
    import torch

    from grokscope.context import SeriesContext
    from grokscope.features import resolve_device

    context = SeriesContext.open(series)
    torch_device = resolve_device(device)
    compute_dtype = getattr(torch, dtype)
    extractor = context.extractor(keys, device=torch_device, dtype=compute_dtype, batch_size=batch_size)
    wanted = set(steps)
    done = []
    for checkpoint in series.checkpoints:
        if checkpoint.step not in wanted:
            continue
        try:
            path = _probe_checkpoint(extractor, context, checkpoint, torch_device, compute_dtype, storage)
        except GrokscopeError as exc:
            done.append((checkpoint.step, None, str(exc), 0))
        else:
            done.append((checkpoint.step, str(path), None, path.stat().st_size))
    return done


def _probe_elsewhere(plans: list, executor, device: str, dtype: str, batch_size: int, force: bool, output,
                     tally, advance, storage: str, on_first_file=None) -> None:
    """Probe the series of one batch on the executor's workers: tasks of consecutive checkpoints
    of one series (each builds the model once); the workers write the features files, this
    process prints them and writes each foreign series' probe history when its last task is in."""
    import math

    from grokscope import formats, logs, measuring
    from grokscope.execution import Task, failure_message

    per_series = max(1, math.ceil(4 * executor.slots / max(1, len(plans))))
    tasks, left = [], {}
    for index, plan in enumerate(plans):
        context = plan.context
        folder = context.series.features_dir
        tally["skipped"] += len(plan.chosen) - len(plan.todo)
        for checkpoint in plan.chosen:
            if checkpoint not in set(plan.todo):
                output.result(folder / formats.steps.step_file_name(checkpoint.step))
        if not plan.todo:
            continue
        try:
            _prepare(plan, force, device="cpu", batch_size=batch_size)  # a model that cannot be built: said here
        except GrokscopeError as exc:
            output.error(str(exc))
            tally["failed"] += len(plan.todo)
            advance(len(plan.todo))
            continue
        steps = [c.step for c in plan.todo]
        for part in measuring.chunk(steps, per_series):
            tasks.append(Task(probe_checkpoints, (context.series, list(plan.keys), part, device, dtype, batch_size, storage),
                              weight=len(part), label=f"{context.series.root} (steps {part[0]}-{part[-1]})",
                              tag=index))
            left[index] = left.get(index, 0) + 1
    for outcome in executor.map(tasks):
        plan = plans[outcome.task.tag]
        if outcome.error is not None:
            output.error(failure_message(outcome))
            tally["failed"] += outcome.task.weight
        else:
            for step, path, error, size in outcome.result:
                if error is not None:
                    output.error(error)
                    tally["failed"] += 1
                    continue
                tally["bytes"] += size
                tally["probed"] += 1
                if on_first_file is not None:
                    on_first_file(Path(path), len(plan.todo))
                output.result(path)
        advance(outcome.task.weight)
        left[outcome.task.tag] -= 1
        if not left[outcome.task.tag] and plan.context.record is not None:
            folder = plan.context.series.features_dir
            _write_history(folder, logs.probed_history_path(folder))


def _write_history(folder: Path, path: Path) -> None:
    """The model's loss and accuracy at every probed checkpoint, gathered from the features files'
    metadata (each file carries its own, so a killed probe loses nothing)."""
    import pandas as pd

    from grokscope import formats

    rows = []
    for step, features_path in formats.features.list_features(folder.parent):
        evaluation = formats.features.features_metadata(features_path).get("grokscope.eval")
        if evaluation:
            rows.append({"step": step, **json.loads(evaluation)})
    if rows:
        formats.tables.write_table(path, pd.DataFrame(rows).sort_values("step").reset_index(drop=True))


def _source(checkpoint, root: Path) -> str:
    try:
        where = str(Path(checkpoint.path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        where = str(checkpoint.path)
    return where if checkpoint.member is None else f"{where}#{checkpoint.member}"


def _size(n_bytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return f"{n_bytes:.1f} TB"


def _span(values: set) -> str:
    if not values:
        return "0"
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"
