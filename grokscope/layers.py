"""Layer specs: how a ``--layer`` value names the activation to capture, and which layers of a
model ``probe`` takes when none are named.

``NAME`` is the output of module ``NAME``, ``NAME:input`` its input, either followed by ``@POS``
to choose a token position of a sequence output ``(B, T, C)``: ``@-1`` the last token (where a
grokking transformer reads its answer), ``@0`` the first (a ViT's CLS token, its usual
readout), ``@all`` every position flattened into ``(B, T*C)``, ``@mean`` the mean over
positions. A sequence output without ``@`` takes the last position. A convolutional map
``(B, C, H, W)`` (any output with two or more axes after the channels) has no token axis: it is
flattened in its own ``(C, H, W)`` order, or averaged over its positions into ``(B, C)`` with
``@mean`` (global average pooling). The spec as written is the features file's tensor name, and
the file's metadata says what was taken (``grokscope.positions``: ``-1``, ``all``, ``mean``,
``flattened (16, 4, 4)``, ``mean over (4, 4)``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from torch import nn

from grokscope.errors import GrokscopeError, GrokscopeWarning, did_you_mean, listing

INPUT_SUFFIX = ":input"
POSITION_MARK = "@"
ALL_POSITIONS = "all"
MEAN_POSITIONS = "mean"


@dataclass(frozen=True)
class LayerSpec:
    """A parsed ``--layer`` value: ``NAME[:input][@POS]`` (see the module docstring)."""

    key: str
    module: str
    is_input: bool
    position: int | str | None  # an index, "all", or None: the last position of a sequence

    @classmethod
    def parse(cls, text: str) -> "LayerSpec":
        key = text.strip()
        name, mark, position_text = key.partition(POSITION_MARK)
        position: int | str | None = None
        if mark:
            if position_text in (ALL_POSITIONS, MEAN_POSITIONS):
                position = position_text
            else:
                try:
                    position = int(position_text)
                except ValueError:
                    raise GrokscopeError(
                        f"--layer {key}: cannot read position {position_text!r}; use @-1 (last token), @0, @all or @mean"
                    ) from None
        is_input = name.endswith(INPUT_SUFFIX)
        module = name.removesuffix(INPUT_SUFFIX)
        if not module:
            raise GrokscopeError(f"--layer {key}: names no module")
        return cls(key, module, is_input, position)


def select_position(value: torch.Tensor, spec: LayerSpec) -> tuple[torch.Tensor, str]:
    """The (B, units) matrix of a captured activation, and what was taken ("none" for a (B, C)
    output, "all", "mean" or the index of a sequence, "flattened (C, H, W)" or "mean over (H, W)"
    of a convolutional map)."""
    if value.ndim <= 2:
        if spec.position not in (None, ALL_POSITIONS):
            raise GrokscopeError(
                f"--layer {spec.key}: the layer's output {tuple(value.shape)} has no token axis; drop '@{spec.position}'"
            )
        return value.reshape(len(value), -1), "none"
    if value.ndim >= 4:
        return _map_features(value, spec)
    if spec.position == ALL_POSITIONS:
        return value.reshape(len(value), -1), ALL_POSITIONS  # (B, T*C)
    if spec.position == MEAN_POSITIONS:
        return value.mean(dim=1), MEAN_POSITIONS  # (B, C)
    position = -1 if spec.position is None else spec.position
    length = value.shape[1]
    if not -length <= position < length:
        raise GrokscopeError(
            f"--layer {spec.key}: position {position} is out of range for {length} tokens (use -{length}..{length - 1})"
        )
    return value[:, position].reshape(len(value), -1), str(position)  # (B, C)


def _map_features(value: torch.Tensor, spec: LayerSpec) -> tuple[torch.Tensor, str]:
    """A (B, C, H, W) map (or (B, C, D, H, W)): flattened, or averaged over its positions."""
    spatial = tuple(value.shape[2:])
    if spec.position == MEAN_POSITIONS:
        return value.mean(dim=tuple(range(2, value.ndim))), f"mean over {spatial}"  # (B, C)
    if spec.position in (None, ALL_POSITIONS):
        return value.reshape(len(value), -1), f"flattened {tuple(value.shape[1:])}"  # (B, C*H*W)
    raise GrokscopeError(
        f"--layer {spec.key}: the layer's output {tuple(value.shape)} is a (B, C, H, W) map with no token axis; "
        f"drop '@{spec.position}' to flatten it, or use @mean to average over its positions"
    )



def default_layer(model: nn.Module) -> str:
    """The input of the model's last nn.Linear: the representation its readout sees."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise GrokscopeError("--layer: the model has no nn.Linear layer; name the layer(s) to probe with --layer")
    return linears[-1] + INPUT_SUFFIX


