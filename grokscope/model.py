"""The models grokscope trains, and their hidden-layer readout.

MLP (``kind = "mlp"``, the seed experiments). Parameters are named ``layers.0.weight``,
``layers.0.bias``, ..., ``layers.{depth}.weight`` (the output layer), in input-to-output order.
The feature key of hidden layer ``i`` is ``layers.i``: its post-activation output. The
penultimate layer is ``layers.{depth-1}``, the one feeding the output.

Transformer (``kind = "transformer"``, Nanda et al. 2023; Power et al. 2022). The input is the
sequence of tokens ``[a, b, =]`` (token ``p`` is ``=``); the answer is read at the last position.
Parameters: ``embed.weight`` (p+1, d_model), ``pos_embed.weight`` (3, d_model), per block ``i``
``blocks.i.attn.{query,key,value,output}.weight`` (d_model, d_model; heads are consecutive
slices of d_model / n_heads rows), ``blocks.i.mlp.hidden.{weight,bias}`` (d_mlp, d_model),
``blocks.i.mlp.output.{weight,bias}`` (d_model, d_mlp), with ``--layer-norm``
``blocks.i.ln1``, ``blocks.i.ln2`` and ``ln_final``, and ``unembed.weight`` (p, d_model).
Feature keys, all at the answer position: ``blocks.i.mlp.post`` (the MLP's neurons after the
activation) and ``blocks.i.resid_post`` (the residual stream after block ``i``), and with
LayerNorm ``ln_final`` (the normalised final residual). The penultimate layer is what the
unembedding reads: the last residual, or ``ln_final``.

A model names the hidden neurons a sub-network may hold at zero with ``neuron_parameters()``
(see :mod:`grokscope.masking`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from grokscope.config import ModelConfig

# [a, b, =]: the context of every modular-arithmetic sample.
N_POSITIONS = 3
ACTIVATION_FUNCTIONS = {"relu": F.relu, "gelu": F.gelu}


class MLP(nn.Module):
    def __init__(self, input_dim: int, n_classes: int, config: ModelConfig):
        super().__init__()
        widths = [input_dim] + [config.width] * config.depth
        hidden = [nn.Linear(i, o) for i, o in zip(widths[:-1], widths[1:])]
        output = nn.Linear(widths[-1], n_classes, bias=config.output_bias)
        self.layers = nn.ModuleList(hidden + [output])
        self.activation = ACTIVATION_FUNCTIONS[config.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, input_dim) -> (B, K)
        # Index, don't slice: slicing a ModuleList builds a new module on every call.
        *hidden, output = self.layers
        for layer in hidden:
            x = self.activation(layer(x))  # (B, width)
        return output(x)

    def chain_forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The MLP on C parameter sets at once, as ``functional_call`` of each on its own batch.

        ``params`` maps each parameter name to its (C, ...) values; ``x`` is (C, B, input_dim)
        inputs, or (C, B, k) int64 positions of the ones of one-hot inputs
        (:func:`one_hot_columns`). Returns (C, B, K) logits. On one-hot inputs the first layer is
        a lookup, the sum of the weight's columns at the ones: k additions per unit and sample
        where the product takes input_dim multiply-adds (k = 2 of 194 on the default run), and
        the same sum, as the product's other terms are exact zeros.
        """
        *hidden, _ = self.layers
        h = x
        for i in range(len(hidden) + 1):
            weight, bias = params[f"layers.{i}.weight"], params.get(f"layers.{i}.bias")  # (C, out, in), (C, out)
            if i == 0 and not x.is_floating_point():
                chains = torch.arange(len(weight), device=weight.device)[:, None, None]  # (C, 1, 1)
                h = weight[chains, :, x].sum(2)  # (C, B, k, out) -> (C, B, out)
                h = h if bias is None else h + bias[:, None, :]
            elif bias is None:
                h = torch.bmm(h, weight.transpose(1, 2))  # (C, B, out)
            else:
                h = torch.baddbmm(bias[:, None, :], h, weight.transpose(1, 2))
            if i < len(hidden):
                h = self.activation(h)
        return h

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
        """Post-activation output of every hidden layer, keyed ``layers.i``, and the logits."""
        *hidden, output = self.layers
        features = {}
        for i, layer in enumerate(hidden):
            x = self.activation(layer(x))  # (B, width)
            features[f"layers.{i}"] = x
        return features, output(x)


