"""Checkpoint series: finding them on disk and loading their weights safely.

A *series* is a sequence of checkpoints of one training run, plus where grokscope keeps what it
derives from them (its *home*: ``features/`` and ``measures/``). Three kinds are read:

* **grokscope runs** (``run``): a folder with ``run.json`` and ``checkpoints/step-*.safetensors``;
  the model and the exact train/test split are rebuilt from ``run.json``. Home: the run.
* **folders written by other tools** (``folder``): entries that carry a step in their names —
  ``checkpoint-500/`` folders (Hugging Face Trainer: ``model.safetensors``, ``pytorch_model.bin``
  ... inside), Lightning's ``epoch=3-step=500.ckpt``, ``step500.pt``, ``ckpt-500.pth`` — or,
  failing that, a step stored inside the checkpoint (``global_step``, ``step``, ``iter_num``).
  Home: the folder, or its parent when the folder is named ``checkpoints`` (Lightning's
  ``version_0/checkpoints/`` beside ``metrics.csv``).
* **one file holding a whole series** (``file``): a list or dict of state dicts with their steps,
  as in Nanda et al.'s ``full_run_data.pth``. Home: ``<stem>.grokscope/`` beside the file.

``grokscope probe --out DIR`` gives a series another home; the home's ``features/probe.json``
names the series, so the home alone finds it again.

Pickled files (``.pt``, ``.pth``, ``.bin``, ``.ckpt``) are only ever read with
``torch.load(..., weights_only=True)``, which refuses any object that is not a tensor or a plain
container: a checkpoint file can never run code on the reader's machine. A legitimate checkpoint
that holds another object (Lightning's ``argparse.Namespace`` hyperparameters) is refused with
that object's name, and :func:`trust_globals` (``--allow-global NAME``) is the explicit opt-in.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

from grokscope import store
from grokscope.errors import GrokscopeError

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
RUN, FOLDER, FILE = "run", "folder", "file"
# A single-file series keeps its features and measures in a folder beside it with this suffix.
FILE_HOME_SUFFIX = ".grokscope"

# Inside a checkpoint-N/ folder, the model's weights under the names common tools give them.
_PREFERRED_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth", "model.bin")
# Files beside the weights in a Hugging Face Trainer checkpoint that are not the model.
_NOT_MODEL = re.compile(r"^(optimizer|scheduler|scaler|rng_state|training_args|trainer_state)")
_SHARD = re.compile(r"-\d+-of-\d+\.")
# Other tools' step-bearing names, tried after grokscope's own (store.parse_step). A step beats an
# epoch: Lightning names its checkpoints epoch=3-step=500.ckpt.
_STEP_WORD = re.compile(r"(?:step|checkpoint|ckpt|iter|iteration)[-_=]?(\d+)", re.IGNORECASE)
_EPOCH_WORD = re.compile(r"epoch[-_=]?(\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"\d+")
# Prefixes that wrappers add to every parameter name: torch.compile and DistributedDataParallel.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")
# Keys under which training loops commonly nest the model's state dict in a larger checkpoint.
_NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "module", "net", "weights")
# Keys under which a checkpoint dict records its own step (nanoGPT: iter_num; Lightning: global_step).
_STORED_STEP_KEYS = ("global_step", "step", "iter_num", "iteration")
# Folder names that hold the checkpoints of their parent (Lightning's version_N/checkpoints).
_CHECKPOINT_FOLDERS = ("checkpoints", "ckpts", "ckpt")
# Folders a series never holds checkpoints in (grokscope's own outputs).
_OUTPUT_DIRS = {store.FEATURES_DIR, store.MEASURES_DIR}


@dataclass(frozen=True, order=True)
class Checkpoint:
    """One checkpoint: its step and where it lives (a weight file, a ``checkpoint-N/`` folder, or
    entry ``member`` of a file that holds a whole series)."""

    step: int
    path: Path
    member: int | None = None


@dataclass
class Series:
    """A checkpoint series; see the module docstring for the kinds and their homes.

    ``selected`` holds the steps that the command line named (a checkpoint file, a features
    file), or None when the whole series was named.
    """

    root: Path
    kind: str
    home: Path
    checkpoints: list[Checkpoint] = field(default_factory=list)
    selected: frozenset[int] | None = None

    @property
    def is_run(self) -> bool:
        return self.kind == RUN

    @property
    def name(self) -> str:
        if self.is_run:
            return store.run_name(self.root)
        if self.kind == FILE and self.home == file_home(self.root):
            return self.root.stem
        return Path(os.path.abspath(self.home)).name

    @property
    def features_dir(self) -> Path:
        return self.home / store.FEATURES_DIR

    @property
    def measures_dir(self) -> Path:
        return self.home / store.MEASURES_DIR

    def chosen(self, select=None) -> list[Checkpoint]:
        """The checkpoints named on the command line (all if none were), thinned by ``select``
        (a :meth:`StepSelection.select`)."""
        checkpoints = [c for c in self.checkpoints if self.selected is None or c.step in self.selected]
        if select is None:
            return checkpoints
        wanted = set(select([c.step for c in checkpoints]))
        return [c for c in checkpoints if c.step in wanted]


def file_home(path: Path) -> Path:
    """Where a single-file series keeps its features and measures: ``<stem>.grokscope/`` beside it."""
    return Path(path).parent / f"{Path(path).stem}{FILE_HOME_SUFFIX}"


def default_home(root: Path, kind: str) -> Path:
    if kind == FILE:
        return file_home(root)
    if kind == FOLDER and Path(root).name in _CHECKPOINT_FOLDERS:
        return Path(root).parent
    return Path(root)


# --- steps in names ------------------------------------------------------------------------


def parse_checkpoint_step(name: str, *, is_file: bool = True) -> int | None:
    """The step in a checkpoint's file or folder name (grokscope's names and other tools'), or None.

    After grokscope's own patterns (``step-00001200.safetensors``, ``checkpoint-500``,
    ``checkpoint_500``, ``step500``, ``model_step_500.pt``), a number after one of the words
    step, checkpoint, ckpt, iter, iteration (``-``, ``_`` or ``=`` between: Lightning's
    ``epoch=3-step=500.ckpt`` is step 500), then after epoch; failing that, for files only, the
    only number in the name (``model_500.pt``). Names with several unlabelled numbers
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
    for pattern in (_STEP_WORD, _EPOCH_WORD):
        match = pattern.search(stem)
        if match:
            return int(match.group(1))
    numbers = _NUMBER.findall(stem)
    return int(numbers[0]) if is_file and len(numbers) == 1 else None


