"""The MLP of the seed experiments and its hidden-layer readout.

Parameters are named ``layers.0.weight``, ``layers.0.bias``, ..., ``layers.{depth}.weight`` (the
output layer), in input-to-output order. The feature key of hidden layer ``i`` is ``layers.i``:
its post-ReLU output. The penultimate layer is ``layers.{depth-1}``, the one feeding the output.

A model names the hidden neurons a sub-network may hold at zero with ``neuron_parameters()``
(see :mod:`grokscope.masking`).
"""

from __future__ import annotations

import torch
from torch import nn

from grokscope.config import ModelConfig


class MLP(nn.Module):
    def __init__(self, input_dim: int, n_classes: int, config: ModelConfig):
        super().__init__()
        widths = [input_dim] + [config.width] * config.depth
        hidden = [nn.Linear(i, o) for i, o in zip(widths[:-1], widths[1:])]
        output = nn.Linear(widths[-1], n_classes, bias=config.output_bias)
        self.layers = nn.ModuleList(hidden + [output])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, input_dim) -> (B, K)
        # Index, don't slice: slicing a ModuleList builds a new module on every call.
        *hidden, output = self.layers
        for layer in hidden:
            x = torch.relu(layer(x))  # (B, width)
        return output(x)

    def neuron_parameters(self) -> dict[str, list[tuple[str, int]]]:
        """The maskable hidden neurons: feature key -> the (parameter name, axis) slices that feed
        each neuron of that layer.

        Neuron j of ``layers.i`` is row j of ``layers.i.weight`` and entry j of ``layers.i.bias``:
        with both zero its pre-activation is 0 for every input, so its ReLU output is 0 and no
        gradient reaches it (Clauw et al. zero the first layer's weight rows; this MLP's hidden
        layers also have a bias, which must go too).
        """
        *hidden, _ = self.layers
        return {f"layers.{i}": [(f"layers.{i}.weight", 0), (f"layers.{i}.bias", 0)] for i in range(len(hidden))}

    def hidden_features(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Post-ReLU output of every hidden layer, keyed ``layers.i``, and the logits."""
        *hidden, output = self.layers
        features = {}
        for i, layer in enumerate(hidden):
            x = torch.relu(layer(x))  # (B, width)
            features[f"layers.{i}"] = x
        return features, output(x)


def feature_keys(config: ModelConfig) -> list[str]:
    return [f"layers.{i}" for i in range(config.depth)]


def penultimate_key(config: ModelConfig) -> str:
    return f"layers.{config.depth - 1}"


def output_weight_key(config: ModelConfig) -> str:
    """The state-dict key of the output layer's weight: the readout of the penultimate layer."""
    return f"layers.{config.depth}.weight"


def build_model(input_dim: int, n_classes: int, config: ModelConfig, seed: int) -> MLP:
    """The initialised model: PyTorch's default init scaled by alpha, last layer optionally zero."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = MLP(input_dim, n_classes, config)
    finally:
        # Building a model must not perturb the caller's random stream.
        torch.random.set_rng_state(generator_state)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(config.alpha)
        if config.zero_last:
            model.layers[-1].weight.zero_()
    return model


def global_norm(params) -> torch.Tensor:
    return torch.sqrt(sum((p.detach() ** 2).sum() for p in params))
