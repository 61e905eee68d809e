"""O-information numerics against an explicit brute-force formula and planted structure."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import digamma, ndtri
from scipy.stats import rankdata

from grokscope.errors import GrokscopeError
from grokscope.measures import copula as copula_module
from grokscope.measures.multiplets import oinfo_search
from grokscope.measures.oinfo import (
    copnorm,
    copula_covariance,
    gaussian_entropy,
    oinfo_multiplets,
    oinfo_multiplets_from_cov,
    oinfo_of_sets,
)


def brute_entropy(cov, subset, n_samples, bias=True):
    """Gaussian entropy in nats of cov[subset, subset], Ince's ent_g written out."""
    k = len(subset)
    if k == 0:
        return 0.0
    sub = cov[np.ix_(subset, subset)]
    h = 0.5 * (k * math.log(2 * math.pi * math.e) + np.linalg.slogdet(sub)[1])
    if bias:
        h -= k * (math.log(2) - math.log(n_samples - 1)) / 2
        h -= sum(digamma((n_samples - i) / 2) / 2 for i in range(1, k + 1))
    return h


def brute_oinfo(cov, subset, n_samples, bias=True):
    subset = list(subset)
    k = len(subset)
    total = (k - 2) * brute_entropy(cov, subset, n_samples, bias)
    for j in subset:
        rest = [v for v in subset if v != j]
        total += brute_entropy(cov, [j], n_samples, bias) - brute_entropy(cov, rest, n_samples, bias)
    return total


def brute_copnorm(x):
    """Copula normalisation with ties in row order, via scipy's ordinal ranks."""
    return np.column_stack([ndtri(rankdata(c, method="ordinal") / (len(c) + 1)) for c in x.T])


def correlated(n_samples, n_vars, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_samples, n_vars)) @ rng.standard_normal((n_vars, n_vars))


@pytest.mark.parametrize("bias", [True, False])
def test_all_multiplets_match_brute_force(bias):
    x = correlated(400, 7, seed=0)
    multiplets, values = oinfo_multiplets(x, units="nats", bias_correction=bias, ties="index")
    z = brute_copnorm(x)
    cov = np.cov(z, rowvar=False)
    expected = [c for k in range(2, 8) for c in itertools.combinations(range(7), k)]
    assert multiplets == expected
    reference = np.array([brute_oinfo(cov, m, 400, bias) for m in multiplets])
    np.testing.assert_allclose(values, reference, rtol=0, atol=1e-10)


def test_lattice_and_direct_routes_agree_with_brute_force_on_a_size_range():
    cov = np.cov(correlated(300, 9, seed=1), rowvar=False)
    multiplets, lattice = oinfo_multiplets_from_cov(cov, 300, min_size=3, max_size=5,
                                                    units="nats")
    assert {len(m) for m in multiplets} == {3, 4, 5}
    direct = oinfo_of_sets(cov, multiplets, 300, units="nats")
    reference = np.array([brute_oinfo(cov, m, 300) for m in multiplets])
    np.testing.assert_allclose(lattice, reference, rtol=0, atol=1e-10)
    np.testing.assert_allclose(direct, reference, rtol=0, atol=1e-10)


def test_direct_route_takes_sets_of_mixed_sizes_in_any_order():
    cov = np.cov(correlated(300, 8, seed=2), rowvar=False)
    sets = [(7, 1, 3), (0, 1, 2, 3, 4, 5, 6, 7), (2, 5), (6, 0, 4, 1)]
    values = oinfo_of_sets(cov, sets, 300, units="nats")
    reference = [brute_oinfo(cov, s, 300) for s in sets]
    np.testing.assert_allclose(values, reference, rtol=0, atol=1e-10)


def test_bits_are_nats_over_log_2():
    x = correlated(200, 5, seed=3)
    _, nats = oinfo_multiplets(x, units="nats")
    _, bits = oinfo_multiplets(x, units="bits")
    np.testing.assert_allclose(bits, nats / math.log(2), rtol=1e-13, atol=1e-15)


