"""probe's disk use: float16 storage on request (recorded in each file and read back as float32),
the size said before a large probe, and the summary's written bytes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from grokscope import formats
from grokscope.cli import app
from grokscope.pipeline import probe_run as probe_command
from grokscope.features import stored_features


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    result = invoke("train", "--p", 7, "--width", 16, "--steps", 20, "--save-every", 10, "--save-log", 0,
                    "--out", out, "-q")
    assert result.exit_code == 0, result.output
    return out / "add-p7"


@pytest.fixture
def run(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "add-p7"))


def test_float16_storage_is_recorded_and_read_back_as_float32(run, tmp_path):
    full = Path(shutil.copytree(run, tmp_path / "full"))
    assert invoke("probe", full, "-q").exit_code == 0
    result = invoke("probe", run, "--storage", "float16")
    assert result.exit_code == 0, result.output
    assert "--storage float16" in result.stderr
    for step in (0, 10, 20):
        half, single = formats.features.features_path(run, step), formats.features.features_path(full, step)
        with safe_open(str(half), framework="pt") as handle:
            assert handle.metadata()[formats.features.STORAGE_KEY] == "float16"
            assert handle.get_tensor("layers.0").dtype == torch.float16
        with safe_open(str(single), framework="pt") as handle:
            assert formats.features.STORAGE_KEY not in handle.metadata()  # the default format is unchanged
            expected = handle.get_tensor("layers.0")
        _, layers, _ = stored_features(half)
        assert layers["layers.0"].dtype == torch.float32
        assert torch.equal(layers["layers.0"], expected.to(torch.float16).to(torch.float32))
        assert half.stat().st_size < 0.6 * single.stat().st_size

    # A float32 probe does not take the float16 files for its own, and the other way round.
    again = invoke("probe", run, "-q")
    assert again.exit_code == 0
    with safe_open(str(formats.features.features_path(run, 0)), framework="pt") as handle:
        assert handle.get_tensor("layers.0").dtype == torch.float32


def test_a_file_whose_dtype_contradicts_its_metadata_is_refused(run):
    assert invoke("probe", run, "-q").exit_code == 0
    path = formats.features.features_path(run, 10)
    tensors, metadata = formats.tensors.load_tensors(path)
    metadata[formats.features.STORAGE_KEY] = "float16"  # but the tensors are float32
    formats.tensors.save_tensors(path, tensors, metadata)
    formats.run.checkpoint_path(run, 10).unlink()  # nothing to recompute it from
    result = invoke("measure", run, "--metric", "collapse", "-q")
    assert result.exit_code == 1
    assert f"error: {path}: layer 'layers.0' is stored as float32, but the file's metadata says float16" \
        in result.stderr


def test_measure_gives_the_same_values_from_float16_files_within_their_rounding(run, tmp_path):
    memory = Path(shutil.copytree(run, tmp_path / "memory"))
    assert invoke("probe", run, "--storage", "float16", "-q").exit_code == 0
    for target in (run, memory):
        assert invoke("measure", target, "--metric", "rnc1", "-q").exit_code == 0
    half = pd.read_parquet(formats.tables.measures_path(run, "collapse"))
    single = pd.read_parquet(formats.tables.measures_path(memory, "collapse"))
    assert np.allclose(half["value"], single["value"], rtol=2e-3)


def test_probe_says_how_much_it_will_write_and_what_it_wrote(run, monkeypatch):
    first = invoke("probe", run, "--steps", "0")
    size = formats.features.features_path(run, 0).stat().st_size
    assert f"{size} B written" in first.stderr or f"{size / 1000:.1f} kB written" in first.stderr
    # Above the threshold (1 GiB by default; here lowered to below one file), a warning with the total.
    monkeypatch.setattr(probe_command, "LARGE_FEATURES_BYTES", size)
    result = invoke("probe", run)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "of features to write" in warnings[0] and "--storage float16" in warnings[0]
    assert "measure does not need them" in warnings[0]
