"""Checkpoint series: finding them on disk and loading their weights safely.

Two kinds of series are read:

* **grokscope runs**: a folder with ``run.json`` and ``checkpoints/step-00001200.safetensors``;
  the model and the exact train/test split are rebuilt from ``run.json``.
* **foreign series**, written by other tools: a folder whose entries carry a step in their names,
  ``checkpoint-500/`` or ``checkpoint_500/`` folders (Hugging Face style: ``model.safetensors``,
  ``pytorch_model.bin``, ``model.pt`` ... inside), or weight files such as ``step500.pt``,
  ``model_step_500.safetensors``, ``ckpt-500.pth`` or ``epoch_3.bin``. The user supplies the model
  (``--model``) and the data (``--data``).

Pickled files (``.pt``, ``.pth``, ``.bin``, ``.ckpt``) are only ever read with
``torch.load(..., weights_only=True)``, which refuses any object that is not a tensor or a plain
container: a checkpoint file can never run code on the reader's machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from grokscope import store
from grokscope.errors import GrokscopeError

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")

# Inside a checkpoint-N/ folder, the model's weights under the names common tools give them.
_PREFERRED_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth", "model.bin")
# Files beside the weights in a Hugging Face Trainer checkpoint that are not the model.
_NOT_MODEL = re.compile(r"^(optimizer|scheduler|scaler|rng_state|training_args|trainer_state)")
_SHARD = re.compile(r"-\d+-of-\d+\.")
# Other tools' step-bearing names, tried after grokscope's own (store.parse_step).
_STEP_WORD = re.compile(r"(?:step|checkpoint|ckpt|iter|iteration|epoch)[-_]?(\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"\d+")
# Prefixes that wrappers add to every parameter name: torch.compile and DistributedDataParallel.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")
# Keys under which training loops commonly nest the model's state dict in a larger checkpoint.
_NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "module", "net", "weights")
# Folders a series never holds checkpoints in (grokscope's own outputs).
_OUTPUT_DIRS = {store.FEATURES_DIR, store.MEASURES_DIR}


@dataclass(frozen=True, order=True)
class Checkpoint:
    """One checkpoint: its step and where it lives (a weight file or a ``checkpoint-N/`` folder)."""

    step: int
    path: Path


@dataclass
class Series:
    """A checkpoint series: a grokscope run (``is_run``) or a folder written by another tool."""

    root: Path
    is_run: bool
    checkpoints: list[Checkpoint] = field(default_factory=list)

    @property
    def name(self) -> str:
        return store.run_name(self.root) if self.is_run else self.root.name

    def default_features_dir(self) -> Path:
        return self.root / store.FEATURES_DIR


# --- steps in names ------------------------------------------------------------------------


def parse_checkpoint_step(name: str, *, is_file: bool = True) -> int | None:
    """The step in a checkpoint's file or folder name (grokscope's names and other tools'), or None.

    After grokscope's own patterns (``step-00001200.safetensors``, ``checkpoint-500``,
    ``checkpoint_500``, ``step500``, ``model_step_500.pt``), a number after one of the words
    step, checkpoint, ckpt, iter, iteration, epoch; failing that, for files only, the only number
    in the name (``model_500.pt``). Names with several unlabelled numbers
    (``model-00001-of-00002``) have none, and so do folders like ``seed_3``.
    """
    step = store.parse_step(name)
    if step is not None:
        return step
    stem = name
    for suffix in WEIGHT_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    match = _STEP_WORD.search(stem)
    if match:
        return int(match.group(1))
    numbers = _NUMBER.findall(stem)
    return int(numbers[0]) if is_file and len(numbers) == 1 else None


def _is_weight_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(WEIGHT_SUFFIXES) and not path.name.startswith(".")


def _foreign_checkpoint(entry: Path) -> Checkpoint | None:
    if entry.name.startswith(".") or entry.name in _OUTPUT_DIRS or _NOT_MODEL.match(entry.name):
        return None
    step = parse_checkpoint_step(entry.name, is_file=entry.is_file())
    if step is None:
        return None
    if _is_weight_file(entry):
        return Checkpoint(step, entry)
    if entry.is_dir() and any(_is_weight_file(p) for p in entry.iterdir()):
        return Checkpoint(step, entry)
    return None


def foreign_checkpoints(folder: Path) -> list[Checkpoint]:
    """The checkpoints directly inside a folder written by another tool, sorted by step."""
    found = [c for c in (_foreign_checkpoint(e) for e in Path(folder).iterdir()) if c is not None]
    steps = [c.step for c in found]
    duplicated = sorted({s for s in steps if steps.count(s) > 1})
    if duplicated:
        names = sorted(c.path.name for c in found if c.step == duplicated[0])
        raise GrokscopeError(f"{folder}: several checkpoints for step {duplicated[0]} ({', '.join(names)})")
    return sorted(found)


def run_checkpoints(run_dir: Path) -> list[Checkpoint]:
    return [Checkpoint(step, path) for step, path in store.list_checkpoints(run_dir)]


# --- discovery -----------------------------------------------------------------------------


def find_series(paths: Iterable[str]) -> list[Series]:
    """The series named by command-line paths (``-`` reads more paths from stdin, one per line).

    A path may be a grokscope run, a foreign series folder, a folder holding either kind anywhere
    below it, or a single checkpoint (a file, or a ``checkpoint-N/`` folder), which selects just
    that checkpoint of its series. Series named twice are merged; checkpoints sorted by step.
    """
    merged: dict[tuple[Path, bool], set[Checkpoint]] = {}

    def add(root: Path, is_run: bool, checkpoints: Iterable[Checkpoint]) -> None:
        merged.setdefault((root.resolve(), is_run), set()).update(checkpoints)

    for path in store.expand_inputs(paths):
        if store.is_run_dir(path):
            add(path, True, run_checkpoints(path))
        elif path.is_file():
            add(*_single_file(path))
        elif path.name in _OUTPUT_DIRS:
            raise GrokscopeError(f"{path}: is a {path.name} folder written by grokscope, not a checkpoint series; "
                                 "name the run or series instead")
        elif _foreign_checkpoint(path) is not None and not foreign_checkpoints(path):
            add(path.parent, False, [_foreign_checkpoint(path)])
        else:
            found = list(_walk(path))
            if not found:
                raise GrokscopeError(f"{path}: holds no grokscope run and no checkpoint series")
            for root, is_run, checkpoints in found:
                add(root, is_run, checkpoints)
    return [
        Series(_display_path(root), is_run, sorted(checkpoints))
        for (root, is_run), checkpoints in merged.items()
    ]


def _single_file(path: Path) -> tuple[Path, bool, list[Checkpoint]]:
    if path.parent.name == store.CHECKPOINTS_DIR and store.is_run_dir(path.parent.parent):
        step = store.parse_step(path.name)
        if step is None:
            raise GrokscopeError(f"{path}: not a grokscope checkpoint (expected step-NNNNNNNN.safetensors)")
        return path.parent.parent, True, [Checkpoint(step, path)]
    if not path.name.endswith(WEIGHT_SUFFIXES):
        raise GrokscopeError(f"{path}: not a checkpoint (expected one of {', '.join(WEIGHT_SUFFIXES)})")
    step = parse_checkpoint_step(path.name)
    if step is not None:
        return path.parent, False, [Checkpoint(step, path)]
    # model.safetensors inside checkpoint-500/: the folder carries the step.
    step = parse_checkpoint_step(path.parent.name, is_file=False)
    if step is not None:
        return path.parent.parent, False, [Checkpoint(step, path)]
    raise GrokscopeError(f"{path}: cannot tell the training step from its name or its folder's")


def _walk(folder: Path):
    """(root, is_run, checkpoints) of every series at or below ``folder``, in name order."""
    if store.is_run_dir(folder):
        yield folder, True, run_checkpoints(folder)
        return
    checkpoints = foreign_checkpoints(folder)
    if checkpoints:
        yield folder, False, checkpoints
        return
    for child in sorted(folder.iterdir()):
        if child.is_dir() and not child.name.startswith(".") and child.name not in _OUTPUT_DIRS:
            yield from _walk(child)


def _display_path(path: Path) -> Path:
    import os

    try:
        return Path(os.path.relpath(path)) if path.is_relative_to(Path.cwd()) else path
    except ValueError:
        return path


# --- loading weights -----------------------------------------------------------------------


def weight_files(checkpoint: Checkpoint) -> list[Path]:
    """The file(s) holding a checkpoint's model weights (several for a sharded checkpoint)."""
    path = checkpoint.path
    if path.is_file():
        return [path]
    for name in _PREFERRED_WEIGHTS:
        if (path / name).is_file():
            return [path / name]
    candidates = sorted(p for p in path.iterdir() if _is_weight_file(p) and not _NOT_MODEL.match(p.name))
    if len(candidates) == 1:
        return candidates
    if candidates and all(_SHARD.search(p.name) for p in candidates):
        return candidates
    if not candidates:
        raise GrokscopeError(f"{path}: no model weights inside (looked for {', '.join(_PREFERRED_WEIGHTS)}, *.safetensors, *.pt)")
    raise GrokscopeError(
        f"{path}: several weight files and none named model.safetensors ({', '.join(p.name for p in candidates)})"
    )


