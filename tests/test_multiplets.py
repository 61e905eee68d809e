"""Neuron binning and the synergy / redundancy search against brute force over bin multiplets."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import digamma

from grokscope.errors import GrokscopeError
from grokscope.measures import copula as copula_module
from grokscope.measures import multiplets as multiplets_module
from grokscope.measures import union_lattice
from grokscope.measures.copula import _tie_covariances
from grokscope.measures.multiplets import cluster_neurons, independent_columns, oinfo_search
from grokscope.measures.oinfo import copnorm, copula_covariance, oinfo_of_sets
from grokscope.measures.union_lattice import _union_values


def relu_features(n_samples=600, n_neurons=24, seed=0):
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n_samples, 5))
    pre = latent @ rng.standard_normal((5, n_neurons)) + 0.5 * rng.standard_normal(
        (n_samples, n_neurons))
    return np.maximum(pre, 0.0)


def brute_search(features, labels, variables, min_size=2):
    """Every multiplet of bins, evaluated one by one; (min, argmin, max, argmax) over them."""
    bins = sorted(set(labels))
    results = {}
    if variables == "neurons":
        z = copnorm(features, ties="index")
        cov = np.cov(z, rowvar=False)
        for k in range(min_size, len(bins) + 1):
            for m in itertools.combinations(bins, k):
                neurons = [i for i in range(len(labels)) if labels[i] in m]
                results[m] = oinfo_of_sets(cov, [neurons], len(features))[0]
    else:
        means = np.column_stack([features[:, labels == b].mean(1) for b in bins])
        cov = np.cov(copnorm(means, ties="index"), rowvar=False)
        for k in range(min_size, len(bins) + 1):
            for m in itertools.combinations(bins, k):
                results[m] = oinfo_of_sets(cov, [list(m)], len(features))[0]
    low = min(results, key=results.get)
    high = max(results, key=results.get)
    return results[low], low, results[high], high


def bins_text(m):
    return ",".join(str(b) for b in m)


def test_cluster_neurons_groups_copies_and_numbers_bins_by_first_neuron():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((200, 3)) * 5
    # neurons 0, 3, 4 follow source 0; 1, 5 source 1; 2 source 2
    features = base[:, [0, 1, 2, 0, 0, 1]] + 0.01 * rng.standard_normal((200, 6))
    labels = cluster_neurons(features, n_bins=3)
    np.testing.assert_array_equal(labels, [0, 1, 2, 0, 0, 1])


def test_cluster_neurons_rejects_too_many_bins():
    with pytest.raises(GrokscopeError, match="n_bins"):
        cluster_neurons(np.ones((10, 3)), n_bins=4)


@pytest.mark.parametrize("variables", ["neurons", "bins"])
def test_exhaustive_search_finds_the_brute_force_extremes(variables):
    features = relu_features()
    labels = cluster_neurons(features, n_bins=6)
    rows = oinfo_search(features, n_bins=6, variables=variables, ties="index", per_size=True)
    low, low_m, high, high_m = brute_search(features, labels, variables)
    overall = {r["metric"]: r for r in rows if r["scope"] == "overall"}
    assert overall["synergy"]["value"] == pytest.approx(low, abs=1e-10)
    assert overall["synergy"]["bins"] == bins_text(low_m)
    assert overall["redundancy"]["value"] == pytest.approx(high, abs=1e-10)
    assert overall["redundancy"]["bins"] == bins_text(high_m)
    assert overall["synergy"]["n_neurons"] == int(np.isin(labels, low_m).sum())
    sizes = sorted({r["size"] for r in rows if r["scope"] == "size"})
    assert sizes == [2, 3, 4, 5, 6]
    assert all(r["search"] == "exhaustive" and r["n_bins"] == 6 for r in rows)


def test_bins_and_neurons_modes_agree_when_each_bin_holds_one_neuron():
    features = relu_features(n_neurons=6, seed=2)
    common = dict(n_bins=6, ties="index", per_size=True, min_size=3)
    neurons = oinfo_search(features, variables="neurons", **common)
    bins = oinfo_search(features, variables="bins", **common)
    for a, b in zip(neurons, bins):
        assert (a["metric"], a["scope"], a["size"], a["bins"]) == \
            (b["metric"], b["scope"], b["size"], b["bins"])
        assert a["value"] == pytest.approx(b["value"], abs=1e-10)


def test_dead_neurons_are_excluded_and_counted():
    features = relu_features(n_neurons=12, seed=3)
    with_dead = np.insert(features, [2, 7], 0.0, axis=1)  # two all-zero neurons
    rows = oinfo_search(with_dead, n_bins=4, ties="index")
    reference = oinfo_search(features, n_bins=4, ties="index")
    assert all(r["n_excluded"] == 2 for r in rows)
    assert [r["value"] for r in rows] == pytest.approx([r["value"] for r in reference], abs=1e-12)


def test_given_labels_with_an_empty_bin_leave_it_out():
    features = relu_features(n_neurons=8, seed=4)
    features[:, 7] = 0.0  # the only neuron of bin 9 is dead
    labels = np.array([0, 0, 3, 3, 5, 5, 5, 9])
    rows = oinfo_search(features, labels=labels, ties="index", per_size=True)
    assert all(r["n_bins"] == 3 and r["n_excluded"] == 1 for r in rows)
    assert {b for r in rows for b in r["bins"].split(",")} <= {"0", "3", "5"}


def test_greedy_and_annealing_match_exhaustive_on_a_small_problem():
    features = relu_features(n_neurons=16, seed=5)
    exhaustive = oinfo_search(features, n_bins=5, ties="index")
    for search in ("greedy", "annealing"):
        rows = oinfo_search(features, n_bins=5, ties="index", search=search)
        assert all(r["search"] == search for r in rows)
        found = {r["metric"]: r["value"] for r in rows}
        best = {r["metric"]: r["value"] for r in exhaustive}
        # a heuristic never beats the true extremes
        assert found["synergy"] >= best["synergy"] - 1e-12
        assert found["redundancy"] <= best["redundancy"] + 1e-12
    # with 5 bins and 2 x 300 steps x 16 chains, annealing visits every one of the 26 multiplets
    annealed = oinfo_search(features, n_bins=5, ties="index", search="annealing")
    assert [r["value"] for r in annealed] == pytest.approx([r["value"] for r in exhaustive])


def test_duplicated_and_dependent_neurons_are_dropped_and_counted():
    features = relu_features(n_neurons=6, seed=6)
    copies = np.column_stack([features, features[:, 0], 2.0 * features[:, 1] - features[:, 4]])
    rows = oinfo_search(copies, n_bins=3, ties="index")
    reference = oinfo_search(features, n_bins=3, ties="index")
    assert all(r["n_excluded"] == 2 for r in rows)
    assert [(r["bins"], r["value"]) for r in rows] == [(r["bins"], pytest.approx(r["value"], abs=1e-10))
                                                       for r in reference]


@pytest.mark.parametrize(("n_samples", "n_neurons"), [(40, 12), (9, 20)])
def test_independent_columns_keeps_a_basis_in_index_order(n_samples, n_neurons):
    rng = np.random.default_rng(n_samples)
    x = rng.normal(size=(n_samples, n_neurons))
    x[:, 3] = x[:, 1]  # a duplicate
    x[:, 7] = x[:, 0] - 2 * x[:, 2] + 5.0  # a combination (the constant goes with centring)
    keep = independent_columns(torch.from_numpy(x)).numpy()
    centred = x - x.mean(axis=0)
    # Brute force: a column is kept iff it raises the rank of the kept columns before it.
    kept = []
    for j in range(n_neurons):
        if np.linalg.matrix_rank(centred[:, kept + [j]]) > len(kept):
            kept.append(j)
    assert np.flatnonzero(keep).tolist() == kept
    assert len(kept) == min(n_neurons, n_samples - 1) - (2 if n_samples > n_neurons else 0)


@pytest.mark.parametrize("kwargs, message", [
    ({"variables": "layers"}, "variables"),
    ({"search": "random"}, "search"),
    ({"min_size": 5}, "min_size"),
    ({"labels": [0, 1]}, "labels"),
])
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(GrokscopeError, match=message):
        oinfo_search(relu_features(n_neurons=6), n_bins=3, **kwargs)


def planted_groups(seed=7):
    """Groups of unequal sizes (1 to 9 neurons): copies of one source (redundant), a sum of
    two sources with its parts (synergistic), independent noise."""
    rng = np.random.default_rng(seed)
    n = 800
    s1, s2, s3 = rng.standard_normal((3, n))
    columns, groups = [], []

    def add(cols):
        groups.append(list(range(len(columns), len(columns) + len(cols))))
        columns.extend(cols)

    add([s1 + 0.3 * rng.standard_normal(n) for _ in range(3)])
    add([s1 + 0.3 * rng.standard_normal(n)])
    add([s2 + 0.5 * rng.standard_normal(n) for _ in range(2)])
    add([s3 + 0.5 * rng.standard_normal(n) for _ in range(5)])
    add([s2 + s3 + 0.2 * rng.standard_normal(n)] + list(rng.standard_normal((8, n))))
    add(list(rng.standard_normal((4, n))))
    x = np.column_stack(columns)
    return np.cov(copnorm(x), rowvar=False), groups, n


def brute_oinfo(cov, subset, n_samples):
    """Definition written out: slogdet of every sub-covariance, Ince's bias, nats."""
    def h(s):
        k = len(s)
        bias = 0.5 * (k * np.log(2 / (n_samples - 1))
                      + sum(digamma((n_samples - i) / 2) for i in range(1, k + 1)))
        return 0.5 * (k * np.log(2 * np.pi * np.e)
                      + np.linalg.slogdet(cov[np.ix_(s, s)])[1]) - bias
    k = len(subset)
    return (k - 2) * h(subset) + sum(h([j]) - h([v for v in subset if v != j]) for j in subset)


