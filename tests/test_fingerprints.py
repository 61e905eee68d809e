"""Features files record what they were made from (their checkpoint's bytes, the series' data,
their step): a file swapped in from another run or another step, or made from a checkpoint
rewritten since, is probed again by probe and refused by name by measure, and measure rows
measured from features that have changed since are recomputed. Symlinked folders are refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from safetensors import safe_open
from typer.testing import CliRunner

from grokscope import formats
from grokscope.cli import app

STEPS = [0, 10, 20, 30, 40]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[int, Path]:
    """Two tiny runs of (a+b) mod 11 that differ only in their seed (same shapes, same metadata)."""
    out = tmp_path_factory.mktemp("runs")
    result = invoke("train", "--p", 11, "--width", 16, "--steps", 40, "--save-every", 10, "--save-log", 0,
                    "--eval-every", 10, "--lr", 0.05, "--seed", "0,1", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    runs = [Path(line) for line in result.stdout.split()]
    return {json.loads((r / "run.json").read_text())["seed"]: r for r in runs}


@pytest.fixture
def probed(trained, tmp_path) -> tuple[Path, Path]:
    """Fresh copies of both runs, each probed."""
    runs = tuple(Path(shutil.copytree(trained[seed], tmp_path / f"run{seed}")) for seed in (0, 1))
    for run in runs:
        assert invoke("probe", run, "-q").exit_code == 0
    return runs


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="np") as handle:
        return handle.metadata()


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def features(run: Path, step: int) -> Path:
    return formats.features.features_path(run, step)


def checkpoint(run: Path, step: int) -> Path:
    return formats.run.checkpoint_path(run, step)


def test_every_features_file_records_its_checkpoint_data_layers_and_step(probed):
    run, other = probed
    for step in STEPS:
        found = metadata(features(run, step))
        assert found["grokscope.checkpoint_sha256"] == sha256(checkpoint(run, step))
        assert found["grokscope.step"] == str(step)
        assert json.loads(found["grokscope.layers"])
    # The data digest follows the split: the same within a run, another for the other seed's split.
    assert len({metadata(features(run, s))["grokscope.data_sha256"] for s in STEPS}) == 1
    assert metadata(features(run, 0))["grokscope.data_sha256"] != metadata(features(other, 0))["grokscope.data_sha256"]


def test_an_unchanged_series_is_not_probed_again(probed):
    run, _ = probed
    before = {step: features(run, step).read_bytes() for step in STEPS}
    result = invoke("probe", run)
    assert result.exit_code == 0, result.output
    assert "0 probed, 5 already stored" in result.stderr
    assert not lines_with(result.stderr, "again")
    assert {step: features(run, step).read_bytes() for step in STEPS} == before


def swap_from_other_run(run, other):
    shutil.copy2(features(other, 20), features(run, 20))


def swap_from_other_step(run, other):
    shutil.copy2(features(run, 40), features(run, 20))


def rewrite_checkpoint(run, other):
    shutil.copy2(checkpoint(other, 20), checkpoint(run, 20))


CHANGES = {"another run": (swap_from_other_run, "another checkpoint"),
           "another step": (swap_from_other_step, "grokscope.step is 40"),
           "checkpoint rewritten": (rewrite_checkpoint, "another checkpoint")}


@pytest.mark.parametrize("case", sorted(CHANGES))
def test_probe_probes_a_changed_file_again_in_one_line(probed, case):
    run, other = probed
    change, reason = CHANGES[case]
    untouched = {step: features(run, step).read_bytes() for step in STEPS if step != 20}
    change(run, other)
    result = invoke("probe", run)
    assert result.exit_code == 0, result.output
    said = lines_with(result.stderr, "again")
    assert len(said) == 1 and "probing 1 features file again" in said[0] and "step 20" in said[0], result.stderr
    assert reason in said[0] and str(run / "features") in said[0]
    assert "1 probed, 4 already stored" in result.stderr
    found = metadata(features(run, 20))
    assert found["grokscope.checkpoint_sha256"] == sha256(checkpoint(run, 20))
    assert found["grokscope.step"] == "20"
    assert {step: features(run, step).read_bytes() for step in STEPS if step != 20} == untouched


@pytest.mark.parametrize("case", sorted(CHANGES))
def test_measure_refuses_a_changed_file_by_name_and_measures_the_rest(probed, case):
    run, other = probed
    change, reason = CHANGES[case]
    change(run, other)
    result = invoke("measure", run, "--metric", "collapse")
    assert result.exit_code == 1, result.output
    refused = lines_with(result.stderr, str(features(run, 20)))
    assert len(refused) == 1 and reason in refused[0], result.stderr
    assert "Traceback" not in result.output
    table = pd.read_parquet(formats.tables.measures_path(run, "collapse"))
    assert sorted(table["step"].unique()) == [0, 10, 30, 40]


def test_measure_rows_record_the_features_they_came_from(probed, trained, tmp_path):
    run, _ = probed
    assert invoke("measure", run, "--metric", "collapse").exit_code == 0
    in_memory = Path(shutil.copytree(trained[0], tmp_path / "unprobed"))
    assert invoke("measure", in_memory, "--metric", "collapse").exit_code == 0
    for folder in (run, in_memory):
        table = pd.read_parquet(formats.tables.measures_path(folder, "collapse"))
        for step, rows in table.groupby("step"):
            assert set(rows["source_sha256"]) == {sha256(checkpoint(folder, step))}


def mark_kept(run: Path, step: int) -> pd.DataFrame:
    """Put a value no measure gives into the rows of ``step``: a later measure that keeps them
    keeps it, one that recomputes them does not."""
    path = formats.tables.measures_path(run, "collapse")
    table = pd.read_parquet(path)
    table.loc[table.step == step, "value"] = -123.0
    table.to_parquet(path, index=False)
    return table


@pytest.mark.parametrize("stored", [True, False])
def test_stale_rows_are_recomputed_and_unchanged_ones_kept(probed, trained, tmp_path, stored):
    run, other = probed
    if not stored:
        shutil.rmtree(run / "features")
    assert invoke("measure", run, "--metric", "collapse").exit_code == 0
    mark_kept(run, 10)
    rewrite_checkpoint(run, other)
    if stored:
        assert invoke("probe", run, "-q").exit_code == 0
    result = invoke("measure", run, "--metric", "collapse")
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(formats.tables.measures_path(run, "collapse"))
    assert (table.loc[table.step == 10, "value"] == -123.0).all()  # unchanged: kept, not recomputed
    # The stale step equals what a measure from scratch of the changed run gives.
    fresh = Path(shutil.copytree(run, tmp_path / "fresh", ignore=shutil.ignore_patterns("measures")))
    assert invoke("measure", fresh, "--metric", "collapse").exit_code == 0
    scratch = pd.read_parquet(formats.tables.measures_path(fresh, "collapse"))
    mine, theirs = (t[t.step == 20].sort_values(["metric", "layer", "split"]).reset_index(drop=True)
                    for t in (table, scratch))
    pd.testing.assert_frame_equal(mine.drop(columns="run"), theirs.drop(columns="run"))
    assert set(mine["source_sha256"]) == {sha256(checkpoint(run, 20))}


CHECKPOINT_FAMILIES = ["weights", "spectra", "fourier", "complexity", "llc"]


def test_checkpoint_family_rows_of_a_rewritten_checkpoint_are_recomputed(trained, tmp_path):
    """The families that read the checkpoint itself record its digest too: a checkpoint
    rewritten since is measured again, the others' rows are kept."""
    run = Path(shutil.copytree(trained[0], tmp_path / "run"))
    options = ["--metric", ",".join(CHECKPOINT_FAMILIES), "--complexity-evaluations", "5",
               "--llc-chains", "2", "--llc-draws", "5", "--llc-burnin", "0", "--llc-batch-size", "8", "-q"]
    assert invoke("measure", run, *options).exit_code == 0
    for family in CHECKPOINT_FAMILIES:
        path = formats.tables.measures_path(run, family)
        table = pd.read_parquet(path)
        for step, rows in table.groupby("step"):
            assert set(rows["source_sha256"]) == {sha256(checkpoint(run, step))}, family
        table.loc[table.step == 10, "value"] = -123.0  # kept by a later measure, or recomputed
        table.to_parquet(path, index=False)
    rewrite_checkpoint(run, trained[1])
    assert invoke("measure", run, *options).exit_code == 0
    fresh = Path(shutil.copytree(run, tmp_path / "fresh", ignore=shutil.ignore_patterns("measures")))
    assert invoke("measure", fresh, *options).exit_code == 0
    for family in CHECKPOINT_FAMILIES:
        table = pd.read_parquet(formats.tables.measures_path(run, family))
        assert (table.loc[table.step == 10, "value"] == -123.0).all(), family
        scratch = pd.read_parquet(formats.tables.measures_path(fresh, family))
        mine, theirs = (t[t.step == 20].drop(columns="run").sort_values(
            [c for c in ("metric", "layer", "split", "chain", "frequency", "tolerance") if c in t]).reset_index(drop=True)
            for t in (table, scratch))
        pd.testing.assert_frame_equal(mine, theirs, obj=family)
        assert set(mine["source_sha256"]) == {sha256(checkpoint(run, 20))}


