"""Choose a synergistic sub-network from a run's O-information and describe its retraining.

Clauw et al. (2024, §6) take the hidden neurons of the most synergistic multiplet at a chosen
step, retrain the network from the same initialisation with every other hidden neuron held at
zero, and find that this sub-network groks like the whole model while its inverse (the other
neurons) does not. ``grokscope subnet`` does that for any run with an o-info table:

* a *rule* (``--at``) picks the step: ``emergence`` (the synergy peak of the emergence phase,
  between memorisation and generalisation), ``min`` (the run's synergy minimum after the initial
  transient), ``step:N`` (a measured step) or ``acc:T`` (the first measured step whose test
  accuracy reaches T, the authors' "generalizing" rule with T = 0.98);
* the multiplet's ``bins`` at that step are turned back into neurons by redoing the step's Ward
  binning on the same features (:func:`grokscope.measures.multiplets.neuron_bins`), checked
  against the row's neuron count;
* the child is an ordinary run whose ``run.json`` carries a ``subnet`` entry
  (:class:`grokscope.config.SubnetConfig`) and which the trainer masks
  (:mod:`grokscope.masking`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from grokscope import formats
from grokscope.errors import GrokscopeError

RULES = ("emergence", "min", "step:N", "acc:T")
#: The test accuracy of ``acc`` without a value: the threshold grokscope reports generalisation at.
DEFAULT_ACCURACY = 0.99


@dataclass(frozen=True)
class Spec:
    """One ``--at`` rule: ``rule`` in emergence, min, step, acc; ``value`` its number (or None)."""

    rule: str
    value: float | None = None

    @property
    def text(self) -> str:
        """The rule as run.json records it (``step:229``, ``acc:0.99``)."""
        if self.value is None:
            return self.rule
        return f"{self.rule}:{int(self.value) if self.rule == 'step' else f'{self.value:g}'}"

    @property
    def label(self) -> str:
        """The rule in a run's name (``step229``, ``acc0.99``)."""
        return self.text.replace(":", "")


def parse_spec(text: str) -> Spec:
    """A ``--at`` value as a :class:`Spec`; a one-line error for anything else."""
    raw = text.strip().lower()
    if raw in ("emergence", "min"):
        return Spec(raw)
    if re.fullmatch(r"\d+", raw):
        return Spec("step", int(raw))
    match = re.fullmatch(r"(step|acc)(?::(.*))?", raw)
    if match:
        rule, value = match.group(1), match.group(2)
        if rule == "acc" and value is None:
            return Spec("acc", DEFAULT_ACCURACY)
        try:
            number = int(value) if rule == "step" else float(value)
        except (TypeError, ValueError):
            number = None
        if rule == "step" and number is not None and number >= 0:
            return Spec("step", number)
        if rule == "acc" and number is not None and 0 < number <= 1:
            return Spec("acc", number)
        what = "a step number" if rule == "step" else "an accuracy in (0, 1]"
        raise GrokscopeError(f"--at: {text!r} needs {what} after '{rule}:'")
    raise GrokscopeError(f"--at: unknown rule {text!r}; use {', '.join(RULES)}")