@pytest.mark.parametrize("min_size, max_size", [(2, 6), (3, 4), (6, 6), (5, 6)])
def test_block_lattice_matches_the_direct_route_and_brute_force(min_size, max_size):
    cov, groups, n = planted_groups()
    multiplets = [m for k in range(min_size, max_size + 1)
                  for m in itertools.combinations(range(len(groups)), k)]
    unions = [[v for g in m for v in groups[g]] for m in multiplets]
    fast = _union_values(torch.tensor(cov), groups, n, min_size, max_size, True).numpy()
    direct = oinfo_of_sets(cov, unions, n, units="nats")
    np.testing.assert_allclose(fast, direct, rtol=0, atol=1e-10)
    for i in range(0, len(unions), 7):
        assert fast[i] == pytest.approx(brute_oinfo(cov, unions[i], n), abs=1e-10)
    if (0, 1) in multiplets:  # the four copies of s1: redundancy
        assert fast[multiplets.index((0, 1))] > 0.5


def test_search_in_neurons_mode_uses_groups_of_one_neuron_as_exact_pairs():
    features = relu_features(n_neurons=4, seed=8)
    rows = oinfo_search(features, n_bins=4, ties="index", per_size=True)
    pairs = [r for r in rows if r["scope"] == "size" and r["size"] == 2]
    assert pairs and all(r["value"] == 0.0 for r in pairs)


