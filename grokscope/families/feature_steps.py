"""The feature families (collapse, hsic, oinfo) over checkpoints of one series: each checkpoint's
features, stored or computed in memory, measured by every family that still needs that step."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch

from grokscope import formats
from grokscope.discovery import Series
from grokscope.errors import GrokscopeError
from grokscope.families.collapse import check_classes, collapse_rows
from grokscope.families.hsic import hsic_references, hsic_rows
from grokscope.families.oinfo import oinfo_rows
from grokscope.families.options import MeasureOptions
from grokscope.families.problems import Problem, describe_failure, nan_rows
from grokscope.fingerprints import SOURCE_COLUMN
from grokscope.memory import allocation_message, is_allocation_failure

# The options that lower what a family asks for, named when an allocation fails.
LOWER = {"collapse": "--layer (fewer, narrower layers)", "hsic": "--hsic-batch-size",
         "oinfo": "--bins or --max-size"}


def _finite(tensor: torch.Tensor) -> bool:
    return bool(torch.isfinite(tensor).all())


def measure_steps(series: Series, steps: dict[str, list[int]], options: MeasureOptions, device: str = "cpu",
                  threads: int | None = None,
                  on_step: Callable[[int, dict[str, list[dict]]], None] | None = None,
                  ) -> tuple[dict[str, list[dict]], list[Problem]]:
    """Rows of the feature families at the given steps of one series, and the problems met.

    ``steps`` maps a family to the steps it still needs. A checkpoint or features file that
    cannot be read, or whose row count differs from the samples', is an "error" problem and its
    step is skipped; a family that cannot be computed at a step (on one layer) gives NaN rows
    there and a "nan" problem with the reason; the other families and layers keep their values.
    Problems of the series as a whole (a changed data split, one class only) raise.

    With ``on_step(step, rows)`` each step's rows (family -> rows) are handed over as soon as
    they are computed, and not returned; without it they are returned at the end. Runs in a
    worker process with ``--workers``, so it takes and returns plain data only.
    """
    from grokscope.context import SeriesContext, iter_features
    from grokscope.devices import resolve_device

    if threads:
        torch.set_num_threads(threads)
    context = SeriesContext.open(series)
    rows: dict[str, list[dict]] = {family: [] for family in steps}
    problems: list[Problem] = []
    all_steps = sorted(set().union(*steps.values())) if steps else []
    if not all_steps:
        return rows, problems
    layers = list(options.layers) if options.layers else [_penultimate(context)]
    samples = context.samples()
    torch_device = resolve_device(device)
    labels = torch.from_numpy(samples.labels).to(torch_device)
    split = torch.from_numpy(samples.split).to(torch_device)
    if "collapse" in steps:
        check_classes(series, labels, split, options)
    references, inputs, hsic_failure = None, None, None
    if "hsic" in steps:
        from grokscope.measures.hsic import as_hsic_inputs

        # Token ids stay ids (TokenInputs): their one-hot kernel follows from Hamming distances,
        # per minibatch, so nothing of size n x T*V is ever built.
        try:
            inputs = as_hsic_inputs(context.inputs()).to(torch_device)
            references = hsic_references(inputs, labels, split, options)
        except GrokscopeError:
            raise
        except Exception as exc:  # e.g. out of memory: nHSIC is NaN at every step, the others go on
            hsic_failure = exc

    def on_error(step, error):
        problems.append(Problem("error", str(error), step=step))

    def family_rows(family: str, item, layer: str) -> list[dict]:
        if family == "collapse":
            try:
                weight = context.output_weight(item.state) if item.checkpoint is not None else None
            except GrokscopeError as exc:
                # Stored features of a checkpoint that is no longer readable: everything but the
                # measures of the output layer (NC3, NC4), which are NaN, and the file is named.
                problems.append(Problem("error", str(exc), step=item.step))
                rows = collapse_rows(item.layers, labels, split, [layer], None, item.penultimate, options)
                if layer == item.penultimate:
                    rows += [{**row, "metric": m, "value": math.nan} for row in rows if row["metric"] == "rnc1"
                             for m in ("nc3", "nc4")]
                return rows
            return collapse_rows(item.layers, labels, split, [layer], weight, item.penultimate, options)
        if family == "hsic":
            if hsic_failure is not None:
                raise hsic_failure
            return hsic_rows(item.layers, references, split, [layer], options, inputs, labels)
        return oinfo_rows(item.layers, split, [layer], options)

    for item in iter_features(context, all_steps, layers=layers, device=torch_device, max_memory=options.max_memory,
                              on_error=on_error):
        wrong = next((layer for layer in layers if item.layers[layer].shape[0] != len(samples)), None)
        if wrong is not None:
            source = series.features_dir / formats.steps.step_file_name(item.step) if item.from_store else item.checkpoint.path
            problems.append(Problem("error", (
                f"{source}: {item.layers[wrong].shape[0]} rows in {wrong}, but {_samples_source(series)} lists "
                f"{len(samples)} samples; probe it again with --force"), step=item.step))
            continue
        finite = {layer: _finite(item.layers[layer]) for layer in layers}
        if not all(finite.values()):
            problems.append(Problem("nan", "features are not finite (diverged?)", None, item.step))
        found: dict[str, list[dict]] = {}
        for family, wanted in steps.items():
            if item.step not in wanted:
                continue
            new = []
            for layer in layers:
                if not finite[layer]:
                    new += nan_rows(family, [layer], options)
                    continue
                try:
                    new += family_rows(family, item, layer)
                except Exception as exc:  # any, foreseen or not: this family's rows only
                    new += nan_rows(family, [layer], options)
                    reason = (allocation_message(family, exc, LOWER[family]) if is_allocation_failure(exc)
                              else describe_failure(exc))
                    problems.append(Problem("nan", f"{layer}: {reason}" if len(layers) > 1 else reason,
                                            family, item.step))
            # The features' checkpoint digest: a later measure recomputes the step once it differs.
            found[family] = [{"step": item.step, **row, SOURCE_COLUMN: item.source} for row in new]
        if on_step is not None:
            on_step(item.step, found)
        else:
            for family, new in found.items():
                rows[family] += new
    return rows, problems


def _samples_source(series: Series) -> Path | str:
    path = series.features_dir / formats.features.SAMPLES_FILE
    return path if path.is_file() else f"{series.root}'s data"


def _penultimate(context) -> str:
    if not context.can_compute:
        files = formats.features.list_features(context.series.home)
        if files:  # features stored by an older probe, which wrote no record
            return formats.features.features_header(files[-1][1])[2]
    return context.layer_keys()[1]  # a series never probed: raises, naming the probe command
