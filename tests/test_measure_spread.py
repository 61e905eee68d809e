"""grokscope measure end to end: the spread columns of the o-info and hsic tables, and the
options that set them."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from grokscope import formats
from grokscope.cli import app
from grokscope.config import TaskConfig
from grokscope.measures.hsic import hsic_measures
from grokscope.tasks import load_task


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    result = invoke("train", "--p", "11", "--width", "24", "--steps", "20", "--save-every", "10",
                    "--save-log", "0", "--out", out)
    assert result.exit_code == 0, result.output
    return out / "add-p11"


def measured(run_dir, *options) -> pd.DataFrame:
    result = invoke("measure", run_dir, "--format", "csv", *options)
    assert result.exit_code == 0, result.output
    return pd.read_csv(io.StringIO(result.stdout))


def test_hsic_rows_carry_the_mean_and_spread_of_their_passes(run_dir):
    rows = measured(run_dir, "--metric", "hsic", "--hsic-batch-size", "20")
    assert (rows["draws"] == 3).all() and (rows["value_sd"] > 0).all()
    # the same from the function, on an independent forward pass of the test split
    state = formats.run.load_checkpoint(formats.run.checkpoint_path(run_dir, 20))
    data = load_task(TaskConfig(p=11, split_seed=0))
    h = np.maximum(data.x @ state["layers.0.weight"].numpy().T + state["layers.0.bias"].numpy(), 0)
    test = data.split == 1
    per_pass = hsic_measures(h[test], data.x[test], data.y[test], batch_size=20, per_pass=True)
    for metric, values in per_pass.items():
        row = rows[(rows.step == 20) & (rows.metric == metric)].iloc[0]
        assert row["value"] == pytest.approx(values.mean(), rel=1e-5)
        assert row["value_sd"] == pytest.approx(values.std(ddof=1), rel=1e-4)
    stored_order = measured(run_dir, "--metric", "hsic", "--hsic-batch-size", "20", "--hsic-order", "stored",
                            "--hsic-passes", "1")
    assert (stored_order["draws"] == 1).all() and stored_order["value_sd"].isna().all()


def test_oinfo_rows_carry_the_tie_spread_and_index_ties_none(run_dir):
    rows = measured(run_dir, "--metric", "o-info", "--bins", "4", "--tie-draws", "5")
    assert (rows["draws"] == 5).all() and (rows["value_sd"] >= 0).all()
    assert (rows.loc[rows.step > 0, "value_sd"] > 0).any()
    index = measured(run_dir, "--metric", "o-info", "--bins", "4", "--ties", "index")
    assert (index["draws"] == 0).all() and index["value_sd"].isna().all()


@pytest.mark.parametrize(("options", "named"), [
    (["--ties", "midrank"], "--ties"),
    (["--ties", "random", "--tie-draws", "0"], "--tie-draws"),
    (["--tie-draws", "-1"], "--tie-draws"),
    (["--hsic-passes", "0"], "--hsic-passes"),
    (["--hsic-order", "sorted"], "--hsic-order"),
    (["--search", "beam"], "--search"),
])
def test_bad_options_are_named(run_dir, options, named):
    result = invoke("measure", run_dir, "--metric", "o-info,hsic", *options)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {named}:") and result.stderr.strip().count("\n") == 0
