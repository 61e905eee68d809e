"""One family's failure, foreseen or not, never takes the others: its rows are NaN (or its step is
skipped, for a checkpoint family) with one warning that gives the reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from grokscope import formats
from grokscope.cli import app


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    result = invoke("train", "--p", 7, "--width", 16, "--steps", 30, "--save-every", 10, "--save-log", 0,
                    "--out", out, "-q")
    assert result.exit_code == 0, result.output
    return out / "add-p7"


@pytest.fixture
def run(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "add-p7"))


def table(run: Path, family: str) -> pd.DataFrame:
    return pd.read_parquet(formats.tables.measures_path(run, family))


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def failing_on_call(function, call: int):
    """``function``, raising an error nobody foresaw on its ``call``-th call (1-based)."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(None)
        if len(calls) == call:
            raise RuntimeError("an unforeseen failure")
        return function(*args, **kwargs)

    return wrapped


def test_a_feature_family_raising_anything_mid_series_is_nan_there_and_the_others_keep_their_rows(run, monkeypatch):
    from grokscope.families import feature_steps

    # Steps 0, 10, 20, 30: o-info fails at the second one.
    monkeypatch.setattr(feature_steps, "oinfo_rows", failing_on_call(feature_steps.oinfo_rows, 2))
    result = invoke("measure", run, "--metric", "collapse,o-info,weights", "--bins", 4, "-q")
    assert result.exit_code == 0, result.output
    oinfo, collapse, weights = table(run, "oinfo"), table(run, "collapse"), table(run, "weights")
    assert oinfo.loc[oinfo.step == 10, "value"].isna().all()
    assert oinfo.loc[oinfo.step != 10, "value"].notna().all()
    for other in (collapse, weights):
        assert sorted(other["step"].unique()) == [0, 10, 20, 30]
        assert other["value"].notna().any()
    assert collapse.groupby("step").size().nunique() == 1  # as many rows at the failed step as elsewhere
    assert warnings_of(result.stderr) == [
        f"warning: {run}: o-info is NaN at step 10: RuntimeError: an unforeseen failure"]


def test_a_checkpoint_family_raising_anything_loses_that_step_only(run, monkeypatch):
    import grokscope.measures.weights

    monkeypatch.setattr(grokscope.measures.weights, "weight_measures",
                        failing_on_call(grokscope.measures.weights.weight_measures, 3))
    result = invoke("measure", run, "--metric", "weights,collapse", "-q")
    assert result.exit_code == 0, result.output
    assert sorted(table(run, "weights")["step"].unique()) == [0, 10, 30]
    assert sorted(table(run, "collapse")["step"].unique()) == [0, 10, 20, 30]
    assert warnings_of(result.stderr) == [
        f"warning: {run}: weights is NaN at step 20: RuntimeError: an unforeseen failure"]


def test_weights_of_a_diverged_checkpoint_warn_like_the_other_families(run):
    path = formats.run.checkpoint_path(run, 20)
    state = formats.run.load_checkpoint(path)
    state["layers.0.weight"][0, 0] = float("nan")
    formats.run.save_checkpoint(run, 20, state)
    result = invoke("measure", run, "--metric", "weights", "-q")
    assert result.exit_code == 0, result.output
    weights = table(run, "weights")
    assert weights.loc[weights.step == 20, "value"].isna().any()
    assert weights.loc[weights.step != 20, "value"].notna().all()
    assert warnings_of(result.stderr) == [f"warning: {run}: weights is NaN at step 20: weights not finite (diverged?)"]


def test_hsic_references_that_fail_leave_hsic_nan_and_the_other_families_whole(run, monkeypatch):
    from grokscope.families import feature_steps

    monkeypatch.setattr(feature_steps, "hsic_references", failing_on_call(feature_steps.hsic_references, 1))
    result = invoke("measure", run, "--metric", "collapse,hsic", "-q")
    assert result.exit_code == 0, result.output
    assert table(run, "hsic")["value"].isna().all()
    assert table(run, "collapse")["value"].notna().any()
    assert warnings_of(result.stderr) == [
        f"warning: {run}: hsic is NaN at steps 0, 10, 20, 30: RuntimeError: an unforeseen failure"]
