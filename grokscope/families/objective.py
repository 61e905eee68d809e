"""The model of a series and its training loss, as the families that run the model on the training
split (complexity, llc) both need them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from grokscope.discovery import Series


@dataclass
class TrainingObjective:
    """A series' model in eval mode on ``device``, its training split and the run's own loss.

    ``criterion(logits, targets)`` is the run's training loss (cross-entropy for another tool's
    series); ``readout(output)`` reads the model's output as class logits, at the token position
    probe reads."""

    context: object  # grokscope.context.SeriesContext
    layout: object  # its grokscope.context.WeightLayout, whose model is ``model``
    model: torch.nn.Module
    inputs: torch.Tensor  # (n, ...)
    targets: torch.Tensor  # (n,)
    criterion: Callable
    readout: Callable
    device: torch.device


def training_objective(series: Series, device: str = "cpu", threads: int | None = None) -> TrainingObjective:
    """The series' :class:`TrainingObjective`; a series without a model raises, saying how to probe it."""
    from grokscope.context import SeriesContext
    from grokscope.devices import resolve_device
    from grokscope.features import inputs_on, output_logits

    if threads:
        torch.set_num_threads(threads)
    context = SeriesContext.open(series)
    layout = context.weight_layout()
    model = layout.model
    if model is None:
        context.layer_keys()  # raises: never probed, and how to probe
    x, samples = context.data()
    torch_device = resolve_device(device)
    train = samples.split == 0
    inputs = inputs_on(x[train], torch_device, torch.float32)
    targets = torch.from_numpy(samples.labels[train]).to(torch_device)
    if context.config is not None:
        from grokscope.training import loss_fn

        config = context.config
        criterion = lambda logits, y: loss_fn(logits, y, config)  # noqa: E731
    else:
        criterion = torch.nn.functional.cross_entropy
    position = context.answer_position()
    return TrainingObjective(context, layout, model.to(torch_device).eval(), inputs, targets, criterion,
                             lambda output: output_logits(output, position), torch_device)
