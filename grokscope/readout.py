"""The representation a model's logits are read from, for models without an ``nn.Linear`` readout.

Penultimate features are the input of whatever produces the logits. With an ``nn.Linear`` that is
the last one's input (:func:`grokscope.features.default_layer`). A model that multiplies raw
parameters (Nanda et al.'s transformer, TransformerLens: ``x @ W_U`` inside an ``Unembed``
module, or in the model's own ``forward``) is run on a few samples, and the first of these is
taken:

1. the input of the last module holding parameters whose output *is* the model's output (the
   ``Unembed`` whose ``W_U`` makes the logits): ``unembed:input``;
2. a hook point named ``hook_resid_post``, the last block's (TransformerLens' name for the
   residual stream after a block): ``blocks.1.hook_resid_post``;
3. the output of the last module to finish before the logits (the last block, when the model's
   own ``forward`` applies ``W_U``): ``blocks.1``.

A sequence output ``(B, T, d)`` is then read at the last position, as every layer is by default.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from grokscope.errors import GrokscopeError

INPUT_SUFFIX = ":input"
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
    running ``sample`` (a few inputs) through it (module docstring)."""
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
