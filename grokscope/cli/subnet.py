"""Retrain a run's most synergistic multiplet of neurons alone (and its inverse), as Clauw et al. §6."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from grokscope.cli.output import Output

EPILOG = """\
Examples:

  grokscope subnet runs/add-p97-wd2 --at emergence --inverse   # the sub-network and its inverse

  grokscope subnet runs/add-p97-wd2 --at emergence,min,step:300,acc:0.98

  grokscope subnet runs/add-p97-wd2 --at emergence --inverse | grokscope measure - --metric o-info

  grokscope subnet runs/add-p97-wd2 --at emergence --control random --draws 10

  grokscope plot subnet runs/add-p97-wd2 -o subnet.png         # the original, sub-network, inverse

Rules (--at, repeatable or comma-separated): emergence (lowest O-information from the
memorisation step to the generalisation step), min (lowest O-information after the initial
transient), step:N (a measured step), acc:T (the first measured step whose test accuracy reaches
T; 'acc' alone is acc:0.99). The run needs an o-info table (grokscope measure RUN --metric o-info).

Each sub-network is an ordinary run, RUN-subnet-RULE (and RUN-subnet-RULE-inverse), trained from
RUN's initialisation and split with every other neuron of the layer held at zero; its run.json
records the parent, the rule, the step, the bins and the neurons. --control random --draws N
adds RUN-subnet-RULE-random0 ... N-1: random sets of exactly the multiplet's size from the same
layer, draw j from numpy's default_rng([--control-seed, j]), recorded in run.json's subnet
control entry (kind, draw, base_seed). Each run's path is printed on
stdout as it finishes.
"""


def subnet(
    run: Path = typer.Argument(..., help="A grokscope run with an o-info table."),
    at: List[str] = typer.Option(..., "--at", help="Rule that picks the step: emergence, min, step:N, acc:T (repeatable, or comma-separated)."),
    inverse: bool = typer.Option(False, "--inverse", help="Also train the inverse: every neuron of the layer but the multiplet's."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the new runs (default: the folder RUN is in)."),
    layer: Optional[str] = typer.Option(None, "--layer", help="The layer whose o-info rows to use (default: the only one measured)."),
    threshold: float = typer.Option(0.99, "--threshold", help="emergence: the accuracy that counts as memorised (train) / generalised (test)."),
    control: Optional[str] = typer.Option(None, "--control", help="Also train size-matched controls: random (N random neuron sets of the multiplet's size from its layer)."),
    draws: Optional[int] = typer.Option(None, "--draws", help="--control random: how many sets (draw j seeded by --control-seed and j)."),
    control_seed: int = typer.Option(0, "--control-seed", help="--control random: the base seed of the draws."),
    resume: bool = typer.Option(False, "--resume", help="Continue interrupted sub-networks; finished ones are skipped."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr; only paths on stdout."),
) -> None:
    """Train the hidden neurons of a run's most synergistic multiplet alone, from the same initialisation."""
    from grokscope.cli.checks import device_name, paths_exist

    paths_exist([str(run)])
    device_name(device)
    from grokscope.subnet import train_subnets

    train_subnets(run, at, inverse=inverse, out=out, layer=layer, threshold=threshold, resume=resume, device=device,
                  reporter=Output(quiet=quiet), control=control, draws=draws, control_seed=control_seed)
