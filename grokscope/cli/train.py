"""Train a checkpoint series (one run per combination of the listed hyperparameters)."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Optional

import typer

from grokscope.cli.output import Output
from grokscope.errors import GrokscopeError

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
    from grokscope import sweep

    output = Output(quiet=quiet)
    axes = {
        "task": sweep.parse_values("--task", task, str),
        "p": sweep.parse_values("--p", p, int),
        "train_fraction": sweep.parse_values("--train-fraction", train_fraction, float),
        "train_size": sweep.parse_values("--train-size", train_size, int) if train_size else [None],
        "split_seed": sweep.parse_values("--split-seed", split_seed, int) if split_seed else [None],
        "steps": sweep.parse_values("--steps", steps, int) if steps else [None],
        "model": sweep.parse_values("--model", model, str),
        "width": sweep.parse_values("--width", width, int),
        "depth": sweep.parse_values("--depth", depth, int),
        "d_model": sweep.parse_values("--d-model", d_model, int),
        "n_heads": sweep.parse_values("--heads", heads, int),
        "d_mlp": sweep.parse_values("--d-mlp", d_mlp, int),
        "activation": sweep.parse_values("--activation", activation, str),
        "alpha": sweep.parse_values("--alpha", alpha, float),
        "optimizer": sweep.parse_values("--optimizer", optimizer, str),
        "lr": sweep.parse_values("--lr", lr, float) if lr else [None],
        "weight_decay": sweep.parse_values("--weight-decay", weight_decay, float) if weight_decay else [None],
        "warmup": sweep.parse_values("--warmup", warmup, int) if warmup else [None],
        "spectral_entropy": sweep.parse_values("--spectral-entropy", spectral_entropy, float),
        "weight_noise": sweep.parse_values("--weight-noise", weight_noise, float),
        "loss": sweep.parse_values("--loss", loss, str),
        "batch_size": sweep.parse_values("--batch-size", batch_size, int) if batch_size else [None],
        "seed": sweep.parse_values("--seed", seed, int),
    }
    grid = sweep.expand_grid(axes)
    # Options that are not swept but whose default depends on the model kind.
    unswept = {"save_every": save_every, "save_log": save_log, "eval_every": eval_every, "loss_dtype": loss_dtype}
    configs = [_config(point, data, zero_last, fix_norm, layer_norm, beta1, beta2, eps, momentum, reduction, unswept)
               for point in grid]
    for config in configs:
        config.validate()
    if name is not None:
        _check_run_name(name)
    base = name or _default_base(configs[0], one_model=len(axes["model"]) == 1)
    names = sweep.run_names(base, grid)
    configs = [dataclasses.replace(c, name=n) for c, n in zip(configs, names)]
    run_dirs = [_run_dir(_prepare_out(out), n) for n in names]
    plans = [_plan(run_dir, config, resume) for run_dir, config in zip(run_dirs, configs)]

    from grokscope import execution

    with execution.open_executor(workers, scheduler, threads) as executor:
        todo = []
        for run_dir, config, plan in zip(run_dirs, configs, plans):
            if plan == "done":
                output.info(f"{run_dir}: already complete, skipped")
                if not executor.in_process:
                    output.result(run_dir)
            elif executor.in_process:
                _train_one(run_dir, config, plan, device, output, executor.threads.per_task)
            else:
                todo.append(execution.Task(train_run, (run_dir, config, plan, device), label=str(run_dir), tag=run_dir))
            if executor.in_process:
                output.result(run_dir)
        if todo:
            _train_elsewhere(executor, todo, output)


def _train_elsewhere(executor, tasks, output: Output) -> None:
    """The runs of a sweep on the executor's workers, one task per run; each run's messages are
    said and its folder printed as it finishes. A run that fails is named and the others go on."""
    from grokscope.execution import failure_message

    failed = 0
    usage = False
    with output.progress() as bar:
        task_id = bar.add_task(f"train on {executor.description}", total=len(tasks))
        for outcome in executor.map(tasks):
            bar.advance(task_id)
            if outcome.error is not None:
                output.error(failure_message(outcome))
                failed += 1
                usage = usage or isinstance(outcome.error, GrokscopeError)
                continue
            for kind, message in outcome.result:
                (output.warn if kind == "warning" else output.info)(message)
            output.result(outcome.task.tag)
    if failed:
        output.info(f"train: {failed} of {len(tasks)} run(s) failed (see above)")
        raise typer.Exit(2 if usage else 1)


def train_run(run_dir: Path, config, plan: str, device: str) -> list[tuple[str, str]]:
    """One run of a sweep, as a worker's task: trains it and returns its messages as
    (``"info"`` or ``"warning"``, text). A rerun of the task (Dask reruns the tasks of a worker
    that died) takes over what the earlier attempt left: it resumes from its last save, or
    starts over before the first, and ends bit for bit the same."""
    from grokscope.training import resolve_device

    if plan in ("new", "restart") and run_dir.exists() and any(run_dir.iterdir()):
        plan = _plan(run_dir, config, resume=True)
        if plan == "done":
            return []
    messages: list[tuple[str, str]] = []
    _train_one(run_dir, config, plan, resolve_device(device), Output(quiet=True), None,
               say=lambda kind, text: messages.append((kind, text)))
    return messages


def _check_run_name(name: str) -> None:
    """A run name names one folder inside --out: no separators, no '.' or '..', nothing empty, and
    no control characters (a newline would split the path that stdout carries in two)."""
    separators = {"/", "\\", os.sep, os.altsep} - {None}
    if name in ("", ".", "..") or any(s in name for s in separators) or any(ord(c) < 32 for c in name):
        raise GrokscopeError(
            f"--name: {name!r} is not a plain name (no '/', '\\', '..', control characters); "
            "runs are always written inside --out"
        )


def _run_dir(out: Path, name: str) -> Path:
    run_dir = out / name
    # Sweep suffixes are built from option values; make sure none of them leaves --out either.
    if os.path.dirname(os.path.abspath(run_dir)) != os.path.abspath(out):
        raise GrokscopeError(f"--name: run {name!r} would be written outside --out {out}")
    return run_dir


def _config(point, data, zero_last, fix_norm, layer_norm, beta1, beta2, eps, momentum, reduction, unswept):
    from grokscope.config import ModelConfig, OptimConfig, RunConfig, ScheduleConfig, TaskConfig, model_defaults

    # An option left unset takes its model kind's default, else the dataclass default.
    values = {**point, **unswept}
    for key, default in model_defaults(point["model"]).items():
        if values.get(key) is None:
            values[key] = default

    def given(*keys):
        return {k: values[k] for k in keys if values.get(k) is not None}

    return RunConfig(
        seed=point["seed"],
        task=TaskConfig(
            name=point["task"], p=point["p"], train_fraction=point["train_fraction"],
            train_size=point["train_size"], split_seed=point["split_seed"],
            # Absolute, so that measuring the run from another folder finds the data.
            path=os.path.abspath(data) if data else None,
        ),
        model=ModelConfig(
            kind=point["model"], depth=point["depth"], width=point["width"], alpha=point["alpha"],
            zero_last=zero_last, activation=point["activation"], d_model=point["d_model"],
            n_heads=point["n_heads"], d_mlp=point["d_mlp"], layer_norm=layer_norm,
        ),
        optim=OptimConfig(
            name=point["optimizer"], beta1=beta1, beta2=beta2, eps=eps, momentum=momentum, loss=point["loss"],
            reduction=reduction, batch_size=point["batch_size"], fix_norm=fix_norm,
            spectral_entropy=point["spectral_entropy"], weight_noise=point["weight_noise"],
            **given("lr", "weight_decay", "warmup", "loss_dtype"),
        ),
        schedule=ScheduleConfig(**given("steps", "save_every", "save_log", "eval_every")),
    ).resolved()


def _default_base(config, one_model: bool) -> str:
    from grokscope.config import MODULAR_OPS

    base = f"{config.task.name}-p{config.task.p}" if config.task.name in MODULAR_OPS else config.task.name
    # A sweep over --model names its runs by model already; a lone transformer says so itself,
    # so it never collides with the MLP run of the same task in the same folder.
    return f"{base}-transformer" if one_model and config.model.kind == "transformer" else base


def _prepare_out(out: Path) -> Path:
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        # An anonymous file: nothing is left behind, even if the process is killed here.
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise GrokscopeError(f"--out: cannot write to {out} ({exc.strerror or exc})") from None
    return out


def _plan(run_dir: Path, config, resume: bool) -> str:
    """'new', 'restart', 'resume' or 'done', after checking that an existing directory may be touched.

    'restart': a run of these same settings that never committed its first save (killed or out
    of disk in its first writes); rerunning the command, with or without --resume, starts it over.
    """
    from grokscope import formats

    if not run_dir.exists() or not any(run_dir.iterdir()):
        return "new"
    if formats.run.is_unfinished_start(run_dir) and (
        not (run_dir / formats.run.RUN_FILE).exists() or not _differences_from_stored(run_dir, config)
    ):
        return "restart"
    if not resume:
        raise GrokscopeError(
            f"{run_dir}: already exists and is not empty; pass --resume to continue it, or choose another --out or --name"
        )
    mismatched = _differences_from_stored(run_dir, config)
    if mismatched:
        raise GrokscopeError(
            f"{run_dir}: --resume with different settings than run.json ({', '.join(mismatched)})"
        )
    step = formats.run.resume_step(run_dir)
    if step is None:
        raise GrokscopeError(f"{run_dir}: nothing to resume from (no {formats.run.RESUME_FILE})")
    return "done" if step >= config.schedule.steps else "resume"


def _differences_from_stored(run_dir: Path, config) -> list[str]:
    from grokscope import formats

    stored = formats.run.read_run(run_dir).to_dict()
    if stored["task"].get("path"):
        # Older runs stored --data as typed; it was relative to where training ran.
        stored["task"]["path"] = os.path.abspath(stored["task"]["path"])
    return _config_differences(stored, config.to_dict())


def _config_differences(stored: dict, wanted: dict, prefix: str = "") -> list[str]:
    differences = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += _config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            differences.append(f"{prefix}{key}: {a!r} in run.json, {b!r} now")
    return differences


def _train_one(run_dir: Path, config, plan: str, device, output: Output, threads: Optional[int] = None,
               say=None) -> None:
    """Train one run in this process (``threads``: torch's intra-op threads, if given); its
    messages go to ``say(kind, text)`` when given, else to ``output``."""
    from grokscope import execution, formats
    from grokscope.training import Trainer, first_step_reaching, resolve_device

    if say is None:
        say = lambda kind, text: (output.warn if kind == "warning" else output.info)(text)  # noqa: E731
    if isinstance(device, str):
        device = resolve_device(device)
    if threads:
        execution.set_threads(threads)
    started = time.perf_counter()
    trainer = Trainer(config, run_dir, device)
    digest = trainer.data.split_digest()
    if plan == "resume":
        stored = formats.run.read_run_config(run_dir)
        if stored.get("split_sha256") != digest:
            raise GrokscopeError(f"{run_dir}: the task's train/test split no longer matches run.json")
        for warning in trainer.restore():
            say("warning", warning)
    else:
        if plan == "restart":
            say("info", f"{run_dir}: never finished its first save; starting it over")
            formats.run.clear_unfinished_start(run_dir)
        # run.json first: from then on every state of the folder is one a rerun can continue or
        # start over (see formats.run.is_unfinished_start).
        run_dir.mkdir(parents=True, exist_ok=True)
        formats.run.write_run_config(run_dir, {**config.to_dict(), "split_sha256": digest,
                                         "n_samples": len(trainer.data.y), "n_classes": trainer.data.n_classes})
        (run_dir / formats.run.CHECKPOINTS_DIR).mkdir(exist_ok=True)
    warned = False

    def warn_if_diverged() -> None:
        nonlocal warned
        if trainer.diverged_at is not None and not warned:
            warned = True
            say("warning", f"{run_dir}: diverged: weights or training loss are not finite from step "
                        f"{trainer.diverged_at} on; training continues, later checkpoints hold NaN")

    warn_if_diverged()
    with output.progress("{task.fields[stats]}") as bar:
        task_id = bar.add_task(config.name, total=config.schedule.steps, completed=trainer.step, stats="")

        def on_eval(e):
            warn_if_diverged()
            bar.update(task_id, completed=e.step, stats=(
                f"loss {e.train_loss:.3g}/{e.test_loss:.3g}  acc {e.train_acc:.3f}/{e.test_acc:.3f}"
            ))

        trainer.run(on_eval)
    history = formats.run.read_history(run_dir)
    train_step = first_step_reaching(history, "train_acc")
    test_step = first_step_reaching(history, "test_acc")
    say("info",
        f"{run_dir}: {config.schedule.steps} steps in {time.perf_counter() - started:.1f}s; "
        f"99% train acc at step {train_step}, 99% test acc at step {test_step}"
    )
