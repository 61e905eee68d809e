"""Steps in names: grokscope's checkpoint and features file names, and other tools' names.

The one place a training step is read from a file or folder name.
"""

from __future__ import annotations

import re

STEP_DIGITS = 8
# The endings of a file that holds a checkpoint's weights.
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")

# grokscope's own names, then other tools' (DESIGN.md: "Series written by other tools are read too").
_STEP_PATTERNS = [
    re.compile(r"^step-(\d+)\.safetensors$"),
    re.compile(r"^checkpoint[-_](\d+)$"),
    re.compile(r"^(?:model[-_])?step[-_]?(\d+)(?:\.(?:safetensors|pt|pth|bin))?$"),
]


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


def parse_checkpoint_step(name: str, *, is_file: bool = True) -> int | None:
    """The step in a checkpoint's file or folder name (grokscope's names and other tools'), or None.

    After grokscope's own patterns (``step-00001200.safetensors``, ``checkpoint-500``,
    ``checkpoint_500``, ``step500``, ``model_step_500.pt``), a number after one of the words
    step, checkpoint, ckpt, iter, iteration (``-``, ``_`` or ``=`` between: Lightning's
    ``epoch=3-step=500.ckpt`` is step 500), then after epoch; failing that, for files only, the
    only number in the name (``model_500.pt``). Names with several unlabelled numbers
    (``model-00001-of-00002``) have none, and so do folders like ``seed_3``.
    """
    step = parse_step(name)
    if step is not None:
        return step
    stem = name
    for suffix in WEIGHT_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    for pattern in (_STEP_WORD, _EPOCH_WORD):
        match = pattern.search(stem)
        if match:
            return int(match.group(1))
    numbers = _NUMBER.findall(stem)
    return int(numbers[0]) if is_file and len(numbers) == 1 else None
