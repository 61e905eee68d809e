"""Probing the series of one batch: in the command's process checkpoint by checkpoint, or on the
executor's workers as tasks of consecutive checkpoints (each builds the model once and writes
its features files); and the tally that ``probe`` sums up at the end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from grokscope import features, formats, logs
from grokscope.context import SeriesContext
from grokscope.devices import resolve_device
from grokscope.errors import GrokscopeError
from grokscope.execution import Executor, failure_message
from grokscope.fingerprints import fingerprint_metadata
from grokscope.pipeline.probe_plan import ProbePlan
from grokscope.pipeline.reporter import Recording
from grokscope.pipeline.tasks import SeriesTasks, chunk, parts_per_series

# Above this, probe says how much it is about to write, and that measure does not need it.
LARGE_FEATURES_BYTES = 1 << 30


@dataclass
class Probing:
    """What the batches of one ``probe`` share: its options, the reporter, every plan so far and
    the tally of checkpoints probed, already stored and failed."""

    say: Recording
    device: str
    dtype: str
    batch_size: int
    force: bool
    storage: str
    max_memory: int | None = None  # bytes of activations a forward pass may take
    plans: list[ProbePlan] = field(default_factory=list)
    probed: int = 0
    skipped: int = 0
    failed: int = 0
    bytes: int = 0
    size_told: bool = False

    def fail(self, message: str, n: int = 1) -> None:
        self.say.error(message)
        self.say.written.failed.append(message)
        self.failed += n

    def wrote(self, path: Path, size: int, n_todo: int) -> None:
        """A features file is written: counted, said, and the first one tells how much the rest will take."""
        self.bytes += size
        self.probed += 1
        self._warn_size(path, n_todo)
        self.say.result(path)

    def _warn_size(self, path: Path, n_todo: int) -> None:
        """Once per command, after the first file written: its size times the files still to
        write, when that is large (every checkpoint of the default run: ~200 x 9.4 MB)."""
        if self.size_told:
            return
        self.size_told = True
        remaining = sum(len(p.todo) for p in self.plans) - (self.probed - 1) - self.failed
        estimate = path.stat().st_size * max(remaining, n_todo)
        if estimate > LARGE_FEATURES_BYTES:
            self.say.warn(f"about {size_text(estimate)} of features to write ({size_text(path.stat().st_size)} a "
                          "checkpoint); measure does not need them (it computes features in memory), so probe only "
                          "the steps you want on disk (--steps every:K) or store them as float16 (--storage float16)")


def prepare(plan: ProbePlan, force: bool, **extractor_options):
    """What every checkpoint of a series needs, once: its extractor (returned), and the samples
    file and probe record written beside the features. Raises GrokscopeError."""
    context = plan.context
    extractor = context.extractor(plan.keys, **extractor_options)
    samples = context.data()[1]
    features.save_samples(context.series.features_dir, samples, force=force)
    if context.record is not None:
        formats.features.write_probe_record(context.series.features_dir, context.record)
    plan.n_samples = len(samples)
    return extractor


def probe_series(plan: ProbePlan, probing: Probing, torch_device, compute_dtype, advance) -> None:
    """Probe one series in this process, checkpoint by checkpoint, saying each features file."""
    context = plan.context
    folder = context.series.features_dir
    todo = set(plan.todo)
    probing.skipped += len(plan.chosen) - len(todo)
    extractor = None
    if todo:
        try:
            extractor = prepare(plan, probing.force, device=torch_device, dtype=compute_dtype,
                                batch_size=probing.batch_size, max_memory=probing.max_memory)
        except GrokscopeError as exc:
            probing.fail(str(exc), len(todo))
            for _ in todo:
                advance()
            return
    for checkpoint in plan.chosen:
        path = folder / formats.steps.step_file_name(checkpoint.step)
        if checkpoint not in todo:
            probing.say.result(path)
            continue
        try:
            probe_checkpoint(extractor, context, checkpoint, torch_device, compute_dtype, probing.storage)
        except GrokscopeError as exc:
            probing.fail(str(exc))
        else:
            probing.wrote(path, path.stat().st_size, len(todo))
        advance()
    if context.record is not None and todo:
        write_history(folder)


def probe_checkpoint(extractor, context: SeriesContext, checkpoint, device, dtype, storage: str) -> Path:
    """Compute one checkpoint's features and write its features file (atomically); its path."""
    path = context.series.features_dir / formats.steps.step_file_name(checkpoint.step)
    item = features.compute_checkpoint(extractor, checkpoint, device)
    extra = {"grokscope.compute_dtype": str(dtype).removeprefix("torch."),
             "grokscope.checkpoint": _source(checkpoint, context.series.root),
             "grokscope.positions": json.dumps(extractor.positions),
             **fingerprint_metadata(item.source, context.data_fingerprint())}
    if item.evaluation is not None:
        extra["grokscope.eval"] = json.dumps(item.evaluation)
    formats.features.save_features(path, checkpoint.step, item.layers, item.penultimate, extra, storage=storage)
    return path


