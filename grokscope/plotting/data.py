"""Everything a figure or a report reads: measure tables and histories, with run and hyperparameters.

Inputs are run directories (their ``history.parquet`` and ``measures/*.parquet``), folders of
runs (searched recursively), single Parquet tables (a measure table, or a run's history), or
``-`` (paths on standard input). They are gathered into two frames:

- ``measures``: the tidy measure tables of every input, concatenated (run, step, metric, value,
  split, layer, family columns, hyperparameter columns);
- ``history``: the runs' histories, one row per evaluation, with ``run`` and the hyperparameter
  columns added so both frames can be filtered, coloured and faceted the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from grokscope import store
from grokscope.errors import GrokscopeError

MEASURE_COLUMNS = ("run", "step", "metric", "value")
HISTORY_COLUMNS = ("step", "train_acc", "test_acc")


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
    measures, histories = [], []
    for path in store.expand_inputs(inputs):
        if path.is_dir():
            for run_dir in store.find_runs([str(path)]):
                run_measures, run_history = _read_run(run_dir)
                measures.append(run_measures)
                histories.append(run_history)
        else:
            table = store.read_table(path)
            if set(MEASURE_COLUMNS) <= set(table.columns):
                measures.append(table)
            elif set(HISTORY_COLUMNS) <= set(table.columns):
                histories.append(_with_run_columns(table, path.parent))
            else:
                raise GrokscopeError(
                    f"{path}: neither a measure table (run, step, metric, value) "
                    "nor a history (step, train_acc, test_acc)"
                )
    return Tables(_concat(measures), _concat(histories))


def run_hyperparameters(run_dir: Path) -> dict:
    """A run's name and hyperparameter columns, from its run.json."""
    from grokscope.config import hyperparameters

    config = store.read_run(run_dir)
    return {"run": config.name or Path(run_dir).name, **hyperparameters(config)}


def _read_run(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    measures = store.read_measures(run_dir)
    history_path = Path(run_dir) / store.HISTORY_FILE
    history = _with_run_columns(store.read_history(run_dir), run_dir) if history_path.is_file() else pd.DataFrame()
    return measures, history


def _with_run_columns(history: pd.DataFrame, run_dir: Path) -> pd.DataFrame:
    if store.is_run_dir(run_dir):
        columns = run_hyperparameters(run_dir)
    else:
        columns = {"run": Path(run_dir).resolve().name}
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
