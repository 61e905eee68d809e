"""One folder written by another tool: which of its entries are checkpoints, at which steps, and
what was left out and why.

A checkpoint's step is, first found:

1. the folder's step map (``steps.json``: ``{"checkpoint_0": 500, ...}``), written by the user;
2. the step the checkpoint stores (:mod:`grokscope.stored_steps`): it wins over any number in
   the name, so Lightning's ``sample-epoch=03-val_loss=0.52.ckpt`` is at its ``global_step``;
3. the number in its name (:func:`grokscope.formats.steps.named_step`).

A number that may count epochs or saves rather than steps (``epoch=3``; accelerate's automatic
``checkpoint_3``; ``checkpoint_0005.pth.tar`` beside a stored ``epoch``) is used, with one
warning that says so and shows the step map that fixes it. A checkpoint without a number in its
name that repeats another's step (Lightning's ``last.ckpt``) is left out; so is a weight file
with no step at all. Both are counted in one warning; a folder where nothing is found says what
its entries were instead.

A Hugging Face Hub cache repository (:mod:`grokscope.formats.hub_cache`) is a series too: one
checkpoint per step-named revision (``refs/step1000``), the snapshot the ref points to.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from grokscope import formats
from grokscope.errors import GrokscopeError, GrokscopeWarning
from grokscope.formats import hub_cache
from grokscope.formats.steps import EPOCH, NUMBER, STEP_MAP_FILE, named_step, read_step_map
from grokscope.loading import NOT_MODEL, Checkpoint, holds_weights, is_weight_file
from grokscope.stored_steps import holds_series, is_accelerate_state, stored_counters

# A single-file series keeps its features and measures in a folder beside it with this suffix.
FILE_HOME_SUFFIX = ".grokscope"
# Folders a series never holds checkpoints in (grokscope's own outputs).
OUTPUT_DIRS = {formats.features.FEATURES_DIR, formats.tables.MEASURES_DIR}
# Why an entry is not a checkpoint of the series.
NOT_WEIGHTS = "not weight files"
NO_STEP = "weight files with no step in the name or contents"
REPEATED = "copies of another checkpoint's step"
NOT_THE_MODEL = "optimizer, scheduler or trainer state, not the model"
NO_STEP_REVISION = "revisions whose name holds no step"
NO_WEIGHT_REVISION = "revisions without model weights"
MISSING_SNAPSHOT = "refs whose snapshot is missing"
UNNAMED_SNAPSHOT = "snapshots no ref names (downloaded by commit hash)"
_SHOWN = 3
# Why a number in a name may not be a step, and what besides a step map would settle it.
EPOCHS = "the numbers are epochs"
SAVES = "accelerate's automatic naming counts saves, not steps"
STORED_EPOCHS = "the files store an epoch and no step, so the numbers may count epochs"
_REMEDIES = {SAVES: " (or register an object whose state_dict() holds {\"step\": N} with "
                    "accelerator.register_for_checkpointing: its step is read)"}


@dataclass
class Scan:
    """The checkpoints of one folder (sorted by step), what was skipped (reason -> entry names),
    and doubts about the steps (reason -> entry names)."""

    checkpoints: list[Checkpoint] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    doubts: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


def is_candidate(entry: Path) -> bool:
    """Whether an entry may be a checkpoint (not hidden, not grokscope's own output)."""
    return not (entry.name.startswith(".") or entry.name in OUTPUT_DIRS or entry.name.endswith(FILE_HOME_SUFFIX)
                or entry.name == STEP_MAP_FILE)


def foreign_checkpoints(folder: Path) -> list[Checkpoint]:
    """The checkpoints directly inside a folder written by another tool, sorted by step (module
    docstring); doubts about their steps and skipped weight files are warned about."""
    scan = scan_folder(folder)
    if scan.checkpoints:
        warn_about(folder, scan)
    return scan.checkpoints


def scan_folder(folder: Path) -> Scan:
    folder = Path(folder)
    if hub_cache.is_repo(folder):
        return _scan_hub_repo(folder)
    step_map_path = folder / STEP_MAP_FILE
    step_map = read_step_map(step_map_path) if step_map_path.is_file() else {}
    entries = sorted(e for e in folder.iterdir() if is_candidate(e))
    unknown = sorted(set(step_map) - {e.name for e in entries})
    if unknown:
        raise GrokscopeError(f"{step_map_path}: names {unknown[0]!r}, which is not in {folder}")
    scan = Scan()
    found: list[tuple[Checkpoint, bool]] = []  # (checkpoint, whether its name carries a number)
    for entry in entries:
        if entry.is_dir():
            # A folder is a checkpoint when its name carries a number (checkpoint-500/, step_500/) or the
            # step map names it; others (seed_0/, lr0.1/) may be series of their own, and are walked.
            named = entry.name in step_map or named_step(entry.name, is_file=False) is not None
            if named and not formats.run.is_run_dir(entry) and holds_weights(entry):
                found.append(_checkpoint(entry, step_map, scan))
            continue
        if not is_weight_file(entry):
            scan.skipped[NOT_WEIGHTS].append(entry.name)
        elif NOT_MODEL.match(entry.name):
            scan.skipped[NOT_THE_MODEL].append(entry.name)
        elif not holds_series(entry):  # a file holding a whole series is a series of its own
            found.append(_checkpoint(entry, step_map, scan))
    by_step: dict[int, list[tuple[Checkpoint, bool]]] = defaultdict(list)
    for checkpoint, numbered in (f for f in found if f[0] is not None):
        by_step[checkpoint.step].append((checkpoint, numbered))
    for step, candidates in sorted(by_step.items()):
        kept = [c for c, numbered in candidates if numbered] or [candidates[0][0]]
        if len(kept) > 1:
            names = sorted(c.path.name for c in kept)
            raise GrokscopeError(f"{folder}: several checkpoints for step {step} ({', '.join(names)}); "
                                 f"give each its step in {step_map_path}")
        scan.checkpoints.append(kept[0])
        scan.skipped[REPEATED] += sorted(c.path.name for c, _ in candidates if c is not kept[0])
    return scan


def _checkpoint(entry: Path, step_map: dict[str, int], scan: Scan) -> tuple[Checkpoint | None, bool]:
    named = named_step(entry.name, is_file=entry.is_file())
    if entry.name in step_map:
        return Checkpoint(step_map[entry.name], entry), True
    counters = stored_counters(entry)
    if counters.step is not None:
        return Checkpoint(counters.step, entry), named is not None
    if named is None:
        scan.skipped[NO_STEP].append(entry.name)
        return None, False
    if named.label == EPOCH:
        scan.doubts[EPOCHS].append(entry.name)
    elif named.label == NUMBER and entry.is_dir() and is_accelerate_state(entry):
        scan.doubts[SAVES].append(entry.name)
    elif named.label == NUMBER and counters.epoch is not None:
        scan.doubts[STORED_EPOCHS].append(entry.name)
    return Checkpoint(named.step, entry), True


def _scan_hub_repo(repo: Path) -> Scan:
    from grokscope.formats.steps import parse_checkpoint_step

    scan = Scan()
    revisions = hub_cache.revisions(repo)
    stepped = {}
    for name, snapshot in revisions.named.items():
        step = parse_checkpoint_step(Path(name).name, is_file=False)
        if step is None:
            stepped.setdefault(None, []).append((name, snapshot))
        elif not holds_weights(snapshot):
            scan.skipped[NO_WEIGHT_REVISION].append(name)
        else:
            stepped.setdefault(step, []).append((name, snapshot))
    covered = {snapshot for step, pairs in stepped.items() if step is not None for _, snapshot in pairs}
    # refs/main usually names the last step's commit: the same checkpoint, not a skipped one.
    scan.skipped[NO_STEP_REVISION] += [name for name, snapshot in stepped.pop(None, []) if snapshot not in covered]
    for step, pairs in sorted(stepped.items()):
        if len({snapshot for _, snapshot in pairs}) > 1:
            raise GrokscopeError(f"{repo / hub_cache.REFS}: several revisions for step {step} "
                                 f"({', '.join(name for name, _ in pairs)}) point to different snapshots; "
                                 "delete the refs of the ones not to read")
        scan.checkpoints.append(Checkpoint(step, pairs[0][1]))
    scan.skipped[MISSING_SNAPSHOT] += revisions.dangling
    scan.skipped[UNNAMED_SNAPSHOT] += [name[:12] for name in revisions.unnamed]
    return scan


def warn_about(folder: Path, scan: Scan) -> None:
    """One warning for doubtful steps (with the step map that settles them), one for what was
    skipped that might have been a checkpoint."""
    if scan.doubts:
        names = sorted({name for entries in scan.doubts.values() for name in entries})
        example = {name: (i + 1) * 1000 for i, name in enumerate(names[:2])}
        warnings.warn(GrokscopeWarning(
            f"{folder}: {len(names)} checkpoints ({_listed(names)}) take their steps from numbers that may not be "
            f"training steps: {'; '.join(scan.doubts)}; give their steps in {Path(folder) / STEP_MAP_FILE}, "
            f"e.g. {json.dumps(example)}{''.join(_REMEDIES.get(reason, '') for reason in scan.doubts)}"), stacklevel=3)
    skipped = {reason: names for reason, names in scan.skipped.items() if names and reason != NOT_WEIGHTS}
    if skipped:
        warnings.warn(GrokscopeWarning(f"{folder}: skipped {describe_skipped(skipped)}"), stacklevel=3)


def describe_skipped(skipped: dict[str, list[str]]) -> str:
    """``weight files with no step in the name or contents: 3 (a.pt, b.pt, c.pt); ...``."""
    return "; ".join(f"{reason}: {len(names)} ({_listed(sorted(names))})" for reason, names in skipped.items() if names)


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
