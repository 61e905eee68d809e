"""The columns of the report that a reader needs: the aligned table and the HTML page show these,
csv and json every column."""

from __future__ import annotations

from grokscope.config import APPLIES_ONLY_TO


def reading_columns(summaries, all_columns: bool = False):
    """``summaries`` without the columns that say nothing about these rows.

    Left out: ``series`` unless two series share a run name (their paths then tell them apart), a
    column empty in every row (no oinfo table, say), and a setting that only another kind of
    model, optimizer or loss reads (:data:`grokscope.config.APPLIES_ONLY_TO`: an MLP run has no
    ``d_model``). ``all_columns`` keeps every column.
    """
    if all_columns:
        return summaries
    drop = [c for c in summaries.columns if c != "run" and summaries[c].isna().all()]
    if "series" in summaries.columns and not summaries["run"].duplicated().any():
        drop.append("series")
    for column, (kind_column, kinds) in APPLIES_ONLY_TO.items():
        if column in summaries.columns and kind_column in summaries.columns \
                and not summaries[kind_column].isin(kinds).any():
            drop.append(column)
    return summaries.drop(columns=list(dict.fromkeys(drop)))


def cell_text(value) -> str:
    """A report cell as text: empty where the value is missing, 4 significant digits for a float."""
    import pandas as pd

    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