def choose_step(spec: Spec, synergy: pd.DataFrame, history: pd.DataFrame | None,
                threshold: float = DEFAULT_ACCURACY) -> int:
    """The measured step a rule picks, from a run's synergy curve (``step``, ``value`` = the lowest
    O-information) and its history.

    * ``emergence``: the lowest O-information among the steps from the memorisation step (train
      accuracy first >= ``threshold``, and after the initial transient of
      :func:`grokscope.measures.grokking.transient_end`) up to, not including, the
      generalisation step (test accuracy first >= ``threshold``; the run's end if never);
    * ``min``: the lowest O-information from the end of the initial transient on;
    * ``step``: that step, which must have been measured;
    * ``acc``: the first measured step at or after the first evaluation whose test accuracy
      reaches the rule's value.
    """
    from grokscope.measures.early_synergy import transient_end
    from grokscope.measures.grokking import grokking_summary

    curve = synergy.dropna(subset=["value"]).sort_values("step")
    if curve.empty:
        raise GrokscopeError("no finite synergy values")
    steps = curve["step"].to_numpy()
    if spec.rule == "step":
        if spec.value not in set(steps.tolist()):
            nearest = steps[np.argsort(np.abs(steps - spec.value), kind="stable")[:3]]
            raise GrokscopeError(f"--at {spec.text}: step {spec.value} was not measured; nearest measured: "
                                 f"{', '.join(str(int(s)) for s in sorted(nearest))}")
        return int(spec.value)
    needs_history = history is None or not {"step", "train_acc", "test_acc"} <= set(history.columns)
    if spec.rule != "min" and needs_history:
        raise GrokscopeError(f"--at {spec.text}: the run has no history with train and test accuracy")
    start = transient_end(history)
    if spec.rule == "min":
        after = curve[curve["step"] >= start]
        if after.empty:
            raise GrokscopeError(f"--at min: no measured step after the initial transient (from step {start})")
        return int(after.loc[after["value"].idxmin(), "step"])
    if spec.rule == "acc":
        reached = history.loc[history["test_acc"] >= spec.value, "step"]
        if reached.empty:
            raise GrokscopeError(f"--at {spec.text}: test accuracy never reaches {spec.value:g}")
        later = steps[steps >= int(reached.min())]
        if not len(later):
            raise GrokscopeError(f"--at {spec.text}: no measured step at or after step {int(reached.min())}, "
                                 "where test accuracy first reaches it")
        return int(later[0])
    summary = grokking_summary(history, threshold=threshold)
    memorised, generalised = summary["memorization_step"], summary["generalization_step"]
    if memorised is None:
        raise GrokscopeError(f"--at emergence: the run never reaches {threshold:g} train accuracy, so it "
                             "has no emergence phase (memorisation to generalisation)")
    low = max(memorised, start)
    window = curve[(curve["step"] >= low) & ((curve["step"] < generalised) if generalised is not None else True)]
    if window.empty:
        end = f"step {generalised}" if generalised is not None else "the end"
        raise GrokscopeError(f"--at emergence: no measured step from memorisation (step {low}) to {end}")
    return int(window.loc[window["value"].idxmin(), "step"])


@dataclass(frozen=True)
class Choice:
    """The multiplet a rule chose: its step, layer, bins, O-information and neurons, out of
    ``width`` neurons in the layer."""

    spec: Spec
    step: int
    layer: str
    bins: str
    synergy: float
    neurons: tuple[int, ...]
    width: int

    def kept(self, inverse: bool) -> list[int]:
        """The neurons that train: the multiplet's, or with ``inverse`` every other one."""
        if not inverse:
            return list(self.neurons)
        chosen = set(self.neurons)
        return [n for n in range(self.width) if n not in chosen]


