"""Layer specs: how a ``--layer`` value names the activation to capture, and which layers of a
model ``probe`` takes when none are named.

``NAME`` is the output of module ``NAME``, ``NAME:input`` its input, either followed by ``@POS``
to choose a token position of a sequence output ``(B, T, C)``: ``@-1`` the last token (where a
grokking transformer reads its answer), ``@0`` the first, ``@all`` every position flattened into
``(B, T*C)``. A sequence output without ``@`` takes the last position. The spec as written is the
features file's tensor name, and the file's metadata says which position was taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from grokscope.errors import GrokscopeError

INPUT_SUFFIX = ":input"
POSITION_MARK = "@"
ALL_POSITIONS = "all"


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
            if position_text == ALL_POSITIONS:
                position = ALL_POSITIONS
            else:
                try:
                    position = int(position_text)
                except ValueError:
                    raise GrokscopeError(
                        f"--layer {key}: cannot read position {position_text!r}; use @-1 (last token), @0, or @all"
                    ) from None
        is_input = name.endswith(INPUT_SUFFIX)
        module = name.removesuffix(INPUT_SUFFIX)
        if not module:
            raise GrokscopeError(f"--layer {key}: names no module")
        return cls(key, module, is_input, position)


def select_position(value: torch.Tensor, spec: LayerSpec) -> tuple[torch.Tensor, str]:
    """The (B, units) matrix of a captured activation, and the position taken ("none" for a
    (B, C) output, "all", or the index)."""
    if value.ndim <= 2:
        if spec.position not in (None, ALL_POSITIONS):
            raise GrokscopeError(
                f"--layer {spec.key}: the layer's output {tuple(value.shape)} has no token axis; drop '@{spec.position}'"
            )
        return value.reshape(len(value), -1), "none"
    if spec.position == ALL_POSITIONS:
        return value.reshape(len(value), -1), ALL_POSITIONS  # (B, T*C)
    position = -1 if spec.position is None else spec.position
    length = value.shape[1]
    if not -length <= position < length:
        raise GrokscopeError(
            f"--layer {spec.key}: position {position} is out of range for {length} tokens (use -{length}..{length - 1})"
        )
    return value[:, position].reshape(len(value), -1), str(position)  # (B, C)



def default_layer(model: nn.Module) -> str:
    """The input of the model's last nn.Linear: the representation its readout sees."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise GrokscopeError("--layer: the model has no nn.Linear layer; name the layer(s) to probe with --layer")
    return linears[-1] + INPUT_SUFFIX


def user_layer_keys(model: nn.Module, layers: Iterable[str] | None = None,
                    penultimate: str | None = None) -> tuple[list[str], str]:
    """(keys input to output, penultimate key) to capture from any model; see :func:`user_extractor`.

    The penultimate layer is ``penultimate`` if given, else the input of the last nn.Linear,
    else the last of ``layers``.
    """
    modules = dict(model.named_modules())
    order = {name: i for i, name in enumerate(modules)}
    wanted = list(dict.fromkeys(spec.strip() for spec in layers or []))
    if penultimate is None:
        try:
            penultimate = default_layer(model)
        except GrokscopeError:
            if not wanted:
                raise
            penultimate = wanted[-1]
    if penultimate not in wanted:
        wanted.append(penultimate)
    specs = {key: LayerSpec.parse(key) for key in wanted}
    for key, spec in specs.items():
        if spec.module not in modules or spec.module == "":
            close = [n for n in modules if n and (spec.module in n or n in spec.module)][:6] or list(modules)[1:8]
            raise GrokscopeError(f"--layer {key}: the model has no module {spec.module!r}; "
                                 f"modules with similar names: {', '.join(close)}")
    keys = sorted(wanted, key=lambda k: (order[specs[k].module], not specs[k].is_input, k))
    return keys, penultimate

