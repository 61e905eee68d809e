"""Measure tables while they are measured: new rows merged into what the series' table holds,
saved as they go; and the combined table of every series (``-o``, ``--format``).

One row per value: ``run, step, metric, value, split, layer``, the columns a family needs, the
run's hyperparameters, and ``params`` (the family's options as JSON), which is how an existing
table tells whether a checkpoint was already measured with the same settings.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pandas as pd

from grokscope import formats
from grokscope.families import SERIES_FAMILIES
from grokscope.families.options import MeasureOptions


def same_params(table: pd.DataFrame, params: str) -> bool:
    return not len(table) or ("params" in table and bool((table["params"] == params).all()))


def finish_table(columns: dict, family: str, rows: list[dict], options: MeasureOptions,
                 existing: pd.DataFrame) -> pd.DataFrame:
    """New rows in the table format, merged with ``existing`` (a table of the same series), sorted by
    step: rows of ``existing`` at the steps of the new rows are replaced, and all of it when it
    was measured with other settings or the family has one set of rows per series."""
    new = pd.DataFrame(rows)
    if len(new):
        for column in ("split", "layer"):
            if column not in new:
                new[column] = None
        for column, value in columns.items():
            new[column] = value
        new["params"] = options.params(family)
        new["step"] = new["step"].astype("int64")
        new["value"] = new["value"].astype("float64")
    if len(existing) and len(new):
        if family in SERIES_FAMILIES or not same_params(existing, options.params(family)):
            existing = existing.iloc[0:0]
        else:
            existing = existing[~existing["step"].isin(set(new["step"]))]
    table = pd.concat([t for t in (existing, new) if len(t)], ignore_index=True) if len(existing) else new
    if not len(table):
        return table
    front = ["run", "step", "metric", "value", "split", "layer"]
    table = table[front + [c for c in table.columns if c not in front]]
    return table.sort_values(["step", "metric"], kind="stable").reset_index(drop=True)


SAVE_EVERY_ENV = "GROKSCOPE_SAVE_EVERY"
# A measure killed outright (SIGKILL, a scheduler's limit) loses at most this much work; each save
# rewrites the series' tables, which costs milliseconds (benchmarks/measure.py: table_saves).
DEFAULT_SAVE_EVERY_S = 30.0


def save_every() -> float:
    """Seconds between saves of a series' tables while it is measured (``GROKSCOPE_SAVE_EVERY``)."""
    from grokscope.config import seconds_from_env

    return seconds_from_env(SAVE_EVERY_ENV, DEFAULT_SAVE_EVERY_S)


class SeriesTables:
    """The measure tables of one series while it is measured.

    New rows are kept in memory and saved into ``HOME/measures/<family>.parquet`` every
    :func:`save_every` seconds, when the series is done, and when the command is interrupted, so a
    killed measure keeps what it had saved and the next one computes only the rest. A save takes
    the table's lock (:func:`grokscope.formats.atomic.table_lock`), reads the table as it is on disk now
    (another process may have added steps), puts this process's rows in place of the same steps
    and writes it atomically: two processes measuring the same series both keep their rows.
    Its cost is one table write per family, whatever the number of checkpoints since the last.

    With ``write=False`` (``-o``, ``--format``) nothing is written into the home; :meth:`table`
    gives what the table would hold. ``plan`` is the series' SeriesPlan
    (:mod:`grokscope.pipeline.measure_plan`).
    """

    def __init__(self, plan, options: MeasureOptions, *, write: bool = True,
                 every: float | None = None, on_wait: Callable[[str], None] | None = None):
        self.plan, self.options, self.write = plan, options, write
        if write:
            formats.atomic.refuse_symlinked_folder(Path(plan.series.home) / formats.tables.MEASURES_DIR)
        self.every = save_every() if every is None else every
        self.on_wait = on_wait
        self.rows: dict[str, list[dict]] = {family: [] for family in plan.existing}
        # A table holding rows of changed features is rewritten without them even if no new row comes.
        self.unsaved: set[str] = {family for family, steps in plan.stale.items() if steps}
        self.saved: list[Path] = []
        self._last_save = time.monotonic()

    def add(self, family: str, rows: list[dict]) -> None:
        if rows:
            self.rows[family] += rows
            self.unsaved.add(family)

    def save_if_due(self) -> None:
        if self.unsaved and time.monotonic() - self._last_save >= self.every:
            self.save()

    def save(self) -> None:
        """Write every table with unsaved rows (nothing without ``write``)."""
        self._last_save = time.monotonic()
        if not self.write:
            self.unsaved.clear()
            return
        for family in sorted(self.unsaved):
            path = formats.tables.measures_path(self.plan.series.home, family)
            path.parent.mkdir(parents=True, exist_ok=True)
            with formats.atomic.table_lock(path, self.on_wait):
                on_disk = formats.tables.read_measure_table(path) if path.is_file() else pd.DataFrame()
                stale = self.plan.stale.get(family)
                if stale and len(on_disk):
                    on_disk = on_disk[~on_disk["step"].isin(stale)]
                formats.tables.write_table(path, finish_table(self.plan.columns, family, self.rows[family], self.options,
                                                     on_disk))
            self.unsaved.discard(family)
            if path not in self.saved:
                self.saved.append(path)

    def table(self, family: str) -> pd.DataFrame:
        """The family's rows at the steps asked for: what was there, with this process's rows."""
        table = finish_table(self.plan.columns, family, self.rows[family], self.options, self.plan.existing[family])
        if len(table) and family not in SERIES_FAMILIES:
            table = table[table["step"].isin(set(self.plan.chosen.get(family, [])))].reset_index(drop=True)
        return table


def merged(earlier: SeriesTables | None, tables: SeriesTables) -> SeriesTables:
    """A series named again later on stdin: its rows and the steps asked for, together."""
    if earlier is None:
        return tables
    for family, rows in earlier.rows.items():
        measured = {row["step"] for row in tables.rows.get(family, [])}
        tables.rows.setdefault(family, [])
        tables.rows[family] = [r for r in rows if r["step"] not in measured] + tables.rows[family]
        tables.plan.chosen[family] = sorted(set(earlier.plan.chosen.get(family, [])) | set(tables.plan.chosen.get(family, [])))
    return tables


def combined_table(wanted: dict[str, set[str] | None], results: dict[Path, SeriesTables]) -> pd.DataFrame:
    """The rows asked for (family -> metrics, None for all), of every series, as one table with
    a ``series`` column (the home) that tells apart series that share a run name."""
    selected = []
    for home, tables in results.items():
        for family in wanted:
            if family not in tables.rows:  # a family --metric all brings only where it applies
                continue
            table = tables.table(family)
            if len(table) and wanted[family] is not None:
                table = table[table["metric"].isin(wanted[family])]
            if len(table):
                selected.append(table.assign(series=str(home)))
    return pd.concat(selected, ignore_index=True) if selected else pd.DataFrame()
