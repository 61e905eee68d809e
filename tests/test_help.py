"""--help reads like the tools people know: conventional metavars, usage lines in words, the
list rule said once, options in panels, an example in every command's help."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from grokscope.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]


def help_of(*command: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120", "NO_COLOR": "1"}
    completed = subprocess.run([sys.executable, "-m", "grokscope", *command, "--help"], capture_output=True,
                               text=True, env=env, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def panels(text: str) -> list[str]:
    return re.findall(r"╭─ (.+?) ─", text)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_speaks_in_conventional_metavars_and_shows_an_example(command):
    text = help_of(command)
    assert "<bool>" not in text and "<list[" not in text and "<str>" not in text
    assert not re.search(r"\{\w+\}", text.split("Examples")[0]), "usage reads {inputs}"
    assert f"Usage: grokscope {command} [OPTIONS]" in text
    assert re.search(rf"^\s+grokscope {command} ", text, re.MULTILINE), "no example line"


def test_usage_lines_name_their_arguments_in_capitals():
    assert "grokscope probe [OPTIONS] PATH..." in help_of("probe")
    assert "grokscope measure [OPTIONS] PATH..." in help_of("measure")
    assert "grokscope plot [OPTIONS] KIND INPUTS..." in help_of("plot")


def test_train_says_the_list_rule_once_and_groups_its_options():
    text = help_of("train")
    assert len(re.findall(r"takes a list", text, re.IGNORECASE)) == 1
    assert panels(text) == ["Task", "Model", "Optimiser and loss", "Schedule", "Output", "Execution"]
    assert re.search(r"--weight-decay,--wd\s+LIST", text) and re.search(r"--beta1\s+FLOAT", text)
    assert re.search(r"--resume\s+Continue", text), "a flag shows no metavar"


def test_measure_groups_its_options_by_family():
    text = help_of("measure")
    assert {"What to measure", "hsic", "o-info", "Execution"} <= set(panels(text))
    assert "Options" not in panels(text), "every option has its panel"
    hsic = text.split("╭─ hsic ")[1].split("╰")[0]
    assert "--hsic-sigma" in hsic and "--bins" not in hsic


def test_help_is_last_of_the_last_panel():
    text = help_of("probe")
    last = text.split("╭─ Execution ")[1].split("╰")[0]
    option_lines = [line for line in last.splitlines() if line.lstrip("│ ").startswith("--")]
    assert option_lines[-1].split()[1:3] == ["--help", "-h"]
