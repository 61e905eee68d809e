"""Checkpoint series: finding them on disk, their checkpoints and steps, and their homes.

A *series* is a sequence of checkpoints of one training run, plus where grokscope keeps what it
derives from them (its *home*: ``features/`` and ``measures/``). Three kinds are read:

* **grokscope runs** (``run``): a folder with ``run.json`` and ``checkpoints/step-*.safetensors``;
  the model and the exact train/test split are rebuilt from ``run.json``. Home: the run.
* **folders written by other tools** (``folder``): weight files or checkpoint folders
  (``checkpoint-500/`` of the Hugging Face Trainer, accelerate's ``checkpoint_3/``, DCP's
  ``step-500/.metadata``), their steps from a step map, from what they store, or from their
  names (:mod:`grokscope.scanning`), and the Hugging Face Hub cache's ``models--ORG--NAME/``,
  one checkpoint per step-named revision. Home: the folder, or its parent when the folder is
  named ``checkpoints`` (Lightning's ``version_0/checkpoints/`` beside ``metrics.csv``).
* **one file holding a whole series** (``file``): a list or dict of state dicts with their steps,
  as in Nanda et al.'s ``full_run_data.pth``. Home: ``<stem>.grokscope/`` beside the file.

``grokscope probe --out DIR`` gives a series another home; the home's ``features/probe.json``
names the series, so the home alone finds it again.

Reading the checkpoints themselves is :mod:`grokscope.loading`'s; file names and layouts are
:mod:`grokscope.formats`'.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

from grokscope import formats
from grokscope.errors import GrokscopeError
from grokscope.formats import hub_cache
from grokscope.formats.steps import WEIGHT_SUFFIXES
from grokscope.loading import PICKLE_SUFFIXES, Checkpoint, holds_weights, load_pickled_cached
from grokscope.checkpoint_contents import series_in_file
from grokscope.stored_steps import holds_series
from grokscope.scanning import FILE_HOME_SUFFIX, OUTPUT_DIRS, describe_skipped, foreign_checkpoints, scan_folder

RUN, FOLDER, FILE = "run", "folder", "file"
# Folder names that hold the checkpoints of their parent (Lightning's version_N/checkpoints).
_CHECKPOINT_FOLDERS = ("checkpoints", "ckpts", "ckpt")
_OUTPUT_DIRS = OUTPUT_DIRS


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
            return formats.run.run_name(self.root)
        if self.kind == FILE and self.home == file_home(self.root):
            return self.root.stem
        if self.kind == FOLDER and self.home == self.root and hub_cache.is_repo(self.root):
            return hub_cache.repo_id(self.root)  # EleutherAI/pythia-70m, not models--EleutherAI--pythia-70m
        return Path(os.path.abspath(self.home)).name

    @property
    def features_dir(self) -> Path:
        return self.home / formats.features.FEATURES_DIR

    @property
    def measures_dir(self) -> Path:
        return self.home / formats.tables.MEASURES_DIR

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


def run_checkpoints(run_dir: Path) -> list[Checkpoint]:
    return [Checkpoint(step, path) for step, path in formats.run.list_checkpoints(run_dir)]


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
    return _merged(path for batch in formats.inputs.InputPaths(paths) for path in batch)


def iter_series(inputs: formats.inputs.InputPaths) -> Iterator[list[Series]]:
    """The series named by each batch of :class:`~grokscope.formats.inputs.InputPaths`, as the batches
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
    repo = hub_cache.repo_of(path) if path.is_dir() else None
    if repo is not None and repo != Path(path):  # snapshots/, refs/, or one snapshot of a Hub cache repository
        series = folder_series(repo)
        chosen = [c.step for c in series.checkpoints if _same(c.path, path)]
        return [(series, chosen or None)]
    if path.is_file():
        return [_single_file(path)]
    if path.name in _CHECKPOINT_FOLDERS and formats.run.is_run_dir(path.parent):
        return [(run_series(path.parent), None)]
    if holds_weights(path) and not scan_folder(path).checkpoints:  # one checkpoint-N/ folder
        series = folder_series(path.parent)
        listed = [c.step for c in series.checkpoints if _same(c.path, path)]
        if listed:
            return [(series, listed)]
    found = list(_walk(path))
    if not found:
        raise GrokscopeError(_refusal(path))
    return [(s, None) for s in found]


