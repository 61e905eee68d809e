"""``grokscope train`` as a function: one run per combination of the listed hyperparameters.

Every hyperparameter takes a list (text as the command line writes it, "0.1,2" or integers
"0-4", or Python values); the grid of their combinations names its runs by the values that vary.
Each run folder is planned (:func:`~grokscope.pipeline.runs.plan_run`), then trained in this
process one after another or on the executor's workers (one task per run), and said as it
finishes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from grokscope.errors import GrokscopeError
from grokscope.pipeline.reporter import Recording, Reporter, Written

ListOption = Any  # text ("0.1,2", "0-4"), one value, or a sequence of values


def train(*, out: Path = Path("runs"), name: str | None = None, task: ListOption = "add", p: ListOption = 97,
          train_fraction: ListOption = 0.4, train_size: ListOption = None, split_seed: ListOption = None,
          data: Path | None = None, steps: ListOption = None, model: ListOption = "mlp", width: ListOption = 250,
          depth: ListOption = 1, d_model: ListOption = 128, heads: ListOption = 4, d_mlp: ListOption = 512,
          activation: ListOption = "relu", layer_norm: bool = False, alpha: ListOption = 1, zero_last: bool = False,
          fix_norm: bool = False, optimizer: ListOption = "adamw", lr: ListOption = None,
          weight_decay: ListOption = None, warmup: ListOption = None, spectral_entropy: ListOption = 0,
          weight_noise: ListOption = 0, beta1: float = 0.9, beta2: float = 0.98, eps: float = 1e-8,
          momentum: float = 0.0, loss: ListOption = "ce", reduction: str = "mean", loss_dtype: str | None = None,
          batch_size: ListOption = None, seed: ListOption = 0, save_every: int | None = None,
          save_log: int | None = None, eval_every: int | None = None, resume: bool = False, device: str = "auto",
          workers: int = 1, scheduler: str | None = None, threads: int | None = None,
          reporter: Reporter | None = None) -> Written:
    """Train runs into ``out`` as ``grokscope train`` does, with its options by the same names;
    None takes the model kind's default. Returns the run folders (see
    :class:`~grokscope.pipeline.reporter.Written`; with workers, ``failed`` and ``refused`` name
    the runs that failed, while in this process a failure raises)."""
    import dataclasses

    from grokscope import execution, sweep
    from grokscope.pipeline.runs import (find_twin, plan_run, prepare_out, run_folder, train_elsewhere, train_one,
                                         train_run)
    from grokscope.pipeline.values import listed

    say = Recording(reporter)
    axes = {
        "task": listed("--task", task, str), "p": listed("--p", p, int),
        "train_fraction": listed("--train-fraction", train_fraction, float),
        "train_size": _unless_unset("--train-size", train_size, int),
        "split_seed": _unless_unset("--split-seed", split_seed, int), "steps": _unless_unset("--steps", steps, int),
        "model": listed("--model", model, str), "width": listed("--width", width, int),
        "depth": listed("--depth", depth, int), "d_model": listed("--d-model", d_model, int),
        "n_heads": listed("--heads", heads, int), "d_mlp": listed("--d-mlp", d_mlp, int),
        "activation": listed("--activation", activation, str), "alpha": listed("--alpha", alpha, float),
        "optimizer": listed("--optimizer", optimizer, str), "lr": _unless_unset("--lr", lr, float),
        "weight_decay": _unless_unset("--weight-decay", weight_decay, float),
        "warmup": _unless_unset("--warmup", warmup, int),
        "spectral_entropy": listed("--spectral-entropy", spectral_entropy, float),
        "weight_noise": listed("--weight-noise", weight_noise, float), "loss": listed("--loss", loss, str),
        "batch_size": _unless_unset("--batch-size", batch_size, int), "seed": listed("--seed", seed, int),
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
    run_dirs = [run_folder(prepare_out(Path(out)), n) for n in names]
    plans = [plan_run(run_dir, config, resume) for run_dir, config in zip(run_dirs, configs)]
    with execution.open_executor(workers, scheduler, threads) as executor:
        if executor.threads.warning:
            say.warn(executor.threads.warning)
        todo = []
        for run_dir, config, plan in zip(run_dirs, configs, plans):
            twin = find_twin(run_dir.parent, run_dir, config) if plan == "new" else None
            if twin is not None and twin[1]:
                say.warn(f"{run_dir}: the same settings and seed as {twin[0]}, which is finished: that run is "
                         "given instead (to train a second copy, choose another --out)")
                say.result(twin[0])
                continue
            if twin is not None:
                say.warn(f"{run_dir}: the same settings and seed as the unfinished {twin[0]}; training this one "
                         f"from the start (--name {twin[0].name} --resume would continue that one)")
            if plan == "done":
                say.info(f"{run_dir}: already complete, skipped")
                if not executor.in_process:
                    say.result(run_dir)
            elif executor.in_process:
                train_one(run_dir, config, plan, device, say, executor.threads.per_task)
            else:
                todo.append(execution.Task(train_run, (run_dir, config, plan, device), label=str(run_dir), tag=run_dir))
            if executor.in_process:
                say.result(run_dir)
        if todo:
            train_elsewhere(executor, todo, say)
    return say.written


def _unless_unset(option: str, value, kind) -> list:
    """A hyperparameter's values; unset (None, or empty text) is [None]: the model kind's default."""
    from grokscope.pipeline.values import listed

    return [None] if value is None or value == "" else listed(option, value, kind)


def _check_run_name(name: str) -> None:
    """A run name names one folder inside --out: no separators, no '.' or '..', nothing empty, and
    no control characters (a newline would split the path that stdout carries in two)."""
    separators = {"/", "\\", os.sep, os.altsep} - {None}
    if name in ("", ".", "..") or any(s in name for s in separators) or any(ord(c) < 32 for c in name):
        raise GrokscopeError(
            f"--name: {name!r} is not a plain name (no '/', '\\', '..', control characters); "
            "runs are always written inside --out"
        )


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
