"""``grokscope report RUNS --html PAGE``: one self-contained page of a sweep.

The page holds the report's table (sortable by a click on a column's heading), every figure the
tables allow (:data:`grokscope.plotting.KINDS`, drawn by the same code as ``grokscope plot``, as
PNG data URIs) with the ``grokscope plot`` command that draws it beside it, the figures the tables
do not allow with the reason, the grokscope version and the inputs. Nothing on it is fetched: its
content security policy forbids every request, so it reads the same offline, attached to a
mail or years later.
"""

from __future__ import annotations

import base64
import datetime
import html
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from grokscope import formats
from grokscope.errors import GrokscopeError
from grokscope.version import __version__

PAGE_SUFFIXES = (".html", ".htm")
# The page's only sources are itself and the figures inside it.
CONTENT_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
# `grokscope plot metric NAME` needs a name, so it is the one kind the page does not draw.
SKIPPED_KINDS = ("metric",)


@dataclass
class PageRequest:
    """What the page was asked for: report's inputs (paths, ``-`` already read) and options."""

    inputs: list[str]
    where: str | None = None
    threshold: float = 0.99
    delay: int = 1000
    early: int | None = None
    all_columns: bool = False


@dataclass
class Figure:
    kind: str
    description: str
    command: str
    png: bytes | None = None
    reason: str | None = None  # why it was not drawn


def page_inputs(page: Path, inputs: list[str]) -> list[str]:
    """The inputs as paths (``-`` replaced by the paths on stdin, so the page names what it read),
    once the page's own path is known to be writable: a mistake is reported before any work."""
    page = Path(page)
    if page.suffix.lower() not in PAGE_SUFFIXES:
        raise GrokscopeError(f"--html: {page} must end in .html")
    if not page.parent.is_dir():
        raise GrokscopeError(f"--html: folder {page.parent} does not exist")
    return [str(path) for path in formats.inputs.expand_inputs(inputs)]


def write_page(page: Path, request: PageRequest, tables, summaries) -> Path:
    """Draw the figures of ``tables``, lay them out with ``summaries`` and write the page atomically."""
    figures = draw_figures(tables, request)
    formats.atomic.write_text(Path(page), render_page(request, summaries, figures, page_name=Path(page).name))
    return Path(page)


def draw_figures(tables, request: PageRequest) -> list[Figure]:
    """Every figure kind drawn from ``tables``, or, where the tables do not allow it, the reason."""
    from grokscope.plotting import KINDS, draw, style

    options = style.FigureOptions(threshold=request.threshold, delay=request.delay)
    figures = []
    with tempfile.TemporaryDirectory(prefix="grokscope-page-") as folder:
        for kind, description in KINDS.items():
            if kind in SKIPPED_KINDS:
                continue
            figure = Figure(kind, description, plot_command(kind, request))
            try:
                with style.quiet_plotting():
                    plot = draw(kind, tables, options)
                path = style.save(plot, Path(folder) / f"{kind}.png", options)
            except GrokscopeError as exc:
                figure.reason = str(exc)
            else:
                figure.png = path.read_bytes()
            figures.append(figure)
    return figures


def plot_command(kind: str, request: PageRequest) -> str:
    """The ``grokscope plot`` command line that draws the page's figure of ``kind``."""
    from grokscope.plotting.style import FigureOptions

    defaults = FigureOptions()
    words = ["grokscope", "plot", kind, *request.inputs]
    if request.where:
        words += ["--where", request.where]
    if request.threshold != defaults.threshold:
        words += ["--threshold", f"{request.threshold:g}"]
    if request.delay != defaults.delay:
        words += ["--delay", str(request.delay)]
    words += ["-o", f"{kind}.png"]
    return shlex.join(words)


def report_command(request: PageRequest, page_name: str) -> str:
    words = ["grokscope", "report", *request.inputs]
    if request.where:
        words += ["--where", request.where]
    for flag, value, default in (("--threshold", request.threshold, 0.99), ("--delay", request.delay, 1000),
                                 ("--early", request.early, None)):
        if value != default:
            words += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if request.all_columns:
        words.append("--all-columns")
    return shlex.join([*words, "--html", page_name])