def choose(run_dir: Path, specs: list[Spec], layer: str | None = None,
           threshold: float = DEFAULT_ACCURACY, device: str = "cpu") -> list[Choice]:
    """The multiplet each rule picks in a run's o-info table, with its neurons."""
    from grokscope.context import SeriesContext, iter_features
    from grokscope.discovery import find_series
    from grokscope.measures.multiplets import neuron_bins

    table_path = formats.tables.measures_path(run_dir, "oinfo")
    if not table_path.is_file():
        raise GrokscopeError(f"{run_dir}: no o-info table; run `grokscope measure {run_dir} --metric o-info` first")
    table = formats.tables.read_table(table_path)
    rows = table[table["metric"] == "synergy"]
    if "scope" in rows.columns:
        rows = rows[rows["scope"] == "overall"]
    if rows.empty:
        raise GrokscopeError(f"{table_path}: has no synergy rows")
    layers = sorted(rows["layer"].dropna().unique().tolist())
    if layer is None:
        if len(layers) != 1:
            raise GrokscopeError(f"{table_path}: holds layers {', '.join(layers)}; choose one with --layer")
        layer = layers[0]
    elif layer not in layers:
        raise GrokscopeError(f"--layer: {table_path} has no o-info rows for {layer!r}; it has {', '.join(layers)}")
    rows = rows[rows["layer"] == layer]
    params = json.loads(rows["params"].iloc[0]) if "params" in rows.columns else {}
    context = SeriesContext.open(find_series([str(run_dir)])[0])
    history = context.history()
    picked = [(spec, choose_step(spec, rows[["step", "value"]], history, threshold)) for spec in specs]

    features: dict[int, np.ndarray] = {}
    wanted = sorted({step for _, step in picked})
    train = context.samples().split == 0
    for item in iter_features(context, wanted, layers=[layer], device=device):
        features[item.step] = item.layers[layer][train].cpu().numpy()
    choices = []
    for spec, step in picked:
        if step not in features:
            raise GrokscopeError(f"{run_dir}: no checkpoint or stored features for step {step}")
        row = rows[rows["step"] == step].iloc[0]
        bins = neuron_bins(features[step], n_bins=int(params.get("bins", 10)))
        chosen = [int(b) for b in str(row["bins"]).split(",")]
        neurons = tuple(int(n) for n in np.flatnonzero(np.isin(bins, chosen)))
        if "n_neurons" in row and pd.notna(row["n_neurons"]) and int(row["n_neurons"]) != len(neurons):
            raise GrokscopeError(
                f"{run_dir}: step {step}'s bins {row['bins']} hold {len(neurons)} neurons now, but "
                f"{int(row['n_neurons'])} when measured; the features changed since (measure again with --force)"
            )
        choices.append(Choice(spec, step, layer, str(row["bins"]), float(row["value"]), neurons, bins.shape[0]))
    return choices


def child_config(parent_dir: Path, parent, choice: Choice, inverse: bool):
    """The RunConfig of a sub-network of ``parent`` (its RunConfig): the same settings and seed (so
    the same initialisation and split), a name that says what it is, and the ``subnet`` record."""
    from grokscope.config import SubnetConfig

    suffix = f"subnet-{choice.spec.label}" + ("-inverse" if inverse else "")
    subnet = SubnetConfig(
        parent=os.path.abspath(parent_dir), parent_run=parent.name, rule=choice.spec.text, step=choice.step,
        bins=choice.bins, synergy=choice.synergy, layer=choice.layer, inverse=inverse,
        neurons=choice.kept(inverse),
    )
    if not subnet.neurons:
        raise GrokscopeError(f"{parent_dir}: the {'inverse of the ' if inverse else ''}multiplet at step "
                             f"{choice.step} has no neurons to train")
    return dataclasses.replace(parent, name=f"{parent.name}-{suffix}", subnet=subnet)


def children(run_dir: Path) -> list[Path]:
    """Sub-networks of a run that sit beside it (``grokscope subnet``'s default place), by name."""
    parent = Path(run_dir).resolve()
    found = []
    for candidate in sorted(parent.parent.iterdir()):
        if not formats.run.is_run_dir(candidate):
            continue
        try:
            subnet = formats.run.read_run_config(candidate).get("subnet")
        except GrokscopeError:
            continue
        if isinstance(subnet, dict) and subnet.get("parent") and Path(subnet["parent"]).resolve() == parent:
            found.append(Path(run_dir).parent / candidate.name)
    return found



def with_relatives(inputs: list[str]) -> list[str]:
    """Command-line inputs plus, for every run among them, its sub-networks beside it and, for
    every sub-network, its parent: what ``plot subnet RUN`` draws."""
    from grokscope.discovery import find_series

    paths = [str(path) for path in formats.inputs.expand_inputs(inputs)]  # reads stdin (-) once
    for series in find_series(list(paths)):
        if not series.is_run:
            continue
        paths += [str(child) for child in children(series.root)]
        subnet = formats.run.read_run_config(series.root).get("subnet")
        if isinstance(subnet, dict) and subnet.get("parent") and formats.run.is_run_dir(Path(subnet["parent"])):
            parent = Path(subnet["parent"])
            paths += [str(parent)] + [str(child) for child in children(parent)]
    return list(dict.fromkeys(paths))


