"""report --html: one self-contained page, checked in a real headless Chromium (Debian's package,
driven by Playwright): it loads without a console error or a request outside the file, shows
every figure, and sorts its table; each figure's command draws that very figure."""

from __future__ import annotations

import base64
import html
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from grokscope import __version__
from grokscope.cli import app

# What the fixture's runs have tables for (collapse, hsic, oinfo, weights; a history) and what not
# (onsets: its x axis is relative to the generalisation step, and no run of the fixture generalises).
DRAWN = {"curves", "phases", "pareto", "info-plane", "collapse", "sweep", "early-synergy"}
NOT_DRAWN = {"fourier", "complexity", "subnet", "onsets", "llc", "alpha"}
CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and os.path.exists(p)), None)


def invoke(*args, input=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html") / "runs"
    trained = invoke("train", "--p", 7, "--width", 16, "--steps", 100, "--save-every", 20, "--save-log", 0,
                     "--weight-decay", "0.3,0.1,1", "--out", out, "-q")
    assert trained.exit_code == 0, trained.output
    probed = invoke("probe", "-", "-q", input=trained.stdout)
    assert probed.exit_code == 0, probed.output
    measured = invoke("measure", out, "--metric", "collapse,hsic,oinfo,weights", "-q")
    assert measured.exit_code == 0, measured.output
    return out


@pytest.fixture(scope="module")
def page(runs) -> Path:
    path = runs.parent / "report.html"
    result = invoke("report", runs, "--html", path)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(path)]
    return path


def embedded_figures(text: str) -> dict[str, bytes]:
    return {kind: base64.b64decode(data) for kind, data in
            re.findall(r'<figure id="figure-([\w-]+)"><img src="data:image/png;base64,([^"]+)"', text)}


def commands(page: str) -> dict[str, str]:
    return {kind: html.unescape(command) for kind, command in
            re.findall(r'<figure id="figure-([\w-]+)">.*?<code>(grokscope plot [^<]+)</code>', page)}


def test_the_page_holds_every_figure_its_commands_the_inputs_and_the_version(runs, page):
    text = page.read_text()
    figures = embedded_figures(text)
    assert set(figures) == DRAWN
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in figures.values())
    not_drawn = dict(re.findall(r"<li><b>([\w-]+)</b>: ([^<]+)</li>", text))
    assert set(not_drawn) == NOT_DRAWN and all(reason.startswith("nothing to plot") for reason in not_drawn.values())
    assert commands(text) == {kind: f"grokscope plot {kind} {runs} -o {kind}.png" for kind in DRAWN}
    assert f'<span id="version">{__version__}</span>' in text
    assert f"<li><code>{runs}</code></li>" in text
    # Self-contained: nothing on the page points outside it.
    assert not re.search(r"""(src|href)=["'](?!data:)""", text)
    assert "Content-Security-Policy" in text


@pytest.mark.parametrize("kind", ["curves", "collapse"])
def test_a_figures_command_draws_that_very_figure(runs, page, tmp_path, kind):
    command = shlex.split(commands(page.read_text())[kind])
    assert command[:2] == ["grokscope", "plot"] and command[-2:] == ["-o", f"{kind}.png"]
    result = invoke(*command[1:-1], tmp_path / f"{kind}.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / f"{kind}.png").read_bytes() == embedded_figures(page.read_text())[kind]


def test_the_table_is_reports_and_where_reaches_the_figures(runs, tmp_path):
    path = tmp_path / "filtered.html"
    result = invoke("report", runs, "--where", "weight_decay < 0.5", "--html", path)
    assert result.exit_code == 0, result.output
    text = path.read_text()
    rows = re.findall(r"<tr><td data-value=\"([^\"]+)\">", text)
    assert rows == ["add-p7-wd0.1", "add-p7-wd0.3"]
    assert commands(text)["curves"] == f"grokscope plot curves {runs} --where 'weight_decay < 0.5' -o curves.png"
    # The page's table has the aligned table's columns.
    header = invoke("report", runs, "--where", "weight_decay < 0.5").stdout.splitlines()[0].split()
    assert re.findall(r"<th [^>]*><button type=\"button\">([^<]+)</button>", text) == header


def test_paths_on_stdin_are_named_on_the_page(runs, tmp_path):
    path = tmp_path / "stdin.html"
    names = [str(p) for p in sorted(runs.iterdir())]
    result = invoke("report", "-", "--html", path, input="\n".join(names) + "\n")
    assert result.exit_code == 0, result.output
    text = path.read_text()
    assert all(f"<li><code>{name}</code></li>" in text for name in names)
    assert "<li><code>-</code></li>" not in text


@pytest.mark.parametrize("name, message", [("page.txt", "--html: {path} must end in .html"),
                                           ("missing/page.html", "--html: folder {parent} does not exist")])
def test_a_wrong_page_path_is_one_line_before_any_work(tmp_path, name, message):
    path = tmp_path / name
    completed = subprocess.run([sys.executable, "-m", "grokscope", "report", str(tmp_path / "no-runs"), "--html", str(path)],
                               capture_output=True, text=True)
    assert completed.returncode == 2
    assert completed.stderr.strip() == "error: " + message.format(path=path, parent=path.parent)


def test_in_a_headless_browser_it_loads_shows_every_figure_and_sorts(runs, page):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium): the page is not opened in a browser")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    report = pd.read_csv(io.StringIO(invoke("report", runs, "--format", "csv").stdout))
    problems, requests = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 900})
            tab.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            tab.on("pageerror", lambda e: problems.append(str(e)))
            tab.on("request", lambda r: requests.append(r.url))
            tab.goto(page.as_uri(), wait_until="load")
            assert problems == []
            assert [url for url in requests if not url.startswith("data:")] == [page.as_uri()]

            images = tab.locator("figure img")
            assert images.count() == len(DRAWN)
            for index in range(images.count()):
                image = images.nth(index)
                image.scroll_into_view_if_needed()
                assert image.is_visible()
                box = image.bounding_box()
                assert box["width"] > 300 and box["height"] > 150
                assert image.evaluate("i => i.complete && i.naturalWidth > 500 && i.naturalHeight > 300")

            def column(name: str) -> list[str]:
                index = tab.evaluate(f"""() => Array.from(document.querySelectorAll('#report-table th'))
                                         .findIndex(th => th.textContent.trim().startsWith('{name}'))""")
                return tab.evaluate(f"""() => Array.from(document.querySelectorAll('#report-table tbody tr'))
                                        .map(tr => tr.cells[{index}].dataset.value)""")

            def click(name: str) -> None:
                tab.get_by_role("button", name=name, exact=True).click()

            assert column("run") == ["add-p7-wd0.1", "add-p7-wd0.3", "add-p7-wd1"]
            by_synergy = report.sort_values("synergy_min")
            click("synergy_min")
            assert column("run") == by_synergy["run"].tolist()
            assert [float(v) for v in column("synergy_min")] == pytest.approx(by_synergy["synergy_min"].tolist())
            assert tab.locator("th[aria-sort=ascending]").inner_text().startswith("synergy_min")
            click("synergy_min")
            assert column("run") == by_synergy["run"].tolist()[::-1]
            click("run")
            click("run")
            assert column("run") == ["add-p7-wd1", "add-p7-wd0.3", "add-p7-wd0.1"]
            assert problems == []
        finally:
            browser.close()
