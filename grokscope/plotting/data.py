"""Everything a figure or a report reads: measure tables and histories, with run and hyperparameters.

Inputs are series — grokscope runs and series written by other tools, with their
``measures/*.parquet`` and their history (a run's ``history.parquet``; for another tool's series,
what probe computed and what the tool logged, see :mod:`grokscope.logs`) — folders of series
(searched recursively), single Parquet tables (a measure table, or a history), or ``-`` (paths on
standard input). They are gathered into two frames:

- ``measures``: the tidy measure tables of every input, concatenated (run, step, metric, value,
  split, layer, family columns, hyperparameter columns), each row with ``family``: the name of
  the table it was read from (``measures/<family>.parquet``; a table given by itself, its file's
  name, unless it has a ``family`` column of its own);
- ``history``: the runs' histories, one row per evaluation, with ``run`` and the hyperparameter
  columns added so both frames can be filtered, coloured and faceted the same way.

Both carry a ``series`` column, the path of the series' home, which tells apart runs that share
a name (``add-p97`` trained twice, in two folders): figures and reports group rows by it, and
label them by ``run`` unless two series share a run name (:func:`label_column`). A table given
by itself keeps its own ``series`` column (``measure -o`` writes one); without one, its rows are
told apart by the home it lies in, else by their run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from grokscope import formats
from grokscope.errors import GrokscopeError

MEASURE_COLUMNS = formats.tables.MEASURE_COLUMNS
HISTORY_COLUMNS = ("step", "train_acc", "test_acc")
SERIES = "series"
FAMILY = "family"


@dataclass
class Tables:
    measures: pd.DataFrame
    history: pd.DataFrame

    def where(self, query: str | None) -> "Tables":
        """Rows of both frames that satisfy a pandas query (``--where``).

        A frame that lacks a column the query names is left whole (a history has no ``metric``),
        but a query that no non-empty frame can evaluate is an error naming the column.
        """
        if not query:
            return self
        frames, evaluated, failure = {}, [], None
        for name in ("measures", "history"):
            frame = getattr(self, name)
            frames[name] = frame
            if frame.empty:
                continue
            try:
                frames[name] = frame.query(query).reset_index(drop=True)
                evaluated.append(name)
            except pd.errors.UndefinedVariableError as exc:
                failure = failure or _undefined_name(exc)
            except Exception as exc:  # noqa: BLE001 - a malformed query is the user's mistake
                raise GrokscopeError(f"--where: cannot evaluate {query!r} ({_first_line(exc)})") from None
        if failure and not evaluated:
            raise GrokscopeError(f"--where: no column {failure!r} in the tables")
        return Tables(frames["measures"], frames["history"])

    def metric(self, name: str) -> pd.DataFrame:
        """Rows of the measure tables for one metric (an empty frame when there are none)."""
        if self.measures.empty or "metric" not in self.measures.columns:
            return self.measures.iloc[0:0]
        return self.measures[self.measures["metric"] == name].reset_index(drop=True)

    def columns(self) -> set[str]:
        return set(self.measures.columns) | set(self.history.columns)


def load(inputs: list[str]) -> Tables:
    """Read every input (see the module docstring) into one :class:`Tables`."""
    from grokscope.discovery import find_series

    measures, histories = [], []
    seen: set[tuple[str, str]] = set()  # (kind, path): a path named twice is read once
    for path in formats.inputs.expand_inputs(inputs):
        if path.is_file() and path.suffix == ".parquet" and not _in_a_home(path):
            if ("table", str(path.resolve())) in seen:
                continue
            seen.add(("table", str(path.resolve())))
            table = formats.tables.read_table(path)
            if set(MEASURE_COLUMNS) <= set(table.columns):
                if FAMILY not in table.columns:
                    table = table.assign(**{FAMILY: path.stem})
                measures.append(table if SERIES in table.columns else table.assign(**{SERIES: table["run"].astype(str)}))
            elif set(HISTORY_COLUMNS) <= set(table.columns):
                histories.append(_with_series_columns(table, path.parent))
            elif "value" not in table.columns and {"run", "step", "metric"} <= set(table.columns):
                formats.tables.read_measure_table(path)  # raises, naming the missing column
            else:
                raise GrokscopeError(
                    f"{path}: neither a measure table (run, step, metric, value) "
                    "nor a history (step, train_acc, test_acc)"
                )
            continue
        for series in find_series([str(path)]):
            key = ("series", str(Path(series.home).resolve()))
            if key in seen:  # measure prints one path per table: the series is read once
                continue
            seen.add(key)
            series_measures, series_history = _read_series(series)
            measures.append(series_measures)
            histories.append(series_history)
    return Tables(_concat(measures), _concat(histories))


def _read_series(series) -> tuple[pd.DataFrame, pd.DataFrame]:
    from grokscope.context import SeriesContext

    context = SeriesContext.open(series)
    identity = {SERIES: str(series.home)}
    folder = Path(series.home) / formats.tables.MEASURES_DIR
    measures = _concat([formats.tables.read_measure_table(path).assign(**{FAMILY: path.stem})
                        for path in sorted(folder.glob("*.parquet"))])
    if not measures.empty:
        measures = _add_columns(measures, identity)
    history = context.history()
    if history is None or history.empty:
        return measures, pd.DataFrame()
    return measures, _add_columns(history, {**context.columns, **identity})


def _with_series_columns(history: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """A history file's rows with the columns of the series it belongs to (or its folder's name)."""
    from grokscope.context import SeriesContext
    from grokscope.discovery import find_series

    try:
        found = find_series([str(folder)])
    except GrokscopeError:
        found = []
    if len(found) == 1:
        columns = {**SeriesContext.open(found[0]).columns, SERIES: str(found[0].home)}
    else:
        columns = {"run": Path(folder).resolve().name, SERIES: str(folder)}
    return _add_columns(history, columns)


def _in_a_home(path: Path) -> bool:
    """Whether a table is one of a series' own (``HOME/measures/x.parquet``, a run's history): then
    the whole series is read, with its history and identity."""
    from grokscope.discovery import is_home

    return (path.parent.name == formats.tables.MEASURES_DIR and is_home(path.parent.parent)) or \
        (path.name == formats.run.HISTORY_FILE and formats.run.is_run_dir(path.parent))


def series_key(frame: pd.DataFrame) -> str:
    """The column whose values are one per series: ``series`` where the frame has it, else ``run``."""
    return SERIES if SERIES in frame.columns else "run"


def label_column(*frames: pd.DataFrame) -> str:
    """The column to label series by: ``run``, unless two series share a run name (the same run
    trained in two folders), then ``series`` (their paths)."""
    pairs = [f[["run", SERIES]] for f in frames if not f.empty and {"run", SERIES} <= set(f.columns)]
    if not pairs:
        return "run"
    pairs = pd.concat(pairs, ignore_index=True).drop_duplicates()
    return SERIES if pairs["run"].duplicated().any() else "run"


def _add_columns(history: pd.DataFrame, columns: dict) -> pd.DataFrame:
    history = history.copy()
    for name, value in columns.items():
        history[name] = value
    return history


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _undefined_name(exc: Exception) -> str:
    # pandas says "name 'foo' is not defined"; keep just foo.
    text = str(exc)
    return text.split("'")[1] if text.count("'") >= 2 else text


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
