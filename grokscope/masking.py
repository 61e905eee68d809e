"""Hold chosen hidden neurons of a model at exactly zero while the rest train (``grokscope subnet``).

A model says which of its neurons can be masked by a method ``neuron_parameters()`` returning,
per feature key (the name its activations have in features and measure tables), the parameter
slices that feed each neuron of that layer, as ``(parameter name, axis)``: neuron j owns index j
along ``axis`` of every listed parameter. Zeroing those slices makes the neuron's pre-activation 0
for every input; through an activation with f(0) = 0 (ReLU, GELU) its output is then 0. Through
a ReLU no gradient reaches the slices either; through a GELU (f'(0) = 1/2) one does, which is why
the gradients are masked too (below). The seed MLP's hidden neurons are rows of ``layers.i.weight`` and
entries of ``layers.i.bias`` (:meth:`grokscope.model.MLP.neuron_parameters`).

Clauw et al. (2024) mask the first layer's weight rows before every training step. The trainer
does more, so that "held at zero" is exact whatever the optimiser or regulariser: it zeroes the
slices at initialisation, zeroes their gradients before every update (so Adam's moments of masked
entries stay 0 and weight decay has nothing to decay) and zeroes them again after the update, and
masks the noisy copy of the weights that ``--weight-noise`` trains through.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from grokscope.errors import GrokscopeError


def maskable_layers(model: nn.Module) -> dict[str, list[tuple[str, int]]]:
    """The model's maskable hidden layers (feature key -> (parameter name, axis) slices), or an
    error naming the model when it declares none."""
    declare = getattr(model, "neuron_parameters", None)
    if declare is None:
        raise GrokscopeError(f"{type(model).__name__}: names no maskable neurons (no neuron_parameters())")
    return dict(declare())


class NeuronMask:
    """0/1 masks over the parameters that feed chosen neurons, ready to apply in place.

    Parameters
    ----------
    model : torch.nn.Module
        A model with ``neuron_parameters()``.
    keep : mapping of feature key -> iterable of int
        The neurons of each layer that train; every other neuron of a listed layer is held at
        zero. Layers not listed are left alone.
    """

    def __init__(self, model: nn.Module, keep: Mapping[str, Iterable[int]]):
        layers = maskable_layers(model)
        params = dict(model.named_parameters())
        self.masks: dict[str, torch.Tensor] = {}
        for layer, neurons in keep.items():
            if layer not in layers:
                raise GrokscopeError(f"subnet: layer {layer!r} has no maskable neurons; "
                                     f"maskable: {', '.join(layers) or 'none'}")
            kept = sorted(set(int(n) for n in neurons))
            for name, axis in layers[layer]:
                param = params[name]
                width = param.shape[axis]
                if kept and (kept[0] < 0 or kept[-1] >= width):
                    raise GrokscopeError(f"subnet: neuron {kept[-1] if kept[-1] >= width else kept[0]} is out of "
                                         f"range for {layer!r}, which has {width} neurons")
                on = torch.zeros(width, dtype=param.dtype, device=param.device)  # (width,)
                on[kept] = 1
                shape = [1] * param.ndim
                shape[axis] = width
                # Two layers never share a parameter slice, but a parameter may feed several
                # layers' neurons along different axes: masks multiply.
                mask = on.reshape(shape)
                self.masks[name] = self.masks[name] * mask if name in self.masks else mask

    @property
    def names(self) -> list[str]:
        return list(self.masks)

    @torch.no_grad()
    def apply_(self, model: nn.Module) -> None:
        """Zero the masked slices of the model's parameters, in place."""
        params = dict(model.named_parameters())
        for name, mask in self.masks.items():
            params[name].mul_(mask.to(params[name].device))

    @torch.no_grad()
    def mask_grads_(self, model: nn.Module) -> None:
        """Zero the gradients of the masked slices, in place (parameters without a gradient are skipped)."""
        params = dict(model.named_parameters())
        for name, mask in self.masks.items():
            grad = params[name].grad
            if grad is not None:
                grad.mul_(mask.to(grad.device))

    def masked(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A copy of a name -> tensor mapping (e.g. noisy weights for a functional call) with the
        masked slices zeroed; differentiable, so nothing flows back into masked entries."""
        return {name: tensor * self.masks[name].to(tensor.device) if name in self.masks else tensor
                for name, tensor in tensors.items()}