def user_layer_keys(model: nn.Module, layers: Iterable[str] | None = None,
                    penultimate: str | None = None, sample: np.ndarray | None = None) -> tuple[list[str], str]:
    """(keys input to output, penultimate key) to capture from any model; see :func:`user_extractor`.

    The penultimate layer is ``penultimate`` if given, else the input of the last nn.Linear,
    else the last of ``layers``, else (given ``sample``, a few inputs) the input of whatever
    produces the logits (:func:`readout_input`), named in a warning.
    """
    modules = dict(model.named_modules())
    order = {name: i for i, name in enumerate(modules)}
    wanted = list(dict.fromkeys(spec.strip() for spec in layers or []))
    if penultimate is None:
        try:
            penultimate = default_layer(model)
        except GrokscopeError:
            if not wanted and sample is None:
                raise
            if wanted:
                penultimate = wanted[-1]
            else:
                penultimate, why = readout_input(model, sample)
                warnings.warn(GrokscopeWarning(
                    f"--layer: the model has no nn.Linear; probing {penultimate} ({why}) as the penultimate layer; "
                    "name others with --layer"), stacklevel=2)
    if penultimate not in wanted:
        wanted.append(penultimate)
    specs = {key: LayerSpec.parse(key) for key in wanted}
    names = [name for name in modules if name]
    for key, spec in specs.items():
        if spec.module not in modules or spec.module == "":
            raise GrokscopeError(f"--layer {key}: the model has no module {spec.module!r}"
                                 f"{did_you_mean(spec.module, names)}; its modules: {listing(names)}")
    keys = sorted(wanted, key=lambda k: (order[specs[k].module], not specs[k].is_input, k))
    return keys, penultimate


# --- the readout of a model without nn.Linear ----------------------------------------------
#
# Penultimate features are the input of whatever produces the logits. With an nn.Linear that is
# the last one's input (default_layer). A model that multiplies raw parameters (Nanda et al.'s
# transformer, TransformerLens: x @ W_U inside an Unembed module, or in the model's own forward)
# is run on a few samples; readout_input's docstring says what is taken.

RESIDUAL_HOOK = "hook_resid_post"


def _tensor(value):
    if isinstance(value, (tuple, list)) and value:
        value = value[0]
    if not torch.is_tensor(value):
        value = value.get("logits") if isinstance(value, dict) else getattr(value, "logits", None)
    return value if torch.is_tensor(value) else None


def _same(a, b) -> bool:
    return a is not None and b is not None and a.shape == b.shape and bool(torch.equal(a, b))


@torch.no_grad()
def readout_input(model: nn.Module, sample: np.ndarray) -> tuple[str, str]:
    """(layer key, how it was chosen) of the features ``model``'s logits are read from, found by
    running ``sample`` (a few inputs) through it. The first of:

    1. the input of the last module holding parameters whose output *is* the model's output (the
       ``Unembed`` whose ``W_U`` makes the logits): ``unembed:input``;
    2. a hook point named ``hook_resid_post``, the last block's (TransformerLens' name for the
       residual stream after a block): ``blocks.1.hook_resid_post``;
    3. the output of the last module to finish before the logits (the last block, when the
       model's own ``forward`` applies ``W_U``): ``blocks.1``.

    A sequence output ``(B, T, d)`` is then read at the last position, as every layer is by default.
    """
    inputs = torch.from_numpy(np.ascontiguousarray(sample))
    inputs = inputs.float() if inputs.is_floating_point() else inputs
    started: list[str] = []
    finished: list[str] = []
    seen: dict[str, tuple] = {}  # name -> (its input, its output)

    def record(name: str):
        def finish(module, args, output) -> None:  # returns None: the output is left as it is
            finished.append(name)
            seen[name] = (_tensor(args), _tensor(output))
        return finish

    hooks = []
    for name, module in model.named_modules():
        if name:
            hooks.append(module.register_forward_pre_hook(lambda m, args, name=name: started.append(name)))
            hooks.append(module.register_forward_hook(record(name)))
    try:
        output = _tensor(model.eval()(inputs))
    except Exception as exc:  # noqa: BLE001 - the user's model on the user's data
        raise GrokscopeError(f"--layer: running the model to find its readout failed ({type(exc).__name__}: {exc}); "
                             "name the layer(s) to probe with --layer") from None
    finally:
        for hook in hooks:
            hook.remove()
    if output is None:
        raise GrokscopeError("--layer: the model's output is not a tensor; name the layer(s) to probe with --layer")
    modules = dict(model.named_modules())
    for name in reversed(started):
        given, produced = seen.get(name, (None, None))
        holds_parameters = next(modules[name].parameters(), None) is not None
        if holds_parameters and _same(produced, output) and given is not None and not _same(given, inputs):
            return name + INPUT_SUFFIX, f"the input of {name}, whose output is the logits"
    residual = [name for name in started if name.rsplit(".", 1)[-1] == RESIDUAL_HOOK]
    if residual:
        return residual[-1], f"the last block's {RESIDUAL_HOOK}"
    for name in reversed(finished):
        produced = seen[name][1]
        if produced is not None and not _same(produced, output) and not _same(produced, inputs) \
                and produced.is_floating_point():
            return name, f"the output of {name}, the last module before the logits"
    raise GrokscopeError("--layer: the model has no nn.Linear layer and no module before its logits; "
                         "name the layer(s) to probe with --layer")
