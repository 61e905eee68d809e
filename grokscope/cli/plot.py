"""Draw a figure (PNG, SVG or PDF) from runs or measure tables."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from grokscope.errors import GrokscopeError

EPILOG = """\
Kinds: curves, phases, pareto, info-plane, collapse, sweep, complexity, fourier, subnet,
early-synergy, onsets, llc, alpha, metric NAME.

Examples:

  grokscope plot curves runs/ -o curves.png                        # every run below runs/

  grokscope plot curves runs/ --color weight_decay --facet seed -o curves.svg

  grokscope plot phases runs/add-p97-wd0.1 -o phases.pdf           # needs an oinfo table

  grokscope plot sweep runs/ --x weight_decay --y train_fraction -o phase-diagram.png

  grokscope plot metric nc1 runs/ --where "split == 'test' and weight_decay < 1" -o nc1.png

  grokscope measure runs/* --metric collapse | grokscope plot collapse - -o collapse.png

  grokscope plot complexity runs/ --color spectral_entropy -o complexity.png

  grokscope plot complexity runs/add-p97 --steps 20,300,3000 -o rate-distortion.png

  grokscope plot fourier runs/add-p113-transformer -o fourier.png   # needs a fourier table

  grokscope plot llc runs/add-p97 -o llc.png                       # needs an llc table (docs/llc.md)

  grokscope plot subnet runs/add-p97-wd2 -o subnet.png             # with its sub-networks beside it

  grokscope plot early-synergy runs/ --k 300 --facet alpha,weight_decay -o early.png

  grokscope plot onsets runs/ -o onsets.png        # which measure moves first

INPUTS are run directories, folders of runs (searched recursively), Parquet tables (measure
tables or histories), or - to read paths from stdin. --where is a pandas query over the tables'
columns (hyperparameters, split, layer, ...). The figure's path is printed on stdout.
"""


def plot(
    kind: str = typer.Argument(..., help="curves, phases, pareto, info-plane, collapse, sweep, complexity, fourier, subnet, early-synergy, onsets, llc, alpha, or metric (then NAME)."),
    inputs: List[str] = typer.Argument(..., help="Runs, folders of runs, Parquet tables, or - for paths on stdin (after NAME for metric)."),
    output: Path = typer.Option(..., "--output", "-o", help="Figure file; the format follows the extension (.png, .svg, .pdf)."),
    color: Optional[str] = typer.Option(None, "--color", "--colour", help="Colour lines by this column (default: run)."),
    facet: Optional[str] = typer.Option(None, "--facet", help="One panel per value of this column."),
    where: Optional[str] = typer.Option(None, "--where", help="Keep rows matching this pandas query, e.g. \"weight_decay > 0.5\"."),
    width: float = typer.Option(7.0, "--width", help="Width in inches."),
    height: float = typer.Option(4.5, "--height", help="Height in inches."),
    dpi: int = typer.Option(150, "--dpi", help="Pixels per inch of PNG output."),
    x: str = typer.Option("weight_decay", "--x", help="sweep: hyperparameter on the x axis."),
    y: str = typer.Option("train_fraction", "--y", help="sweep: hyperparameter on the y axis."),
    smooth: float = typer.Option(0.1, "--smooth", help="phases: EMA weight of the newest value (1 = no smoothing; Clauw et al. use 0.1)."),
    threshold: float = typer.Option(0.99, "--threshold", help="phases, sweep: accuracy that counts as memorised / generalised."),
    delay: int = typer.Option(1000, "--delay", help="sweep: steps from memorisation to generalisation that count as grokking (Liu et al.: 1000)."),
    steps: Optional[str] = typer.Option(None, "--steps", help="complexity: draw size against tolerance at these checkpoints (nearest measured), e.g. 20,300,3000."),
    k: Optional[int] = typer.Option(None, "--k", help="early-synergy: the window ends at the memorisation step + K (default 300)."),
) -> None:
    """Draw a figure from runs or measure tables and print its path."""
    from grokscope.cli.checks import paths_exist
    from grokscope.cli.output import Output

    metric_name = None
    if kind == "metric":
        metric_name, inputs = inputs[0], inputs[1:]
        if not inputs:
            raise GrokscopeError("INPUTS: none given after the metric's name (grokscope plot metric NAME INPUTS...)")
    paths_exist(inputs)
    from grokscope.plotting import draw, style
    from grokscope.plotting.data import load
    for flag, value in (("--width", width), ("--height", height), ("--dpi", dpi)):
        if not value > 0:
            raise GrokscopeError(f"{flag}: must be positive, got {value}")
    style.figure_format(output)
    chosen_steps = None
    if steps is not None:
        if kind != "complexity":
            raise GrokscopeError("--steps: only the complexity figure takes checkpoints")
        try:
            chosen_steps = tuple(int(s) for s in steps.split(","))
        except ValueError:
            raise GrokscopeError(f"--steps: expected comma-separated step numbers, got {steps!r}") from None
    if k is not None and (kind != "early-synergy" or k < 0):
        raise GrokscopeError("--k: only the early-synergy figure takes it" if kind != "early-synergy"
                             else f"--k: must be >= 0, got {k}")
    options = style.FigureOptions(color=color, facet=facet, width=width, height=height, dpi=dpi, x=x, y=y,
                                  smooth=smooth, threshold=threshold, delay=delay, steps=chosen_steps, k=k)
    if kind == "subnet":
        from grokscope.subnet import with_relatives

        inputs = with_relatives(inputs)
    tables = load(inputs).where(where)
    with style.quiet_plotting():
        figure = draw(kind, tables, options, metric=metric_name)
    style.save(figure, output, options)
    Output().result(output)