def _is_weight_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(WEIGHT_SUFFIXES) and not path.name.startswith(".")


def _candidate(entry: Path) -> bool:
    return not (entry.name.startswith(".") or entry.name in _OUTPUT_DIRS or _NOT_MODEL.match(entry.name)
                or entry.name.endswith(FILE_HOME_SUFFIX))


def _named_checkpoint(entry: Path) -> Checkpoint | None:
    """A checkpoint whose step is in its name: a weight file, or a folder holding one (never a
    grokscope run, whose name may hold a step word: add-p97-subnet-step229)."""
    if not _candidate(entry) or store.is_run_dir(entry):
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
    """The checkpoints directly inside a folder written by another tool, sorted by step.

    Files whose names carry no step are opened to look for a step stored inside them
    (``global_step``, ``step``, ``iter_num``); one that repeats the step of a named checkpoint
    (Lightning's ``last.ckpt``) is left out. Two checkpoints for one step are an error.
    """
    entries = sorted(Path(folder).iterdir())
    named = [c for c in (_named_checkpoint(e) for e in entries) if c is not None]
    named_paths = {c.path for c in named}
    stored = []
    for entry in entries:
        if entry in named_paths or not _candidate(entry) or not _is_weight_file(entry) or holds_series(entry):
            continue
        step = stored_step(entry)
        if step is not None and step not in {c.step for c in named}:
            stored.append(Checkpoint(step, entry))
    found = named + stored
    steps = [c.step for c in found]
    duplicated = sorted({s for s in steps if steps.count(s) > 1})
    if duplicated:
        names = sorted(c.path.name for c in found if c.step == duplicated[0])
        raise GrokscopeError(f"{folder}: several checkpoints for step {duplicated[0]} ({', '.join(names)})")
    return sorted(found)


