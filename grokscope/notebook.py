"""grokscope in a notebook: the tables below some paths as pandas DataFrames.

::

    import grokscope

    measures = grokscope.load("runs/", history=True)   # every measure, one row per value
    summary = grokscope.runs("runs/")                  # one row per series, as report prints it

Both read what the commands read (:func:`grokscope.plotting.data.load`): grokscope runs, series
written by other tools, folders of them (searched recursively) and single Parquet tables. A
mistake (a path that does not exist, a family no table has) raises
:class:`grokscope.errors.GrokscopeError` with the same one-line message the commands print.
docs/notebook.md has a worked example.
"""

from __future__ import annotations

from os import PathLike
from typing import Iterable, Union

import pandas as pd

from grokscope.errors import GrokscopeError
from grokscope.measures import grokking
from grokscope.plotting import data

Paths = Union[str, PathLike, Iterable[Union[str, PathLike]]]
# The columns that say which value a row is, first; every other column keeps its table's order.
LEADING_COLUMNS = (data.SERIES, "run", data.FAMILY, "step", "metric", "value", "split", "layer")


def load(paths: Paths, families: str | Iterable[str] | None = None, history: bool = False) -> pd.DataFrame:
    """Every measure table below ``paths`` as one tidy DataFrame, one row per measured value.

    Parameters
    ----------
    paths
        A path or a list of paths: runs, series of other tools, folders of them, Parquet tables.
    families
        Only the rows of these tables (``"collapse"``, ``["oinfo", "weights"]``: the names of the
        files ``measures/<family>.parquet``); default every table.
    history
        Add the series' history at the row's step (``train_loss``, ``train_acc``, ``test_loss``,
        ``test_acc`` and any other logged scalar), empty where the history has no evaluation at
        that step.

    Returns
    -------
    pandas.DataFrame
        Columns ``series`` (the series' home: tells apart runs of one name), ``run``, ``family``,
        ``step``, ``metric``, ``value``, ``split``, ``layer``, then the family's own columns
        (``size``, ``scope``, ...) and the run's hyperparameters (``weight_decay``, ``seed``, ...).
    """
    tables = data.load(_as_inputs(paths))
    measures = tables.measures
    if families is not None:
        measures = _of_families(measures, [families] if isinstance(families, str) else list(families))
    if history and not measures.empty and not tables.history.empty:
        measures = _with_history(measures, tables.history)
    leading = [c for c in LEADING_COLUMNS if c in measures.columns]
    return measures[leading + [c for c in measures.columns if c not in leading]].reset_index(drop=True)


def runs(paths: Paths, threshold: float = grokking.DEFAULT_THRESHOLD, delay: int = grokking.DEFAULT_DELAY,
         early: int | None = None, where: str | None = None) -> pd.DataFrame:
    """One row per series below ``paths``: its hyperparameters and summary, the columns and values
    of ``grokscope report --format csv`` (``grokscope report --help`` explains each).

    ``threshold``, ``delay``, ``early`` and ``where`` are report's options of the same names.
    """
    from grokscope.plotting.summary import run_summaries

    return run_summaries(data.load(_as_inputs(paths)).where(where), threshold=threshold, delay=delay, early=early)


def _as_inputs(paths: Paths) -> list[str]:
    if isinstance(paths, (str, PathLike)):
        return [str(paths)]
    inputs = [str(p) for p in paths]
    if not inputs:
        raise GrokscopeError("paths: none given")
    return inputs


def _of_families(measures: pd.DataFrame, families: list[str]) -> pd.DataFrame:
    found = sorted(measures[data.FAMILY].dropna().unique()) if data.FAMILY in measures.columns else []
    unknown = [f for f in families if f not in found]
    if unknown:
        raise GrokscopeError(f"families: no {unknown[0]!r} table below the paths; "
                             f"found: {', '.join(found) if found else 'none'}")
    return measures[measures[data.FAMILY].isin(families)]


def _with_history(measures: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """``measures`` with the history's own columns at each row's (series, step)."""
    key = [data.SERIES, "step"]
    own = [c for c in history.columns if c not in measures.columns]
    # A resumed run logs a step again; its last evaluation is the one training went on from.
    history = history[key + own].drop_duplicates(subset=key, keep="last")
    history = history.astype({"step": measures["step"].dtype})
    return measures.merge(history, on=key, how="left", validate="many_to_one")