def test_size_two_values_are_exactly_zero_on_both_routes():
    cov = np.cov(correlated(200, 6, seed=4), rowvar=False)
    multiplets, values = oinfo_multiplets_from_cov(cov, 200, max_size=3)
    pairs = np.array([len(m) == 2 for m in multiplets])
    assert np.all(values[pairs] == 0.0)
    assert np.all(oinfo_of_sets(cov, [m for m in multiplets if len(m) == 2], 200) == 0.0)


def test_copies_of_one_variable_are_redundant_and_a_sum_is_synergistic():
    rng = np.random.default_rng(5)
    z = rng.standard_normal(3000)
    copies = np.column_stack([z + 0.1 * rng.standard_normal(3000) for _ in range(3)])
    _, redundant = oinfo_multiplets(copies, min_size=3)
    assert redundant[0] > 0.5

    z1, z2 = rng.standard_normal(3000), rng.standard_normal(3000)
    xor_like = np.column_stack([z1, z2, z1 + z2 + 0.1 * rng.standard_normal(3000)])
    _, synergistic = oinfo_multiplets(xor_like, min_size=3)
    assert synergistic[0] < -0.5


def test_invariant_to_monotone_transforms_of_each_variable():
    x = correlated(500, 5, seed=6)
    warped = np.column_stack([np.exp(x[:, 0]), x[:, 1] ** 3, np.tanh(x[:, 2] / 3), x[:, 3],
                              -1.0 / (1.0 + np.exp(-x[:, 4]))])
    warped[:, 4] *= -1  # keep it increasing
    _, base = oinfo_multiplets(x)
    _, after = oinfo_multiplets(warped)
    np.testing.assert_allclose(after, base, rtol=0, atol=1e-12)


def test_invariant_to_the_order_of_variables():
    x = correlated(500, 6, seed=7)
    perm = np.array([3, 0, 5, 1, 4, 2])
    multiplets, base = oinfo_multiplets(x, ties="index")
    permuted_multiplets, permuted = oinfo_multiplets(x[:, perm], ties="index")
    by_set = {frozenset(int(perm[i]) for i in m): v for m, v in zip(permuted_multiplets, permuted)}
    mapped = np.array([by_set[frozenset(m)] for m in multiplets])
    np.testing.assert_allclose(mapped, base, rtol=0, atol=1e-11)


def test_copnorm_index_ties_follow_row_order_and_random_ties_are_seeded():
    x = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0], [1.0, 3.0], [0.0, 2.0]])
    np.testing.assert_allclose(copnorm(x, ties="index"), brute_copnorm(x))
    a, b = copnorm(x, seed=1), copnorm(x, seed=1)
    np.testing.assert_array_equal(a, b)
    # ranks are a permutation in each column, whatever the tie order
    for col in copnorm(x, seed=3).T:
        np.testing.assert_allclose(np.sort(col), ndtri(np.arange(1, 6) / 6))
    # untied entries keep their exact rank
    assert copnorm(x, seed=2)[1, 0] == pytest.approx(ndtri(5 / 6), abs=1e-15)


def test_copnorm_returns_a_tensor_for_a_tensor():
    x = torch.tensor(correlated(50, 3, seed=8))
    out = copnorm(x)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), copnorm(x.numpy()))


def test_gaussian_entropy_matches_closed_form_and_batches():
    cov = np.array([[2.0, 0.3], [0.3, 1.0]])
    expected = brute_entropy(cov, [0, 1], 100) / math.log(2)
    assert gaussian_entropy(cov, 100) == pytest.approx(expected, abs=1e-12)
    plain = 0.5 * math.log(np.linalg.det(2 * math.pi * math.e * cov))
    assert gaussian_entropy(cov, 100, bias_correction=False, units="nats") == pytest.approx(plain)
    batch = gaussian_entropy(np.stack([cov, np.eye(2)]), 100, units="nats")
    assert batch.shape == (2,) and batch[1] == pytest.approx(brute_entropy(np.eye(2), [0, 1], 100))


