"""Parquet tables (written atomically) and a series' measure tables, measures/<family>.parquet.

pandas is imported inside the functions that need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from grokscope.errors import GrokscopeError
from grokscope.formats.atomic import atomic_path

MEASURES_DIR = "measures"


def write_table(path: Path, table) -> None:
    """Write a pandas DataFrame as Parquet, atomically."""
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


def read_table(path: Path):
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise GrokscopeError(f"{path}: no such table")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - unreadable input is reported, not raised as a bug
        raise GrokscopeError(f"{path}: not a readable Parquet table ({type(exc).__name__})") from None


# The columns every measure table has (DESIGN.md, "Measure tables"); the rest vary by family.
MEASURE_COLUMNS = ("run", "step", "metric", "value")


def measures_path(run_dir: Path, family: str) -> Path:
    return Path(run_dir) / MEASURES_DIR / f"{family}.parquet"


def read_measure_table(path: Path):
    """A measure table, refused by name when it lacks one of :data:`MEASURE_COLUMNS` (a table
    that cannot be told apart from another kind of file is never merged into or plotted)."""
    table = read_table(path)
    missing = [c for c in MEASURE_COLUMNS if c not in table.columns]
    if missing:
        raise GrokscopeError(f"{path}: not a grokscope measure table (no {missing[0]!r} column)")
    return table


def read_measures(run_dir: Path, families: Iterable[str] | None = None):
    """All measure tables of a run concatenated (an empty frame if it has none)."""
    import pandas as pd

    folder = Path(run_dir) / MEASURES_DIR
    paths = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if families is not None:
        wanted = set(families)
        paths = [p for p in paths if p.stem in wanted]
    tables = [read_measure_table(p) for p in paths]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
