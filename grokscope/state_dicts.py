"""A checkpoint's state dict and a model's parameters: fitting one to the other (prefixes, tied
and constant entries), the model's parameters as the weight measures count them, and which of its
linear layers follow each other."""

from __future__ import annotations

import torch
from torch import nn

# Elementwise functions that may stand between two layers that follow each other (balancedness).
_ACTIVATIONS = (
    lambda a: a, torch.relu, torch.nn.functional.gelu, lambda a: torch.nn.functional.gelu(a, approximate="tanh"),
    torch.nn.functional.silu, torch.tanh, torch.sigmoid,
)


def fit_state(model: nn.Module, state: dict) -> dict:
    """``state`` renamed and completed to load strictly into ``model``.

    - A prefix that the checkpoint adds or lacks (Lightning's ``model.`` for a LightningModule
      attribute, a wrapper's) is found by the best match of names, and removed or added.
    - A tied parameter saved once (GPT-2's ``lm_head.weight`` = ``transformer.wte.weight``) is
      filled from the name it was saved under.
    - Constant buffers the checkpoint lacks (causal masks that newer library versions no longer
      save) keep the model's own; masks the model no longer has are dropped.
    Anything else that does not match is left for ``load_state_dict`` to report.
    """
    expected = model.state_dict()
    state = _best_prefix(state, set(expected))
    fitted = dict(state)
    aliases = parameter_aliases(model)
    buffers = {name for name, _ in model.named_buffers()}
    for name in expected:
        if name in fitted:
            continue
        saved = next((a for a in aliases.get(name, ()) if a in fitted), None)
        if saved is not None:
            fitted[name] = fitted[saved]
        elif name in buffers and _is_constant_buffer(name):
            fitted[name] = expected[name]
    for name in list(fitted):
        if name not in expected and _is_constant_buffer(name):
            del fitted[name]
    return fitted


def _is_constant_buffer(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return last in ("mask", "IGNORE", "masked_bias") or name.endswith("attn.bias")


def _best_prefix(state: dict, expected: set[str]) -> dict:
    if set(state) & expected == set(state) or not state:
        return state
    strip = {""} | {k.split(".", 1)[0] + "." for k in state if "." in k}
    add = {""} | {k.split(".", 1)[0] + "." for k in expected if "." in k}
    best, best_overlap = state, len(set(state) & expected)
    for removed in strip:
        for added in add:
            renamed = {added + k.removeprefix(removed): v for k, v in state.items() if k.startswith(removed)}
            overlap = len(set(renamed) & expected)
            if overlap > best_overlap:
                best, best_overlap = renamed, overlap
    return best


def parameter_aliases(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """Parameter name -> the other names of the same (tied) parameter."""
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return {name: tuple(n for n in names if n != name) for names in groups.values() for name in names}


def parameter_groups(model: nn.Module) -> list[tuple[str, ...]]:
    """The model's parameters, each as the tuple of its names (several when tied), in
    registration order: what the weight measures count, once each."""
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return [tuple(names) for names in groups.values()]


@torch.no_grad()
def linear_chains(model: nn.Module, x: torch.Tensor) -> list[tuple[str, str]]:
    """Pairs (A.weight, B.weight) of nn.Linear layers where B's input is A's output through an
    elementwise activation (identity, ReLU, GELU, SiLU, tanh, sigmoid): layers that follow each
    other in the forward pass, found by running ``x`` (a few samples) through the model."""
    linears = {module: name for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    records: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    hooks = [module.register_forward_hook(
        lambda module, args, output, name=name: records.append((name, args[0], output)))
        for module, name in linears.items()]
    try:
        model(x)
    except Exception:  # noqa: BLE001 - no chains known is the honest answer for an odd model
        return []
    finally:
        for hook in hooks:
            hook.remove()
    pairs = []
    for (name_a, _, output_a), (name_b, input_b, _) in zip(records, records[1:]):
        if output_a.shape == input_b.shape and any(
                torch.allclose(f(output_a), input_b, rtol=1e-5, atol=1e-6) for f in _ACTIVATIONS):
            pairs.append((f"{name_a}.weight", f"{name_b}.weight"))
    return list(dict.fromkeys(pairs))



def describe_mismatch(model: nn.Module, state: dict, exc: Exception) -> str:
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
    if not parts:  # same names, so the shapes differ
        lines = [l.strip() for l in str(exc).splitlines() if "size mismatch" in l]
        parts.append(lines[0] if lines else str(exc).splitlines()[0])
    return "; ".join(parts)