def train_subnets(run: Path, at: list[str], *, inverse: bool = False, out: Path | None = None, layer: str | None = None,
                  threshold: float = 0.99, resume: bool = False, device: str = "auto", reporter=None,
                  control: str | None = None, draws: int | None = None, control_seed: int = 0):
    """``grokscope subnet``: train the multiplet of every ``--at`` rule (with ``inverse`` its
    inverse, with ``control="random"`` ``draws`` random sets of its size:
    :mod:`grokscope.subnet_controls`) as a run of its own beside ``run`` (or in ``out``); returns
    the run folders (a :class:`~grokscope.pipeline.reporter.Written`)."""
    from grokscope.devices import resolve_device
    from grokscope.execution import task_threads
    from grokscope.pipeline.reporter import Recording
    from grokscope.pipeline.runs import plan_run, prepare_out, run_folder, train_one
    from grokscope.subnet_controls import CONTROLS, control_configs

    say = Recording(reporter)
    if not formats.run.is_run_dir(run):
        raise GrokscopeError(f"{run}: not a grokscope run (no {formats.run.RUN_FILE}); sub-networks are retrained "
                             "from a run's own initialisation")
    if not 0.0 < threshold <= 1.0:
        raise GrokscopeError(f"--threshold: must lie in (0, 1], got {threshold}")
    if control is not None and control not in CONTROLS:
        raise GrokscopeError(f"--control: unknown {control!r}; known: {', '.join(CONTROLS)}")
    if (control is None) != (draws is None):
        raise GrokscopeError("--control and --draws: give both (--control random --draws N) or neither")
    specs = [parse_spec(part) for value in at for part in value.split(",") if part.strip()]
    if not specs:
        raise GrokscopeError("--at: name at least one rule")
    specs = list(dict.fromkeys(specs))
    parent = formats.run.read_run(run)
    if parent.subnet is not None:
        say.warn(f"{run}: is itself a sub-network (of {parent.subnet.parent_run}); its own sub-networks "
                 "keep only neurons that it trains")
    torch_device = resolve_device(device)
    configs = []
    for choice in choose(run, specs, layer=layer, threshold=threshold, device=str(torch_device)):
        say.info(f"{run}: --at {choice.spec.text}: step {choice.step}, bins {choice.bins} of {choice.layer}, "
                 f"synergy {choice.synergy:.4g}, {len(choice.neurons)} of {choice.width} neurons")
        for flip in ((False, True) if inverse else (False,)):
            config = child_config(run, parent, choice, flip)
            if parent.subnet is not None:
                # Neurons the parent held at zero stay at zero in its sub-networks.
                allowed = set(parent.subnet.neurons)
                config.subnet.neurons = [n for n in config.subnet.neurons if n in allowed]
                if not config.subnet.neurons:
                    raise GrokscopeError(f"{run}: --at {choice.spec.text}{' --inverse' if flip else ''} leaves no "
                                         "neuron that the run itself trains")
            config.validate()
            configs.append(config)
            if control is not None and not flip:
                candidates = parent.subnet.neurons if parent.subnet is not None else range(choice.width)
                configs += control_configs(run, parent, choice, len(config.subnet.neurons), candidates, draws,
                                           control_seed)
    folder = prepare_out(out if out is not None else Path(run).parent)
    run_dirs = [run_folder(folder, config.name) for config in configs]
    plans = [plan_run(run_dir, config, resume) for run_dir, config in zip(run_dirs, configs)]
    # As train chooses them for one run (torch's default, a thread per core, spun on a busy
    # machine: a sub-network took 4x the CPU of its parent's training); results do not depend on it.
    threads = task_threads(1).per_task
    for run_dir, config, plan in zip(run_dirs, configs, plans):
        if plan == "done":
            say.info(f"{run_dir}: already complete, skipped")
        else:
            train_one(run_dir, config, plan, torch_device, say, threads)
        say.result(run_dir)
    return say.written
