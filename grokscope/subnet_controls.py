"""Size-matched random controls for a sub-network (``grokscope subnet --control random``).

Clauw et al. (2024, §6) compare the synergistic multiplet's sub-network with its inverse only; the
two are rarely the same size (134 and 116 of 250 neurons on the default weight-decay-2 run), so a
difference in when they generalise may be width alone. A control retrains a random set of exactly
the multiplet's size from the same layer, from the same initialisation and split, so that the
multiplet's generalisation step is set against a distribution of same-sized sub-networks.

Draw ``j`` of base seed ``s`` is ``numpy.random.default_rng([s, j]).choice(candidates, size,
replace=False)`` sorted ascending: numpy's ``SeedSequence`` of the two integers, so each draw is
reproducible on its own (draw 3 is the same set whether 4 or 40 draws are asked for) and draws
differ from each other. The candidates are every neuron of the layer (those the parent trains,
when the parent is itself a sub-network): the multiplet's own neurons among them, since a random
set of that size is the question, not a set disjoint from the multiplet.
"""

from __future__ import annotations

import numpy as np

from grokscope.errors import GrokscopeError

CONTROLS = ("random",)


def random_neuron_sets(candidates, size: int, draws: int, base_seed: int = 0) -> list[list[int]]:
    """``draws`` random sets of ``size`` distinct neurons out of ``candidates``, each ascending;
    draw ``j`` from ``numpy.random.default_rng([base_seed, j])`` (see the module docstring)."""
    given = np.asarray(list(candidates), dtype=np.int64)
    pool = np.unique(given)
    if len(pool) != len(given):
        raise GrokscopeError("--control: the layer's neurons are named twice")
    if size < 1 or size > len(pool):
        raise GrokscopeError(f"--control random: cannot draw {size} of the layer's {len(pool)} neurons")
    if draws < 1:
        raise GrokscopeError(f"--draws: must be at least 1, got {draws}")
    if base_seed < 0:
        raise GrokscopeError(f"--control-seed: must be >= 0, got {base_seed}")
    return [sorted(int(n) for n in np.random.default_rng([base_seed, j]).choice(pool, size, replace=False))
            for j in range(draws)]


def control_configs(parent_dir, parent, choice, size: int, candidates, draws: int, base_seed: int = 0) -> list:
    """The RunConfigs of ``draws`` random controls of the multiplet ``choice`` (a
    :class:`grokscope.subnet.Choice`) of ``parent`` (its RunConfig): ``size`` neurons each, drawn
    from ``candidates`` by :func:`random_neuron_sets`; same settings and seed as the parent (so the
    same initialisation and split), named ``PARENT-subnet-RULE-randomJ``, the ``subnet`` record
    that of the multiplet with the drawn neurons and ``control`` ``{"kind": "random", "draw": j,
    "base_seed": base_seed}``."""
    import dataclasses
    import os

    from grokscope.config import SubnetConfig

    configs = []
    for draw, neurons in enumerate(random_neuron_sets(candidates, size, draws, base_seed)):
        record = SubnetConfig(parent=os.path.abspath(parent_dir), parent_run=parent.name, rule=choice.spec.text,
                              step=choice.step, bins=choice.bins, synergy=choice.synergy, layer=choice.layer,
                              inverse=False, neurons=neurons,
                              control={"kind": "random", "draw": draw, "base_seed": base_seed})
        configs.append(dataclasses.replace(parent, name=f"{parent.name}-subnet-{choice.spec.label}-random{draw}",
                                           subnet=record))
    return configs
