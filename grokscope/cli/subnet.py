"""Retrain a run's most synergistic multiplet of neurons alone (and its inverse), as Clauw et al. §6."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from grokscope.cli.output import Output
from grokscope.errors import GrokscopeError

EPILOG = """\
Examples:

  grokscope subnet runs/add-p97-wd2 --at emergence --inverse   # the sub-network and its inverse

  grokscope subnet runs/add-p97-wd2 --at emergence,min,step:300,acc:0.98

  grokscope subnet runs/add-p97-wd2 --at emergence --inverse | grokscope measure - --metric o-info

  grokscope plot subnet runs/add-p97-wd2 -o subnet.png         # the original, sub-network, inverse

Rules (--at, repeatable or comma-separated): emergence (lowest O-information from the
memorisation step to the generalisation step), min (lowest O-information after the initial
transient), step:N (a measured step), acc:T (the first measured step whose test accuracy reaches
T; 'acc' alone is acc:0.99). The run needs an o-info table (grokscope measure RUN --metric o-info).

Each sub-network is an ordinary run, RUN-subnet-RULE (and RUN-subnet-RULE-inverse), trained from
RUN's initialisation and split with every other neuron of the layer held at zero; its run.json
records the parent, the rule, the step, the bins and the neurons. Each run's path is printed on
stdout as it finishes.
"""


def subnet(
    run: Path = typer.Argument(..., help="A grokscope run with an o-info table."),
    at: List[str] = typer.Option(..., "--at", help="Rule that picks the step: emergence, min, step:N, acc:T (repeatable, or comma-separated)."),
    inverse: bool = typer.Option(False, "--inverse", help="Also train the inverse: every neuron of the layer but the multiplet's."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the new runs (default: the folder RUN is in)."),
    layer: Optional[str] = typer.Option(None, "--layer", help="The layer whose o-info rows to use (default: the only one measured)."),
    threshold: float = typer.Option(0.99, "--threshold", help="emergence: the accuracy that counts as memorised (train) / generalised (test)."),
    resume: bool = typer.Option(False, "--resume", help="Continue interrupted sub-networks; finished ones are skipped."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr; only paths on stdout."),
) -> None:
    """Train the hidden neurons of a run's most synergistic multiplet alone, from the same initialisation."""
    from grokscope import formats
    from grokscope import subnet as subnets
    from grokscope.cli.train import _plan, _prepare_out, _run_dir, _train_one
    from grokscope.training import resolve_device

    output = Output(quiet=quiet)
    if not formats.run.is_run_dir(run):
        raise GrokscopeError(f"{run}: not a grokscope run (no {formats.run.RUN_FILE}); sub-networks are retrained "
                             "from a run's own initialisation")
    if not 0.0 < threshold <= 1.0:
        raise GrokscopeError(f"--threshold: must lie in (0, 1], got {threshold}")
    specs = [subnets.parse_spec(part) for value in at for part in value.split(",") if part.strip()]
    if not specs:
        raise GrokscopeError("--at: name at least one rule")
    specs = list(dict.fromkeys(specs))
    parent = formats.run.read_run(run)
    if parent.subnet is not None:
        output.warn(f"{run}: is itself a sub-network (of {parent.subnet.parent_run}); its own sub-networks "
                    "keep only neurons that it trains")
    torch_device = resolve_device(device)
    choices = subnets.choose(run, specs, layer=layer, threshold=threshold, device=str(torch_device))
    configs = []
    for choice in choices:
        output.info(f"{run}: --at {choice.spec.text}: step {choice.step}, bins {choice.bins} of {choice.layer}, "
                    f"synergy {choice.synergy:.4g}, {len(choice.neurons)} of {choice.width} neurons")
        for flip in ((False, True) if inverse else (False,)):
            config = subnets.child_config(run, parent, choice, flip)
            if parent.subnet is not None:
                # Neurons the parent held at zero stay at zero in its sub-networks.
                allowed = set(parent.subnet.neurons)
                config.subnet.neurons = [n for n in config.subnet.neurons if n in allowed]
                if not config.subnet.neurons:
                    raise GrokscopeError(f"{run}: --at {choice.spec.text}{' --inverse' if flip else ''} leaves no "
                                         "neuron that the run itself trains")
            config.validate()
            configs.append(config)
    folder = _prepare_out(out if out is not None else Path(run).parent)
    run_dirs = [_run_dir(folder, config.name) for config in configs]
    plans = [_plan(run_dir, config, resume) for run_dir, config in zip(run_dirs, configs)]
    for run_dir, config, plan in zip(run_dirs, configs, plans):
        if plan == "done":
            output.info(f"{run_dir}: already complete, skipped")
        else:
            _train_one(run_dir, config, plan, torch_device, output)
        output.result(run_dir)
