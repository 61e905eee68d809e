"""measure --metric llc / spectra end to end (grokscope runs and a foreign series), plot llc / alpha."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

from grokscope import formats
from grokscope.cli import app

# Small SGLD settings: a tiny run's checkpoints in well under a second each.
SGLD = ("--llc-chains", "2", "--llc-draws", "40", "--llc-burnin", "10", "--llc-batch-size", "8")


def invoke(*args, input: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    result = invoke("train", "--p", "7", "--width", "16", "--steps", "24", "--save-every", "8", "--save-log", "0",
                    "--out", out, "-q")
    assert result.exit_code == 0, result.output
    return out / "add-p7"


def copy_run(run: Path, tmp_path: Path, name: str | None = None) -> Path:
    target = tmp_path / (name or run.name)
    shutil.copytree(run, target)
    return target


def table(home: Path, family: str) -> pd.DataFrame:
    return pd.read_parquet(formats.tables.measures_path(home, family))


def check_llc_rows(rows: pd.DataFrame, steps: list[int], chains: int) -> None:
    """Every checkpoint's LLC is the mean of its chains and each chain's value is
    n beta * (its mean loss - the reference loss), from the rows alone."""
    assert sorted(set(rows["step"])) == steps
    for step, at in rows.groupby("step"):
        per_chain = at[at["metric"] == "llc_chain"].sort_values("chain")
        assert list(per_chain["chain"]) == list(range(chains))
        assert at.loc[at["metric"] == "llc", "chain"].isna().all()
        nbeta = float(at.loc[at["metric"] == "llc_nbeta", "value"].iloc[0])
        reference = float(at.loc[at["metric"] == "llc_reference_loss", "value"].iloc[0])
        mean_loss = at[at["metric"] == "llc_mean_loss"].sort_values("chain")["value"].to_numpy()
        np.testing.assert_allclose(per_chain["value"].to_numpy(), nbeta * (mean_loss - reference), rtol=1e-9)
        llc = float(at.loc[at["metric"] == "llc", "value"].iloc[0])
        assert llc == pytest.approx(per_chain["value"].mean(), rel=1e-12), step
        sd = float(at.loc[at["metric"] == "llc_sd", "value"].iloc[0])
        assert sd == pytest.approx(per_chain["value"].std(ddof=1), rel=1e-9)
        assert (at.loc[at["metric"] == "llc_diverged", "value"] == 0).all()


def test_measure_llc_and_spectra_on_a_run(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    result = invoke("measure", run, "--metric", "llc,spectra", *SGLD, "--seed", "3", "-q")
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.split()) == sorted(str(formats.tables.measures_path(run, f))
                                                   for f in ("llc", "spectra"))
    llc = table(run, "llc")
    check_llc_rows(llc, [0, 8, 16, 24], chains=2)
    params = json.loads(llc["params"].iloc[0])
    assert params == {"llc_step_size": None, "llc_localization": 100.0, "llc_nbeta": None, "llc_chains": 2,
                      "llc_draws": 40, "llc_burnin": 10, "llc_batch_size": 8, "seed": 3}
    # The step size used (the MLP's default) is a row; n beta is n / log n of the training split.
    assert set(llc.loc[llc["metric"] == "llc_step_size", "value"]) == {1e-3}
    n = round(0.4 * 49)  # the task's train_fraction of p * p pairs
    np.testing.assert_allclose(llc.loc[llc["metric"] == "llc_nbeta", "value"], n / math.log(n), rtol=1e-12)
    state = load_file(str(run / "checkpoints" / "step-00000024.safetensors"))
    d = sum(v.numel() for v in state.values())
    assert set(llc.loc[llc["metric"] == "llc_parameters", "value"]) == {float(d)}
    # spectra: every weight matrix, lambda_max its largest squared singular value; the 7-row
    # output layer has too few eigenvalues for a fit and is NaN, said once.
    spectra = table(run, "spectra")
    last = spectra[spectra["step"] == 24].set_index(["metric", "layer"])["value"]
    matrices = {k: v for k, v in state.items() if v.ndim == 2}
    assert set(spectra["layer"]) == set(matrices)
    for name, weight in matrices.items():
        top = np.linalg.svd(weight.double().numpy(), compute_uv=False)[0] ** 2
        assert last[("lambda_max", name)] == pytest.approx(top, rel=1e-9)
    small = [name for name, w in matrices.items() if min(w.shape) < 8]
    assert small and all(math.isnan(last[("alpha", name)]) for name in small)
    assert "fewer than min_evals" in result.stderr


def test_llc_same_command_same_values_and_workers_equal_serial(tiny_run, tmp_path):
    one, two, three = (copy_run(tiny_run, tmp_path, name) for name in ("one", "two", "three"))
    for home, extra in ((one, ()), (two, ()), (three, ("--workers", "2"))):
        result = invoke("measure", home, "--metric", "llc", *SGLD, *extra, "-q")
        assert result.exit_code == 0, result.output
    columns = ["step", "metric", "chain", "value"]
    first = table(one, "llc")[columns].sort_values(columns[:3]).reset_index(drop=True)
    for home in (two, three):
        pd.testing.assert_frame_equal(first, table(home, "llc")[columns].sort_values(columns[:3]).reset_index(drop=True))
    # Another seed samples other chains: the values depend on it.
    other = copy_run(tiny_run, tmp_path, "other")
    assert invoke("measure", other, "--metric", "llc", *SGLD, "--seed", "1", "-q").exit_code == 0
    assert not np.allclose(first["value"], table(other, "llc")[columns].sort_values(columns[:3])["value"])


def test_diverging_step_size_gives_nan_rows_and_one_warning(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    result = invoke("measure", run, "--metric", "llc", *SGLD, "--llc-step-size", "50", "--steps", "16-")
    assert result.exit_code == 0, result.output
    rows = table(run, "llc")
    for metric in ("llc", "llc_sd", "llc_chain"):
        assert rows.loc[rows["metric"] == metric, "value"].isna().all(), metric
    assert (rows.loc[rows["metric"] == "llc_diverged", "value"] == 1).any()
    warnings = [line for line in result.stderr.splitlines() if "llc is NaN" in line]
    assert len(warnings) <= 2 and warnings, result.stderr  # one line per reason, steps listed
    assert "--llc-step-size 50" in warnings[0]


@pytest.mark.parametrize("args, named", [
    (("--llc-chains", "0"), "--llc-chains"), (("--llc-draws", "0"), "--llc-draws"),
    (("--llc-step-size", "0"), "--llc-step-size"), (("--llc-nbeta", "-1"), "--llc-nbeta"),
    (("--llc-localization", "-1"), "--llc-localization"), (("--llc-batch-size", "500"), "--llc-batch-size"),
])
def test_bad_llc_options_are_one_line_naming_the_option(tiny_run, tmp_path, args, named):
    result = invoke("measure", copy_run(tiny_run, tmp_path), "--metric", "llc", *args, "-q")
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and named in lines[0], result.output


def test_metric_all_leaves_llc_and_spectra_to_be_named():
    from grokscope.families import resolve_metrics

    assert "llc" not in resolve_metrics(["all"]) and "spectra" not in resolve_metrics(["all"])
    assert {"llc", "spectra", "weights"} <= set(resolve_metrics(["all,llc,spectra"]))
    assert resolve_metrics(["llc_sd"]) == {"llc": {"llc_sd"}}


# --- a foreign series: plain torch state dicts, probed with --model and --data ------------------

FACTORY = '''
from torch import nn


def mlp():
    return nn.Sequential(nn.Linear(10, 24), nn.ReLU(), nn.Linear(24, 5))
'''


@pytest.fixture(scope="module")
def foreign(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("foreign")
    (folder / "nets.py").write_text(FACTORY)
    p = 5
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    x = np.zeros((p * p, 2 * p), dtype=np.float32)
    x[np.arange(p * p), a] = 1.0
    x[np.arange(p * p), p + b] = 1.0
    y = ((a + b) % p).astype(np.int64)
    split = (np.random.default_rng(0).random(p * p) > 0.6).astype(np.int64)
    np.savez(folder / "data.npz", X=x, y=y, split=split)
    series = folder / "series"
    series.mkdir()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 24), nn.ReLU(), nn.Linear(24, 5))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1.0)
    inputs, labels = torch.from_numpy(x[split == 0]), torch.from_numpy(y[split == 0])
    for step in range(21):
        if step % 10 == 0:
            torch.save(model.state_dict(), series / f"step_{step}.pt")
        loss = nn.functional.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return folder


def test_foreign_series_llc_and_spectra(foreign, tmp_path):
    series = tmp_path / "series"
    shutil.copytree(foreign / "series", series)
    probed = invoke("probe", series, "--model", foreign / "nets.py:mlp", "--data", foreign / "data.npz", "-q")
    assert probed.exit_code == 0, probed.output
    measured = invoke("measure", "-", "--metric", "llc,spectra", *SGLD, "-q", input=probed.stdout)
    assert measured.exit_code == 0, measured.output
    tables = {Path(p).stem: pd.read_parquet(p) for p in measured.stdout.split()}
    assert set(tables) == {"llc", "spectra"}
    check_llc_rows(tables["llc"], [0, 10, 20], chains=2)
    # Cross-entropy on the class logits at the checkpoint: the reference loss, recomputed here.
    data = np.load(foreign / "data.npz")
    train = data["split"] == 0
    model = nn.Sequential(nn.Linear(10, 24), nn.ReLU(), nn.Linear(24, 5))
    model.load_state_dict(torch.load(series / "step_20.pt", weights_only=True))
    with torch.no_grad():
        want = float(nn.functional.cross_entropy(model(torch.from_numpy(data["X"][train])),
                                                 torch.from_numpy(data["y"][train])))
    rows = tables["llc"]
    got = rows[(rows["step"] == 20) & (rows["metric"] == "llc_reference_loss")]["value"].iloc[0]
    assert got == pytest.approx(want, rel=1e-5)
    assert set(tables["spectra"]["layer"]) == {"0.weight", "2.weight"}
    lam = tables["spectra"].set_index(["step", "metric", "layer"])["value"][(20, "lambda_max", "0.weight")]
    top = np.linalg.svd(model[0].weight.detach().double().numpy(), compute_uv=False)[0] ** 2
    assert lam == pytest.approx(top, rel=1e-6)


# --- plot llc, plot alpha ---------------------------------------------------------------------


def test_plot_llc_and_alpha_from_a_runs_tables(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    assert invoke("measure", run, "--metric", "llc,spectra", *SGLD, "-q").exit_code == 0
    for kind in ("llc", "alpha"):
        figure = tmp_path / f"{kind}.png"
        result = invoke("plot", kind, run, "-o", figure)
        assert result.exit_code == 0, (kind, result.output)
        assert result.stdout.strip() == str(figure) and figure.stat().st_size > 1000


def test_plot_llc_without_llc_rows_names_the_command(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    result = invoke("plot", "llc", run, "-o", tmp_path / "x.png")
    assert result.exit_code != 0 and "measure --metric llc" in result.output
