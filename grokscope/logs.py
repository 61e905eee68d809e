"""Training histories of series written by other tools, in grokscope's history format.

A history has one row per step and the columns ``step, train_loss, train_acc, test_loss,
test_acc`` where known, plus any other per-step scalar under its own name. For another tool's
series it comes from two places:

- what ``grokscope probe`` computed from the model's output at each probed checkpoint, on the
  data the series was probed with (``features/history.parquet``): the same samples as every
  other measure, so these are the ``train_*`` / ``test_*`` columns whenever they exist;
- what the tool logged while training, read where it lies:

  - the Hugging Face Trainer's ``trainer_state.json`` (``log_history``; ``loss`` is the mean
    training loss since the last log, ``eval_loss`` / ``eval_accuracy`` the evaluation of the
    weights at that step; the end-of-training summary, whose ``train_loss`` is the mean over the
    whole run, is left out);
  - Lightning's ``metrics.csv`` (CSVLogger). Lightning writes every row at ``global_step - 1``:
    a training row describes the weights before that step's update (the checkpoint named
    ``step=S`` for the row of step S), but a validation row written at step S was computed on
    the weights after S+1 updates. Validation and test columns are moved one step later, so every
    row describes the checkpoint of its step;
  - lists of losses or accuracies per step stored beside the checkpoints of a single-file
    series (``train_losses``, ``test_losses``, as in Nanda et al.'s grokking runs).

  The logged columns keep their names (``eval_accuracy``, ``val_acc``, ...), except names that
  grokscope's tables already use (the ``train_*`` / ``test_*`` columns when probe computed them,
  ``run``, and hyperparameter columns such as ``loss`` or ``lr``), which become ``logged_<name>``.
  They fill the ``train_*`` / ``test_*`` columns only when probe computed none.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from grokscope import formats
from grokscope.errors import GrokscopeError

CANONICAL = ("train_loss", "train_acc", "test_loss", "test_acc")
PROBED_HISTORY_FILE = "history.parquet"
_EVAL_PREFIX = re.compile(r"^(val|valid|validation|eval|test)[_/]", re.IGNORECASE)
_TRAIN_PREFIX = re.compile(r"^(train|training)[_/]", re.IGNORECASE)
# A key only the Trainer's end-of-training log entry has.
_TRAINING_SUMMARY = "train_runtime"


def probed_history_path(features_dir: Path) -> Path:
    return Path(features_dir) / PROBED_HISTORY_FILE


def series_history(series) -> pd.DataFrame | None:
    """The history of another tool's series (module docstring), or None if there is none."""
    probed_path = probed_history_path(series.features_dir)
    probed = formats.tables.read_table(probed_path) if probed_path.is_file() else None
    logged = logged_history(series)
    if probed is None or probed.empty:
        return logged
    if logged is None:
        return probed.sort_values("step").reset_index(drop=True)
    extras = logged.rename(columns={c: f"logged_{c}" for c in CANONICAL})
    merged = probed.merge(extras, on="step", how="outer")
    return merged.sort_values("step").reset_index(drop=True)


def logged_history(series) -> pd.DataFrame | None:
    """What the tool that wrote the series logged (module docstring), or None."""
    for reader in (_trainer_state, _lightning_metrics, _file_lists):
        history = reader(series)
        if history is not None and not history.empty:
            return history.rename(columns={c: f"logged_{c}" for c in history.columns if c in _reserved()})
    return None


def _reserved() -> set[str]:
    """Column names of grokscope's own tables that a logged column must not take."""
    from grokscope.config import RunConfig, hyperparameters

    return {"run", *hyperparameters(RunConfig())}


# --- Hugging Face Trainer ------------------------------------------------------------------