def probe_checkpoints(series, keys: list, steps: list[int], device: str, dtype: str, batch_size: int,
                      storage: str, max_memory: int | None = None) -> list[tuple[int, str | None, str | None, int]]:
    """A worker's task: probe the checkpoints of ``series`` at ``steps`` (the model built once)
    and write their features files. Returns (step, path or None, error or None, bytes) per
    checkpoint. Writing the same file twice gives the same bytes, so a rerun task is harmless."""
    import torch

    context = SeriesContext.open(series)
    torch_device = resolve_device(device)
    compute_dtype = getattr(torch, dtype)
    extractor = context.extractor(keys, device=torch_device, dtype=compute_dtype, batch_size=batch_size,
                                  max_memory=max_memory)
    wanted = set(steps)
    done = []
    for checkpoint in series.checkpoints:
        if checkpoint.step not in wanted:
            continue
        try:
            path = probe_checkpoint(extractor, context, checkpoint, torch_device, compute_dtype, storage)
        except GrokscopeError as exc:
            done.append((checkpoint.step, None, str(exc), 0))
        else:
            done.append((checkpoint.step, str(path), None, path.stat().st_size))
    return done


def probe_elsewhere(plans: list[ProbePlan], probing: Probing, executor: Executor, advance) -> None:
    """Probe the series of one batch on the executor's workers: tasks of consecutive checkpoints
    of one series (each builds the model once); the workers write the features files, this
    process says them and writes each foreign series' probe history when its last task is in."""
    parts = parts_per_series(executor, len(plans))
    work = SeriesTasks()
    for index, plan in enumerate(plans):
        context = plan.context
        folder = context.series.features_dir
        probing.skipped += len(plan.chosen) - len(plan.todo)
        for checkpoint in plan.chosen:
            if checkpoint not in set(plan.todo):
                probing.say.result(folder / formats.steps.step_file_name(checkpoint.step))
        if not plan.todo:
            continue
        try:
            prepare(plan, probing.force, device="cpu", batch_size=probing.batch_size)  # a model that cannot be built: said here
        except GrokscopeError as exc:
            probing.fail(str(exc), len(plan.todo))
            advance(len(plan.todo))
            continue
        for part in chunk([c.step for c in plan.todo], parts):
            work.add(index, probe_checkpoints, (context.series, list(plan.keys), part, probing.device, probing.dtype,
                                                probing.batch_size, probing.storage, probing.max_memory),
                     weight=len(part), label=f"{context.series.root} (steps {part[0]}-{part[-1]})")

    def on_outcome(index, what, outcome) -> None:
        plan = plans[index]
        if outcome.error is not None:
            probing.fail(failure_message(outcome), outcome.task.weight)
        else:
            for step, path, error, size in outcome.result:
                if error is not None:
                    probing.fail(error)
                    continue
                probing.wrote(Path(path), size, len(plan.todo))
        advance(outcome.task.weight)

    def on_done(index) -> None:
        if plans[index].context.record is not None:
            write_history(plans[index].context.series.features_dir)

    work.run(executor, on_outcome, on_done)


def write_history(folder: Path) -> None:
    """The model's loss and accuracy at every probed checkpoint, gathered from the features files'
    metadata (each file carries its own, so a killed probe loses nothing)."""
    import pandas as pd

    rows = []
    for step, features_path in formats.features.list_features(folder.parent):
        evaluation = formats.features.features_metadata(features_path).get("grokscope.eval")
        if evaluation:
            rows.append({"step": step, **json.loads(evaluation)})
    if rows:
        formats.tables.write_table(logs.probed_history_path(folder),
                          pd.DataFrame(rows).sort_values("step").reset_index(drop=True))


def _source(checkpoint, root: Path) -> str:
    try:
        where = str(Path(checkpoint.path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        where = str(checkpoint.path)
    return where if checkpoint.member is None else f"{where}#{checkpoint.member}"


def size_text(n_bytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return f"{n_bytes:.1f} TB"