def test_stale_rows_whose_features_are_refused_are_dropped(probed):
    run, other = probed
    assert invoke("measure", run, "--metric", "collapse").exit_code == 0
    rewrite_checkpoint(run, other)  # features of step 20 now belong to the checkpoint it replaced
    result = invoke("measure", run, "--metric", "collapse")
    assert result.exit_code == 1
    assert lines_with(result.stderr, str(features(run, 20)))
    table = pd.read_parquet(formats.tables.measures_path(run, "collapse"))
    assert sorted(table["step"].unique()) == [0, 10, 30, 40]


def strip_fingerprint(path: Path) -> None:
    """The file as a probe before fingerprints wrote it: the same tensors, no fingerprint keys."""
    tensors, found = formats.tensors.load_tensors(path)
    for key in ("grokscope.checkpoint_sha256", "grokscope.data_sha256"):
        found.pop(key)
    formats.tensors.save_tensors(path, tensors, found)


def test_older_files_without_a_fingerprint_are_kept_unless_forced(probed):
    run, other = probed
    rewrite_checkpoint(run, other)  # unknowable for a file that records no checkpoint
    strip_fingerprint(features(run, 20))
    result = invoke("probe", run)
    assert result.exit_code == 0 and "0 probed, 5 already stored" in result.stderr
    assert "grokscope.checkpoint_sha256" not in metadata(features(run, 20))
    assert invoke("measure", run, "--metric", "collapse").exit_code == 0
    result = invoke("probe", run, "--force")
    assert result.exit_code == 0 and "5 probed" in result.stderr
    assert metadata(features(run, 20))["grokscope.checkpoint_sha256"] == sha256(checkpoint(run, 20))


def test_an_older_file_with_another_step_is_still_caught(probed):
    run, _ = probed
    strip_fingerprint(features(run, 40))
    shutil.copy2(features(run, 40), features(run, 20))
    result = invoke("probe", run)
    assert result.exit_code == 0 and len(lines_with(result.stderr, "grokscope.step is 40")) == 1


@pytest.mark.parametrize("folder, command", [("features", ("probe",)), ("measures", ("measure", "--metric", "collapse"))])
def test_a_symlinked_folder_is_refused_by_name(trained, tmp_path, folder, command):
    run = Path(shutil.copytree(trained[0], tmp_path / "run"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, run / folder)
    result = invoke(*command[:1], run, *command[1:])
    assert result.exit_code != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(run / folder) in errors[0] and "symlink" in errors[0], result.stderr
    assert list(elsewhere.iterdir()) == []
    assert "Traceback" not in result.output
