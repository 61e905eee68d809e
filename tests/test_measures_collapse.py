"""Neural-collapse measures against brute-force loops and on planted structure."""

import math

import numpy as np
import pytest
import torch

from grokscope.errors import GrokscopeError
from grokscope.measures.collapse import (
    COLLAPSE_KEYS,
    COLLAPSE_KEYS_WITH_WEIGHTS,
    collapse_measures,
    nc1,
    rnc1,
    rnc1_sup,
)


def random_problem(seed=0, n=120, d=9, k=5, label_values=None):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])  # every class present
    centres = rng.normal(size=(k, d)) * 3
    h = centres[y] + rng.normal(size=(n, d))
    if label_values is not None:
        y = np.asarray(label_values)[y]
    return h, y


def brute_force(h, y, w=None):
    """Every measure with plain Python loops over samples and classes."""
    n, d = h.shape
    classes = sorted(set(int(c) for c in y))
    k = len(classes)
    means = {}
    for c in classes:
        members = [h[i] for i in range(n) if y[i] == c]
        means[c] = sum(members) / len(members)
    counts = {c: sum(1 for i in range(n) if y[i] == c) for c in classes}
    global_mean = sum(h[i] for i in range(n)) / n
    within = sum(float(np.sum((h[i] - means[y[i]]) ** 2)) for i in range(n)) / n
    between = sum(counts[c] / n * float(np.sum((means[c] - global_mean) ** 2)) for c in classes)
    norms = [math.sqrt(float(np.sum(h[i] ** 2))) for i in range(n)]
    s_w = sum(np.outer(h[i] - means[y[i]], h[i] - means[y[i]]) for i in range(n)) / n
    s_b = sum(np.outer(means[c] - global_mean, means[c] - global_mean) for c in classes) / k
    centred = {c: means[c] - global_mean for c in classes}
    mean_norms = [math.sqrt(float(np.sum(centred[c] ** 2))) for c in classes]
    avg = sum(mean_norms) / k
    std = math.sqrt(sum((v - avg) ** 2 for v in mean_norms) / k)
    deviations = []
    for a in classes:
        for b in classes:
            if a != b:
                lengths = np.linalg.norm(centred[a]) * np.linalg.norm(centred[b])
                cos = float(centred[a] @ centred[b]) / lengths
                deviations.append(abs(cos + 1 / (k - 1)))
    raw = np.stack([means[c] for c in classes])
    out = {
        "within_var": within,
        "between_var": between,
        "nc1": within / between,
        "rnc1": within / (sum(norms) / n) ** 2,
        "rnc1_sup": within / max(norms) ** 2,
        "nc1_papyan": float(np.trace(s_w @ np.linalg.pinv(s_b))) / k,
        "nc2_equinorm": std / avg,
        "nc2_equiangularity": sum(deviations) / len(deviations),
        "nc2_cond": math.sqrt(np.linalg.cond(raw @ raw.T)),
    }
    if w is not None:
        m = np.stack([centred[c] for c in classes])
        wc = np.stack([w[c] for c in classes])
        out["nc3"] = float(np.sum((wc / np.linalg.norm(wc) - m / np.linalg.norm(m)) ** 2))
        agree = 0
        for i in range(n):
            network = int(np.argmax([float(w[j] @ h[i]) for j in range(w.shape[0])]))
            nearest = min(classes, key=lambda c: float(np.sum((h[i] - means[c]) ** 2)))
            agree += network == nearest
        out["nc4"] = agree / n
    return out