def _same(a: Path, b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def _checkpoint_in_parent(entry: Path, folder: Path) -> tuple[Series, list[int]]:
    """The series of ``folder`` with the step of its checkpoint ``entry`` selected."""
    series = folder_series(folder)
    steps = [c.step for c in series.checkpoints if _same(c.path, entry)]
    if not steps:
        raise GrokscopeError(f"{entry}: cannot tell the training step from its name, its folder's or its contents; "
                             f"give it in {Path(folder) / formats.steps.STEP_MAP_FILE}, e.g. "
                             f'{{"{Path(entry).name}": 1000}}')
    return series, steps


def _refusal(path: Path) -> str:
    """Why a path holds no series, with what was skipped in it."""
    message = f"{path}: holds no grokscope run and no checkpoint series"
    repos = [path] if hub_cache.is_repo(path) else [c for c in sorted(path.iterdir()) if hub_cache.is_repo(c)]
    if repos:
        described = "; ".join(f"{repo.name}: {describe_skipped(scan_folder(repo).skipped) or 'no revisions'}"
                              for repo in repos[:3])
        return (f"{message} ({len(repos)} Hugging Face cache repositories without step-named revisions: {described}); "
                "revisions are read by their refs named by step, refs/step1000, as from_pretrained(repo, "
                "revision='step1000') leaves them")
    skipped = scan_folder(path).skipped
    if not any(skipped.values()):
        return message
    return (f"{message} (skipped {describe_skipped(skipped)}); a checkpoint is a file ending in "
            f"{', '.join(WEIGHT_SUFFIXES)}, or a folder holding one or a DCP checkpoint")


def _home_owning(path: Path) -> tuple[Path, int | None] | None:
    """(home, step or None) when ``path`` is a series' home or lies in its features/measures
    folder (what probe and measure print, so ``probe - | measure -`` works)."""
    if is_home(path):
        return path, None
    if path.name in _OUTPUT_DIRS and path.is_dir():
        return path.parent, None
    parent = path.parent
    if path.is_file() and parent.name in (formats.features.FEATURES_DIR, formats.tables.MEASURES_DIR,
                                          formats.run.CHECKPOINTS_DIR):
        if parent.name == formats.run.CHECKPOINTS_DIR and not formats.run.is_run_dir(parent.parent):
            return None
        step = formats.steps.parse_step(path.name) if parent.name != formats.tables.MEASURES_DIR else None
        if parent.name == formats.run.CHECKPOINTS_DIR and step is None:
            raise GrokscopeError(f"{path}: not a grokscope checkpoint (expected step-NNNNNNNN.safetensors)")
        return parent.parent, step
    if path.is_file() and formats.run.is_run_dir(parent):  # run.json, history.parquet
        return parent, None
    return None


def is_home(path: Path) -> bool:
    """Whether ``path`` is a grokscope run or the home of a probed series."""
    path = Path(path)
    record_path = formats.features.probe_record_path(path / formats.features.FEATURES_DIR)
    return formats.run.is_run_dir(path) or record_path.is_file()


def series_at_home(home: Path) -> Series:
    """The series whose features and measures live in ``home``."""
    home = Path(home)
    if formats.run.is_run_dir(home):
        return run_series(home)
    record_path = formats.features.probe_record_path(home / formats.features.FEATURES_DIR)
    if record_path.is_file():
        record = formats.features.read_probe_record(record_path)
        root = Path(os.path.normpath(record_path.parent / record["series"]))
        if not root.exists():
            raise GrokscopeError(f"{record_path}: names the series {record['series']!r}, relative to its folder: "
                                 f"{root.absolute()}, which does not exist (moved, or the home copied elsewhere)")
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
    entries = series_in_file(load_pickled_cached(path)) if path.name.endswith(PICKLE_SUFFIXES) else None
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
    repo = hub_cache.repo_of(path.parent)
    if repo is not None:  # model.safetensors in a Hub cache snapshot
        return _named_by(path.parent)[0]
    if not scan_folder(path.parent).checkpoints:
        # model.safetensors inside checkpoint-500/: the folder is the checkpoint.
        return _checkpoint_in_parent(path.parent, path.parent.parent)
    return _checkpoint_in_parent(path, path.parent)


def _walk(folder: Path):
    """Every series at or below ``folder``, in name order."""
    if is_home(folder):
        yield series_at_home(folder)
        return
    checkpoints = foreign_checkpoints(folder)
    if checkpoints:
        yield Series(folder, FOLDER, default_home(folder, FOLDER), checkpoints)
        return
    if hub_cache.is_repo(folder):  # its blobs and snapshots are no series of their own
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
