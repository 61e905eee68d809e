"""Write measures in other tools' formats: TensorBoard scalars beside a run's own curves."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from grokscope.errors import GrokscopeError

EPILOG = """\
Examples:

  grokscope export runs/ --tensorboard tb/      # tensorboard --logdir tb/

  grokscope export runs/add-p97 --tensorboard my-run/logs/version_0

  grokscope export runs/ --families oinfo --where "step > 0" --tensorboard tb/

Each series' measures become scalars tagged family/metric/split/layer (split and layer where
the row has them; then column=value where a table holds several values of one metric at one
step, as oinfo's per-size rows), at the checkpoint's step. DIR/<run name>/ gets one event file per series; a DIR that already holds a
run's event files (your training's log folder) gets the one series exported into it, so its
measures appear beside your loss curves. Exporting again replaces grokscope's own event file and
no other. Needs the tensorboard package (the grokscope extra of that name). The folders written
are printed on stdout.
"""


def export(
    inputs: List[str] = typer.Argument(..., metavar="PATH...", help="Runs, folders of runs, Parquet tables, or - for paths on stdin."),
    tensorboard: Optional[Path] = typer.Option(None, "--tensorboard", metavar="DIR", help="Write TensorBoard event files below this folder."),
    families: Optional[str] = typer.Option(None, "--families", help="Only these tables, e.g. oinfo,collapse (default every table)."),
    where: Optional[str] = typer.Option(None, "--where", help="Keep rows matching this pandas query, e.g. \"split == 'test'\"."),
) -> None:
    """Export measures as TensorBoard scalars and print the folders written."""
    from grokscope.cli.checks import paths_exist
    from grokscope.cli.output import Output

    paths_exist(inputs)
    if tensorboard is None:
        raise GrokscopeError("export: name a target: --tensorboard DIR")
    if tensorboard.exists() and not tensorboard.is_dir():
        raise GrokscopeError(f"--tensorboard: {tensorboard} exists and is not a folder")
    from grokscope.exporting.tensorboard import export as to_tensorboard, summary_writer
    from grokscope.notebook import load
    from grokscope.plotting.data import Tables

    summary_writer()  # a missing extra is said before any table is read
    wanted = [f for f in families.split(",") if f] if families else None
    try:
        measures = load(inputs, families=wanted)
    except GrokscopeError as exc:
        raise GrokscopeError(str(exc).replace("families:", "--families:", 1)) from None
    measures = Tables(measures, measures.iloc[0:0]).where(where).measures
    output = Output()
    for folder in to_tensorboard(measures, tensorboard):
        output.result(folder)