def test_constant_column_raises():
    x = correlated(100, 4, seed=9)
    x[:, 2] = 1.5
    with pytest.raises(GrokscopeError, match="column 2 is constant"):
        oinfo_multiplets(x)


def test_duplicated_columns_raise_unless_a_ridge_is_given():
    x = correlated(300, 4, seed=10)
    x = np.column_stack([x, 2.0 * x[:, 1] + 1.0])  # a monotone copy of column 1
    with pytest.raises(GrokscopeError, match="columns 1 and 4 are duplicates"):
        oinfo_multiplets(x)
    multiplets, values = oinfo_multiplets(x, ridge=1e-6)
    assert np.isfinite(values).all()
    with_both = [v for m, v in zip(multiplets, values) if {1, 4} <= set(m) and len(m) == 3]
    without = [v for m, v in zip(multiplets, values) if not {1, 4} <= set(m) and len(m) == 3]
    assert min(with_both) > max(without)  # a duplicated pair is maximally redundant


@pytest.mark.parametrize("kwargs, message", [
    ({"min_size": 1}, "min_size"),
    ({"max_size": 9}, "max_size"),
    ({"units": "dits"}, "units"),
    ({"ties": "midrank"}, "ties"),
])
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(GrokscopeError, match=message):
        oinfo_multiplets(correlated(50, 4, seed=11), **kwargs)


def test_wrong_shape_raises():
    with pytest.raises(GrokscopeError, match="2-D"):
        oinfo_multiplets(np.zeros(10))


def test_accepts_a_tensor_and_the_copnormed_flag():
    x = correlated(200, 5, seed=12)
    _, values = oinfo_multiplets(x, ties="index")
    _, from_tensor = oinfo_multiplets(torch.tensor(x), ties="index")
    _, from_normal = oinfo_multiplets(brute_copnorm(x), copnormed=True)
    np.testing.assert_allclose(from_tensor, values, atol=1e-13)
    np.testing.assert_allclose(from_normal, values, atol=1e-12)


def test_float32_and_float64_inputs_rank_the_same_with_ties_and_signed_zeros():
    # exact float32 values take the bit-key route, a monotone rescaling of them the argsort one
    rng = np.random.default_rng(13)
    x = np.maximum(rng.standard_normal((600, 5)), 0.0).astype(np.float32).astype(np.float64)
    x[:, 1] *= -1.0  # ties at the top, negative values
    x[::5, 2] = -0.0  # -0.0 and 0.0 are equal values
    scaled = x * (1.0 + 2.0 ** -30)
    for ties, seed in [("index", 0), ("random", 0), ("random", 4)]:
        np.testing.assert_array_equal(copnorm(x, ties=ties, seed=seed),
                                      copnorm(scaled, ties=ties, seed=seed))
    np.testing.assert_allclose(copnorm(x, ties="index"), brute_copnorm(x), rtol=0, atol=1e-15)


def test_random_ties_do_not_follow_row_order():
    # a column that is all ties: its ranks are a seeded shuffle, different across columns
    x = np.zeros((200, 3))
    x[:, 0] = np.arange(200)  # keep one column untied so the matrix is not constant
    z = copnorm(x, seed=5)
    assert not np.array_equal(z[:, 1], z[:, 2])
    assert abs(np.corrcoef(z[:, 1], np.arange(200))[0, 1]) < 0.3


# --- ties: the point mass of ReLU features ------------------------------------------------------


def every_tie_order_scores(column):
    """All score columns a tie order can give ``column``: its tied blocks permuted every way."""
    n = len(column)
    scores = ndtri(np.arange(1, n + 1) / (n + 1))
    base = np.argsort(column, kind="stable")  # rows from smallest to largest, ties by row
    blocks = [list(range(s, s + c)) for s, c in
              zip(*np.unique(np.sort(column), return_index=True, return_counts=True)[1:])]
    out = []
    for arrangement in itertools.product(*(itertools.permutations(b) for b in blocks)):
        ranks = np.concatenate([np.array(a) for a in arrangement])  # rank positions in value order
        z = np.empty(n)
        z[base] = scores[ranks]
        out.append(z)
    return out


