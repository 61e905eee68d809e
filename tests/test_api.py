"""grokscope.train, grokscope.probe and grokscope.measure from Python write what the commands write.

The same tiny sweep goes once through the command line and once through the functions, into two
folders; every file the two write is then compared: byte for byte, Parquet tables as tables, and
run.json as JSON without its creation time (the one field that must differ).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import grokscope
from grokscope.cli import app
from grokscope.pipeline.reporter import NoProgress

TRAIN = {"p": "5", "width": "8", "steps": "12", "save_every": "4", "save_log": "0", "eval_every": "2",
         "weight_decay": "0.1,1"}
METRICS = "collapse,weights,grokking,hsic"


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def cli_flags(options: dict) -> list[str]:
    return [part for key, value in options.items() for part in (f"--{key.replace('_', '-')}", value)]


class Said:
    """A reporter that keeps what it is told."""

    def __init__(self):
        self.results, self.infos, self.warnings, self.errors = [], [], [], []

    def result(self, line):
        self.results.append(Path(line))

    def info(self, message):
        self.infos.append(message)

    def warn(self, message):
        self.warnings.append(message)

    def error(self, message):
        self.errors.append(message)

    def progress(self, *columns):
        return contextlib.nullcontext(NoProgress())


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """(command line's folder, Python's folder, what each said/returned per command)."""
    root = tmp_path_factory.mktemp("api")
    cli, api = root / "cli", root / "api"
    said = {}
    said["train", "cli"] = invoke("train", *cli_flags(TRAIN), "--out", cli, "-q").stdout.split()
    # Python values where the command line has text: a list and numbers.
    said["reporter"] = Said()
    said["train", "api"] = grokscope.train(out=api, p=5, width=8, steps=12, save_every=4, save_log=0, eval_every=2,
                                           weight_decay=[0.1, 1], reporter=said["reporter"])
    runs = sorted(p for p in cli.iterdir())
    said["probe", "cli"] = invoke("probe", *runs, "--steps", "every:2", "-q").stdout.split()
    said["probe", "api"] = grokscope.probe(sorted(api.iterdir()), steps="every:2")
    said["measure", "cli"] = invoke("measure", *runs, "--metric", METRICS, "-q").stdout.split()
    said["measure", "api"] = grokscope.measure(sorted(api.iterdir()), metrics=METRICS.split(","))
    return cli, api, said


def files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


def test_the_functions_write_the_files_the_commands_write(both):
    cli, api, _ = both
    written = files(cli)
    assert written == files(api)
    kinds = {p.suffix for p in written}
    assert {".json", ".parquet", ".safetensors"} <= kinds
    assert any(p.parts[1] == "features" for p in written) and any(p.parts[1] == "measures" for p in written)
    for path in written:
        ours, theirs = cli / path, api / path
        if path.suffix == ".parquet":
            pd.testing.assert_frame_equal(pd.read_parquet(ours), pd.read_parquet(theirs), check_exact=True)
        elif path.name in ("run.json", "probe.json"):
            first, second = json.loads(ours.read_text()), json.loads(theirs.read_text())
            for document in (first, second):
                document.pop("created", None)
            assert first == second, path
        else:
            assert ours.read_bytes() == theirs.read_bytes(), path


def test_the_functions_return_the_paths_the_commands_print(both):
    cli, api, said = both
    for command in ("train", "probe", "measure"):
        printed = [Path(line).relative_to(cli) for line in said[command, "cli"]]
        returned = said[command, "api"]
        assert returned.failed == [] and returned.refused == [] and returned.exit_code == 0
        assert [p.relative_to(api) for p in returned.paths] == printed, command
        assert printed, command
    # The reporter was told each path as it was written: the returned list, in order.
    assert said["reporter"].results == said["train", "api"].paths and len(said["train", "api"].paths) == 2
    assert any("99% train acc" in message for message in said["reporter"].infos)


def test_a_reporter_hears_each_path_and_the_progress(tmp_path, both):
    cli, _, _ = both
    run = sorted(cli.iterdir())[0]
    reporter = Said()
    written = grokscope.measure([run], metrics=["weights"], output=tmp_path / "all.parquet", reporter=reporter)
    assert reporter.results == written.paths == [tmp_path / "all.parquet"]
    combined = pd.read_parquet(tmp_path / "all.parquet")
    pd.testing.assert_frame_equal(combined, written.table.reset_index(drop=True))
    stored = pd.read_parquet(run / "measures" / "weights.parquet")
    assert sorted(combined["step"].unique()) == sorted(stored["step"].unique())
    assert set(combined["series"]) == {str(run)}


def test_the_combined_table_is_what_the_command_prints(both):
    cli, _, _ = both
    runs = sorted(cli.iterdir())
    printed = invoke("measure", *runs, "--metric", "weight_norm,rnc1", "--format", "json").stdout.splitlines()
    table = grokscope.measure(runs, metrics="weight_norm,rnc1", table=True).table
    assert len(printed) == len(table) > 0
    assert [json.loads(line)["value"] for line in printed] == pytest.approx(table["value"].tolist(), rel=0, abs=0)
    assert set(table["metric"]) == {"weight_norm", "rnc1"}


def test_a_failed_checkpoint_is_returned_not_raised(tmp_path, both):
    cli, _, _ = both
    run = tmp_path / "broken"
    shutil.copytree(sorted(cli.iterdir())[0], run)
    broken = sorted((run / "checkpoints").iterdir())[1]
    broken.write_bytes(b"not a safetensors file")
    written = grokscope.measure([run], metrics=["weights"], force=True, reporter=Said())
    assert written.exit_code == 1 and len(written.failed) == 1 and str(broken) in written.failed[0]
    assert written.paths == [run / "measures" / "weights.parquet"]


# The command line's options and the functions' keywords: every option has its keyword.
RENAMED = {"measure": {"metric": "metrics", "layer": "layers", "format": "table", "quiet": "reporter"},
           "probe": {"layer": "layers", "quiet": "reporter"},
           "train": {"quiet": "reporter", "wd": "weight_decay"}}


@pytest.mark.parametrize("command", ["train", "probe", "measure"])
def test_every_option_of_the_command_is_a_keyword_of_the_function(command):
    import typer.main

    click_command = typer.main.get_command(app).commands[command]
    keywords = set(inspect.signature(getattr(grokscope, command)).parameters)
    flags = {name.lstrip("-").replace("-", "_") for param in click_command.params for name in param.opts
             if name.startswith("--")}
    flags = {RENAMED[command].get(flag, flag) for flag in flags} - {"help"}
    assert flags - keywords == set()
    assert "reporter" in keywords
