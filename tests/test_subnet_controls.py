"""grokscope subnet --control random: random neuron sets of exactly the multiplet's size from the
same layer, seeded per draw; the children train from the parent's initialisation and split, say
what they are in run.json, and plot subnet shows them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


def test_a_plain_sub_network_run_json_has_no_control_keys():
    from grokscope.config import SubnetConfig

    record = SubnetConfig(parent="/x", parent_run="x", rule="min", step=3, bins="0,2", synergy=-0.5,
                          layer="layers.0", inverse=False, neurons=[1, 4])
    config = RunConfig(subnet=record)
    assert set(config.to_dict()["subnet"]) == {"parent", "parent_run", "rule", "step", "bins", "synergy", "layer",
                                               "inverse", "neurons"}
    assert RunConfig.from_dict(config.to_dict()) == config
    control = RunConfig(subnet=SubnetConfig(**{**record.__dict__, "control": "random", "draw": 2, "control_seed": 5}))
    assert control.to_dict()["subnet"]["draw"] == 2
    assert RunConfig.from_dict(control.to_dict()) == control
