"""Measure tables as TensorBoard scalars, so synergy and RNC1 appear beside a run's loss curves.

One event file per series, in ``DIR/<series name>/`` (TensorBoard's run: the series' name,
with its path below the common folder where two series share a name) or, when ``DIR`` already
holds a run's event files (the user's own log folder) and one series is exported, in ``DIR``
itself, so the measures join that run's curves. Exporting again replaces grokscope's own event
file there and touches no other file.

A scalar's tag is ``family/metric[/split][/layer]``; where a table holds several values of one
metric at one step (oinfo's per-size rows beside its overall row), the columns that tell them
apart follow as ``column=value`` (``oinfo/synergy/train/layers.0/scope=size/size=3``). Its step
is the checkpoint's step. TensorBoard stores scalars as float32; NaN (a diverged run) stays NaN.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from grokscope.config import hyperparameter_columns
from grokscope.errors import GrokscopeError
from grokscope.plotting import data

EXTRA = "tensorboard"
# What TensorBoard's writers name their files; ours end in SUFFIX, so an export finds its own.
EVENTS_PREFIX = "events.out.tfevents."
SUFFIX = ".grokscope"
_NOT_IDENTIFIERS = {data.SERIES, data.FAMILY, "run", "step", "metric", "value", "split", "layer",
                    *hyperparameter_columns()}


def summary_writer():
    """torch's ``SummaryWriter`` (TensorBoard's event format), or an error naming the extra."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise GrokscopeError(f"--tensorboard: needs the tensorboard package: pip install 'grokscope[{EXTRA}]'") from None
    return SummaryWriter


def export(measures: pd.DataFrame, folder: Path) -> list[Path]:
    """Write every series' measures below ``folder``; the folders written, one per series."""
    writer_class = summary_writer()
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise GrokscopeError(f"--tensorboard: {folder} exists and is not a folder")
    if measures.empty:
        raise GrokscopeError("nothing to export: no measure tables among the inputs (after --where, if given)")
    targets = series_folders(measures, folder)
    written = []
    for key, rows in measures.groupby(data.series_key(measures), sort=False):
        target = targets[key]
        target.mkdir(parents=True, exist_ok=True)
        previous = [p for p in target.iterdir() if p.name.startswith(EVENTS_PREFIX) and p.name.endswith(SUFFIX)]
        scalars = scalar_rows(rows)
        writer = writer_class(log_dir=str(target), filename_suffix=SUFFIX)
        try:
            for tag, step, value in zip(scalars["tag"], scalars["step"], scalars["value"]):
                writer.add_scalar(tag, float(value), global_step=int(step))
        finally:
            writer.close()
        for path in previous:  # only once the new file is whole
            path.unlink()
        written.append(target)
    return written


def series_folders(measures: pd.DataFrame, folder: Path) -> dict[str, Path]:
    """Each series' event folder: ``folder`` itself where it is one run's log folder, else
    ``folder/<run name>`` (``folder/<path below the common folder>`` where run names repeat)."""
    key = data.series_key(measures)
    names = measures[[key, "run"]].drop_duplicates(subset=key)
    if _holds_events(folder):
        if len(names) > 1:
            raise GrokscopeError(f"--tensorboard: {folder} holds a run's event files: export one series into it, "
                                 f"or name a folder for the {len(names)} series")
        return {names[key].iloc[0]: folder}
    if not names["run"].duplicated().any():
        return {k: folder / _safe(str(run)) for k, run in zip(names[key], names["run"])}
    homes = [Path(str(k)).resolve() for k in names[key]]
    common = Path(os.path.commonpath(homes))
    return {k: folder / home.relative_to(common) for k, home in zip(names[key], homes)}


def scalar_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """One series' measures as (tag, step, value), in the order of ``rows``."""
    parts = [rows[data.FAMILY].astype(str) if data.FAMILY in rows.columns else None, rows["metric"].astype(str)]
    parts += [rows[c] for c in ("split", "layer") if c in rows.columns]
    tags = pd.Series([_join(values) for values in zip(*[p for p in parts if p is not None])], index=rows.index)
    identifiers = [c for c in rows.columns if c not in _NOT_IDENTIFIERS]
    tags = _told_apart(rows, tags, identifiers)
    return pd.DataFrame({"tag": tags, "step": rows["step"], "value": rows["value"]})


def _told_apart(rows: pd.DataFrame, tags: pd.Series, identifiers: list[str]) -> pd.Series:
    """``tags`` extended, where one tag has several rows at one step, by ``/column=value`` parts
    that make each tag one value per step (see :func:`_fewest_tags`)."""
    tags = tags.copy()
    for tag in tags.unique():
        members = tags.index[tags == tag]
        if rows.loc[members, "step"].duplicated().any():
            _, suffixes = _fewest_tags(rows.loc[members], identifiers)
            tags.loc[members] = tag + suffixes
    return tags


def _fewest_tags(group: pd.DataFrame, identifiers: list[str]) -> tuple[int, pd.Series]:
    """The split of ``group`` by its columns into parts of one row per step that makes the
    fewest parts, as (parts, each row's ``/column=value...`` suffix).

    The fewest parts is what names a curve by what stays the same along it: oinfo's per-size
    rows become one curve per ``scope`` and ``size``, not one per value of a column that moves
    from step to step (the multiplet's ``bins``, ``value_sd``). Ties go to the column with fewer
    distinct values, then to the table's order. Rows that no column tells apart stay one part.
    """
    if not group["step"].duplicated().any():
        return 1, pd.Series("", index=group.index)
    fewest_possible = int(group["step"].value_counts().max())
    candidates = sorted((c for c in identifiers if group[c].nunique(dropna=False) > 1),
                        key=lambda c: group[c].nunique(dropna=False))
    best: tuple[int, pd.Series] | None = None
    for column in candidates:
        rest = [c for c in identifiers if c != column]
        parts, suffixes = 0, []
        for value, part in group.groupby(column, dropna=False, sort=False):
            count, suffix = _fewest_tags(part, rest)
            parts += count
            suffixes.append(f"/{column}={_word(value)}" + suffix)
            if best is not None and parts >= best[0]:
                break
        else:
            if best is None or parts < best[0]:
                best = (parts, pd.concat(suffixes).reindex(group.index))
            if best[0] == fewest_possible:
                break
    return best if best is not None else (1, pd.Series("", index=group.index))


def _holds_events(folder: Path) -> bool:
    return folder.is_dir() and any(p.name.startswith(EVENTS_PREFIX) for p in folder.iterdir())


def _join(values) -> str:
    return "/".join(_word(v) for v in values if not _missing(v))


def _word(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "missing" if _missing(value) else str(value)


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _safe(name: str) -> str:
    """A run's name as one folder name (a name with a slash would make a folder of folders)."""
    return name.replace(os.sep, "_").replace("/", "_") or "_"
