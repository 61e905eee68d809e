"""Mistakes are answered before start-up: one line, exit 2, no torch/pandas/plotnine imported,
and a "did you mean" where a name is close to a known one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from grokscope.errors import GrokscopeError

# Runs the console script's main() and says, after it exits, which heavy libraries it imported.
WRAPPER = """
import sys
from grokscope.cli import main
sys.argv = ["grokscope", *sys.argv[1:]]
try:
    main()
except SystemExit:
    heavy = [m for m in ("torch", "pandas", "plotnine") if m in sys.modules]
    sys.stdout.write("HEAVY=" + ",".join(heavy) + "\\n")
    raise
"""
ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", WRAPPER, *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


@pytest.fixture
def factory_file(tmp_path):
    path = tmp_path / "net.py"
    path.write_text("import torch\n\n\ndef build_model():\n    return torch.nn.Linear(2, 2)\n")
    return path


CASES = [
    (("probe", "does/not/exist"), "does/not/exist: no such file or directory"),
    (("measure", "does/not/exist"), "does/not/exist: no such file or directory"),
    (("report", "does/not/exist"), "does/not/exist: no such file or directory"),
    (("plot", "curves", "does/not/exist", "-o", "x.png"), "does/not/exist: no such file or directory"),
    (("predict", "does/not/exist"), "does/not/exist: no such file or directory"),
    (("export", "does/not/exist", "--tensorboard", "tb"), "does/not/exist: no such file or directory"),
    (("subnet", "does/not/exist", "--at", "min"), "does/not/exist: no such file or directory"),
    (("measure", ".", "--metric", "colapse"), "did you mean 'collapse'?"),
    (("measure", ".", "--metric", "synergyy"), "did you mean 'synergy'?"),
    (("measure", ".", "--split", "tset"), "--split: unknown value 'tset' (did you mean 'test'?)"),
    (("measure", ".", "--steps", "every:x"), "--steps"),
    (("probe", ".", "--device", "gpu"), "--device: unknown device 'gpu'"),
    (("probe", ".", "--dtype", "float33"), "did you mean 'float32'"),
    (("probe", ".", "--data", "missing.npz"), "--data: missing.npz is not a file"),
    (("probe", ".", "--model", "missing.py:build"), "--model: missing.py is not a file"),
    (("train", "--wieght-decay", "1"), "No such option: --wieght-decay (Possible options: --weight-decay"),
    (("probe", ".", "--batch-size", "1.5"), "Invalid value for '--batch-size'"),
    (("plot", "curves", "."), "Missing option '--output'"),
]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(args) for args, _ in CASES])
def test_a_mistake_is_one_line_exit_2_before_any_heavy_import(tmp_path, args, message):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "HEAVY=\n" in result.stdout, result.stdout


def test_a_mistyped_factory_is_suggested_without_running_the_file(tmp_path, factory_file):
    result = run_cli("probe", ".", "--model", f"{factory_file}:build_modle", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --model: {factory_file} has no 'build_modle' (did you mean 'build_model'?)"
    assert "HEAVY=\n" in result.stdout


def test_a_factory_that_exists_passes_the_early_check(factory_file):
    from grokscope.cli.checks import factory_spec

    factory_spec(f"{factory_file}:build_model")  # no error: the file defines it
    with pytest.raises(GrokscopeError, match="expected package.module:factory"):
        factory_spec("no-colon")


def test_a_mistyped_factory_of_a_module_is_suggested_on_import():
    from grokscope.user_models import build_user_model

    with pytest.raises(GrokscopeError, match=r"json has no 'dumsp' \(did you mean .*'dumps'"):
        build_user_model("json:dumsp")


def test_layer_names_are_suggested_by_similarity_and_listed():
    from torch import nn

    from grokscope.layers import user_layer_keys

    model = nn.Sequential()
    model.add_module("encoder", nn.Sequential(nn.Linear(3, 4), nn.ReLU()))
    model.add_module("head", nn.Linear(4, 2))
    with pytest.raises(GrokscopeError) as close:
        user_layer_keys(model, ["encodr"])
    assert "(did you mean 'encoder' or" in str(close.value)  # the closest first
    assert "its modules: encoder, encoder.0, encoder.1, head" in str(close.value)
    with pytest.raises(GrokscopeError) as far:
        user_layer_keys(model, ["nope"])
    assert "did you mean" not in str(far.value) and "its modules: encoder" in str(far.value)


def test_long_module_lists_are_cut_with_a_count():
    from grokscope.errors import listing

    assert listing([str(i) for i in range(20)], most=3) == "0, 1, 2, ... (17 more)"
    assert listing(["a", "b"]) == "a, b"


def test_suggestions_rank_the_closest_first():
    from grokscope.errors import did_you_mean, similar_names

    assert similar_names("rnc9", ["nc1", "rnc1", "rnc1_sup", "synergy"])[0] == "rnc1"
    assert did_you_mean("zzz", ["collapse", "hsic"]) == ""