def one_hot_columns(x: torch.Tensor) -> torch.Tensor | None:
    """(n, k) int64 positions of the ones of one-hot inputs ``x`` (n, input_dim), in column
    order: every row holds exactly k ones and zeros elsewhere (the modular tasks' [a, b] as two
    one-hot blocks: k = 2). None for any other input."""
    if x.ndim != 2 or not x.is_floating_point() or not bool(((x == 0) | (x == 1)).all()):
        return None
    counts = (x == 1).sum(1)
    if len(x) == 0 or not bool((counts == counts[0]).all()) or int(counts[0]) == 0:
        return None
    return torch.nonzero(x == 1)[:, 1].reshape(len(x), int(counts[0]))  # row-major: each row's in order


class Attention(nn.Module):
    """Causal multi-head self-attention without biases (as in Nanda et al.)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d_model = config.d_model
        self.n_heads = config.n_heads
        self.query = nn.Linear(d_model, d_model, bias=False)
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, d_model, bias=False)
        self.output = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor, answer_only: bool, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T', C): the attention output at every position (T' = T) or only the last (T' = 1).

        ``x`` is the (normalised) residual stream (B, T, C); or, with ``rows`` (B, T), a table
        (R, C) whose row ``rows[b, t]`` is the input at sample b, position t (see
        :meth:`Block.forward`): the projections are computed on the table, then looked up.
        """
        if rows is None:
            q = self.query(x[:, -1:] if answer_only else x)  # (B, T', C)
            k, v = self.key(x), self.value(x)  # (B, T, C)
        else:
            # F.embedding, not advanced indexing: its backward is twice as fast.
            q = F.embedding(rows[:, -1:] if answer_only else rows, self.query(x))  # (B, T', C)
            k, v = F.embedding(rows, self.key(x)), F.embedding(rows, self.value(x))  # (B, T, C)
        batch, length, width = k.shape
        heads, head_dim = self.n_heads, width // self.n_heads
        q = q.view(batch, -1, heads, head_dim).transpose(1, 2)  # (B, H, T', D)
        k = k.view(batch, length, heads, head_dim).transpose(1, 2)  # (B, H, T, D)
        v = v.view(batch, length, heads, head_dim).transpose(1, 2)  # (B, H, T, D)
        # With T = 3, batched matmuls of 1x32 by 32x3 are slower than a broadcast product.
        scores = (q.unsqueeze(3) * k.unsqueeze(2)).sum(-1) / math.sqrt(head_dim)  # (B, H, T', T)
        if not answer_only:
            # The last position sees every position anyway; the others only see their past.
            future = torch.ones(length, length, dtype=torch.bool, device=k.device).triu(1)  # (T, T)
            scores = scores.masked_fill(future, float("-inf"))
        pattern = torch.softmax(scores, dim=-1)  # (B, H, T', T)
        z = (pattern.unsqueeze(-1) * v.unsqueeze(2)).sum(3)  # (B, H, T', D)
        return self.output(z.transpose(1, 2).reshape(batch, -1, width))  # (B, T', C)


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.hidden = nn.Linear(config.d_model, config.d_mlp)
        self.output = nn.Linear(config.d_mlp, config.d_model)
        self.activation = ACTIVATION_FUNCTIONS[config.activation]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, C) -> (output (B, T, C), neurons after the activation (B, T, d_mlp))."""
        neurons = self.activation(self.hidden(x))  # (B, T, d_mlp)
        return self.output(neurons), neurons


class Block(nn.Module):
    """Attention then MLP, each added to the residual stream (pre-LayerNorm when enabled)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model) if config.layer_norm else nn.Identity()
        self.attn = Attention(config)
        self.ln2 = nn.LayerNorm(config.d_model) if config.layer_norm else nn.Identity()
        self.mlp = FeedForward(config)

    def forward(self, x: torch.Tensor, answer_only: bool, tokens: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The residual after the block (B, T', C) and the MLP neurons (B, T', d_mlp), at every
        position (T' = T) or the last (T' = 1).

        ``x`` is the residual stream (B, T, C); or, with ``tokens`` (B, T), the table (T, V, C) of
        the residual of every token at every position. The first block's input at a position is
        a function of that position's token alone, so its LayerNorm and projections are computed
        once per table row and looked up, instead of once per sample and position (exact, and a
        third of a one-layer model's training time).
        """
        rows = None
        if tokens is not None:
            n_positions, vocabulary, width = x.shape
            offsets = torch.arange(n_positions, device=tokens.device) * vocabulary  # (T,)
            rows = tokens + offsets  # (B, T): the table row of each sample's token at each position
            x = x.reshape(n_positions * vocabulary, width)  # (T V, C)
            kept = F.embedding(rows[:, -1:] if answer_only else rows, x)  # (B, T', C)
        else:
            kept = x[:, -1:] if answer_only else x  # (B, T', C)
        resid_mid = kept + self.attn(self.ln1(x), answer_only, rows)  # (B, T', C)
        mlp_out, neurons = self.mlp(self.ln2(resid_mid))  # (B, T', C), (B, T', d_mlp)
        return resid_mid + mlp_out, neurons


class Transformer(nn.Module):
    """The grokking transformer: tokens [a, b, =], learned token and position embeddings,
    ``depth`` blocks, untied unembedding of the last position into p classes."""

    def __init__(self, p: int, n_classes: int, config: ModelConfig):
        super().__init__()
        self.p = p
        self.embed = nn.Embedding(p + 1, config.d_model)  # token p is "="
        self.pos_embed = nn.Embedding(N_POSITIONS, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.ln_final = nn.LayerNorm(config.d_model) if config.layer_norm else nn.Identity()
        self.unembed = nn.Linear(config.d_model, n_classes, bias=config.output_bias)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The task's inputs as tokens (B, 3): one-hot pairs (B, 2p) are read as [a, b, =];
        integer tokens (B, 3) pass through."""
        if not x.is_floating_point():
            if x.ndim != 2 or x.shape[1] != N_POSITIONS:
                raise ValueError(f"expected tokens of shape (batch, {N_POSITIONS}), got {tuple(x.shape)}")
            return x
        if x.ndim != 2 or x.shape[1] != 2 * self.p:
            raise ValueError(f"expected one-hot pairs of shape (batch, {2 * self.p}), got {tuple(x.shape)}")
        a = x[:, :self.p].argmax(dim=1)  # (B,)
        b = x[:, self.p:].argmax(dim=1)  # (B,)
        return torch.stack([a, b, torch.full_like(a, self.p)], dim=1)  # (B, 3)

    def _run(self, x: torch.Tensor, all_positions: bool, features: dict | None) -> torch.Tensor:
        tokens = self.tokens(x)  # (B, T)
        # The residual stream before the first block, as a table: every token at every position.
        resid = self.pos_embed.weight[: tokens.shape[1], None] + self.embed.weight  # (T, V, C)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            # Only the answer position reaches the unembedding, and attention is causal, so the
            # last block need not compute the other positions.
            resid, neurons = block(resid, answer_only=i == last and not all_positions,
                                   tokens=tokens if i == 0 else None)
            if features is not None:
                features[f"blocks.{i}.mlp.post"] = neurons  # (B, T', d_mlp)
                features[f"blocks.{i}.resid_post"] = resid  # (B, T', C)
        normed = self.ln_final(resid)  # (B, T', C)
        if features is not None and isinstance(self.ln_final, nn.LayerNorm):
            features["ln_final"] = normed
        return self.unembed(normed[:, -1])  # (B, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 2p) or (B, 3) -> (B, K)
        return self._run(x, all_positions=False, features=None)

    def neuron_parameters(self) -> dict[str, list[tuple[str, int]]]:
        """The maskable hidden neurons, those of each block's MLP (feature key ``blocks.i.mlp.post``):
        neuron j is row j of ``blocks.i.mlp.hidden.weight`` and entry j of its bias. With both
        zero its pre-activation is 0 at every position, so its output is 0 (ReLU and GELU alike)
        and no gradient reaches it."""
        return {f"blocks.{i}.mlp.post": [(f"blocks.{i}.mlp.hidden.weight", 0), (f"blocks.{i}.mlp.hidden.bias", 0)]
                for i in range(len(self.blocks))}

    def hidden_features(self, x: torch.Tensor, positions: str = "answer") -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The activations named in the module docstring, and the logits (B, K).

        ``positions="answer"``: each feature is (B, C) at the answer position (the last);
        ``positions="all"``: (B, T, C) at every position.
        """
        if positions not in ("answer", "all"):
            raise ValueError(f"positions: 'answer' or 'all', got {positions!r}")
        features: dict[str, torch.Tensor] = {}
        logits = self._run(x, all_positions=positions == "all", features=features)
        if positions == "answer":
            features = {key: value[:, -1] for key, value in features.items()}  # (B, C)
        return features, logits


def feature_keys(config: ModelConfig) -> list[str]:
    """The model's feature keys, input to output."""
    if config.kind == "transformer":
        keys = [key for i in range(config.depth) for key in (f"blocks.{i}.mlp.post", f"blocks.{i}.resid_post")]
        return keys + (["ln_final"] if config.layer_norm else [])
    return [f"layers.{i}" for i in range(config.depth)]


def penultimate_key(config: ModelConfig) -> str:
    """The feature key of the representation the output layer reads."""
    if config.kind == "transformer":
        return "ln_final" if config.layer_norm else f"blocks.{config.depth - 1}.resid_post"
    return f"layers.{config.depth - 1}"


def output_weight_key(config: ModelConfig) -> str:
    """The state-dict key of the output layer's weight, (n_classes, penultimate units)."""
    return "unembed.weight" if config.kind == "transformer" else f"layers.{config.depth}.weight"


def _init_transformer(model: Transformer, config: ModelConfig) -> None:
    """Nanda et al.'s initialisation: every matrix N(0, 1/d_model), except the unembedding,
    N(0, 1/(p+1)) (their vocabulary includes "="); biases zero; LayerNorm gain one, bias zero."""
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, (nn.Embedding, nn.Linear)):
                continue  # nn.LayerNorm starts at gain 1, bias 0
            std = 1.0 / math.sqrt(model.p + 1 if module is model.unembed else config.d_model)
            module.weight.normal_(0.0, std)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()


def build_model(input_dim: int, n_classes: int, config: ModelConfig, seed: int) -> nn.Module:
    """The initialised model, scaled by alpha, last layer optionally zero.

    The MLP starts from PyTorch's default initialisation; the transformer from Nanda et al.'s.
    The transformer reads the task's one-hot pairs, so ``input_dim`` must be ``2 * n_classes``.
    """
    if config.kind == "transformer" and input_dim != 2 * n_classes:
        raise ValueError(f"the transformer reads pairs of one-hots (2p = {2 * n_classes} inputs), got {input_dim}")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if config.kind == "transformer":
            model = Transformer(n_classes, n_classes, config)
            _init_transformer(model, config)
        else:
            model = MLP(input_dim, n_classes, config)
    finally:
        # Building a model must not perturb the caller's random stream.
        torch.random.set_rng_state(generator_state)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(config.alpha)
        if config.zero_last:
            model.get_parameter(output_weight_key(config)).zero_()
    return model
