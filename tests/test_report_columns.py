"""report's aligned table: only the columns that apply to its rows, every column with --all-columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from grokscope.cli import app
from grokscope.config import ModelConfig, OptimConfig, RunConfig, TaskConfig
from grokscope.plotting.summary import COLUMNS

STEPS = np.arange(0, 1001, 50)
TRANSFORMER_ONLY = ("d_model", "n_heads", "d_mlp", "layer_norm")


def write_run(root: Path, name: str, model: ModelConfig, optim: OptimConfig) -> Path:
    """A run that memorises at step 100 and never generalises; no measure tables."""
    config = RunConfig(name=name, task=TaskConfig(p=11), model=model, optim=optim).resolved()
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"schema": "grokscope.run/1", **config.to_dict()}))
    train_acc = np.where(STEPS >= 100, 1.0, 0.2)
    pd.DataFrame({"step": STEPS, "train_loss": 1 - train_acc, "train_acc": train_acc,
                  "test_loss": np.ones(len(STEPS)), "test_acc": np.full(len(STEPS), 0.1)}).to_parquet(run_dir / "history.parquet")
    return run_dir


def header(*args) -> list[str]:
    result = CliRunner().invoke(app, ["report", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()[0].split()


def test_an_mlp_run_shows_neither_transformer_settings_nor_empty_columns(tmp_path):
    run = write_run(tmp_path, "mlp", ModelConfig(width=16), OptimConfig())
    columns = header(run)
    assert not set(TRANSFORMER_ONLY) & set(columns)
    assert "momentum" not in columns  # an AdamW run: SGD's momentum does not apply
    assert {"beta1", "beta2", "eps"} <= set(columns)
    # Never generalised, no oinfo or collapse table: those columns are empty in its row.
    for empty in ("generalization_step", "grokking_gap", "synergy_min", "rnc1_test", "diverged_step"):
        assert empty not in columns
    assert {"run", "memorization_step", "phase", "weight_decay"} <= set(columns)
    # Every column is still there on request, and in csv.
    assert header(run, "--all-columns") == list(COLUMNS)
    csv = CliRunner().invoke(app, ["report", str(run), "--format", "csv"])
    assert csv.stdout.splitlines()[0].split(",") == list(COLUMNS)


def test_a_column_shows_where_one_row_uses_it(tmp_path):
    write_run(tmp_path, "mlp", ModelConfig(width=16), OptimConfig())
    write_run(tmp_path, "transformer", ModelConfig(kind="transformer", d_model=32, n_heads=2, d_mlp=64),
              OptimConfig(name="sgd", momentum=0.9))
    columns = header(tmp_path)
    assert set(TRANSFORMER_ONLY) <= set(columns)
    assert {"momentum", "beta1"} <= set(columns)
