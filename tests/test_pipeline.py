"""Pipelines as people type them: `-` streams (a command starts on the first path while the one
before it still writes), empty input is an error, and a step selection travels down the pipe."""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from grokscope import formats
from grokscope.cli import app

GROKSCOPE = [sys.executable, "-m", "grokscope"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# How long to wait for a line that a working command prints within seconds; only a command that
# waits for the end of its input (the bug) would reach it.
DEADLOCK_S = 300


def invoke(*args, input: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("runs")
    result = invoke("train", "--p", 5, "--width", 8, "--steps", 20, "--save-every", 10, "--save-log", 0,
                    "--seed", "0,1", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    return [Path(line) for line in result.stdout.split()]


@pytest.fixture
def fresh(runs, tmp_path) -> list[Path]:
    return [Path(shutil.copytree(run, tmp_path / run.name)) for run in runs]


class Streaming:
    """A command reading ``-`` from a pipe we hold open, its stdout read line by line."""

    def __init__(self, *args: str, quiet: bool = True):
        self.process = subprocess.Popen([*GROKSCOPE, *args, *(["-q"] if quiet else [])], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def send(self, *paths: Path) -> None:
        self.process.stdin.write("".join(f"{p}\n" for p in paths))
        self.process.stdin.flush()

    def read_until(self, wanted) -> list[str]:
        seen = []
        while True:
            line = self.lines.get(timeout=DEADLOCK_S)
            assert line is not None, f"ended before printing what was wanted: {seen}, {self.process.stderr.read()}"
            seen.append(line)
            if wanted(line):
                return seen

    def finish(self) -> tuple[int, list[str], str]:
        self.process.stdin.close()
        rest = []
        while (line := self.lines.get(timeout=DEADLOCK_S)) is not None:
            rest.append(line)
        return self.process.wait(timeout=DEADLOCK_S), rest, self.process.stderr.read()


def test_probe_starts_on_the_first_path_while_its_input_is_still_open(fresh):
    first, second = fresh
    probe = Streaming("probe", "-", quiet=False)
    probe.send(first)
    # The first run's features arrive while stdin is open: probe did not wait for the end of input.
    seen = probe.read_until(lambda line: line.endswith("step-00000020.safetensors"))
    assert all(line.startswith(str(first)) for line in seen) and len(seen) == 3
    assert probe.process.poll() is None  # still reading its input
    time.sleep(1.0)  # the next run takes its time to arrive
    probe.send(second)
    code, rest, stderr = probe.finish()
    assert code == 0, stderr
    assert rest == [str(formats.features.features_path(second, s)) for s in (0, 10, 20)]
    # The summary does not count that wait as work.
    summary = re.search(r"in ([\d.]+)s, ([\d.]+)s more waiting for input$", stderr.strip().splitlines()[-1])
    assert summary and float(summary.group(2)) >= 1.0, stderr


def test_measure_starts_on_the_first_paths_while_its_input_is_still_open(fresh):
    first, second = fresh
    measure = Streaming("measure", "-", "--metric", "collapse")
    measure.send(*[formats.run.checkpoint_path(first, s) for s in (0, 10, 20)])
    table = formats.tables.measures_path(first, "collapse")
    assert measure.read_until(lambda line: line == str(table)) == [str(table)]
    assert measure.process.poll() is None
    assert sorted(pd.read_parquet(table)["step"].unique()) == [0, 10, 20]
    measure.send(second)
    code, rest, stderr = measure.finish()
    assert code == 0, stderr
    assert rest == [str(formats.tables.measures_path(second, "collapse"))]


def test_a_series_named_again_later_is_measured_for_the_new_steps_only(fresh):
    run = fresh[0]
    measure = Streaming("measure", "-", "--metric", "collapse")
    measure.send(formats.run.checkpoint_path(run, 0))
    table = formats.tables.measures_path(run, "collapse")
    measure.read_until(lambda line: line == str(table))
    measure.send(formats.run.checkpoint_path(run, 20))
    code, rest, stderr = measure.finish()
    assert code == 0, stderr
    assert rest == []  # the table's path was printed once
    assert sorted(pd.read_parquet(table)["step"].unique()) == [0, 20]


@pytest.mark.parametrize("command", [["probe", "-"], ["measure", "-"], ["plot", "curves", "-", "-o", "x.png"],
                                     ["report", "-"]])
def test_empty_input_is_an_error(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for text in ("", "\n \n"):
        result = invoke(*command, input=text)
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == "error: -: no paths on standard input (did the command before the pipe fail?)"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_failed_train_fails_the_whole_pipeline(tmp_path):
    train = subprocess.Popen([*GROKSCOPE, "train", "--steps", "abc", "--out", str(tmp_path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=ENV)
    probe = subprocess.Popen([*GROKSCOPE, "probe", "-"], stdin=train.stdout, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=ENV)
    train.stdout.close()
    measure = subprocess.Popen([*GROKSCOPE, "measure", "-"], stdin=probe.stdout, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=ENV)
    probe.stdout.close()
    stdout, stderr = measure.communicate(timeout=DEADLOCK_S)
    assert (train.wait(timeout=60), probe.wait(timeout=60), measure.returncode) == (2, 2, 2)
    assert stdout == b"" and b"no paths on standard input" in stderr
    assert list(tmp_path.iterdir()) == []


def test_measure_takes_the_steps_probe_chose(fresh):
    run = fresh[0]
    probed = invoke("probe", run, "--steps", "every:2", "-q")
    assert probed.exit_code == 0, probed.output
    assert probed.stdout.split() == [str(formats.features.features_path(run, s)) for s in (0, 20)]
    measured = invoke("measure", "-", "--metric", "collapse,weights", "-q", input=probed.stdout)
    assert measured.exit_code == 0, measured.output
    for family in ("collapse", "weights"):
        assert sorted(pd.read_parquet(formats.tables.measures_path(run, family))["step"].unique()) == [0, 20]
    # Rows on stdout are those of the steps asked for too, whatever the table held before.
    rows = invoke("measure", formats.run.checkpoint_path(run, 10), "--metric", "rnc1", "--format", "csv", input=None)
    assert rows.exit_code == 0, rows.output
    assert set(pd.read_csv(__import__("io").StringIO(rows.stdout))["step"]) == {10}
