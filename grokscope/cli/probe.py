"""Turn checkpoint series into feature matrices: every hidden layer's activations on every sample."""

from __future__ import annotations

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

  grokscope probe my_series/ --model mynet:build --data data.npz

Writes RUN/features/step-NNNNNNNN.safetensors, one float32 matrix per
hidden layer with rows as in RUN/features/samples.safetensors, and prints
each features file on stdout, those already stored too (skipped unless
--force). Another tool's series (checkpoint-500/, step500.pt,
model_step_500.safetensors, ...) gets SERIES/features/ unless --out.
--steps takes steps '1200', ranges '0-1000' or '2000-', and 'every:K'
(every K-th of the chosen checkpoints). See docs/probe.md.
"""

DTYPES = ("float32", "float64", "float16", "bfloat16")


def probe(
    paths: List[str] = typer.Argument(..., metavar="PATH...", help="Runs, folders of runs or series, single checkpoints, or - to read paths from stdin."),
    model: Optional[str] = typer.Option(None, "--model", help="Other tools' series: package.module:factory or file.py:factory, a callable returning the nn.Module."),
    data: Optional[Path] = typer.Option(None, "--data", help="Other tools' series: an .npz with X, y and optionally split (0 train, 1 test; default all train)."),
    layer: Optional[List[str]] = typer.Option(None, "--layer", help="Layer to store (repeatable). Runs: layers.i (default all hidden layers). Other models: a module name for its output, NAME:input for its input (default: the input of the last nn.Linear). The penultimate layer is always stored."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Features folder for a single series written by another tool (default SERIES/features)."),
    steps: Optional[str] = typer.Option(None, "--steps", help="Checkpoints to probe: '1200', '0-1000', '2000-', 'every:5', comma-separated (default all)."),
    force: bool = typer.Option(False, "--force", help="Recompute features that are already stored."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    batch_size: int = typer.Option(16384, "--batch-size", help="Samples per forward pass."),
    dtype: str = typer.Option("float32", "--dtype", help="Compute dtype: float32, float64, float16, bfloat16. Files are float32 either way; half precision rounds activations into ties that rank-based estimators suffer from."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr; only paths on stdout."),
) -> None:
    """Store the hidden-layer activations of every checkpoint on every train and test sample."""
    import torch

    from grokscope import features, series

    output = Output(quiet=quiet)
    started = time.perf_counter()
    if dtype not in DTYPES:
        raise GrokscopeError(f"--dtype: unknown {dtype!r}; known: {', '.join(DTYPES)}")
    if batch_size < 1:
        raise GrokscopeError(f"--batch-size: must be positive, got {batch_size}")
    compute_dtype = getattr(torch, dtype)
    selection = series.parse_steps(steps)
    torch_device = features.resolve_device(device)
    found = series.find_series(paths)
    _check_options(found, model, data, out)
    if dtype in ("float16", "bfloat16"):
        output.warn(f"--dtype {dtype}: activations are rounded to half precision; rank-based estimators will see ties")

    user_data = features.load_data(data) if data is not None else None
    plans = [_plan(s, selection, layer, out, force, user_data, model, torch_device, batch_size, compute_dtype, output)
             for s in found]

    tally = {"probed": 0, "skipped": 0, "failed": 0}
    with output.progress() as bar:
        task = bar.add_task("probe", total=sum(len(p.todo) for p in plans))
        for plan in plans:
            bar.update(task, description=str(plan.series.name))
            _probe_series(plan, torch_device, compute_dtype, force, output, tally, lambda: bar.advance(task))

    n_samples = {p.n_samples for p in plans if p.n_samples}
    n_layers = {len(p.keys) for p in plans if p.keys}
    output.info(
        f"probe: {tally['probed']} probed, {tally['skipped']} already stored, {tally['failed']} failed "
        f"({len(plans)} series, {_span(n_samples)} samples, {_span(n_layers)} layers) "
        f"in {time.perf_counter() - started:.1f}s"
    )
    if tally["failed"]:
        raise typer.Exit(1)


@dataclass
class _Plan:
    """One series: the checkpoints chosen, those still to compute, and how to compute them."""

    series: object
    folder: Path
    chosen: list
    todo: list
    keys: list
    batch_size: int
    extractor: object = None  # built when the series' turn comes, so one series at a time is on the device
    samples: object = None
    user_model: object = None  # other tools' series: the model (on the CPU until its turn) and inputs
    user_x: object = None

    @property
    def n_samples(self) -> int:
        from grokscope import features, store

        if self.samples is not None:
            return len(self.samples)
        if self.extractor is not None:
            return self.extractor.n_samples
        samples_file = self.folder / store.SAMPLES_FILE
        return len(features.load_samples(self.series.root)) if samples_file.is_file() else 0


def _check_options(found, model, data, out) -> None:
    foreign = [s for s in found if not s.is_run]
    if foreign and (model is None or data is None):
        raise GrokscopeError(
            f"{foreign[0].root}: not a grokscope run; probing another tool's series needs --model and --data"
        )
    if (model is not None or data is not None) and not foreign:
        raise GrokscopeError("--model/--data: only for series written by other tools; grokscope runs rebuild theirs from run.json")
    if out is not None and (len(found) != 1 or found[0].is_run):
        raise GrokscopeError(
            "--out: only for a single series written by another tool; a grokscope run's features live in RUN/features"
        )


def _plan(found, selection, layer, out, force, user_data, model_spec, device, batch_size, dtype, output) -> _Plan:
    from grokscope import features, store

    available = [c.step for c in found.checkpoints]
    for step in selection.missing(available):
        output.warn(f"{found.root}: no checkpoint at step {step}")
    wanted = set(selection.select(available))
    chosen = [c for c in found.checkpoints if c.step in wanted]
    if found.is_run:
        keys, _ = features.run_layer_keys(found.root, layer or None)
        folder = found.default_features_dir()
    else:
        user_x, samples = user_data
        user_model = features.build_user_model(model_spec)
        keys, _ = features.user_layer_keys(user_model, layer or None)
        folder = out or found.default_features_dir()
    todo = [c for c in chosen
            if force or not features.holds_layers(folder / store.step_file_name(c.step), keys)]
    if found.is_run:
        return _Plan(found, folder, chosen, todo, keys, batch_size)
    return _Plan(found, folder, chosen, todo, keys, batch_size, samples=samples, user_model=user_model, user_x=user_x)


def _probe_series(plan: _Plan, device, dtype, force, output, tally, advance) -> None:
    from grokscope import features, store

    todo = set(plan.todo)
    tally["skipped"] += len(plan.chosen) - len(todo)
    if todo:
        try:
            if plan.series.is_run:
                plan.extractor, plan.samples = features.run_extractor(
                    plan.series.root, layers=plan.keys, device=device, batch_size=plan.batch_size, dtype=dtype)
            else:
                plan.extractor = features.user_extractor(plan.user_model, plan.user_x, plan.keys, device=device,
                                                         batch_size=plan.batch_size, dtype=dtype)
            features.save_samples(plan.folder, plan.samples, force=force)
        except GrokscopeError as exc:
            output.error(str(exc))
            tally["failed"] += len(todo)
            for _ in todo:
                advance()
            return
    extra = {"grokscope.compute_dtype": str(dtype).removeprefix("torch.")}
    for checkpoint in plan.chosen:
        path = plan.folder / store.step_file_name(checkpoint.step)
        if checkpoint not in todo:
            output.result(path)
            continue
        try:
            item = features.compute_checkpoint(plan.extractor, checkpoint, device)
            source = {"grokscope.checkpoint": _relative(checkpoint.path, plan.series.root)}
            store.save_features(path, checkpoint.step, item.layers, item.penultimate, {**extra, **source})
        except GrokscopeError as exc:
            output.error(str(exc))
            tally["failed"] += 1
        else:
            output.result(path)
            tally["probed"] += 1
        advance()
    plan.extractor = plan.user_model = None  # frees the device for the next series


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def _span(values: set) -> str:
    if not values:
        return "0"
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"