def load_state(checkpoint: Checkpoint, device="cpu") -> dict:
    """A checkpoint's state dict (tensors on ``device``), wrapper prefixes stripped.

    safetensors files are read with ``safe_open``; pickled files only with
    ``torch.load(..., weights_only=True)``. A checkpoint saved as a dict that nests the model's
    state (``{"model": ..., "optimizer": ..., "step": ...}``) is unwrapped.
    """
    state: dict = {}
    for path in weight_files(checkpoint):
        state.update(_load_file(path, device))
    return strip_wrapper_prefixes(state)


def _load_file(path: Path, device) -> dict:
    if path.name.endswith(".safetensors"):
        return _load_safetensors(path, device)
    return _unwrap_state(_load_pickled(path, device), path)


def _load_safetensors(path: Path, device) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # noqa: BLE001 - a truncated or corrupt file is the user's data
        raise GrokscopeError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None


def _load_pickled(path: Path, device):
    import pickle

    import torch

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise GrokscopeError(
                f"{path}: refused: holds objects other than tensors, and grokscope loads pickled "
                "checkpoints only with weights_only=True (re-save the state_dict, or use safetensors)"
            ) from None
        raise GrokscopeError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - truncated zip, wrong format, ...
        raise GrokscopeError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})") from None


def _unwrap_state(loaded, path: Path) -> dict:
    import torch

    def is_state(value) -> bool:
        return isinstance(value, dict) and bool(value) and all(torch.is_tensor(v) for v in value.values())

    if is_state(loaded):
        return loaded
    if isinstance(loaded, dict):
        for key in _NESTED_STATE_KEYS:
            if is_state(loaded.get(key)):
                return loaded[key]
        # A state dict saved together with non-tensor extras at the top level: keep the tensors.
        tensors = {k: v for k, v in loaded.items() if torch.is_tensor(v)}
        if tensors:
            return tensors
    raise GrokscopeError(f"{path}: holds no state dict (a dict of tensor names to tensors)")


