"""The README's main command, end to end at smoke-test size, and the pipeline through stdin."""

from __future__ import annotations

import struct
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from grokscope import formats
from grokscope.cli import app


def png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


@pytest.mark.slow
def test_demo_quick_writes_every_figure_and_the_report(tmp_path):
    folder = tmp_path / "demo"
    completed = subprocess.run([sys.executable, "-m", "grokscope", "demo", str(folder), "--quick"],
                               capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-3000:]
    printed = [line for line in completed.stdout.splitlines() if line]
    figures = [folder / "figures" / f"{k}.png" for k in ("curves", "phases", "collapse", "info-plane", "pareto", "rnc1")]
    assert printed == [str(p) for p in figures] + [str(folder / "report.csv"), str(folder / "report.html")]
    for path in figures:
        width, height = png_size(path)
        assert width > 500 and height > 300
    report = pd.read_csv(folder / "report.csv")
    assert sorted(report["weight_decay"]) == [0.1, 2.0]
    # It ends with the path of one page holding every figure kind it drew and the report.
    page = folder / "report.html"
    html = page.read_text()
    assert all(f'<figure id="figure-{kind}"><img src="data:image/png;base64,' in html
               for kind in ("curves", "phases", "collapse", "info-plane", "pareto"))
    assert [f'<tr><td data-value="{run}">' in html for run in report["run"]] == [True, True]
    runs = sorted((folder / "runs").iterdir())
    for run in runs:
        families = {p.stem for p in (run / "measures").glob("*.parquet")}
        assert families == {"collapse", "hsic", "oinfo", "weights", "grokking"}
        assert formats.features.list_features(run)  # probed

    # Running it again reuses everything (train resumes to "complete", measure skips).
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*.parquet")}
    again = subprocess.run([sys.executable, "-m", "grokscope", "demo", str(folder), "--quick", "-q"],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.parquet")} == before


@pytest.mark.slow
def test_train_probe_measure_pipeline_through_stdin(tmp_path):
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "--p", "7", "--width", "8", "--steps", "10", "--save-every", "5",
                                  "--save-log", "0", "--weight-decay", "0.1,1", "-q", "--out", str(tmp_path)])
    assert trained.exit_code == 0, trained.output
    probed = runner.invoke(app, ["probe", "-", "-q"], input=trained.stdout)
    assert probed.exit_code == 0, probed.output
    assert len(probed.stdout.split()) == 2 * 3 + 0  # one features file per checkpoint
    measured = runner.invoke(app, ["measure", "-", "--metric", "nc1", "--format", "csv"], input=probed.stdout)
    assert measured.exit_code == 0, measured.output
    rows = pd.read_csv(__import__("io").StringIO(measured.stdout))
    assert set(rows["run"]) == {"add-p7-wd0.1", "add-p7-wd1"} and set(rows["step"]) == {0, 5, 10}