def run_checkpoints(run_dir: Path) -> list[Checkpoint]:
    return [Checkpoint(step, path) for step, path in store.list_checkpoints(run_dir)]


# --- steps inside files --------------------------------------------------------------------


def stored_step(path: Path) -> int | None:
    """The step a checkpoint file records about itself, or None (also for unreadable files).

    safetensors: the header's ``step``, ``global_step`` or ``grokscope.step`` metadata; pickled
    checkpoints: a top-level ``global_step``, ``step``, ``iter_num`` or ``iteration`` entry.
    """
    path = Path(path)
    if path.name.endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
        except Exception:  # noqa: BLE001 - not a checkpoint we can read: not part of the series
            return None
        for key in ("grokscope.step", "global_step", "step"):
            if str(metadata.get(key, "")).isdigit():
                return int(metadata[key])
        return None
    try:
        loaded = _load_pickled_cached(path)
    except GrokscopeError:
        return None
    return _step_entry(loaded)


def holds_series(path: Path) -> bool:
    """Whether a file holds a whole series (see :func:`series_in_file`); False if unreadable."""
    if not Path(path).name.endswith(PICKLE_SUFFIXES):
        return False
    try:
        return series_in_file(_load_pickled_cached(path)) is not None
    except GrokscopeError:
        return False


def _step_entry(loaded) -> int | None:
    if not isinstance(loaded, dict):
        return None
    for key in _STORED_STEP_KEYS:
        value = loaded.get(key)
        if hasattr(value, "item") and getattr(value, "numel", lambda: 0)() == 1:
            value = value.item()
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def series_in_file(loaded) -> list[tuple[int, object]] | None:
    """(step, state dict) of every checkpoint in a loaded file that holds a whole series, or None.

    Recognised: a list of state dicts (steps 0, 1, ...); a list of dicts that each record a step
    and nest a state dict; a dict of steps to state dicts; a dict holding a list of state dicts
    with a list of their steps under a key naming steps or epochs (``checkpoints`` with
    ``checkpoint_epochs``, ``state_dicts`` with ``epochs``, as in Nanda et al.'s grokking runs).
    """
    if isinstance(loaded, (list, tuple)) and len(loaded) > 1:
        if all(_is_state(item) for item in loaded):
            return list(enumerate(loaded))
        entries = [(_step_entry(item), _nested_state(item)) for item in loaded]
        if all(step is not None and state is not None for step, state in entries):
            return sorted(entries, key=lambda pair: pair[0])
        return None
    if not isinstance(loaded, dict) or _is_state(loaded):
        return None
    keyed = {_key_step(k): v for k, v in loaded.items()}
    if len(keyed) > 1 and None not in keyed and all(_is_state(v) for v in keyed.values()):
        return sorted(keyed.items(), key=lambda pair: pair[0])
    for key, value in loaded.items():
        if isinstance(value, (list, tuple)) and len(value) > 1 and all(_is_state(v) for v in value):
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


# --- discovery -----------------------------------------------------------------------------