def strip_wrapper_prefixes(state: dict) -> dict:
    """Parameter names without the ``_orig_mod.`` (torch.compile) and ``module.`` (DDP) prefixes."""
    stripped = {}
    for key, value in state.items():
        name = key
        while name.startswith(_WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        stripped[name] = value
    return stripped


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --- choosing steps ------------------------------------------------------------------------

_RANGE = re.compile(r"^(\d+)-(\d*)$")
_EVERY = re.compile(r"^every:(\d+)$")


@dataclass(frozen=True)
class StepSelection:
    """A parsed ``--steps`` value; see :func:`parse_steps`."""

    exact: frozenset[int] = frozenset()
    ranges: tuple[tuple[int, int | None], ...] = ()
    every: int = 1

    def select(self, available: Iterable[int]) -> list[int]:
        """The chosen steps among ``available``, sorted."""
        steps = sorted(set(available))
        if self.exact or self.ranges:
            steps = [s for s in steps if s in self.exact or any(
                lo <= s and (hi is None or s <= hi) for lo, hi in self.ranges)]
        return steps[:: self.every]

    def missing(self, available: Iterable[int]) -> list[int]:
        """Steps named exactly that ``available`` lacks (worth a warning)."""
        return sorted(self.exact - set(available))


def parse_steps(text: str | None) -> StepSelection:
    """Parse ``--steps``: comma-separated steps ``1200``, ranges ``0-1000`` / ``2000-`` (to the end,
    inclusive), and ``every:K``, which keeps every K-th of the checkpoints chosen by the rest
    (first, (K+1)-th, ...). ``every:5`` alone thins the whole series; empty or ``all`` is every step.
    """
    if text is None or text.strip() in ("", "all"):
        return StepSelection()
    exact: set[int] = set()
    ranges: list[tuple[int, int | None]] = []
    every = 1
    for token in (t.strip() for t in text.split(",")):
        if token.isdigit():
            exact.add(int(token))
        elif _RANGE.match(token):
            lo, hi = _RANGE.match(token).groups()
            if hi and int(hi) < int(lo):
                raise GrokscopeError(f"--steps: range {token!r} runs backwards")
            ranges.append((int(lo), int(hi) if hi else None))
        elif _EVERY.match(token) and int(_EVERY.match(token).group(1)) >= 1:
            every = int(_EVERY.match(token).group(1))
        else:
            raise GrokscopeError(
                f"--steps: cannot read {token!r}; use steps '1200', ranges '0-1000' or '2000-', and 'every:K'"
            )
    return StepSelection(frozenset(exact), tuple(ranges), every)