def render_page(request: PageRequest, summaries, figures: list[Figure], page_name: str) -> str:
    from grokscope.reporting.columns import reading_columns

    drawn = [f for f in figures if f.png is not None]
    missing = [f for f in figures if f.png is None]
    written = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_POLICY}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>grokscope report: {len(summaries)} series</title>",
        f"<style>{STYLE}</style></head><body>",
        "<header><h1>grokscope report</h1>",
        f'<p class="meta">grokscope <span id="version">{_text(__version__)}</span> · written {_text(written)}</p>',
        "</header>",
        '<section id="inputs"><h2>Inputs</h2><ul>',
        *(f"<li><code>{_text(path)}</code></li>" for path in request.inputs),
        "</ul>",
        f"<p>This page: <code>{_text(report_command(request, page_name))}</code></p></section>",
        f'<section id="report"><h2>Report <small>({len(summaries)} series)</small></h2>',
        "<p>Click a column's heading to sort by it; again to reverse. "
        "<code>grokscope report --help</code> explains every column.</p>",
        f'<div class="scroll">{render_table(reading_columns(summaries, request.all_columns))}</div></section>',
        '<section id="figures"><h2>Figures</h2>',
        *(_figure(f) for f in drawn),
    ]
    if missing:
        parts += ['<h3>Not drawn from these tables</h3><ul id="not-drawn">',
                  *(f"<li><b>{_text(f.kind)}</b>: {_text(f.reason)}</li>" for f in missing), "</ul>"]
    parts += ["</section>", f"<script>{SORT_SCRIPT}</script>", "</body></html>", ""]
    return "\n".join(parts)


def render_table(frame) -> str:
    """``frame`` as an HTML table whose cells carry their value for sorting (numbers as numbers)."""
    import pandas as pd

    from grokscope.reporting.columns import cell_text

    numeric = {c: pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
               for c in frame.columns}
    head = "".join(f'<th data-type="{"number" if numeric[c] else "text"}" aria-sort="none">'
                   f"<button type=\"button\">{_text(c)}</button></th>" for c in frame.columns)
    rows = []
    for values in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, values):
            text = cell_text(value)
            if numeric[column] and text:
                cells.append(f'<td class="number" data-value="{_number(value)}">{_text(text)}</td>')
            else:
                cells.append(f'<td data-value="{_text(text)}">{_text(text)}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<table id="report-table"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _figure(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return (f'<figure id="figure-{_text(figure.kind)}">'
            f'<img src="data:image/png;base64,{data}" alt="{_text(figure.kind)}: {_text(figure.description)}">'
            f"<figcaption><h3>{_text(figure.kind)}</h3><p>{_text(figure.description)}</p>"
            f"<code>{_text(figure.command)}</code></figcaption></figure>")


def _number(value) -> str:
    """A number as JavaScript's parseFloat reads it back exactly (``Infinity``, not ``inf``)."""
    number = float(value)
    if number in (float("inf"), float("-inf")):
        return "Infinity" if number > 0 else "-Infinity"
    return repr(number)


def _text(value) -> str:
    return html.escape(str(value), quote=True)


# A sorted column's arrow is drawn only ('/ ""': no text of its own); aria-sort tells a screen reader the order.
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 110rem; padding: 0 1rem; color: #222; }
h1 { margin-bottom: 0.2rem; } .meta { color: #666; margin-top: 0; }
code { background: #f4f4f4; padding: 0.1rem 0.3rem; border-radius: 3px; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 0.2rem 0.6rem; border-bottom: 1px solid #ddd; white-space: nowrap; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
th button { font: inherit; font-weight: 600; background: none; border: none; cursor: pointer; padding: 0; }
th[aria-sort="ascending"] button::after { content: " \\25B2" / ""; }
th[aria-sort="descending"] button::after { content: " \\25BC" / ""; }
figure { display: grid; grid-template-columns: minmax(0, 66rem) minmax(14rem, 1fr); gap: 1rem; margin: 1.5rem 0;
         align-items: start; }
figure img { width: 100%; height: auto; border: 1px solid #eee; }
figcaption h3 { margin-top: 0; }
@media (max-width: 60rem) { figure { grid-template-columns: 1fr; } }
"""

# Sorts the report's rows by the clicked column: numbers as numbers, text as text, empty cells
# last in either direction; equal cells keep their order.
SORT_SCRIPT = """
(function () {
  var table = document.getElementById("report-table");
  var headers = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(headers, function (header, column) {
    header.querySelector("button").addEventListener("click", function () {
      var ascending = header.getAttribute("aria-sort") !== "ascending";
      var number = header.dataset.type === "number";
      var body = table.tBodies[0];
      var rows = Array.prototype.map.call(body.rows, function (row, index) {
        var raw = row.cells[column].dataset.value;
        return {row: row, index: index, empty: raw === "", key: number ? parseFloat(raw) : raw};
      });
      rows.sort(function (a, b) {
        if (a.empty !== b.empty) { return a.empty ? 1 : -1; }
        var order = 0;
        if (!a.empty) {
          order = number ? a.key - b.key : a.key.localeCompare(b.key, undefined, {numeric: true});
        }
        return (ascending ? order : -order) || a.index - b.index;
      });
      rows.forEach(function (item) { body.appendChild(item.row); });
      Array.prototype.forEach.call(headers, function (other) { other.setAttribute("aria-sort", "none"); });
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    });
  });
})();
"""