def find_series(paths: Iterable[str]) -> list[Series]:
    """The series named by command-line paths (``-`` reads more paths from stdin, one per line).

    A path may be a grokscope run, a folder of checkpoints, a file holding a whole series, the
    home of a series (with ``features/probe.json``), a folder holding any of these anywhere below
    it, or one file of a series — a checkpoint (a file, or a ``checkpoint-N/`` folder) or a
    features file, which selects that step — or anything else in a series' home (its features
    or measures folder, a measure table), which names the whole series. Series named twice are
    merged; checkpoints sorted by step.
    """
    return _merged(path for batch in store.InputPaths(paths) for path in batch)


def iter_series(inputs: store.InputPaths) -> Iterator[list[Series]]:
    """The series named by each batch of :class:`~grokscope.store.InputPaths`, as the batches
    arrive (``-`` reads stdin while the command before the pipe still writes). Series named
    twice in a batch are merged; one named again in a later batch comes again, with the steps
    that batch selects."""
    for batch in inputs:
        yield _merged(batch)


def _merged(paths: Iterable[Path]) -> list[Series]:
    merged: dict[tuple[Path, Path], Series] = {}

    def add(found: Series, steps: Iterable[int] | None = None) -> None:
        key = (found.root.resolve(), found.home.resolve())
        selected = None if steps is None else frozenset(steps)
        if key not in merged:
            merged[key] = replace(found, selected=selected)
            return
        current = merged[key].selected
        merged[key].selected = None if current is None or selected is None else current | selected

    for path in paths:
        for found, steps in _named_by(path):
            add(found, steps)
    return [replace(s, root=_display_path(s.root), home=_display_path(s.home)) for s in merged.values()]


def _named_by(path: Path) -> list[tuple[Series, list[int] | None]]:
    """(series, selected steps or None for all) of one command-line path."""
    owner = _home_owning(path)
    if owner is not None:
        home, step = owner
        return [(series_at_home(home), None if step is None else [step])]
    if path.is_file():
        return [_single_file(path)]
    if path.name in _CHECKPOINT_FOLDERS and store.is_run_dir(path.parent):
        return [(run_series(path.parent), None)]
    checkpoint = _named_checkpoint(path)
    if checkpoint is not None and not foreign_checkpoints(path):
        return [(folder_series(path.parent), [checkpoint.step])]
    found = list(_walk(path))
    if not found:
        raise GrokscopeError(f"{path}: holds no grokscope run and no checkpoint series")
    return [(s, None) for s in found]


def _home_owning(path: Path) -> tuple[Path, int | None] | None:
    """(home, step or None) when ``path`` is a series' home or lies in its features/measures
    folder (what probe and measure print, so ``probe - | measure -`` works)."""
    if is_home(path):
        return path, None
    if path.name in _OUTPUT_DIRS and path.is_dir():
        return path.parent, None
    parent = path.parent
    if path.is_file() and parent.name in (store.FEATURES_DIR, store.MEASURES_DIR, store.CHECKPOINTS_DIR):
        if parent.name == store.CHECKPOINTS_DIR and not store.is_run_dir(parent.parent):
            return None
        step = store.parse_step(path.name) if parent.name != store.MEASURES_DIR else None
        if parent.name == store.CHECKPOINTS_DIR and step is None:
            raise GrokscopeError(f"{path}: not a grokscope checkpoint (expected step-NNNNNNNN.safetensors)")
        return parent.parent, step
    if path.is_file() and store.is_run_dir(parent):  # run.json, history.parquet
        return parent, None
    return None


def is_home(path: Path) -> bool:
    """Whether ``path`` is a grokscope run or the home of a probed series."""
    path = Path(path)
    return store.is_run_dir(path) or store.probe_record_path(path / store.FEATURES_DIR).is_file()


