"""measure when something is wrong: one family or one file never loses the rest, -o and --format
never write into a run, two processes on one series keep both their rows, messages name options."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from grokscope import formats
from grokscope.families.problems import describe_nan
from grokscope.cli import app

GROKSCOPE = [sys.executable, "-m", "grokscope"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


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


def errors_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def kill_neurons(run: Path, step: int) -> None:
    """Every hidden unit of the checkpoint dead: a ReLU of a negative constant."""
    path = formats.run.checkpoint_path(run, step)
    state = formats.run.load_checkpoint(path)
    state["layers.0.weight"] = torch.zeros_like(state["layers.0.weight"])
    state["layers.0.bias"] = -torch.ones_like(state["layers.0.bias"])
    formats.run.save_checkpoint(run, step, state)


# --- one family, one step, one layer: NaN with its reason, the rest kept ---------------------


def test_a_family_that_cannot_be_computed_is_nan_there_and_the_others_are_kept(run):
    kill_neurons(run, 20)
    result = invoke("measure", run, "--metric", "collapse,o-info", "--bins", 4, "-q")
    assert result.exit_code == 0, result.output
    oinfo, collapse = table(run, "oinfo"), table(run, "collapse")
    assert sorted(oinfo["step"].unique()) == sorted(collapse["step"].unique()) == [0, 10, 20, 30]
    assert oinfo.loc[oinfo.step == 20, "value"].isna().all()
    assert set(oinfo.loc[oinfo.step == 20, "metric"]) == {"synergy", "redundancy"}
    assert oinfo.loc[oinfo.step != 20, "value"].notna().all()
    assert collapse.loc[(collapse.step == 20) & (collapse.metric == "within_var"), "value"].eq(0.0).all()
    # One warning, naming the family, the step and the reason (with the option's name, not o-info's parameter).
    assert warnings_of(result.stderr) == [
        f"warning: {run}: o-info is NaN at step 20: o-info: 0 non-constant neuron(s), need at least 2"]

    again = invoke("measure", run, "--metric", "o-info", "--bins", 4, "-q")
    assert again.exit_code == 0 and again.stderr == ""  # NaN rows count as measured: not retried


def test_more_neurons_than_training_samples_drop_the_dependent_ones(tmp_path):
    # p = 5: 10 training pairs for 32 neurons; o-info once failed on the singular covariance and
    # took collapse down with it.
    result = invoke("train", "--p", 5, "--width", 32, "--steps", 10, "--save-every", 10, "--save-log", 0,
                    "--out", tmp_path, "-q")
    assert result.exit_code == 0, result.output
    run = tmp_path / "add-p5"
    result = invoke("measure", run, "--metric", "collapse,o-info", "--bins", 3, "-q")
    assert result.exit_code == 0, result.output
    assert warnings_of(result.stderr) == []
    oinfo = table(run, "oinfo")
    assert oinfo["value"].map(np.isfinite).all()
    # At most n - 1 = 9 linearly independent centred neurons of 32: the rest are counted out.
    assert (oinfo["n_excluded"] >= 32 - 9).all()
    assert sorted(table(run, "collapse")["step"].unique()) == [0, 10]


def test_o_info_messages_name_the_options():
    from grokscope.families.oinfo import oinfo_rows
    from grokscope.families.options import MeasureOptions

    features = torch.zeros(12, 4, dtype=torch.float64)
    features[:, 0] = torch.arange(12.0)
    features[:, 1] = torch.arange(12.0) ** 2  # two live neurons: at most two bins
    with pytest.raises(Exception) as caught:
        oinfo_rows({"h": features}, torch.zeros(12, dtype=torch.uint8), ["h"], MeasureOptions(bins=4, max_size=3))
    message = str(caught.value)
    assert message.startswith("--min-size/--max-size: need 2 <= --min-size <= --max-size <= 2"), message
    assert "min_size" not in message and "n_bins" not in message


@pytest.mark.parametrize(("options", "named"), [
    (["--hsic-estimator", "foo"], "error: --hsic-estimator: unknown value 'foo'"),
    (["--min-size", "1"], "error: --min-size:"),
    (["--max-size", "12"], "error: --max-size: must lie between --min-size (2) and --bins (10)"),
    (["--bins", "0"], "error: --bins:"),
])
def test_bad_options_are_named(trained, options, named):
    result = invoke("measure", trained, "--metric", "o-info,hsic", *options)
    assert result.exit_code == 2
    assert result.stderr.startswith(named) and result.stderr.count("\n") == 1, result.stderr


# --- one bad file: named, skipped, the rest kept ---------------------------------------------


def test_features_with_the_wrong_row_count_are_skipped_by_name(run):
    assert invoke("probe", run, "-q").exit_code == 0
    path = formats.features.features_path(run, 10)
    _, layers, penultimate = formats.features.features_header(path)
    tensors, _ = formats.tensors.load_tensors(path)
    formats.features.save_features(path, 10, {k: tensors[k][:-3] for k in layers}, penultimate)
    result = invoke("measure", run, "--metric", "collapse", "-q")
    assert result.exit_code == 1
    assert errors_of(result.stderr)[0] == (
        f"error: {path}: 46 rows in layers.0, but {formats.features.samples_path(run)} lists 49 samples; "
        "probe it again with --force")
    assert sorted(table(run, "collapse")["step"].unique()) == [0, 20, 30]


def test_a_corrupt_features_file_in_the_middle_keeps_every_other_step(run, tmp_path):
    reference = Path(shutil.copytree(run, tmp_path / "reference"))
    assert invoke("measure", reference, "--metric", "collapse", "-q").exit_code == 0
    assert invoke("probe", run, "-q").exit_code == 0
    path = formats.features.features_path(run, 20)
    path.write_bytes(path.read_bytes()[:200])
    # With its checkpoint there, the step is computed in memory instead: the same values.
    result = invoke("measure", run, "--metric", "collapse", "-q")
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(table(run, "collapse"), table(reference, "collapse"))
    # Without it, the step is skipped by the features file's name and every other step is measured.
    formats.run.checkpoint_path(run, 20).unlink()
    result = invoke("measure", run, "--metric", "hsic", "-q")
    assert result.exit_code == 1
    assert errors_of(result.stderr)[0].startswith(f"error: {path}: not a readable grokscope features file")
    assert sorted(table(run, "hsic")["step"].unique()) == [0, 10, 30]


def test_stored_features_of_an_unreadable_checkpoint_keep_all_but_the_output_layer_measures(run, tmp_path):
    reference = Path(shutil.copytree(run, tmp_path / "reference"))
    assert invoke("measure", reference, "--metric", "collapse", "-q").exit_code == 0
    assert invoke("probe", run, "-q").exit_code == 0
    path = formats.run.checkpoint_path(run, 10)
    path.write_bytes(path.read_bytes()[:100])
    result = invoke("measure", run, "--metric", "collapse", "-q")
    assert result.exit_code == 1
    assert errors_of(result.stderr) == [f"error: {path}: not a readable safetensors file "
                                        "(Error while deserializing header: invalid header length)"]
    got, want = table(run, "collapse"), table(reference, "collapse")
    assert len(got) == len(want)
    output_layer = got["metric"].isin(["nc3", "nc4"]) & (got["step"] == 10)
    assert got.loc[output_layer, "value"].isna().all() and output_layer.sum() == 4
    np.testing.assert_allclose(got.loc[~output_layer, "value"], want.loc[~output_layer, "value"], rtol=1e-12)


def test_weights_skip_a_checkpoint_of_another_architecture(run):
    wide = {"layers.0.weight": torch.zeros(32, 14), "layers.0.bias": torch.zeros(32),
            "layers.1.weight": torch.zeros(7, 32)}
    formats.run.save_checkpoint(run, 10, wide)
    result = invoke("measure", run, "--metric", "weights", "-q")
    assert result.exit_code == 1
    path = formats.run.checkpoint_path(run, 10)
    assert errors_of(result.stderr)[0] == (
        f"error: {path}: another architecture than the series' (layers.0.bias is [32], the series' model "
        "has [16]); skipped")
    assert sorted(table(run, "weights")["step"].unique()) == [0, 20, 30]


def test_a_table_without_its_value_column_is_refused_and_left_alone(run):
    path = formats.tables.measures_path(run, "collapse")
    path.parent.mkdir()
    pd.DataFrame({"run": ["add-p7"], "step": [0], "metric": ["rnc1"]}).to_parquet(path)
    before = path.read_bytes()
    result = invoke("measure", run, "--metric", "collapse")
    assert result.exit_code == 2
    assert result.stderr == f"error: {path}: not a grokscope measure table (no 'value' column)\n"
    assert path.read_bytes() == before


# --- -o and --format read the run, never write into it ---------------------------------------


def test_output_and_format_write_nothing_into_the_run(run, tmp_path):
    out = tmp_path / "elsewhere.parquet"
    result = invoke("measure", run, "--metric", "collapse,weights", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(out)]
    assert not (run / formats.tables.MEASURES_DIR).exists()
    combined = pd.read_parquet(out)
    assert set(combined["series"]) == {str(run)} and sorted(combined["step"].unique()) == [0, 10, 20, 30]

    csv = invoke("measure", run, "--metric", "rnc1", "--steps", "10", "--format", "csv")
    assert csv.exit_code == 0, csv.output
    rows = pd.read_csv(io.StringIO(csv.stdout))
    assert set(rows["step"]) == {10} and set(rows["metric"]) == {"rnc1"}
    assert not (run / formats.tables.MEASURES_DIR).exists()

    # What a run's tables already hold is reused, and only the steps asked for are printed.
    assert invoke("measure", run, "--metric", "collapse", "-q").exit_code == 0
    stored = table(run, "collapse")
    again = invoke("measure", run, "--metric", "rnc1", "--steps", "20-", "--format", "csv")
    rows = pd.read_csv(io.StringIO(again.stdout))
    assert sorted(rows["step"].unique()) == [20, 30]
    expected = stored[(stored.metric == "rnc1") & (stored.step >= 20)]["value"].to_numpy()
    assert np.array_equal(rows["value"].to_numpy(), expected)


# --- two processes on one series ---------------------------------------------------------------


def measure_process(run: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*GROKSCOPE, "measure", str(run), "--metric", "collapse", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def test_two_processes_on_one_series_keep_both_their_steps(run):
    first, second = measure_process(run, "--steps", "0-10"), measure_process(run, "--steps", "20-")
    for process in (first, second):
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
    collapse = table(run, "collapse")
    assert sorted(collapse["step"].unique()) == [0, 10, 20, 30]
    assert not collapse.duplicated(["step", "metric", "split", "layer"]).any()
    assert sorted(p.name for p in (run / formats.tables.MEASURES_DIR).iterdir()) == ["collapse.parquet"]


def test_a_save_waits_for_the_lock_and_merges_what_another_process_wrote(run, trained, tmp_path):
    # Another process's steps 0 and 10, as that process would have saved them.
    other = Path(shutil.copytree(trained, tmp_path / "other"))
    assert invoke("measure", other, "--metric", "collapse", "--steps", "0-10", "-q").exit_code == 0
    theirs = table(other, "collapse").assign(run="add-p7")
    path = formats.tables.measures_path(run, "collapse")
    path.parent.mkdir()
    with formats.atomic.table_lock(path):
        process = measure_process(run, "--steps", "20-")
        # It planned before those rows existed and is now waiting at its save: it says so once.
        notice = process.stderr.readline()
        assert notice == (f"warning: {run}: waiting for process {os.getpid()} to finish updating its measure "
                          "tables\n")
        formats.tables.write_table(path, theirs)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    merged = table(run, "collapse")
    assert sorted(merged["step"].unique()) == [0, 10, 20, 30]
    pd.testing.assert_frame_equal(merged[merged.step <= 10].reset_index(drop=True), theirs)


def test_a_lock_left_by_a_killed_process_does_not_block(run):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom grokscope import formats\n"
        f"with formats.atomic.table_lock({str(formats.tables.measures_path(run, 'collapse'))!r}):\n"
        "    print('locked', flush=True)\n    time.sleep(600)\n")], stdout=subprocess.PIPE, text=True, env=ENV)
    (run / formats.tables.MEASURES_DIR).mkdir(exist_ok=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        holder.kill()
        holder.wait()
        lock = run / formats.tables.MEASURES_DIR / ".collapse.parquet.lock"
        assert lock.exists()  # SIGKILL left its lock file behind ...
        started = time.monotonic()
        result = invoke("measure", run, "--metric", "collapse", "-q")
        assert result.exit_code == 0, result.output
        assert time.monotonic() - started < formats.atomic.LOCK_NOTICE_S  # ... which nobody waits for
        assert not lock.exists()
    finally:
        holder.kill()


def test_nan_warnings_are_grouped_by_reason():
    text = describe_nan("runs/a", "oinfo", "singular", [0, 10, 20, 30, 40, 50, 60])
    assert text == "runs/a: o-info is NaN at steps 0, 10, 20, 30, 40 and 2 more: singular"
    assert describe_nan("runs/a", None, "diverged", [5]) == "runs/a: every measure is NaN at step 5: diverged"
