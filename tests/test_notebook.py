"""grokscope.load and grokscope.runs against the Parquet files and report's output, and
docs/notebook.md's example, run as written on the toy sweep its first block makes."""

from __future__ import annotations

import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import grokscope
from grokscope.cli import app
from grokscope.errors import GrokscopeError

DOC = Path(__file__).resolve().parents[1] / "docs" / "notebook.md"
BLOCK = re.compile(r"```(bash|python)\n(.*?)```", re.S)
# The doc's commands as a user types them, run with this interpreter (and this checkout).
GROKSCOPE_FUNCTION = 'grokscope() { "$GROKSCOPE_PYTHON" -m grokscope "$@"; }\n'


def doc_blocks(language: str) -> list[str]:
    return [code for lang, code in BLOCK.findall(DOC.read_text()) if lang == language]


def assert_same(got: list, want: list, column: str) -> None:
    """Cell by cell: missing where the other is missing, floats to rounding (CSV prints them
    shortest), everything else as text (CSV reads True back as a bool, 7 as an int)."""
    assert len(got) == len(want), column
    for a, b in zip(got, want):
        if pd.isna(a) or pd.isna(b):
            assert pd.isna(a) and pd.isna(b), column
        elif isinstance(a, (float, np.floating)) or isinstance(b, (float, np.floating)):
            assert float(a) == pytest.approx(float(b), rel=1e-12), column
        else:
            assert str(a) == str(b), column


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Where the doc's shell block made its runs (runs/ below it)."""
    folder = tmp_path_factory.mktemp("notebook")
    env = {**os.environ, "GROKSCOPE_PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(DOC.parents[1]), os.environ.get("PYTHONPATH", "")])}
    for code in doc_blocks("bash"):
        completed = subprocess.run(["bash", "-euo", "pipefail", "-c", GROKSCOPE_FUNCTION + code], cwd=folder, env=env,
                                   capture_output=True, text=True)
        assert completed.returncode == 0, completed.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def runs(folder) -> list[Path]:
    return sorted((folder / "runs").iterdir())


def test_load_is_every_parquet_row_with_its_family_and_series(runs):
    frame = grokscope.load([str(r) for r in runs])
    expected = 0
    for run in runs:
        for path in sorted((run / "measures").glob("*.parquet")):
            table = pd.read_parquet(path)
            expected += len(table)
            rows = frame[(frame.series == str(run)) & (frame.family == path.stem)]
            assert len(rows) == len(table)
            key = ["step", "metric", "split", "layer"] + (["scope", "size"] if "scope" in table else [])
            got = rows.sort_values(key, na_position="first").reset_index(drop=True)
            want = table.sort_values(key, na_position="first").reset_index(drop=True)
            for column in table.columns:
                assert_same(got[column].tolist(), want[column].tolist(), column)
    assert len(frame) == expected
    assert list(frame.columns[:8]) == ["series", "run", "family", "step", "metric", "value", "split", "layer"]
    # One folder reads the same as its runs named one by one.
    assert len(grokscope.load(runs[0].parent)) == expected


def test_families_keep_only_their_tables(runs):
    frame = grokscope.load(runs[0], families=["oinfo", "weights"])
    assert set(frame.family) == {"oinfo", "weights"}
    assert len(frame) == sum(len(pd.read_parquet(runs[0] / "measures" / f"{f}.parquet")) for f in ("oinfo", "weights"))
    assert set(grokscope.load(runs[0], families="collapse").family) == {"collapse"}
    with pytest.raises(GrokscopeError, match=r"families: no 'colapse' table below the paths; found: collapse, oinfo, weights"):
        grokscope.load(runs[0], families="colapse")


def test_history_is_joined_at_each_rows_step(runs):
    run = runs[0]
    frame = grokscope.load(run, history=True)
    history = pd.read_parquet(run / "history.parquet").set_index("step")
    for column in ("train_loss", "train_acc", "test_loss", "test_acc"):
        expected = [history[column].get(step, math.nan) for step in frame["step"]]
        assert frame[column].tolist() == pytest.approx(expected, nan_ok=True)
    assert len(frame) == len(grokscope.load(run))  # the join adds columns, never rows


def test_runs_is_what_report_prints(runs):
    summary = grokscope.runs(runs[0].parent)
    printed = CliRunner().invoke(app, ["report", str(runs[0].parent), "--format", "csv"])
    assert printed.exit_code == 0, printed.output
    report = pd.read_csv(io.StringIO(printed.stdout))
    assert list(summary.columns) == list(report.columns)
    assert summary["run"].tolist() == report["run"].tolist() == [r.name for r in runs]
    for column in report.columns:
        assert_same(summary[column].tolist(), report[column].tolist(), column)
    assert grokscope.runs(runs[0].parent, where="weight_decay > 0.5")["run"].tolist() == ["add-p7-wd1"]


def test_a_missing_path_is_the_commands_one_line_error(tmp_path):
    with pytest.raises(GrokscopeError, match="does-not-exist"):
        grokscope.load(tmp_path / "does-not-exist")


def test_import_stays_cheap_and_the_names_resolve():
    code = ("import sys, grokscope; heavy = [m for m in ('pandas', 'torch', 'plotnine') if m in sys.modules]; "
            "assert not heavy, heavy; assert {'load', 'runs'} <= set(dir(grokscope)); "
            "assert callable(grokscope.load) and callable(grokscope.runs); print('ok')")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0 and completed.stdout.strip() == "ok", completed.stderr
    with pytest.raises(AttributeError, match="no attribute 'lod'"):
        grokscope.lod  # noqa: B018


def test_the_docs_example_runs_as_written(folder, monkeypatch):
    import matplotlib

    matplotlib.use("Agg", force=True)
    monkeypatch.chdir(folder)
    namespace: dict = {}
    for code in doc_blocks("python"):
        exec(compile(code, str(DOC), "exec"), namespace)
    for figure in ("rnc1.png", "rnc1-against-accuracy.png", "synergy.png"):
        assert (folder / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # What the example computed is what the tables hold.
    measures = namespace["measures"]
    assert set(measures["run"]) == {"add-p7-wd0.1", "add-p7-wd1"}
    assert set(namespace["wide"].columns) == {"add-p7-wd0.1", "add-p7-wd1"}
    assert len(namespace["summary"]) == 2