def series_at_home(home: Path) -> Series:
    """The series whose features and measures live in ``home``."""
    home = Path(home)
    if store.is_run_dir(home):
        return run_series(home)
    record_path = store.probe_record_path(home / store.FEATURES_DIR)
    if record_path.is_file():
        record = store.read_probe_record(record_path)
        root = Path(os.path.normpath(record_path.parent / record["series"]))
        if not root.exists():
            raise GrokscopeError(f"{record_path}: names series {root}, which no longer exists")
        if root.is_file():
            return file_series(root, home)
        return folder_series(root, home)
    for root in (home, home / "checkpoints"):
        if root.is_dir() and foreign_checkpoints(root):
            return folder_series(root)
    raise GrokscopeError(f"{home}: holds no grokscope run and no checkpoint series")


def run_series(run_dir: Path) -> Series:
    return Series(Path(run_dir), RUN, Path(run_dir), run_checkpoints(run_dir))


def folder_series(folder: Path, home: Path | None = None) -> Series:
    folder = Path(folder)
    return Series(folder, FOLDER, home or default_home(folder, FOLDER), foreign_checkpoints(folder))


def file_series(path: Path, home: Path | None = None) -> Series:
    path = Path(path)
    entries = series_in_file(_load_pickled_cached(path)) if path.name.endswith(PICKLE_SUFFIXES) else None
    if entries is None:
        raise GrokscopeError(f"{path}: not a file holding a whole series (a list or dict of state dicts)")
    checkpoints = [Checkpoint(int(step), path, member) for member, (step, _) in enumerate(entries)]
    steps = [c.step for c in checkpoints]
    if len(set(steps)) != len(steps):
        raise GrokscopeError(f"{path}: lists several checkpoints for one step")
    return Series(path, FILE, home or file_home(path), sorted(checkpoints))


def _single_file(path: Path) -> tuple[Series, list[int] | None]:
    if not path.name.endswith(WEIGHT_SUFFIXES):
        raise GrokscopeError(f"{path}: not a checkpoint (expected one of {', '.join(WEIGHT_SUFFIXES)})")
    if holds_series(path):  # an unreadable file is reported when its step's turn comes
        return file_series(path), None
    step = parse_checkpoint_step(path.name)
    if step is not None:
        return folder_series(path.parent), [step]
    # model.safetensors inside checkpoint-500/: the folder carries the step.
    step = parse_checkpoint_step(path.parent.name, is_file=False)
    if step is not None:
        return folder_series(path.parent.parent), [step]
    step = stored_step(path)
    if step is not None:
        return folder_series(path.parent), [step]
    raise GrokscopeError(f"{path}: cannot tell the training step from its name, its folder's or its contents")


def _walk(folder: Path):
    """Every series at or below ``folder``, in name order."""
    if is_home(folder):
        yield series_at_home(folder)
        return
    checkpoints = foreign_checkpoints(folder)
    if checkpoints:
        yield Series(folder, FOLDER, default_home(folder, FOLDER), checkpoints)
        return
    children = sorted(folder.iterdir())
    for child in children:
        if child.is_file() and not child.name.startswith(".") and holds_series(child):
            yield file_series(child)
    for child in children:
        if child.is_dir() and not child.name.startswith(".") and child.name not in _OUTPUT_DIRS \
                and not (child.name.endswith(FILE_HOME_SUFFIX) and not is_home(child)):
            yield from _walk(child)


