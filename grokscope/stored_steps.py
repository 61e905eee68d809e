"""What a checkpoint records of when it was saved: its step, and its epoch.

Where a checkpoint stores its step, that step is the checkpoint's, whatever number its name
carries (Lightning's ``sample-epoch=03-val_loss=0.52.ckpt`` holds ``global_step``). Read from:

- safetensors: the header's ``grokscope.step``, ``global_step`` or ``step`` metadata;
- pickled files: a top-level ``global_step``, ``step``, ``iter_num`` or ``iteration`` entry, and
  ``epoch`` (the ImageNet example's ``{"epoch", "arch", "state_dict", ...}``), read memory-mapped
  and only with ``weights_only=True``;
- folders: the Trainer's ``trainer_state.json``; a state registered with accelerate
  (``custom_checkpoint_N.pkl``, e.g. ``{"step": 500}``); a DCP checkpoint's top-level ``step``
  entry; or the one pickled weight file inside.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from grokscope.errors import GrokscopeError
from grokscope.formats import dcp
from grokscope.checkpoint_contents import (
    STORED_EPOCH_KEY,
    STORED_STEP_KEYS,
    count_entry,
    epoch_entry,
    series_in_file,
    step_entry,
)
from grokscope.loading import NOT_MODEL, PICKLE_SUFFIXES, is_weight_file, load_pickled_cached

TRAINER_STATE_FILE = "trainer_state.json"
# What accelerate's save_state writes beside the model: registered objects' states (where a
# training loop may keep its step) and the random states (there whenever save_state wrote the folder).
_ACCELERATE_CUSTOM_STATE = re.compile(r"^custom_checkpoint_\d+\.pkl$")
_ACCELERATE_RANDOM_STATE = re.compile(r"^random_states_\d+\.pkl$")


@dataclass(frozen=True)
class Counters:
    """A checkpoint's stored step and epoch, None where it records none."""

    step: int | None = None
    epoch: int | float | None = None


def is_accelerate_state(folder: Path) -> bool:
    """Whether a folder was written by accelerate's ``save_state``."""
    return Path(folder).is_dir() and any(_ACCELERATE_RANDOM_STATE.match(p.name) for p in Path(folder).iterdir())


def stored_step(path: Path) -> int | None:
    """The step a checkpoint file or folder records about itself, or None (also if unreadable)."""
    return stored_counters(path).step


def stored_counters(path: Path) -> Counters:
    """The step and epoch a checkpoint file or folder records (module docstring); empty if it
    records none or cannot be read (loading it later says why)."""
    path = Path(path)
    if path.is_dir():
        return _folder_counters(path)
    if path.name.endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
        except Exception:  # noqa: BLE001 - not a checkpoint we can read: not part of the series
            return Counters()
        step = next((int(metadata[k]) for k in ("grokscope.step", "global_step", "step")
                     if str(metadata.get(k, "")).isdigit()), None)
        return Counters(step)
    if not path.name.endswith(PICKLE_SUFFIXES):
        return Counters()
    try:
        loaded = load_pickled_cached(path)
    except GrokscopeError:
        return Counters()
    return Counters(step_entry(loaded), epoch_entry(loaded))


def _folder_counters(folder: Path) -> Counters:
    trainer_state = folder / TRAINER_STATE_FILE
    if trainer_state.is_file():
        try:
            document = json.loads(trainer_state.read_text())
        except (OSError, ValueError):
            document = None
        if isinstance(document, dict) and count_entry(document.get("global_step")) is not None:
            return Counters(count_entry(document["global_step"]), document.get("epoch"))
    for custom in sorted(p for p in folder.iterdir() if _ACCELERATE_CUSTOM_STATE.match(p.name)):
        try:
            step = step_entry(load_pickled_cached(custom))
        except GrokscopeError:
            continue
        if step is not None:
            return Counters(step)
    if dcp.is_dcp_folder(folder):
        try:
            metadata = dcp.read_metadata(folder)
        except GrokscopeError:
            return Counters()
        names = dcp.top_level_names(metadata)
        found = {k: dcp.scalar_entry(folder, metadata, k) for k in (*STORED_STEP_KEYS, STORED_EPOCH_KEY) if k in names}
        return Counters(step_entry(found), epoch_entry(found))
    pickled = [p for p in folder.iterdir() if is_weight_file(p) and p.name.endswith(PICKLE_SUFFIXES)
               and not NOT_MODEL.match(p.name)]
    return stored_counters(pickled[0]) if len(pickled) == 1 else Counters()


def holds_series(path: Path) -> bool:
    """Whether a file holds a whole series (see :func:`series_in_file`); False if unreadable."""
    if not Path(path).name.endswith(PICKLE_SUFFIXES):
        return False
    try:
        return series_in_file(load_pickled_cached(path)) is not None
    except GrokscopeError:
        return False