def test_cluster_neurons_matches_sklearn_ward():
    from sklearn.cluster import AgglomerativeClustering

    for seed in range(3):
        features = relu_features(n_samples=300, n_neurons=40, seed=seed)
        for n_bins in (2, 7):
            ours = cluster_neurons(features, n_bins=n_bins)
            theirs = AgglomerativeClustering(n_clusters=n_bins, linkage="ward").fit_predict(
                features.T)
            # same partition: each of our bins is exactly one of theirs
            pairs = set(zip(ours.tolist(), theirs.tolist()))
            assert len(pairs) == n_bins == len(set(ours.tolist()))


# --- ties: the search on the tie-averaged covariance, the spread over random tie orders -----------


def brute_values(cov, labels, n_samples, min_size=2):
    """O-information of the union of every multiplet of bins, one by one."""
    bins = sorted(set(labels))
    return {m: oinfo_of_sets(cov, [[i for i in range(len(labels)) if labels[i] in m]], n_samples)[0]
            for k in range(min_size, len(bins) + 1) for m in itertools.combinations(bins, k)}


def draw_covariances(features, seed, draws):
    """The covariances of the search's random tie orders; the first is copnorm's with ``seed``."""
    drawn = [c.numpy() for c in _tie_covariances(torch.tensor(features), "random", seed, draws)[1]]
    np.testing.assert_allclose(drawn[0], np.cov(copnorm(features, ties="random", seed=seed), rowvar=False),
                               rtol=0, atol=1e-13)
    return drawn