def _display_path(path: Path) -> Path:
    try:
        return Path(os.path.relpath(path)) if path.resolve().is_relative_to(Path.cwd()) else path
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
    state (``{"model": ..., "optimizer": ..., "step": ...}``, Lightning's ``state_dict``) is
    unwrapped; an entry of a file holding a whole series is picked by ``checkpoint.member``.
    Tensors that share storage (tied weights saved twice) keep sharing it.
    """
    if checkpoint.member is not None:
        entries = series_in_file(_load_pickled_cached(checkpoint.path))
        if entries is None or checkpoint.member >= len(entries):
            raise GrokscopeError(f"{checkpoint.path}: no longer holds checkpoint {checkpoint.member} of its series")
        state = _unwrap_state(entries[checkpoint.member][1], checkpoint.path)
        return strip_wrapper_prefixes(_to_device(state, device))
    state: dict = {}
    for path in weight_files(checkpoint):
        state.update(_load_file(path, device))
    return strip_wrapper_prefixes(state)


def _to_device(state: dict, device) -> dict:
    import torch

    if torch.device(device).type == "cpu":
        return dict(state)
    moved: dict = {}
    by_storage: dict[tuple, object] = {}
    for key, value in state.items():
        # Keep tied tensors tied on the device (one copy, as in the file).
        identity = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape), value.stride())
        if identity not in by_storage:
            by_storage[identity] = value.to(device)
        moved[key] = by_storage[identity]
    return moved


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
        refused = _refused_global(str(exc))
        if refused:
            raise GrokscopeError(
                f"{path}: refused: holds a {refused} object, and grokscope loads pickled checkpoints only "
                f"with weights_only=True; if you trust this file, pass --allow-global {refused}"
            ) from None
        if "weights_only" in str(exc):
            raise GrokscopeError(
                f"{path}: refused: holds objects other than tensors, and grokscope loads pickled "
                "checkpoints only with weights_only=True (re-save the state_dict, or use safetensors)"
            ) from None
        raise GrokscopeError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - truncated zip, wrong format, ...
        raise GrokscopeError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})") from None


@functools.lru_cache(maxsize=2)
def _load_pickled_cached_key(path: str, mtime_ns: int, size: int):
    return _load_pickled(Path(path), "cpu")


def _load_pickled_cached(path: Path):
    """A pickled file on the CPU, read once per (path, modification time, size): discovery and
    every checkpoint of a single-file series share one read."""
    stat = Path(path).stat()
    return _load_pickled_cached_key(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


def _refused_global(message: str) -> str | None:
    # torch: "Unsupported global: GLOBAL argparse.Namespace was not an allowed global by default."
    match = re.search(r"GLOBAL ([\w.]+)", message)
    return match.group(1) if match else None


def trust_globals(names: Iterable[str]) -> None:
    """Let ``weights_only`` loading accept the named classes (``--allow-global module.Name``).

    An explicit opt-in for checkpoints the user trusts: the classes are imported and handed to
    ``torch.serialization.add_safe_globals`` for this process.
    """
    import importlib

    import torch

    allowed = []
    for name in names:
        module_name, _, attribute = name.rpartition(".")
        try:
            allowed.append(getattr(importlib.import_module(module_name), attribute))
        except (ImportError, AttributeError, ValueError):
            raise GrokscopeError(f"--allow-global: cannot import {name!r} (expected module.Name)") from None
    if allowed:
        torch.serialization.add_safe_globals(allowed)
        _load_pickled_cached_key.cache_clear()


def _is_state(value) -> bool:
    import torch

    return isinstance(value, dict) and bool(value) and all(torch.is_tensor(v) for v in value.values())


def _nested_state(loaded) -> dict | None:
    if _is_state(loaded):
        return loaded
    if isinstance(loaded, dict):
        for key in _NESTED_STATE_KEYS:
            if _is_state(loaded.get(key)):
                return loaded[key]
    return None


def _unwrap_state(loaded, path: Path) -> dict:
    import torch

    state = _nested_state(loaded)
    if state is not None:
        return state
    if isinstance(loaded, dict):
        # A state dict saved together with non-tensor extras at the top level: keep the tensors.
        tensors = {k: v for k, v in loaded.items() if torch.is_tensor(v)}
        if tensors:
            return tensors
    if series_in_file(loaded) is not None:
        raise GrokscopeError(f"{path}: holds a whole series; name the file itself, not one of its steps")
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


def transformers_config(checkpoint: Checkpoint) -> Path | None:
    """The ``config.json`` a Hugging Face checkpoint folder carries, if any."""
    folder = checkpoint.path if checkpoint.path.is_dir() else checkpoint.path.parent
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return path if isinstance(document, dict) and document.get("architectures") else None


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