def _trainer_state(series) -> pd.DataFrame | None:
    candidates = [Path(series.home) / "trainer_state.json", Path(series.root) / "trainer_state.json"]
    candidates += [c.path / "trainer_state.json" for c in series.checkpoints if Path(c.path).is_dir()]
    logs = [entries for entries in (_log_history(p) for p in candidates if p.is_file()) if entries]
    if not logs:
        return None
    # Each checkpoint's trainer_state.json holds the log up to that step: the longest has it all.
    entries = max(logs, key=len)
    rows = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
            continue
        if _TRAINING_SUMMARY in entry:
            continue  # the end-of-training summary: its train_loss is the mean over the run, not this step's
        values = {k: float(v) for k, v in entry.items()
                  if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        rows.append({"step": entry["step"], **values})
    if not rows:
        return None
    frame = pd.DataFrame(rows).groupby("step", as_index=False).first()
    return _with_canonical(frame, {"train_loss": ("loss",), "test_loss": ("eval_loss",),
                                   "test_acc": ("eval_accuracy", "eval_acc")})


def _log_history(path: Path) -> list | None:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    history = document.get("log_history") if isinstance(document, dict) else None
    return history if isinstance(history, list) else None


# --- Lightning -----------------------------------------------------------------------------


def _lightning_metrics(series) -> pd.DataFrame | None:
    for folder in dict.fromkeys([Path(series.home), Path(series.root), Path(series.root).parent]):
        path = folder / "metrics.csv"
        if path.is_file():
            return read_lightning_metrics(path)
    return None


def read_lightning_metrics(path: Path) -> pd.DataFrame | None:
    """A Lightning CSVLogger ``metrics.csv`` as a history, validation rows moved to the step of
    the weights they evaluated (module docstring)."""
    try:
        frame = pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - a damaged log is reported, not raised as a bug
        raise GrokscopeError(f"{path}: not a readable CSV file ({type(exc).__name__})") from None
    if "step" not in frame.columns:
        return None
    values = [c for c in frame.columns if c != "step" and pd.api.types.is_numeric_dtype(frame[c])]
    long = frame.melt(id_vars=["step"], value_vars=values, var_name="column").dropna(subset=["value"])
    evaluated = long["column"].map(lambda c: bool(_EVAL_PREFIX.match(c)))
    long.loc[evaluated, "step"] = long.loc[evaluated, "step"] + 1
    long = long[long["column"] != "epoch"] if evaluated.any() else long
    history = long.pivot_table(index="step", columns="column", values="value", aggfunc="last").reset_index()
    history.columns.name = None
    history["step"] = history["step"].astype("int64")
    return _with_canonical(history, _canonical_sources(history.columns))


def _canonical_sources(columns) -> dict[str, tuple[str, ...]]:
    """Logged column names that stand for each canonical column, preferred first."""
    sources: dict[str, list[str]] = {name: [] for name in CANONICAL}
    for suffix in ("", "_step", "_epoch"):
        for column in columns:
            if not column.endswith(suffix):
                continue
            base = column[: len(column) - len(suffix)] if suffix else column
            kind = "loss" if re.search(r"loss$", base, re.IGNORECASE) else (
                "acc" if re.search(r"(acc|accuracy)$", base, re.IGNORECASE) else None)
            if kind is None:
                continue
            if _EVAL_PREFIX.match(base):
                sources[f"test_{kind}"].append(column)
            elif _TRAIN_PREFIX.match(base) or base == kind or base == "loss":
                sources[f"train_{kind}"].append(column)
    return {name: tuple(found) for name, found in sources.items()}


# --- single-file series --------------------------------------------------------------------


def _file_lists(series) -> pd.DataFrame | None:
    from grokscope.discovery import FILE
    from grokscope.loading import load_pickled_cached

    if series.kind != FILE:
        return None
    try:
        loaded = load_pickled_cached(series.root)
    except GrokscopeError:
        return None
    if not isinstance(loaded, dict):
        return None
    columns = {}
    for key, value in loaded.items():
        values = value.tolist() if hasattr(value, "tolist") else value
        if (isinstance(key, str) and re.fullmatch(r"(train|test|val)_(loss|losses|acc|accs|accuracy|accuracies)", key)
                and isinstance(values, list) and values and all(isinstance(v, (int, float)) for v in values)):
            columns[key] = [float(v) for v in values]
    lengths = {len(v) for v in columns.values()}
    if not columns or len(lengths) != 1:
        return None
    frame = pd.DataFrame({"step": range(lengths.pop()), **columns})
    return _with_canonical(frame, {
        "train_loss": ("train_loss", "train_losses"), "test_loss": ("test_loss", "test_losses", "val_loss"),
        "train_acc": ("train_acc", "train_accs", "train_accuracy"),
        "test_acc": ("test_acc", "test_accs", "test_accuracy", "val_acc"),
    })


def _with_canonical(frame: pd.DataFrame, sources: dict[str, tuple[str, ...]]) -> pd.DataFrame:
    frame = frame.copy()
    for name, candidates in sources.items():
        found = next((c for c in candidates if c in frame.columns and c != name), None)
        if name not in frame.columns and found is not None:
            frame[name] = frame[found]
    return frame.sort_values("step").reset_index(drop=True)
