"""What a loaded checkpoint object holds, read without touching files: whether it is a state dict,
the state nested in a training loop's dict, the step or epoch it records, a whole series in one
object. Pure functions on what ``torch.load`` returned; ``loading`` and ``stored_steps`` both use them."""

from __future__ import annotations

import re

from grokscope.formats.steps import parse_checkpoint_step

# Where training loops keep the model's state inside the dict they save, most specific first.
NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "module", "net", "weights")
# Where they record the step (and the epoch) they were saved at.
STORED_STEP_KEYS = ("global_step", "step", "iter_num", "iteration")
STORED_EPOCH_KEY = "epoch"


def is_state(value) -> bool:
    import torch

    return isinstance(value, dict) and bool(value) and all(torch.is_tensor(v) for v in value.values())


def nested_state(loaded) -> dict | None:
    if is_state(loaded):
        return loaded
    if isinstance(loaded, dict):
        for key in NESTED_STATE_KEYS:
            if is_state(loaded.get(key)):
                return loaded[key]
    return None


def count_entry(value) -> int | None:
    if hasattr(value, "item") and getattr(value, "numel", lambda: 0)() == 1:
        value = value.item()
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def step_entry(loaded) -> int | None:
    if not isinstance(loaded, dict):
        return None
    return next((count_entry(loaded[k]) for k in STORED_STEP_KEYS if count_entry(loaded.get(k)) is not None), None)


def epoch_entry(loaded) -> int | None:
    return count_entry(loaded.get(STORED_EPOCH_KEY)) if isinstance(loaded, dict) else None


def series_in_file(loaded) -> list[tuple[int, object]] | None:
    """(step, state dict) of every checkpoint in a loaded file that holds a whole series, or None.

    Recognised: a list of state dicts (steps 0, 1, ...); a list of dicts that each record a step
    and nest a state dict; a dict of steps to state dicts; a dict holding a list of state dicts
    with a list of their steps under a key naming steps or epochs (``checkpoints`` with
    ``checkpoint_epochs``, ``state_dicts`` with ``epochs``, as in Nanda et al.'s grokking runs).
    """
    if isinstance(loaded, (list, tuple)) and len(loaded) > 1:
        if all(is_state(item) for item in loaded):
            return list(enumerate(loaded))
        entries = [(step_entry(item), nested_state(item)) for item in loaded]
        if all(step is not None and state is not None for step, state in entries):
            return sorted(entries, key=lambda pair: pair[0])
        return None
    if not isinstance(loaded, dict) or is_state(loaded):
        return None
    keyed = {_key_step(k): v for k, v in loaded.items()}
    if len(keyed) > 1 and None not in keyed and all(is_state(v) for v in keyed.values()):
        return sorted(keyed.items(), key=lambda pair: pair[0])
    for key, value in loaded.items():
        if isinstance(value, (list, tuple)) and len(value) > 1 and all(is_state(v) for v in value):
            steps = _parallel_steps(loaded, len(value), exclude=key)
            return list(zip(steps, value))
    return None


def _key_step(key) -> int | None:
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, str):
        return parse_checkpoint_step(key, is_file=False) if not key.isdigit() else int(key)
    return None


def _parallel_steps(container: dict, length: int, exclude: str) -> list[int]:
    for key, value in container.items():
        if key == exclude or not re.search(r"step|epoch|iter", str(key), re.IGNORECASE):
            continue
        values = value.tolist() if hasattr(value, "tolist") else value
        if (isinstance(values, (list, tuple)) and len(values) == length
                and all(isinstance(v, int) and not isinstance(v, bool) for v in values)):
            return list(values)
    return list(range(length))
