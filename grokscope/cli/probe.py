"""Turn checkpoint series into feature matrices: every hidden layer's activations on every sample."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from grokscope.cli.output import Output
from grokscope.cli.progress import waiting_for

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

PANELS = {
    "What to store": ("steps", "layer", "force", "dtype", "storage", "batch_size"),
    "Another tool's series": ("model", "data", "out", "allow_global"),
    "Execution": ("device", "workers", "scheduler", "threads", "max_memory", "quiet"),
}


def probe(
    paths: List[str] = typer.Argument(..., metavar="PATH...", help="Runs, checkpoint series (folders or single files), folders of them, single checkpoints, or - to read paths from stdin."),
    model: Optional[str] = typer.Option(None, "--model", help="Other tools' series: package.module:factory or file.py:factory, a callable returning the untrained nn.Module (not needed where checkpoints carry a Hugging Face config.json)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Other tools' series: an .npz with X, y and optionally split (0 train, 1 test; default all train)."),
    layer: Optional[List[str]] = typer.Option(None, "--layer", help="Layer to store (repeatable). Runs: layers.i (default all hidden layers). Other models: a module name for its output, NAME:input for its input, then @-1 / @0 / @all for a token position of a sequence output (default: the input of the last nn.Linear, last token). The penultimate layer is always stored."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Home for a single series written by another tool: its features/ (and later measures/) go here (default: the series folder)."),
    steps: Optional[str] = typer.Option(None, "--steps", help="Checkpoints to probe: '1200', '0-1000', '2000-', 'every:5', comma-separated (default all)."),
    force: bool = typer.Option(False, "--force", help="Recompute features that are already stored (and accept a new --model or --data)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    batch_size: int = typer.Option(16384, "--batch-size", help="Samples per forward pass, at most (fewer where --max-memory says so)."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Memory a forward pass's activations may take, e.g. 512M or 2G (default: a quarter of the available memory, at most 512M; on the CPU at most 256M, which runs faster); the model runs on batches that fit."),
    dtype: str = typer.Option("float32", "--dtype", help="Compute dtype: float32, float64, float16, bfloat16. Half precision runs mixed (float32 weights, matrix products in half precision as torch.autocast does; on CPUs with bfloat16 units about 2x faster) and rounds activations into ties that rank-based estimators suffer from. Files are float32 either way (see --storage)."),
    storage: str = typer.Option("float32", "--storage", help="Dtype of the stored features: float32 (the format's default) or float16 (half the disk; rounds activations into ties). measure needs no stored features: it computes them in memory."),
    allow_global: Optional[List[str]] = typer.Option(None, "--allow-global", help="Let pickled checkpoints hold this class (module.Name, repeatable; e.g. argparse.Namespace in Lightning hyperparameters). Only for files you trust."),
    workers: int = typer.Option(1, "--workers", "-j", help="Probe checkpoints in N local worker processes (a local Dask cluster when Dask is installed)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Probe on an existing Dask scheduler, e.g. tcp://head:8786 (or set GROKSCOPE_SCHEDULER); its workers write the features files, so they need the series' folders at the same paths. See docs/scaling.md."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads per task (default: the cores shared among the workers, fewer on a busy machine)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr; only paths on stdout."),
) -> None:
    """Store the hidden-layer activations of every checkpoint on every train and test sample."""
    from grokscope.cli import checks

    checks.before_probe(paths, model=model, data=data, steps=steps, device=device, dtype=dtype, storage=storage)
    import grokscope

    written = grokscope.probe(paths, model=model, data=data, layers=layer, out=out, steps=steps, force=force,
                              device=device, batch_size=batch_size, dtype=dtype, storage=storage,
                              allow_global=allow_global or [], workers=workers, scheduler=scheduler, threads=threads,
                              max_memory=max_memory, reporter=Output(quiet=quiet, waiting=waiting_for(paths)))
    if written.exit_code:
        raise typer.Exit(written.exit_code)
