"""Run the whole pipeline on the seed experiment: train, probe, measure, plot, report."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import typer

from grokscope.cli.output import Output
from grokscope.errors import GrokscopeError

EPILOG = """\
Examples:

  grokscope demo                     # into ./grokscope-demo

  grokscope demo /tmp/demo --quick   # a smaller run, for a smoke test

Trains (a+b) mod 97 with weight decay 0.1 (grokking: test accuracy follows train accuracy
thousands of steps later) and 2.0 (fast generalisation), probes a few checkpoints, measures
the five families its figures and report use (collapse, hsic, o-info, weights, grokking; not
complexity or fourier), draws the figures, writes the report and one page with every figure
and the report (report.html, the last path printed). Each step is an ordinary
grokscope command, printed on stderr as it runs, so the demo doubles as a worked example.
Running it again reuses what is already there. The figures', the report's and the page's paths
are printed on stdout.
"""

FIGURES = (
    ("curves", ["--color", "weight_decay"]),
    ("phases", ["--facet", "weight_decay"]),
    ("collapse", ["--facet", "weight_decay"]),
    ("info-plane", ["--facet", "weight_decay"]),
    ("pareto", ["--facet", "weight_decay"]),
)


def demo(
    folder: Path = typer.Argument(Path("grokscope-demo"), help="Where the runs, figures and report go."),
    quick: bool = typer.Option(False, "--quick", help="p = 23, 64 units, 600 steps: a smoke test in seconds (no grokking expected)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr; only paths on stdout."),
) -> None:
    """Train, probe, measure and plot the seed grokking experiment in one go."""
    output = Output(quiet=quiet)
    runs, figures = folder / "runs", folder / "figures"
    if folder.exists() and not folder.is_dir():
        raise GrokscopeError(f"{folder}: exists and is not a folder")
    figures.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    flags = ["-q"] if quiet else []
    # A coarser checkpoint cadence than train's default (~70 instead of ~200 per run) keeps the
    # whole demo within a few minutes on 2 CPU cores; the curves keep their shape.
    size = ["--p", "23", "--width", "64", "--steps", "600"] if quick else []
    _step(output, ["train", "--weight-decay", "0.1,2", "--save-every", "100", "--save-log", "30", *size,
                   "--resume", "--device", device, "--out", str(runs), *flags])
    # Stored features are 9 MB a checkpoint here; measure computes the rest in memory.
    _step(output, ["probe", str(runs), "--steps", "every:10", "--device", device, *flags])
    # The families its figures and report use (complexity, the slowest, is not drawn here).
    _step(output, ["measure", str(runs), "--metric", "collapse,hsic,oinfo,weights,grokking", "--device", device,
                   *flags])
    written = []
    for kind, extra in FIGURES:
        path = figures / f"{kind}.png"
        _step(output, ["plot", kind, str(runs), *extra, "-o", str(path)])
        written.append(path)
    path = figures / "rnc1.png"
    _step(output, ["plot", "metric", "rnc1", str(runs), "--color", "weight_decay", "--facet", "split", "-o", str(path)])
    written.append(path)
    report = folder / "report.csv"
    report.write_text(_step(output, ["report", str(runs), "--format", "csv"]))
    if not quiet:
        output.console.print(_step(output, ["report", str(runs)], echo=False), soft_wrap=True)
    page = folder / "report.html"
    _step(output, ["report", str(runs), "--html", str(page)])
    output.info(f"demo finished in {time.perf_counter() - started:.0f}s; figures in {figures}/, report in {report}, "
                f"every figure and the report on one page: {page}")
    for path in written + [report, page]:
        output.result(path)


def _step(output: Output, args: list[str], echo: bool = True) -> str:
    """Run one grokscope command as a user would; its stdout is returned, stderr passes through."""
    if echo:
        output.info(f"$ grokscope {' '.join(args)}")
    completed = subprocess.run([sys.executable, "-m", "grokscope", *args], stdout=subprocess.PIPE, text=True)
    if completed.returncode != 0:
        raise GrokscopeError(f"demo: `grokscope {' '.join(args)}` failed (exit {completed.returncode}), see above")
    return completed.stdout