def test_average_ties_search_the_tie_averaged_covariance_and_report_the_spread_of_their_choice():
    features = relu_features(seed=11)
    labels = cluster_neurons(features, n_bins=5)
    rows = oinfo_search(features, labels=labels, per_size=True, ties="average", seed=4)
    values = brute_values(copula_covariance(features, ties="average"), labels, len(features))
    drawn = [brute_values(c, labels, len(features)) for c in draw_covariances(features, 4, 10)]
    assert all(r["draws"] == 10 for r in rows)
    for row in rows:
        multiplet = tuple(int(b) for b in row["bins"].split(","))
        chosen = {m: v for m, v in values.items() if row["scope"] == "overall" or len(m) == row["size"]}
        extreme = min(chosen.values()) if row["metric"] == "synergy" else max(chosen.values())
        assert row["value"] == pytest.approx(extreme, abs=1e-10)
        assert values[multiplet] == pytest.approx(extreme, abs=1e-10)
        assert row["value_sd"] == pytest.approx(np.std([d[multiplet] for d in drawn], ddof=1), rel=1e-8)


def test_random_ties_report_the_mean_over_their_draws_of_the_multiplet_chosen_on_their_mean():
    features = relu_features(seed=12)
    labels = cluster_neurons(features, n_bins=4)
    drawn = draw_covariances(features, 2, 3)
    pooled = brute_values(np.mean(drawn, axis=0), labels, len(features))
    per_draw = [brute_values(c, labels, len(features)) for c in drawn]
    rows = oinfo_search(features, labels=labels, tie_draws=3, seed=2)  # random ties: the default
    for row, pick in zip(rows, (min, max)):
        multiplet = pick(pooled, key=pooled.get)
        assert row["bins"] == bins_text(multiplet)
        assert row["value"] == pytest.approx(np.mean([d[multiplet] for d in per_draw]), abs=1e-10)
    single = oinfo_search(features, labels=labels, ties="random", tie_draws=1, seed=2)[0]
    assert math.isnan(single["value_sd"]) and single["draws"] == 1
    assert single["value"] == pytest.approx(min(per_draw[0].values()), abs=1e-10)


def test_index_ties_make_no_draws_and_bad_draw_counts_raise():
    features = relu_features(n_neurons=8, seed=13)
    rows = oinfo_search(features, n_bins=3, ties="index", tie_draws=5)
    assert all(r["draws"] == 0 and math.isnan(r["value_sd"]) for r in rows)
    for kwargs in ({"tie_draws": -1}, {"tie_draws": 2.5}, {"ties": "random", "tie_draws": 0}):
        with pytest.raises(GrokscopeError, match="tie_draws"):
            oinfo_search(features, n_bins=3, **kwargs)


# --- the depth-first walk of the union lattice -------------------------------------------------


def direct_formula(cov, subset, n_samples):
    """O-information in nats by the leave-one-out identity, written out in NumPy:
    1/2 [sum log var_j - 2 log det S - sum log (S^-1)_jj] minus Ince's bias of each entropy."""
    sub = cov[np.ix_(subset, subset)]
    k = len(subset)

    def bias(m):
        return 0.5 * (m * np.log(2 / (n_samples - 1)) + sum(digamma((n_samples - i) / 2) for i in range(1, m + 1)))

    value = 0.5 * (np.log(np.diag(sub)).sum() - 2 * np.linalg.slogdet(sub)[1] - np.log(np.diag(np.linalg.inv(sub))).sum())
    return value - ((k - 2) * bias(k) + k * bias(1) - k * bias(k - 1))


def wide_planted_groups(seed=17):
    """Groups of 270, 40, 12, 1, 1 and 1 neurons on 1500 samples: the big group holds noisy
    copies of one source (redundant), the last three are a, b and a + b (synergistic), the rest
    a second source and noise."""
    rng = np.random.default_rng(seed)
    n = 1500
    s1, s2, a, b = rng.standard_normal((4, n))
    blocks = [s1 + 0.8 * rng.standard_normal((270, n)),
              np.vstack([s2 + 0.6 * rng.standard_normal((20, n)), rng.standard_normal((20, n))]),
              rng.standard_normal((12, n)), a[None], b[None],
              (a + b)[None] + 0.3 * rng.standard_normal((1, n))]
    x = np.vstack(blocks).T  # (n, 325), the groups one after the other
    group_of = np.repeat(np.arange(len(blocks)), [len(b) for b in blocks])
    order = rng.permutation(x.shape[1])  # the groups' neurons interleaved among the columns
    groups = [np.flatnonzero(group_of[order] == g) for g in range(len(blocks))]
    return np.cov(copnorm(x[:, order]), rowvar=False), groups, n


