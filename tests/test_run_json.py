"""run.json is checked against its schema when read: a wrong type, a value out of range or a
missing entry is one line naming the file and the key (exit 2), never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from grokscope import formats
from grokscope.cli import app


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    result = invoke("train", "--p", 5, "--width", 8, "--steps", 4, "--save-every", 2, "--save-log", 0,
                    "--out", out, "-q")
    assert result.exit_code == 0, result.output
    return out / "add-p5"


def corrupted(trained: Path, tmp_path: Path, change) -> Path:
    run = Path(shutil.copytree(trained, tmp_path / "add-p5"))
    document = json.loads((run / "run.json").read_text())
    change(document)
    (run / "run.json").write_text(json.dumps(document))
    return run


def set_entry(section, key, value):
    def change(document):
        if key is None:
            document[section] = value
        else:
            document[section][key] = value
    return change


@pytest.mark.parametrize("change, named", [
    (set_entry("model", "width", "sixty-four"), "'model.width' is \"sixty-four\", not an integer"),
    (set_entry("model", "width", 6.5), "'model.width' is 6.5, not an integer"),
    (set_entry("model", "layer_norm", "yes"), "'model.layer_norm' is \"yes\", not true or false"),
    (set_entry("optim", "lr", "fast"), "'optim.lr' is \"fast\", not a number"),
    (set_entry("schedule", "steps", None), "'schedule.steps' is null, not an integer"),
    (set_entry("task", None, [97]), "'task' is a list, not an object"),
    (set_entry("seed", None, "0"), "'seed' is \"0\", not an integer"),
    (lambda document: document.pop("model"), "lacks the 'model' entry"),
    (set_entry("model", "width", -3), "--width: must be positive, got -3"),
    (set_entry("task", "train_fraction", 1.5), "--train-fraction: must lie strictly between 0 and 1"),
])
@pytest.mark.parametrize("metric", ["collapse", "weights"])
def test_a_corrupt_run_json_is_one_line_naming_the_key(trained, tmp_path, change, named, metric):
    run = corrupted(trained, tmp_path, change)
    result = invoke("measure", run, "--metric", metric)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{run / 'run.json'}: " in errors[0] and named in errors[0], result.stderr
    assert "Traceback" not in result.output


def test_a_valid_run_json_reads_back_as_written(trained):
    config = formats.run.read_run(trained)
    assert (config.model.width, config.task.p, config.schedule.steps) == (8, 5, 4)


def test_resume_with_a_history_lacking_test_columns_warns(tmp_path):
    import os
    import subprocess
    import sys

    import pandas as pd

    options = ["--p", "5", "--width", "8", "--steps", "4", "--save-every", "2", "--save-log", "0",
               "--out", str(tmp_path), "-q"]
    # Killed before its 7th rename: the optimizer state of step 2, so the run resumes from step 0.
    env = {**os.environ, "GROKSCOPE_TEST_KILL_BEFORE_RENAME": "7",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    killed = subprocess.run([sys.executable, "-m", "grokscope", "train", *options], env=env, capture_output=True)
    assert killed.returncode != 0
    run = tmp_path / "add-p5"
    history = pd.read_parquet(run / "history.parquet").drop(columns=["test_acc", "test_loss"])
    history.to_parquet(run / "history.parquet")
    result = invoke("train", *options, "--resume")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {run / 'history.parquet'}: lacks the column(s) test_loss, test_acc; "
                        "the rows before the resume point hold NaN there"]