def test_average_ties_give_the_mean_covariance_over_every_tie_order():
    x = np.array([[0.0, 1.0, 0.3], [0.0, 0.0, 0.1], [2.0, 0.0, 0.7], [0.0, 5.0, 0.2],
                  [1.0, 5.0, 0.9], [3.0, 2.0, 0.5]])
    per_column = [every_tie_order_scores(c) for c in x.T]  # 6, 4 and 1 orders
    covs = [np.cov(np.column_stack(zs), rowvar=False) for zs in itertools.product(*per_column)]
    expected = np.mean(covs, axis=0)
    np.testing.assert_allclose(copula_covariance(x, ties="average"), expected, rtol=0, atol=1e-14)
    # without ties it is the plain copula covariance; a random order is one of those averaged
    untied = correlated(50, 3, seed=20)
    np.testing.assert_allclose(copula_covariance(untied, ties="average"),
                               np.cov(brute_copnorm(untied), rowvar=False), rtol=0, atol=1e-14)
    one_order = copula_covariance(x, ties="random", seed=3)
    assert any(np.allclose(one_order, c, rtol=0, atol=1e-14) for c in covs)


def test_random_tie_orders_average_to_the_tie_averaged_covariance():
    rng = np.random.default_rng(21)
    x = np.maximum(rng.standard_normal((60, 3)) @ rng.standard_normal((3, 3)), 0.0)
    drawn = np.array([copula_covariance(x, ties="random", seed=s) for s in range(600)])
    standard_error = drawn.std(axis=0) / math.sqrt(len(drawn)) + 1e-13  # the diagonal: exact
    assert np.all(np.abs(drawn.mean(axis=0) - copula_covariance(x, ties="average")) < 5 * standard_error)


def test_the_tie_averaged_covariance_does_not_follow_the_row_order_and_the_index_one_does():
    rng = np.random.default_rng(22)
    x = np.maximum(rng.standard_normal((300, 4)) @ rng.standard_normal((4, 4)), 0.0)
    order = np.argsort(x[:, 0] + rng.standard_normal(300))
    np.testing.assert_allclose(copula_covariance(x[order], ties="average"), copula_covariance(x, ties="average"),
                               rtol=0, atol=1e-15)
    index_moves = np.abs(copula_covariance(x[order], ties="index") - copula_covariance(x, ties="index")).max()
    assert index_moves > 0.05


