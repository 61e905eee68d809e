"""export --tensorboard: every measure read back with TensorBoard's own event reader equals its
Parquet row (as float32, TensorBoard's scalar type), under the documented tag, at its step."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from grokscope.cli import app

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def invoke(*args, input=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("export") / "runs"
    result = invoke("train", "--p", 7, "--width", 16, "--steps", 60, "--save-every", 20, "--save-log", 0,
                    "--weight-decay", "0.1,1", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    runs = [Path(p) for p in result.stdout.split()]
    assert invoke("probe", *runs, "-q").exit_code == 0
    assert invoke("measure", *runs, "--metric", "collapse,weights,grokking", "-q").exit_code == 0
    # O-information with its per-size rows beside the overall one: several values per step and tag.
    assert invoke("measure", *runs, "--metric", "oinfo", "--per-size", "-q").exit_code == 0
    return runs


@pytest.fixture
def runs(trained, tmp_path) -> list[Path]:
    return [Path(shutil.copytree(run, tmp_path / "runs" / run.name)) for run in trained]


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def expected_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """The tags and values the docs promise, from the Parquet files, row by row."""
    expected: dict[str, list[tuple[int, float]]] = {}
    for path in sorted((run / "measures").glob("*.parquet")):
        for row in pd.read_parquet(path).itertuples(index=False):
            parts = [path.stem, row.metric] + [v for v in (row.split, row.layer) if isinstance(v, str)]
            if path.stem == "oinfo":
                parts.append(f"scope={row.scope}")
                if row.scope == "size":
                    parts.append(f"size={int(row.size)}")
            expected.setdefault("/".join(parts), []).append((int(row.step), float(np.float32(row.value))))
    return {tag: sorted(values) for tag, values in expected.items()}


def same(got: dict, want: dict) -> bool:
    if set(got) != set(want):
        return False
    return all(len(got[t]) == len(want[t]) and all(gs == ws and (gv == wv or (np.isnan(gv) and np.isnan(wv)))
                                                   for (gs, gv), (ws, wv) in zip(sorted(got[t]), want[t]))
               for t in want)


def test_every_measure_is_a_scalar_under_its_tag_at_its_step(runs, tmp_path):
    out = tmp_path / "tb"
    result = invoke("export", runs[0].parent, "--tensorboard", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(out / run.name) for run in runs]
    for run in runs:
        got, want = scalars(out / run.name), expected_scalars(run)
        assert same(got, want)
        assert "oinfo/synergy/train/layers.0/scope=size/size=3" in got and "weights/weight_norm" in got


def test_into_the_users_own_log_folder_beside_their_curves_and_again_without_duplicates(runs, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    logs = tmp_path / "lightning_logs" / "version_0"
    writer = SummaryWriter(str(logs))
    for step in range(0, 61, 10):
        writer.add_scalar("train/loss", 1.0 / (1 + step), step)
    writer.close()
    theirs = sorted(logs.iterdir())

    for _ in range(2):  # the second export replaces the first
        result = invoke("export", runs[0], "--tensorboard", logs)
        assert result.exit_code == 0, result.output
        assert result.stdout.split() == [str(logs)]
    assert [p for p in sorted(logs.iterdir()) if p not in theirs] == [p for p in logs.iterdir() if p.name.endswith(".grokscope")]
    assert len([p for p in logs.iterdir() if p.name.endswith(".grokscope")]) == 1
    got = scalars(logs)
    assert got.pop("train/loss") == [(s, pytest.approx(1.0 / (1 + s))) for s in range(0, 61, 10)]
    assert same(got, expected_scalars(runs[0]))

    refused = invoke("export", runs[0].parent, "--tensorboard", logs)
    assert refused.exit_code == 2
    assert "holds a run's event files: export one series into it" in refused.output


def test_families_and_where_choose_the_scalars(runs, tmp_path):
    out = tmp_path / "tb"
    result = invoke("export", runs[0], "--families", "collapse", "--where", "split == 'test'", "--tensorboard", out)
    assert result.exit_code == 0, result.output
    want = {t: v for t, v in expected_scalars(runs[0]).items() if t.startswith("collapse/") and "/test/" in t}
    assert same(scalars(out / runs[0].name), want)
    wrong = invoke("export", runs[0], "--families", "colapse", "--tensorboard", out)
    assert wrong.exit_code == 2 and "--families: no 'colapse' table" in wrong.output


def test_runs_of_one_name_get_folders_by_their_paths(trained, tmp_path):
    twins = [Path(shutil.copytree(trained[0], tmp_path / side / trained[0].name)) for side in ("a", "b")]
    result = invoke("export", *twins, "--tensorboard", tmp_path / "tb")
    assert result.exit_code == 0, result.output
    folders = [tmp_path / "tb" / side / trained[0].name for side in ("a", "b")]
    assert result.stdout.split() == [str(f) for f in folders]
    for folder, twin in zip(folders, twins):
        assert same(scalars(folder), expected_scalars(twin))


def test_no_target_or_no_tensorboard_is_one_line(runs, tmp_path):
    result = invoke("export", runs[0])
    assert result.exit_code == 2 and "name a target: --tensorboard DIR" in result.output
    # Without the package (an import of it fails, as where it is not installed).
    code = ("import sys; sys.modules['tensorboard'] = None; sys.argv = ['grokscope', 'export', sys.argv[1], "
            "'--tensorboard', sys.argv[2]]; from grokscope.cli import main; main()")
    completed = subprocess.run([sys.executable, "-c", code, str(runs[0]), str(tmp_path / "tb")],
                               capture_output=True, text=True)
    assert completed.returncode == 2
    assert completed.stderr.strip() == ("error: --tensorboard: needs the tensorboard package: "
                                        "pip install 'grokscope[tensorboard]'")
    assert not (tmp_path / "tb").exists()


def test_help_is_fast_and_shows_examples():
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    completed = subprocess.run([sys.executable, "-m", "grokscope", "export", "--help"], capture_output=True,
                               text=True, env=env)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "Examples" in completed.stdout and "--tensorboard" in completed.stdout
    imported = {line.split("|")[-1].strip() for line in completed.stderr.splitlines()}
    assert not imported & {"torch", "pandas", "plotnine", "numpy", "tensorboard"}
