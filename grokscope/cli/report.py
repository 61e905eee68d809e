"""One summary row per series: hyperparameters, grokking steps and phase, synergy minimum, final RNC1."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from grokscope.errors import GrokscopeError

EPILOG = """\
Examples:

  grokscope report runs/                          # a table of every run below runs/

  grokscope report runs/ --format csv > summary.csv

  grokscope report runs/ --where "weight_decay >= 1" --format json | jq .phase

Columns: run, series (the run's folder: two runs of one name stay two rows), the
hyperparameters, memorization_step and generalization_step (first evaluated step with train /
test accuracy >= --threshold), grokking_gap (their difference), phase (Liu et al. 2022:
comprehension, grokking, memorization, confusion; grokking when the gap is at least --delay
steps), synergy_min / _step / _size (the lowest O-information of the run after its initial
transient, when an oinfo table exists), synergy_min_sd and synergy_within_ties (its spread over
random orders of tied activations, and whether the curve's rise and fall is within that spread),
rnc1_train / rnc1_test (RNC1 at the last measured step,
when a collapse table exists) and diverged_step (first step with a non-finite loss or weights).
Cells are empty where a run has no such table or never reached the threshold. The table format
leaves out hyperparameters no run has, and series unless run names repeat.

synergy_peak_height / _bits / _step / _width: the first synergy peak after the initial transient
(the first evaluation at which the training loss has fallen 10% below its first value): its
rise on the run's min-max scale and in bits, its step and its width at half height, in steps
(height 0 without a peak); --early K looks only up to the memorisation step + K, as
`grokscope predict` does.
"""

FORMATS = ("table", "csv", "json")


def report(
    inputs: List[str] = typer.Argument(..., metavar="PATH...", help="Runs, folders of runs, Parquet tables, or - for paths on stdin."),
    fmt: str = typer.Option("table", "--format", "-f", help="table (aligned, for reading), csv or json (one object per line)."),
    where: Optional[str] = typer.Option(None, "--where", help="Keep rows matching this pandas query, e.g. \"seed == 0\"."),
    threshold: float = typer.Option(0.99, "--threshold", help="Accuracy that counts as memorised (train) / generalised (test)."),
    delay: int = typer.Option(1000, "--delay", help="Gap in steps from which a run counts as grokking rather than comprehension."),
    early: Optional[int] = typer.Option(None, "--early", help="synergy_peak_*: only the steps up to the memorisation step + this many (default: the whole run)."),
    all_columns: bool = typer.Option(False, "--all-columns", help="table, --html: every column, also those empty in every row or for another kind of model."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write one self-contained page (the table, every figure the tables allow, each with its plot command) and print its path."),
) -> None:
    """Summarise runs: when each memorised and generalised, its phase, synergy minimum and final RNC1."""
    from grokscope.cli.checks import paths_exist
    from grokscope.cli.output import Output

    if fmt not in FORMATS:
        raise GrokscopeError(f"--format: unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    if early is not None and early < 0:
        raise GrokscopeError(f"--early: must be >= 0, got {early}")
    if html is not None:
        from grokscope.reporting.html import page_inputs

        inputs = page_inputs(html, inputs)
    paths_exist(inputs)
    from grokscope.plotting.data import load
    from grokscope.plotting.summary import run_summaries

    tables = load(inputs).where(where)
    summaries = run_summaries(tables, threshold=threshold, delay=delay, early=early)
    if summaries.empty:
        raise GrokscopeError("nothing to report: no runs (after --where, if given)")
    output = Output()
    for _, row in summaries[summaries["diverged_step"].notna()].iterrows():
        output.warn(f"{row['series']}: diverged at step {row['diverged_step']} (non-finite loss or weights); "
                    "its values from there on are NaN and its summaries leave them out")
    if html is not None:
        from grokscope.reporting.html import PageRequest, write_page

        output.result(write_page(html, PageRequest(inputs, where, threshold, delay, early, all_columns), tables, summaries))
    elif fmt == "table":
        output.result(render_table(for_reading(summaries, all_columns)))
    else:
        # Missing cells as JSON null, not NaN (which JSON does not have).
        output.rows(summaries.astype(object).where(summaries.notna(), None), fmt)


def for_reading(summaries, all_columns: bool = False):
    """The table format's columns (:func:`grokscope.reporting.columns.reading_columns`)."""
    from grokscope.reporting.columns import reading_columns

    return reading_columns(summaries, all_columns)


def render_table(summaries) -> str:
    """The summaries as an aligned text table (rich), empty cells where a value is missing."""
    import io
    import shutil
    import sys

    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in summaries.columns:
        numeric = pd.api.types.is_numeric_dtype(summaries[column])
        table.add_column(column, justify="right" if numeric else "left", no_wrap=True)
    for row in summaries.itertuples(index=False):
        table.add_row(*(_cell(value) for value in row))
    buffer = io.StringIO()
    width = max(shutil.get_terminal_size().columns, 80)
    Console(file=buffer, width=width if sys.stdout.isatty() else 10_000, force_terminal=False,
            color_system=None).print(table)
    return buffer.getvalue().rstrip("\n")


def _cell(value) -> str:
    from grokscope.reporting.columns import cell_text

    return cell_text(value)