def planted_synergy(n=2000, seed=0):
    """x3 mostly the sum of independent x1 and x2 (synergy), each cut at its 60% quantile into
    exact zeros, as ReLU features; and the latent x1, by which the samples can be ordered."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, 2))
    c = 0.95 * (a[:, 0] + a[:, 1]) / math.sqrt(2) + math.sqrt(1 - 0.95**2) * rng.standard_normal(n)
    latent = np.column_stack([a, c])
    return np.maximum(latent - ndtri(0.6), 0.0), a[:, 0]


def test_planted_synergy_with_a_point_mass_does_not_depend_on_the_sample_order():
    x, driver = planted_synergy()
    assert 0.55 < (x == 0).mean() < 0.65
    shuffled = np.random.default_rng(1).permutation(len(x))
    by_driver = np.argsort(driver)  # like samples stored grouped by an operand

    def synergy(features, ties):
        row = oinfo_search(features, n_bins=3, min_size=3, ties=ties)[0]
        assert row["bins"] == "0,1,2"
        return row["value"], row["value_sd"]

    value, spread = synergy(x, "random")  # the default: the mean over 10 random tie orders
    assert value < -2 * spread < 0  # the planted sign, clear of the tie spread
    for order in (shuffled, by_driver):
        assert abs(synergy(x[order], "random")[0] - value) < spread
        assert synergy(x[order], "average")[0] == pytest.approx(synergy(x, "average")[0], abs=1e-12)
    index_value, index_sd = synergy(x, "index")
    assert math.isnan(index_sd)  # one fixed order: no draws
    assert abs(synergy(x[by_driver], "index")[0] - index_value) > 5 * spread


# --- random tie orders: one sort, the tied blocks redrawn -----------------------------------------


def test_random_ties_redraw_only_the_tied_blocks_each_order_equally_often():
    rng = np.random.default_rng(30)
    n = 320
    x = np.column_stack([rng.permutation(n).astype(float),  # a short tied block: rows 0-2
                         np.r_[np.zeros(300), rng.random(20) + 1.0],  # a long block of 300 zeros
                         rng.standard_normal(n)])  # no ties
    x[:3, 0] = 100.5
    index = copnorm(x, ties="index")
    np.testing.assert_allclose(index, brute_copnorm(x), rtol=0, atol=1e-15)
    orders = {}
    zero_rank = []
    scores = np.sort(index[:, 2])  # the n normal scores
    for seed in range(600):
        z = copnorm(x, seed=seed)
        np.testing.assert_array_equal(z[3:, 0], index[3:, 0])  # untied entries never move
        np.testing.assert_array_equal(z[300:, 1], index[300:, 1])
        np.testing.assert_array_equal(z[:, 2], index[:, 2])
        np.testing.assert_array_equal(np.sort(z[:3, 0]), np.sort(index[:3, 0]))  # block's scores
        np.testing.assert_array_equal(np.sort(z[:300, 1]), scores[:300])
        orders[tuple(np.argsort(z[:3, 0]))] = orders.get(tuple(np.argsort(z[:3, 0])), 0) + 1
        zero_rank.append(np.searchsorted(scores, z[0, 1]))
    assert len(orders) == 6 and all(60 <= c <= 140 for c in orders.values())  # 100 +- 4.4 sd
    assert abs(np.mean(zero_rank) - 149.5) < 15  # uniform over the 300 ranks: sd of mean 3.5


def test_each_draw_depends_only_on_its_seed_and_number():
    rng = np.random.default_rng(31)
    x = torch.tensor(np.maximum(rng.standard_normal((400, 6)), 0.0))
    three = [c.numpy() for c in copula_module.TieCovariances(x, "random", 7, 3).each()]
    five = [c.numpy() for c in copula_module.TieCovariances(x, "random", 7, 5).each()]
    for a, b in zip(three, five):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(five[3], five[4])
    np.testing.assert_allclose(three[0], np.cov(copnorm(x.numpy(), seed=7), rowvar=False), rtol=0, atol=1e-14)


# --- multiplets as arrays ---------------------------------------------------------------------


def test_multiplets_come_as_arrays_that_read_as_the_tuples():
    cov = np.cov(correlated(300, 7, seed=32), rowvar=False)
    multiplets, values = oinfo_multiplets_from_cov(cov, 300, min_size=2, max_size=5)
    expected = [c for k in range(2, 6) for c in itertools.combinations(range(7), k)]
    assert multiplets == expected and len(multiplets) == len(values) == len(expected)
    assert [sum(1 << j for j in m) for m in expected] == multiplets.masks.tolist()
    assert multiplets.sizes.tolist() == [len(m) for m in expected]
    members = multiplets.members()
    assert members.shape == (len(expected), 5)
    assert [tuple(int(v) for v in row if v >= 0) for row in members] == expected
    assert multiplets[40:45] == expected[40:45] and multiplets[-1] == (2, 3, 4, 5, 6)
    np.testing.assert_allclose(oinfo_of_sets(cov, multiplets[:30], 300), values[:30], rtol=0, atol=1e-12)


def test_multiplets_of_more_variables_than_a_mask_holds():
    rng = np.random.default_rng(33)
    cov = np.cov(rng.standard_normal((2000, 65)), rowvar=False)
    multiplets, values = oinfo_multiplets_from_cov(cov, 2000, min_size=2, max_size=2)
    assert multiplets == list(itertools.combinations(range(65), 2))
    assert multiplets.members().shape == (2080, 2) and np.all(values == 0.0)