@pytest.mark.parametrize("min_size, max_size", [(2, 6), (3, 5), (6, 6)])
def test_union_walk_matches_the_formula_written_out_on_wide_uneven_groups(min_size, max_size):
    cov, groups, n = wide_planted_groups()
    assert max(len(g) for g in groups) > union_lattice.CHILD_BLOCK_ROWS  # a block of its own
    multiplets = [m for k in range(min_size, max_size + 1) for m in itertools.combinations(range(6), k)]
    unions = [np.concatenate([groups[g] for g in m]) for m in multiplets]
    walked = _union_values(torch.tensor(cov), groups, n, min_size, max_size, True).numpy()
    expected = np.array([direct_formula(cov, u, n) for u in unions])
    np.testing.assert_allclose(walked, expected, rtol=0, atol=1e-10)
    for i, u in enumerate(unions):
        if len(u) <= 45:  # the definition itself, every leave-one-out entropy, where cheap
            assert walked[i] == pytest.approx(brute_oinfo(cov, list(u), n), abs=1e-10)
    if (0, 1) in multiplets:  # the copies of s1: redundant
        assert walked[multiplets.index((0, 1))] > 1.0
    if (3, 4, 5) in multiplets:  # a, b and their sum: synergistic
        assert walked[multiplets.index((3, 4, 5))] < -0.5


def test_union_walk_gives_the_same_values_in_blocks_of_any_size(monkeypatch):
    cov, groups, n = wide_planted_groups(seed=18)
    cov = torch.tensor(cov)
    whole = _union_values(cov, groups, n, 2, 6, True)
    monkeypatch.setattr(union_lattice, "CHILD_BLOCK_ROWS", 16)  # every child a block of its own
    monkeypatch.setattr(union_lattice, "CHILD_BLOCK_BYTES", 1 << 10)
    one_by_one = _union_values(cov, groups, n, 2, 6, True)
    np.testing.assert_allclose(one_by_one.numpy(), whole.numpy(), rtol=0, atol=1e-11)


def test_search_values_do_not_depend_on_the_thread_count():
    features = relu_features(n_samples=900, n_neurons=160, seed=21)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(oinfo_search(features, n_bins=8, per_size=True, tie_draws=4, seed=3))
    finally:
        torch.set_num_threads(before)
    one, two = results
    assert [(r["metric"], r["scope"], r["bins"]) for r in one] == [(r["metric"], r["scope"], r["bins"]) for r in two]
    np.testing.assert_allclose([r["value"] for r in one], [r["value"] for r in two], rtol=0, atol=1e-12)
    np.testing.assert_allclose([r["value_sd"] for r in one], [r["value_sd"] for r in two], rtol=0, atol=1e-12)


def test_auto_search_says_when_it_stops_being_exhaustive():
    features = relu_features(n_samples=300, n_neurons=16, seed=22)
    limit = multiplets_module.AUTO_EXHAUSTIVE_NEURON_BINS
    exhaustive = oinfo_search(features, labels=np.arange(16) % limit, ties="index")
    greedy = oinfo_search(features, labels=np.arange(16) % (limit + 1), ties="index")
    assert {r["search"] for r in exhaustive} == {"exhaustive"} and exhaustive[0]["n_bins"] == limit
    assert {r["search"] for r in greedy} == {"greedy"} and greedy[0]["n_bins"] == limit + 1


def test_draws_recomputed_from_their_seeds_equal_the_kept_ones(monkeypatch):
    features = relu_features(seed=23)
    kept = oinfo_search(features, n_bins=5, per_size=True, seed=6)
    monkeypatch.setattr(copula_module, "DRAW_CACHE_BYTES", 0)  # every draw recomputed
    again = oinfo_search(features, n_bins=5, per_size=True, seed=6)
    assert [(r["bins"], r["value"], r["value_sd"]) for r in again] == [(r["bins"], r["value"], r["value_sd"]) for r in kept]


def test_independent_columns_in_blocks_past_the_rank_and_across_blocks():
    rng = np.random.default_rng(40)
    x = rng.normal(size=(150, 700))  # rank 149 after centring: most columns past the rank
    x[:, 400] = x[:, 3] - x[:, 200]  # a combination of columns of other blocks
    x[:, 5] = 3.0 * x[:, 2]
    keep = independent_columns(torch.from_numpy(x)).numpy()
    centred = x - x.mean(axis=0)
    kept = []
    for j in range(x.shape[1]):  # kept iff it raises the rank of the kept columns before it
        if len(kept) < 149 and np.linalg.matrix_rank(centred[:, kept + [j]]) > len(kept):
            kept.append(j)
    assert np.flatnonzero(keep).tolist() == kept and len(kept) == 149 and 5 not in kept
