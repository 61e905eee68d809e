"""Train a checkpoint series (one run per combination of the listed hyperparameters)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from grokscope.cli.output import Output

EPILOG = """\
Examples:

  grokscope train --out runs/                      # the seed experiment: (a+b) mod 97, wd 0.1

  grokscope train --weight-decay 0.1,2 --seed 0-2 --out runs/   # 6 runs, one directory each

  grokscope train --alpha 8 --fix-norm --zero-last --weight-decay 0 --out runs/   # Liu et al.

  grokscope train --spectral-entropy 0,0.1 --out runs/   # DeMoss et al.'s penalty, against none

  grokscope train --task digits --train-size 1000 --steps 2000 --out runs/

  grokscope train --model transformer --p 113 --train-fraction 0.3 --out runs/   # Nanda et al.

  grokscope train --model transformer --depth 2 --batch-size 512 --layer-norm --activation gelu --out runs/

  grokscope train --weight-decay 0.1,2 --seed 0-3 --workers 2 --out runs/   # 2 runs at a time

  grokscope train --weight-decay 0.1,2 --seed 0-3 --scheduler tcp://head:8786 --out runs/   # on a Dask cluster

Every hyperparameter option takes a list ("0.1,2,10") and integer ones a range ("0-4").
Each run directory is printed on stdout as it finishes. Options marked "by model" default to
the MLP's seed setup, or for --model transformer to Nanda et al.'s (lr 1e-3, weight decay 1,
10 warmup updates) with its own schedule.
"""

SWEEPABLE = "Takes a list: 'a,b,c' (integers also 'lo-hi')."


def train(
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Folder that receives one run directory per combination."),
    name: Optional[str] = typer.Option(None, "--name", help="Base name of the run directories (default: task and p)."),
    task: str = typer.Option("add", "--task", help=f"add, sub, mul, div, sq_sum (a²+b²), poly (a²+ab+b²), digits, npz. {SWEEPABLE}"),
    p: str = typer.Option("97", "--p", help=f"Modulus of the arithmetic tasks. {SWEEPABLE}"),
    train_fraction: str = typer.Option("0.4", "--train-fraction", help=f"Share of samples used for training. {SWEEPABLE}"),
    train_size: Optional[str] = typer.Option(None, "--train-size", help=f"Number of training samples (overrides --train-fraction). {SWEEPABLE}"),
    split_seed: Optional[str] = typer.Option(None, "--split-seed", help=f"Seed of the train/test split (default: --seed). {SWEEPABLE}"),
    data: Optional[Path] = typer.Option(None, "--data", help="An .npz file with X, y (and optionally split) for --task npz."),
    steps: Optional[str] = typer.Option(None, "--steps", help=f"Optimizer steps (by model: 4000; transformer 20000). {SWEEPABLE}"),
    model: str = typer.Option("mlp", "--model", help=f"mlp (one-hot inputs) or transformer (tokens a, b, =). {SWEEPABLE}"),
    width: str = typer.Option("250", "--width", help=f"MLP: hidden units per layer. {SWEEPABLE}"),
    depth: str = typer.Option("1", "--depth", help=f"MLP: hidden layers; transformer: blocks. {SWEEPABLE}"),
    d_model: str = typer.Option("128", "--d-model", help=f"Transformer: residual stream width. {SWEEPABLE}"),
    heads: str = typer.Option("4", "--heads", help=f"Transformer: attention heads (must divide --d-model). {SWEEPABLE}"),
    d_mlp: str = typer.Option("512", "--d-mlp", help=f"Transformer: MLP neurons per block. {SWEEPABLE}"),
    activation: str = typer.Option("relu", "--activation", help=f"relu or gelu. {SWEEPABLE}"),
    layer_norm: bool = typer.Option(False, "--layer-norm/--no-layer-norm", help="Transformer: pre-LayerNorm blocks and a final LayerNorm."),
    alpha: str = typer.Option("1", "--alpha", help=f"Initialisation scale: every weight times alpha. {SWEEPABLE}"),
    zero_last: bool = typer.Option(False, "--zero-last/--no-zero-last", help="Zero-initialise the output layer."),
    fix_norm: bool = typer.Option(False, "--fix-norm/--no-fix-norm", help="Hold the global weight norm at its initial value after every step."),
    optimizer: str = typer.Option("adamw", "--optimizer", help=f"adamw or sgd. {SWEEPABLE}"),
    lr: Optional[str] = typer.Option(None, "--lr", help=f"Learning rate (by model: 0.03; transformer 1e-3). {SWEEPABLE}"),
    weight_decay: Optional[str] = typer.Option(None, "--weight-decay", "--wd", help=f"Weight decay, decoupled for AdamW (by model: 0.1; transformer 1). {SWEEPABLE}"),
    warmup: Optional[str] = typer.Option(None, "--warmup", help=f"Linear learning-rate warmup over N updates (by model: 0; transformer 10). {SWEEPABLE}"),
    spectral_entropy: str = typer.Option("0", "--spectral-entropy", help=f"Add BETA x the mean spectral entropy of the weight matrices to the loss (DeMoss et al.: 0.1). {SWEEPABLE}"),
    weight_noise: str = typer.Option("0", "--weight-noise", help=f"Std of Gaussian noise on every weight in the training forward pass (DeMoss et al.: 0.01). {SWEEPABLE}"),
    beta1: float = typer.Option(0.9, "--beta1", help="AdamW beta1."),
    beta2: float = typer.Option(0.98, "--beta2", help="AdamW beta2."),
    eps: float = typer.Option(1e-8, "--eps", help="AdamW epsilon."),
    momentum: float = typer.Option(0.0, "--momentum", help="SGD momentum."),
    loss: str = typer.Option("ce", "--loss", help=f"ce (cross-entropy) or mse (on one-hot targets). {SWEEPABLE}"),
    reduction: str = typer.Option("mean", "--reduction", help="mse only: mean over all outputs, or sum over classes."),
    loss_dtype: Optional[str] = typer.Option(None, "--loss-dtype", help="float32 or float64 logits for the loss (by model: float32; transformer float64)."),
    batch_size: Optional[str] = typer.Option(None, "--batch-size", help=f"Minibatch size (default: full batch). {SWEEPABLE}"),
    seed: str = typer.Option("0", "--seed", help=f"Seed of the initialisation (and of the split unless --split-seed). {SWEEPABLE}"),
    save_every: Optional[int] = typer.Option(None, "--save-every", help="Checkpoint every N steps, 0: off (by model: 40; transformer 100)."),
    save_log: Optional[int] = typer.Option(None, "--save-log", help="Also checkpoint at N log-spaced steps, 0: off (by model: 140; transformer 100)."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Evaluate train/test loss and accuracy every N steps and at each checkpoint (by model: 10; transformer 50)."),
    resume: bool = typer.Option(False, "--resume", help="Continue interrupted runs from their last checkpoint; finished runs are skipped."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    workers: int = typer.Option(1, "--workers", "-j", help="Train the runs of a sweep in N local worker processes (a local Dask cluster when Dask is installed)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Train the runs on an existing Dask scheduler, e.g. tcp://head:8786 (or set GROKSCOPE_SCHEDULER); see docs/scaling.md."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads per run (default: the cores shared among the workers, fewer on a busy machine)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr; only paths on stdout."),
) -> None:
    """Train grokking runs and write a safetensors checkpoint series for each."""
    import grokscope

    written = grokscope.train(
        out=out, name=name, task=task, p=p, train_fraction=train_fraction, train_size=train_size,
        split_seed=split_seed, data=data, steps=steps, model=model, width=width, depth=depth, d_model=d_model,
        heads=heads, d_mlp=d_mlp, activation=activation, layer_norm=layer_norm, alpha=alpha, zero_last=zero_last,
        fix_norm=fix_norm, optimizer=optimizer, lr=lr, weight_decay=weight_decay, warmup=warmup,
        spectral_entropy=spectral_entropy, weight_noise=weight_noise, beta1=beta1, beta2=beta2, eps=eps,
        momentum=momentum, loss=loss, reduction=reduction, loss_dtype=loss_dtype, batch_size=batch_size, seed=seed,
        save_every=save_every, save_log=save_log, eval_every=eval_every, resume=resume, device=device,
        workers=workers, scheduler=scheduler, threads=threads, reporter=Output(quiet=quiet))
    if written.exit_code:
        raise typer.Exit(written.exit_code)
