"""grokscope subnet --control random: random neuron sets of exactly the multiplet's size from the
same layer, seeded per draw; the children train from the parent's initialisation and split, say
what they are in run.json, and plot subnet shows them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from grokscope import formats
from grokscope.cli import app
from grokscope.config import RunConfig
from grokscope.errors import GrokscopeError
from grokscope.subnet_controls import random_neuron_sets

WIDTH = 24
TINY = ["--p", "11", "--width", str(WIDTH), "--steps", "60", "--save-every", "20", "--save-log", "6",
        "--eval-every", "5", "--weight-decay", "1"]


def test_random_sets_have_the_size_come_from_the_candidates_and_are_seeded_per_draw():
    candidates = [1, 3, 4, 7, 8, 10, 12, 15, 16, 20]
    sets = random_neuron_sets(candidates, 4, 6, base_seed=11)
    assert len(sets) == 6
    for chosen in sets:
        assert len(chosen) == 4 and len(set(chosen)) == 4 and chosen == sorted(chosen)
        assert set(chosen) <= set(candidates)
    assert len({tuple(s) for s in sets}) == 6  # the draws differ
    # reproducible for a seed, draw by draw: draw j is the same whatever the number of draws
    assert random_neuron_sets(candidates, 4, 6, base_seed=11) == sets
    assert random_neuron_sets(candidates, 4, 2, base_seed=11) == sets[:2]
    assert random_neuron_sets(reversed(candidates), 4, 6, base_seed=11) == sets  # the order given is no matter
    assert random_neuron_sets(candidates, 4, 6, base_seed=12) != sets
    # the stated derivation: draw j from numpy's default_rng([base_seed, j])
    expected = sorted(np.random.default_rng([11, 3]).choice(np.array(sorted(candidates)), 4, replace=False).tolist())
    assert sets[3] == expected


def test_every_neuron_is_as_likely_to_be_drawn():
    """Known structure: each of n neurons is in a set of k with probability k / n."""
    n, k, draws = 20, 5, 4000
    counts = np.zeros(n)
    for chosen in random_neuron_sets(range(n), k, draws, base_seed=0):
        counts[chosen] += 1
    expected = draws * k / n
    sd = np.sqrt(draws * (k / n) * (1 - k / n))
    assert np.abs(counts - expected).max() < 4.5 * sd


@pytest.mark.parametrize("args, needle", [
    (([0, 1, 2], 4, 1, 0), "cannot draw 4"),
    (([0, 1, 2], 0, 1, 0), "cannot draw 0"),
    (([0, 1, 2], 2, 0, 0), "--draws"),
    (([0, 1, 2], 2, 1, -1), "--control-seed"),
    (([0, 1, 1], 2, 1, 0), "twice"),
])
def test_impossible_draws_are_one_line_errors(args, needle):
    with pytest.raises(GrokscopeError, match=needle):
        random_neuron_sets(*args)


def test_run_json_records_a_control_and_reads_back():
    from grokscope.config import SubnetConfig, hyperparameters

    record = SubnetConfig(parent="/x", parent_run="x", rule="min", step=3, bins="0,2", synergy=-0.5,
                          layer="layers.0", inverse=False, neurons=[1, 4])
    config = RunConfig(subnet=record)
    assert config.to_dict()["subnet"]["control"] is None and hyperparameters(config)["subnet_control"] is None
    assert RunConfig.from_dict(config.to_dict()) == config
    # a run.json written before controls existed has no control key, and reads as no control
    old = config.to_dict()
    del old["subnet"]["control"]
    assert RunConfig.from_dict(old) == config
    control = RunConfig(subnet=SubnetConfig(**{**record.__dict__,
                                               "control": {"kind": "random", "draw": 2, "base_seed": 5}}))
    assert RunConfig.from_dict(json.loads(json.dumps(control.to_dict()))) == control
    assert hyperparameters(control)["subnet_control"] == "random"


# --- end to end: the controls train ---------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("controls")
    assert invoke("train", *TINY, "--out", root, "-q").exit_code == 0
    run = root / "add-p11"
    result = invoke("measure", run, "--metric", "o-info", "--bins", "4", "--tie-draws", "2", "-q")
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def controls(parent) -> list[Path]:
    result = invoke("subnet", parent, "--at", "min", "--control", "random", "--draws", "2", "-q")
    assert result.exit_code == 0, result.output
    printed = [Path(p) for p in result.stdout.split()]
    assert [p.name for p in printed] == ["add-p11-subnet-min", "add-p11-subnet-min-random0", "add-p11-subnet-min-random1"]
    return printed


def states(run: Path) -> list[dict]:
    return [formats.run.load_checkpoint(path) for _, path in formats.run.list_checkpoints(run)]


def test_controls_are_random_sets_of_the_multiplets_size_trained_from_the_parents_start(parent, controls):
    multiplet = formats.run.read_run(controls[0]).subnet
    start = states(parent)[0]
    drawn = []
    for run in controls[1:]:
        document = formats.run.read_run_config(run)
        record = formats.run.read_run(run).subnet
        assert document["subnet"]["control"] == {"kind": "random", "draw": len(drawn), "base_seed": 0}
        assert (record.step, record.bins, record.rule, record.layer) == (multiplet.step, multiplet.bins, "min", "layers.0")
        assert len(record.neurons) == len(multiplet.neurons) and set(record.neurons) <= set(range(WIDTH))
        assert document["seed"] == formats.run.read_run_config(parent)["seed"]
        assert document["split_sha256"] == formats.run.read_run_config(parent)["split_sha256"]
        masked = sorted(set(range(WIDTH)) - set(record.neurons))
        checkpoints = states(run)
        for state in checkpoints:
            assert torch.count_nonzero(state["layers.0.weight"][masked]) == 0
            assert torch.count_nonzero(state["layers.0.bias"][masked]) == 0
        assert torch.equal(checkpoints[0]["layers.0.weight"][record.neurons], start["layers.0.weight"][record.neurons])
        moved = (checkpoints[-1]["layers.0.weight"][record.neurons] - checkpoints[0]["layers.0.weight"][record.neurons])
        assert bool((moved.abs().amax(dim=1) > 0).all())
        drawn.append(record.neurons)
    assert drawn == random_neuron_sets(range(WIDTH), len(multiplet.neurons), 2, base_seed=0)
    assert drawn[0] != drawn[1]
    columns = pd.read_csv(io.StringIO(invoke("report", parent.parent, "-f", "csv").stdout)).set_index("run")
    assert columns.loc["add-p11-subnet-min-random1", "subnet_control"] == "random"
    assert pd.isna(columns.loc["add-p11-subnet-min", "subnet_control"])


def test_more_draws_with_resume_add_runs_and_a_seed_changes_the_sets(parent, controls, tmp_path):
    result = invoke("subnet", parent, "--at", "min", "--control", "random", "--draws", "3", "--resume")
    assert result.exit_code == 0, result.output
    assert result.output.count("already complete, skipped") == 3
    assert (parent.parent / "add-p11-subnet-min-random2").is_dir()
    other = invoke("subnet", parent, "--at", "min", "--control", "random", "--draws", "1", "--control-seed", "9",
                   "--out", tmp_path, "-q")
    assert other.exit_code == 0, other.output
    seeded = formats.run.read_run(tmp_path / "add-p11-subnet-min-random0").subnet.neurons
    size = len(formats.run.read_run(controls[0]).subnet.neurons)
    assert seeded == random_neuron_sets(range(WIDTH), size, 1, base_seed=9)[0]
    assert seeded != formats.run.read_run(controls[1]).subnet.neurons


def test_plot_subnet_marks_every_controls_generalisation_step(parent, controls, tmp_path):
    from grokscope.plotting.data import load
    from grokscope.plotting.style import FigureOptions
    from grokscope.plotting.subnet import subnet

    figure = subnet(load([str(parent), *map(str, controls)]), FigureOptions(threshold=0.5))
    marks = next(layer.geom.data for layer in figure.layers
                 if isinstance(layer.geom.data, pd.DataFrame) and "reached" in layer.geom.data)
    assert sorted(marks["role"].astype(str)) == ["original", "random control", "random control", "sub-network"]
    for _, mark in marks.iterrows():  # by hand: the first evaluation with test accuracy >= 0.5
        history = pd.read_parquet(Path(parent.parent / mark["run"]) / "history.parquet")
        reached = history.loc[history["test_acc"] >= 0.5, "step"]
        expected = reached.iloc[0] if len(reached) else history["step"].iloc[-1]
        assert mark["step"] == expected and mark["reached"] == ("yes" if len(reached) else "never")
    out = tmp_path / "subnet.png"
    result = invoke("plot", "subnet", parent, "-o", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, needle", [
    (["--control", "shuffled", "--draws", "2"], "--control: unknown 'shuffled'"),
    (["--draws", "2"], "give both"),
    (["--control", "random"], "give both"),
    (["--control", "random", "--draws", "0"], "--draws: must be at least 1"),
])
def test_control_mistakes_are_one_line_errors(parent, args, needle):
    result = invoke("subnet", parent, "--at", "min", *args)
    assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output
