"""Steps in names: grokscope's checkpoint and features file names, and other tools' names.

The one place a training step is read from a file or folder name, and from a step map
(``steps.json``: the steps of a series' entries, written by the user where names carry none).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from grokscope.errors import GrokscopeError

STEP_DIGITS = 8
# The endings of a file that holds a checkpoint's weights (the longer ending first: .pth.tar is
# PyTorch's ImageNet example, torch.save under a tar-like name).
WEIGHT_SUFFIXES = (".safetensors", ".pth.tar", ".pt", ".pth", ".bin", ".ckpt")
# A series folder's map of entry names to steps, for names that carry none (or the wrong one).
STEP_MAP_FILE = "steps.json"

# How a number in a name was labelled: a step for certain, an epoch, or a count that may be a
# step, an epoch or a save index (checkpoint_3, model_3.pt).
STEP, EPOCH, NUMBER = "step", "epoch", "number"

# grokscope's own names, then other tools' (DESIGN.md: "Series written by other tools are read too").
_STEP_PATTERNS = [
    re.compile(r"^step-(\d+)\.safetensors$"),
    re.compile(r"^checkpoint[-_](\d+)$"),
    re.compile(r"^(?:model[-_])?step[-_]?(\d+)(?:\.(?:safetensors|pt|pth|bin))?$"),
]
# The Trainer's checkpoint-500 counts steps; checkpoint_5 (accelerate, the ImageNet example)
# counts saves or epochs as often as steps.
_UNSURE_PATTERN = re.compile(r"^checkpoint_(\d+)(?:\.\w+)*$")


def step_file_name(step: int) -> str:
    return f"step-{step:0{STEP_DIGITS}d}.safetensors"


def parse_step(name: str) -> int | None:
    """The training step encoded in a checkpoint's file or folder name, or None."""
    for pattern in _STEP_PATTERNS:
        match = pattern.match(name)
        if match:
            return int(match.group(1))
    return None


# Other tools' step-bearing names, tried after grokscope's own (parse_step). A step beats an
# epoch: Lightning names its checkpoints epoch=3-step=500.ckpt.
_STEP_WORD = re.compile(r"(?:step|checkpoint|ckpt|iter|iteration)[-_=]?(\d+)", re.IGNORECASE)
_EPOCH_WORD = re.compile(r"epoch[-_=]?(\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class NamedStep:
    """A number read from a name, and what labelled it (:data:`STEP`, :data:`EPOCH` or :data:`NUMBER`)."""

    step: int
    label: str


def weight_stem(name: str) -> str:
    """A file name without its weight suffix (``checkpoint_0005.pth.tar`` -> ``checkpoint_0005``)."""
    for suffix in WEIGHT_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def named_step(name: str, *, is_file: bool = True) -> NamedStep | None:
    """The step in a checkpoint's file or folder name, and how sure the name is of it.

    See :func:`parse_checkpoint_step` for the names read. ``checkpoint_N``, an epoch and a lone
    number are :data:`EPOCH` or :data:`NUMBER`: they may count epochs or saves, not steps.
    """
    stem = weight_stem(name)
    if _UNSURE_PATTERN.match(stem):
        return NamedStep(int(_UNSURE_PATTERN.match(stem).group(1)), NUMBER)
    step = parse_step(name)
    if step is not None:
        return NamedStep(step, STEP)
    match = _STEP_WORD.search(stem)
    if match:
        return NamedStep(int(match.group(1)), STEP)
    match = _EPOCH_WORD.search(stem)
    if match:
        return NamedStep(int(match.group(1)), EPOCH)
    numbers = _NUMBER.findall(stem)
    return NamedStep(int(numbers[0]), NUMBER) if is_file and len(numbers) == 1 else None


def parse_checkpoint_step(name: str, *, is_file: bool = True) -> int | None:
    """The step in a checkpoint's file or folder name (grokscope's names and other tools'), or None.

    After grokscope's own patterns (``step-00001200.safetensors``, ``checkpoint-500``,
    ``checkpoint_500``, ``step500``, ``model_step_500.pt``), a number after one of the words
    step, checkpoint, ckpt, iter, iteration (``-``, ``_`` or ``=`` between: Lightning's
    ``epoch=3-step=500.ckpt`` is step 500), then after epoch; failing that, for files only, the
    only number in the name (``model_500.pt``). Names with several unlabelled numbers
    (``model-00001-of-00002``) have none, and so do folders like ``seed_3``.
    """
    found = named_step(name, is_file=is_file)
    return None if found is None else found.step


def read_step_map(path: Path) -> dict[str, int]:
    """A ``steps.json`` step map: ``{"checkpoint_0": 100, "checkpoint_1": 200, ...}``, entry names
    (files or folders beside it) to their training steps."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise GrokscopeError(f"{path}: not a readable step map ({type(exc).__name__}); expected "
                             '{"<checkpoint file or folder name>": <step>, ...}') from None
    if not isinstance(document, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in document.items()):
        raise GrokscopeError(f"{path}: a step map maps checkpoint names to steps, "
                             '{"<checkpoint file or folder name>": <step>, ...}, with steps whole numbers >= 0')
    steps = list(document.values())
    repeated = sorted({s for s in steps if steps.count(s) > 1})
    if repeated:
        raise GrokscopeError(f"{path}: gives step {repeated[0]} to several checkpoints")
    return dict(document)