def simplex_etf(k, d, seed=0):
    """K unit vectors in R^d with pairwise cosine -1/(K-1), centred at the origin."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(d, k)))  # (d, k) orthonormal columns
    etf = (np.eye(k) - np.ones((k, k)) / k) @ basis.T  # (k, d)
    return etf / np.linalg.norm(etf, axis=1, keepdims=True)


def test_every_measure_matches_brute_force():
    h, y = random_problem()
    rng = np.random.default_rng(1)
    w = rng.normal(size=(5, h.shape[1]))
    got = collapse_measures(h, y, w)
    want = brute_force(h, y, w)
    assert set(got) == set(COLLAPSE_KEYS_WITH_WEIGHTS)
    for key in COLLAPSE_KEYS_WITH_WEIGHTS:
        assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key


def test_subset_of_classes_uses_matching_rows_of_w():
    # Test split with labels 1, 3, 4 of 6 output classes: NC3 must pick rows 1, 3, 4.
    h, y = random_problem(seed=2, k=3, label_values=[1, 3, 4])
    w = np.random.default_rng(3).normal(size=(6, h.shape[1]))
    got = collapse_measures(h, y, w)
    want = brute_force(h, y, w)
    for key in COLLAPSE_KEYS_WITH_WEIGHTS:
        assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key


def test_single_functions_agree_with_collapse_measures():
    h, y = random_problem(seed=4)
    together = collapse_measures(h, y)
    assert set(together) == set(COLLAPSE_KEYS)
    assert nc1(h, y) == pytest.approx(together["nc1"], rel=1e-12)
    assert rnc1(h, y) == pytest.approx(together["rnc1"], rel=1e-12)
    assert rnc1_sup(h, y) == pytest.approx(together["rnc1_sup"], rel=1e-12)


def test_torch_input_float32_gives_the_same_values():
    h, y = random_problem(seed=5)
    from_numpy = collapse_measures(h, y)
    from_torch = collapse_measures(torch.tensor(h, dtype=torch.float32), torch.tensor(y))
    for key in COLLAPSE_KEYS:
        assert from_torch[key] == pytest.approx(from_numpy[key], rel=1e-5), key


def test_within_and_between_add_up_to_total_variance():
    h, y = random_problem(seed=6)
    got = collapse_measures(h, y)
    total = float(np.mean(np.sum((h - h.mean(axis=0)) ** 2, axis=1)))
    assert got["within_var"] + got["between_var"] == pytest.approx(total, rel=1e-12)


def test_perfectly_collapsed_features_have_zero_within_variance():
    h, y = random_problem(seed=7)
    means = {c: h[y == c].mean(axis=0) for c in np.unique(y)}
    collapsed = np.stack([means[c] for c in y])
    got = collapse_measures(collapsed, y)
    assert got["within_var"] == pytest.approx(0.0, abs=1e-20)
    assert got["rnc1"] == pytest.approx(0.0, abs=1e-20)
    assert got["rnc1_sup"] == pytest.approx(0.0, abs=1e-20)
    assert got["nc1"] == pytest.approx(0.0, abs=1e-20)
    assert got["between_var"] > 1.0


def test_scaling_features_leaves_normalised_measures_unchanged():
    h, y = random_problem(seed=8)
    base = collapse_measures(h, y)
    scaled = collapse_measures(37.5 * h, y)
    for key in ("nc1", "rnc1", "rnc1_sup", "nc1_papyan", "nc2_equinorm", "nc2_equiangularity", "nc2_cond"):
        assert scaled[key] == pytest.approx(base[key], rel=1e-10), key
    assert scaled["within_var"] == pytest.approx(37.5**2 * base["within_var"], rel=1e-10)


def test_relabelling_classes_changes_nothing():
    h, y = random_problem(seed=9)
    permutation = np.array([3, 0, 4, 1, 2])
    shifted = np.array([-7, 12, 100, 5, 0])  # arbitrary, unsorted, negative values
    base = collapse_measures(h, y)
    for relabelled in (permutation[y], shifted[y]):
        got = collapse_measures(h, relabelled)
        for key in COLLAPSE_KEYS:
            assert got[key] == pytest.approx(base[key], rel=1e-10), key


def test_relabelling_with_permuted_w_rows_keeps_nc3_nc4():
    h, y = random_problem(seed=10)
    w = np.random.default_rng(11).normal(size=(5, h.shape[1]))
    permutation = np.array([3, 0, 4, 1, 2])
    w_permuted = np.empty_like(w)
    w_permuted[permutation] = w  # row of new label permutation[c] is the old row c
    base = collapse_measures(h, y, w)
    got = collapse_measures(h, permutation[y], w_permuted)
    assert got["nc3"] == pytest.approx(base["nc3"], rel=1e-10)
    assert got["nc4"] == pytest.approx(base["nc4"], rel=1e-12)


def test_simplex_etf_with_self_dual_classifier_is_fully_collapsed():
    k, d, per_class = 6, 10, 4
    etf = simplex_etf(k, d)
    y = np.repeat(np.arange(k), per_class)
    rng = np.random.default_rng(12)
    h = 5.0 * etf[y] + 1e-3 * rng.normal(size=(k * per_class, d))
    got = collapse_measures(h, y, w=etf)
    assert got["nc2_equinorm"] == pytest.approx(0.0, abs=1e-3)
    assert got["nc2_equiangularity"] == pytest.approx(0.0, abs=1e-3)
    assert got["nc3"] == pytest.approx(0.0, abs=1e-5)
    assert got["nc4"] == 1.0
    assert got["nc1"] < 1e-6
    exact = collapse_measures(5.0 * etf[y], y, w=etf)
    assert exact["nc2_equinorm"] == pytest.approx(0.0, abs=1e-12)
    assert exact["nc2_equiangularity"] == pytest.approx(0.0, abs=1e-12)
    assert exact["nc3"] == pytest.approx(0.0, abs=1e-12)


def test_collinear_class_means_have_known_nc2_values():
    # Balanced classes at -2, -1, 3 on a line (already centred): norms 2, 1, 3; cosines
    # +1 (first two) and -1 (the rest), so mean |cos + 1/2| = (1.5 + 0.5 + 0.5) / 3.
    y = np.repeat(np.arange(3), 2)
    h = np.array([[-2.0, 0.0], [-1.0, 0.0], [3.0, 0.0]])[y]
    got = collapse_measures(h, y)
    assert got["nc2_equinorm"] == pytest.approx(math.sqrt(2 / 3) / 2, rel=1e-12)
    assert got["nc2_equiangularity"] == pytest.approx(2.5 / 3, rel=1e-12)


def test_orthonormal_uncentred_means_have_condition_number_one():
    k = 4
    y = np.repeat(np.arange(k), 3)
    h = np.eye(k)[y] * 2.0
    assert collapse_measures(h, y)["nc2_cond"] == pytest.approx(1.0, rel=1e-12)


def test_nc2_cond_is_infinite_with_more_classes_than_dimensions():
    h, y = random_problem(seed=13, d=3, k=5)
    assert collapse_measures(h, y)["nc2_cond"] == math.inf


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_give_nan_everywhere(bad):
    h, y = random_problem(seed=14)
    h[3, 2] = bad
    w = np.ones((5, h.shape[1]))
    got = collapse_measures(h, y, w)
    assert set(got) == set(COLLAPSE_KEYS_WITH_WEIGHTS)
    assert all(math.isnan(v) for v in got.values())
    assert math.isnan(nc1(h, y)) and math.isnan(rnc1(h, y)) and math.isnan(rnc1_sup(h, y))


def test_one_class_raises():
    h, _ = random_problem(seed=15)
    with pytest.raises(GrokscopeError, match="y: .*two classes"):
        collapse_measures(h, np.zeros(len(h), dtype=np.int64))
    with pytest.raises(GrokscopeError, match="two classes"):
        rnc1(h, np.full(len(h), 4))


@pytest.mark.parametrize(
    ("h", "y", "w", "match"),
    [
        (np.ones(5), np.arange(5), None, "h: expected a 2-D"),
        (np.ones((5, 2)), np.arange(4), None, "y: expected 5 labels"),
        (np.ones((5, 2)), np.arange(5.0), None, "y: expected integer"),
        (np.ones((5, 2)), np.arange(5), np.ones((5, 3)), "w: expected output weights"),
        (np.ones((5, 2)), np.arange(5), np.ones((4, 2)), "w: has 4 rows .* label 4"),
        (np.ones((5, 2)), np.arange(5) - 1, np.ones((9, 2)), "label -1"),
    ],
)
def test_user_mistakes_raise_grokscope_error(h, y, w, match):
    with pytest.raises(GrokscopeError, match=match):
        collapse_measures(h, y, w)
