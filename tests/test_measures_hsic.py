"""nHSIC, HSIC and CKA against a direct NumPy transcription of the formulas."""

import math

import numpy as np
import pytest
import torch

from grokscope.errors import GrokscopeError
from grokscope.measures import hsic_batches
from grokscope.measures.hsic import (
    HsicReference,
    TokenInputs,
    as_hsic_inputs,
    cka,
    hsic,
    hsic_measures,
    hsic_reference,
    nhsic,
    pass_orders,
)


# --- the reference: kernel matrices, centring matrix, explicit inverses, one batch at a time ----


def gaussian_kernel(z, sigma=5.0, bandwidth="fixed"):
    d = z.shape[1]
    sq_dist = np.sum((z[:, None, :] - z[None, :, :]) ** 2, axis=2)
    width = sigma**2 * d
    if bandwidth == "median":
        upper = sq_dist[np.triu_indices(len(z), k=1)]
        width = np.sort(upper)[(len(upper) - 1) // 2]  # lower median, like torch.median
    return np.exp(-sq_dist / (2 * width))


def kernel(z, name, bandwidth="fixed"):
    if z.ndim == 1:  # integer labels: linear kernel of one-hot codes
        return np.equal.outer(z, z).astype(float)
    return z @ z.T if name == "linear" else gaussian_kernel(z, bandwidth=bandwidth)


def centred(k):
    m = len(k)
    h = np.eye(m) - np.ones((m, m)) / m
    return h @ k @ h


def batches(n, batch_size, passes=3, seed=0):
    """Sample indices of every minibatch of every pass: consecutive slices of each pass's order
    (what a loader over that order yields), a last batch of one sample left out."""
    size = n if batch_size is None else batch_size
    orders = pass_orders(n, passes=passes, seed=seed).numpy()
    return [order[s:s + size] for order in orders for s in range(0, n, size) if min(s + size, n) - s >= 2]


def reference_nhsic(
    t, x, kernel_t="gaussian", kernel_x="gaussian", batch_size=100, eps=1e-5, bandwidth="fixed", passes=3, seed=0
):
    values = []
    for idx in batches(len(t), batch_size, passes, seed):
        m = len(idx)
        r = []
        for z, name in ((t[idx], kernel_t), (x[idx], kernel_x)):
            k = centred(kernel(z, name, bandwidth))
            r.append(k @ np.linalg.inv(k + m * eps * np.eye(m)))
        values.append(np.trace(r[0] @ r[1]))
    return float(np.mean(values))


def reference_hsic(t, x, kernel_t="gaussian", kernel_x="gaussian", batch_size=100, passes=3, seed=0):
    values = []
    for idx in batches(len(t), batch_size, passes, seed):
        m = len(idx)
        kt, kx = centred(kernel(t[idx], kernel_t)), centred(kernel(x[idx], kernel_x))
        values.append(np.trace(kt @ kx) / (m - 1) ** 2)
    return float(np.mean(values))


def dependent_pair(seed=0, n=250, dt=6, dx=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dx))
    t = np.tanh(x @ rng.normal(size=(dx, dt))) * 4 + 0.3 * rng.normal(size=(n, dt))
    return t, x


# --- agreement with the reference ---------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [100, 64, None])
def test_nhsic_matches_explicit_inverse_gaussian(batch_size):
    t, x = dependent_pair()
    got = nhsic(t, x, batch_size=batch_size)
    want = reference_nhsic(t, x, batch_size=batch_size)
    assert got == pytest.approx(want, abs=1e-6)
    assert got == pytest.approx(want, rel=1e-8)


def test_nhsic_matches_reference_with_labels_linear_t_and_median_bandwidth():
    t, x = dependent_pair(seed=1)
    labels = (x[:, 0] > 0).astype(np.int64) * 3 + (x[:, 1] > 0) - 5  # 4 classes, odd values
    assert nhsic(t, labels) == pytest.approx(reference_nhsic(t, labels), rel=1e-8)
    assert nhsic(t, x, kernel_t="linear", kernel_x="linear") == pytest.approx(
        reference_nhsic(t, x, kernel_t="linear", kernel_x="linear"), rel=1e-8
    )
    assert nhsic(t, x, bandwidth="median") == pytest.approx(
        reference_nhsic(t, x, bandwidth="median"), rel=1e-8
    )


def test_hsic_matches_reference():
    t, x = dependent_pair(seed=2)
    for batch_size in (100, None):
        assert hsic(t, x, batch_size=batch_size) == pytest.approx(
            reference_hsic(t, x, batch_size=batch_size), rel=1e-10
        )
    assert hsic(t, x, kernel_t="linear", kernel_x="linear") == pytest.approx(
        reference_hsic(t, x, kernel_t="linear", kernel_x="linear"), rel=1e-10
    )


def test_hsic_measures_share_batches_with_nhsic():
    t, x = dependent_pair(seed=3)
    y = (x[:, 0] > 0.5).astype(np.int64)
    got = hsic_measures(t, x, y)
    assert got["nhsic_x"] == pytest.approx(nhsic(t, x), rel=1e-12)
    assert got["nhsic_y"] == pytest.approx(reference_nhsic(t, y), rel=1e-8)
    assert set(hsic_measures(t, x, None)) == {"nhsic_x"}


def test_single_sample_remainder_batch_is_dropped():
    t, x = dependent_pair(seed=4, n=201)
    assert nhsic(t, x, seed=None) == pytest.approx(reference_nhsic(t[:200], x[:200], seed=None), rel=1e-8)


def test_torch_float32_input_matches_numpy():
    t, x = dependent_pair(seed=5)
    got = nhsic(torch.tensor(t, dtype=torch.float32), torch.tensor(x, dtype=torch.float32))
    assert got == pytest.approx(nhsic(t.astype(np.float32), x.astype(np.float32)), rel=1e-12)
    assert got == pytest.approx(nhsic(t, x), rel=1e-4)


# --- a reference: the input and label side computed once for many representations -------------


def drifting_series(x, n_checkpoints=3, dt=6, seed=20):
    """Representations of the same samples at a few checkpoints, each a little different."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(x.shape[1], dt))
    series = []
    for _ in range(n_checkpoints):
        w = w + 0.3 * rng.normal(size=w.shape)
        series.append(np.tanh(x @ w) * 4 + 0.3 * rng.normal(size=(len(x), dt)))
    return series


@pytest.mark.parametrize(
    "options",
    [{}, {"batch_size": 64, "seed": 3}, {"bandwidth": "median", "sigma": 2.0}, {"kernel_x": "linear", "eps": 1e-3}],
)
def test_reference_gives_the_values_of_a_direct_call_at_every_checkpoint(options):
    _, x = dependent_pair(seed=21, n=230)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0.5)
    reference = hsic_reference(x, y, **options)
    for t in drifting_series(x):
        got = hsic_measures(t, reference)
        want = hsic_measures(t, x, y, **options)
        assert got.keys() == want.keys() == {"nhsic_x", "nhsic_y"}
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-12)


def test_reference_matches_the_explicit_inverse_formula_and_depends_on_t():
    _, x = dependent_pair(seed=22)
    y = (x[:, 2] > 0).astype(np.int64)
    reference = hsic_reference(x, y)
    values = []
    for t in drifting_series(x, seed=23):
        got = hsic_measures(t, reference)
        assert got["nhsic_x"] == pytest.approx(reference_nhsic(t, x), rel=1e-8)
        assert got["nhsic_y"] == pytest.approx(reference_nhsic(t, y), rel=1e-8)
        values.append(got["nhsic_x"])
    assert len(set(values)) == len(values)  # nothing of an earlier t is reused


def test_reference_of_labels_only_and_through_nhsic():
    t, x = dependent_pair(seed=24)
    labels = (x[:, 0] > 0).astype(np.int64) * 3 + (x[:, 1] > 0)
    reference = hsic_reference(labels)  # integer x: one-hot codes, linear kernel
    assert reference.kernel_x == "linear" and reference.names == ("x",)
    assert nhsic(t, reference) == pytest.approx(reference_nhsic(t, labels), rel=1e-8)
    assert set(hsic_measures(t, hsic_reference(x))) == {"nhsic_x"}


def test_reference_records_its_options_and_stays_on_the_input_device():
    _, x = dependent_pair(seed=25, n=130)
    reference = hsic_reference(torch.tensor(x), np.arange(130) % 4, batch_size=np.int64(50), seed=2)
    assert isinstance(reference, HsicReference)
    assert (reference.n_samples, reference.batch_size, reference.passes, reference.seed) == (130, 50, 3, 2)
    assert reference.kernel_x == "gaussian" and reference.finite
    # per pass, two full batches of 50 and the remainder of 30, for x and for y
    assert [r.shape for r in reference.operators["y"]] == [(6, 50, 50), (3, 30, 30)]
    assert all(r.dtype == torch.float64 and r.device == torch.device("cpu") for r in reference.operators["x"])


def test_non_finite_reference_or_representation_gives_nan():
    t, x = dependent_pair(seed=26)
    y = np.arange(len(t)) % 3
    bad_x = x.copy()
    bad_x[3, 0] = np.nan
    broken = hsic_reference(bad_x, y)
    assert not broken.finite
    assert all(math.isnan(v) for v in hsic_measures(t, broken).values())
    bad_t = t.copy()
    bad_t[0, 0] = np.inf
    assert all(math.isnan(v) for v in hsic_measures(bad_t, hsic_reference(x, y)).values())


def test_options_beside_a_reference_must_match_it():
    t, x = dependent_pair(seed=27)
    reference = hsic_reference(x, sigma=2.0, batch_size=50)
    same = hsic_measures(t, reference, sigma=2.0, batch_size=50)  # repeating them is allowed
    assert same == hsic_measures(t, reference)
    with pytest.raises(GrokscopeError, match="sigma: the reference was built with sigma=2.0"):
        hsic_measures(t, reference, sigma=3.0)
    with pytest.raises(GrokscopeError, match="seed"):
        hsic_measures(t, reference, seed=1)
    with pytest.raises(GrokscopeError, match="y: the reference already fixes the labels"):
        hsic_measures(t, reference, np.arange(len(t)) % 2)
    with pytest.raises(GrokscopeError, match="t: has 249 samples but the reference has 250"):
        hsic_measures(t[:-1], reference)


# --- properties ---------------------------------------------------------------------------------


def test_nhsic_with_itself_beats_nhsic_with_independent_noise():
    t, _ = dependent_pair(seed=6)
    noise = np.random.default_rng(7).normal(size=t.shape)
    with_itself = nhsic(t, t)
    with_noise = nhsic(t, noise)
    assert with_itself > 2 * with_noise > 0
    assert with_itself < 100  # tr(R^2) < rank <= m


def test_nhsic_of_labels_ignores_label_values():
    t, x = dependent_pair(seed=8)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0)
    relabelled = np.array([7, -1, 30, 2])[y]
    assert nhsic(t, relabelled) == pytest.approx(nhsic(t, y), rel=1e-12)


def test_seed_shuffles_batches_and_full_sample_ignores_order():
    t, x = dependent_pair(seed=9)
    ordered, shuffled = nhsic(t, x), nhsic(t, x, seed=1)
    assert shuffled == nhsic(t, x, seed=1)  # deterministic
    assert shuffled != pytest.approx(ordered, rel=1e-6)  # different batches
    assert nhsic(t, x, batch_size=None, seed=1) == pytest.approx(nhsic(t, x, batch_size=None), rel=1e-10)


def test_cka_of_itself_is_one_and_invariant_to_isotropic_scaling():
    t, x = dependent_pair(seed=10)
    assert cka(t, t) == pytest.approx(1.0, rel=1e-12)
    linear = {"kernel_t": "linear", "kernel_x": "linear"}
    assert cka(t * 13.0, x * 0.02, **linear) == pytest.approx(cka(t, x, **linear), rel=1e-10)
    assert cka(t * 13.0, x, bandwidth="median") == pytest.approx(cka(t, x, bandwidth="median"), rel=1e-10)
    assert 0.0 < cka(t, x) < 1.0


def test_cka_full_sample_matches_reference():
    t, x = dependent_pair(seed=11, n=120)
    kt, kx = centred(kernel(t, "linear")), centred(kernel(x, "linear"))
    want = np.sum(kt * kx) / math.sqrt(np.sum(kt * kt) * np.sum(kx * kx))
    assert cka(t, x, kernel_t="linear", kernel_x="linear", batch_size=None) == pytest.approx(want, rel=1e-10)


def test_independent_data_has_small_hsic():
    t, x = dependent_pair(seed=12)
    noise = np.random.default_rng(13).normal(size=x.shape)
    assert hsic(t, noise) < 0.2 * hsic(t, x)
    assert cka(t, noise) < 0.2 * cka(t, x)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_gives_nan(bad):
    t, x = dependent_pair(seed=14)
    t[5, 1] = bad
    y = np.arange(len(t)) % 3
    assert math.isnan(nhsic(t, x))
    assert math.isnan(hsic(t, x))
    assert math.isnan(cka(x, t))
    assert all(math.isnan(v) for v in hsic_measures(t, x, y).values())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda t, x: nhsic(t, x[:-1]), "x: has 249 samples but t has 250"),
        (lambda t, x: nhsic(t, x, kernel_t="rbf"), "kernel_t: unknown kernel 'rbf'"),
        (lambda t, x: nhsic(t, x, batch_size=1), "batch_size"),
        (lambda t, x: nhsic(t, x, eps=0.0), "eps"),
        (lambda t, x: nhsic(t, x, sigma=-1.0), "sigma"),
        (lambda t, x: nhsic(t, x, bandwidth="silverman"), "bandwidth"),
        (lambda t, x: hsic_measures(t, x, x[:, 0]), "y: expected 1-D integer labels"),
        (lambda t, x: cka(t[:1], x[:1]), "at least 2 samples"),
        (lambda t, x: hsic_reference(x, x[:, 0]), "y: expected 1-D integer labels"),
        (lambda t, x: hsic_reference(x, np.arange(10)), "y: has 10 samples but x has 250"),
        (lambda t, x: hsic_reference(x, batch_size=1), "batch_size"),
    ],
)
def test_user_mistakes_raise_grokscope_error(call, match):
    t, x = dependent_pair(seed=15)
    with pytest.raises(GrokscopeError, match=match):
        call(t, x)


def test_integer_feature_matrix_and_numpy_integer_options_are_accepted():
    t, _ = dependent_pair(seed=16)
    codes = np.random.default_rng(17).integers(0, 5, len(t))
    one_hot = np.eye(5, dtype=np.uint8)[codes]  # 2-D integers: features, not labels
    assert nhsic(t, one_hot, batch_size=np.int64(50)) == pytest.approx(
        reference_nhsic(t, one_hot.astype(float), batch_size=50), rel=1e-8
    )


# --- batches drawn as the authors draw them: shuffled passes -------------------------------------


class GivenOrders(torch.utils.data.Sampler):
    """A sampler that yields the next of the given orders at each pass (epoch)."""

    def __init__(self, orders):
        self.orders, self.epoch = orders, 0

    def __iter__(self):
        order = self.orders[self.epoch]
        self.epoch += 1
        return iter(order.tolist())

    def __len__(self):
        return len(self.orders[0])


def authors_procedure(t, x, y, num_classes, loader, num_iter=3, eps=1e-5):
    """calc_nhsic_plane of keitaroskmt/collapse-dynamics, transcribed: a running sum of NOCCO over
    every batch the loader yields in ``num_iter`` passes, divided by the number of batches. The
    NOCCO of a batch is the explicit-inverse formula above (both kernels centred on both sides)."""
    total_x = total_y = 0.0
    count = 0
    for _ in range(num_iter):
        for idx, in loader:
            idx = idx.numpy()
            m = len(idx)
            r = {}
            for name, z, kind in (("t", t[idx], "gaussian"), ("x", x[idx], "gaussian"),
                                  ("y", np.eye(num_classes)[y[idx]], "linear")):
                k = centred(kernel(z, kind))
                r[name] = k @ np.linalg.inv(k + m * eps * np.eye(m))
            total_x += np.trace(r["t"] @ r["x"])
            total_y += np.trace(r["t"] @ r["y"])
            count += 1
    return total_x / count, total_y / count


def test_nhsic_is_the_authors_shuffled_three_pass_mean_on_the_same_seeded_batches():
    t, x = dependent_pair(seed=30, n=345)  # 3 full batches of 100 and one of 45 per pass
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0)
    orders = pass_orders(len(t), passes=3, seed=7)
    assert all(sorted(o.tolist()) == list(range(len(t))) for o in orders)  # permutations
    assert len({tuple(o.tolist()) for o in orders}) == 3 and torch.equal(orders, pass_orders(len(t), passes=3, seed=7))
    indices = torch.utils.data.TensorDataset(torch.arange(len(t)))
    loader = torch.utils.data.DataLoader(indices, batch_size=100, sampler=GivenOrders(orders))
    want_x, want_y = authors_procedure(t, x, y, 4, loader)
    got = hsic_measures(t, x, y, seed=7)
    assert got["nhsic_x"] == pytest.approx(want_x, rel=1e-9)
    assert got["nhsic_y"] == pytest.approx(want_y, rel=1e-9)
    per_pass = hsic_measures(t, x, y, seed=7, per_pass=True)
    assert per_pass["nhsic_x"].shape == (3,) and per_pass["nhsic_x"].mean() == pytest.approx(got["nhsic_x"], rel=1e-12)
    assert per_pass["nhsic_x"].std() > 0  # the passes see different batches


def run_features(p=31, width=64, seed=0):
    """The test split of (a+b) mod p, stored by operand as the task enumerates it, and the
    penultimate features of a freshly initialised MLP on it."""
    from grokscope.config import TaskConfig
    from grokscope.tasks import load_task

    data = load_task(TaskConfig(p=p, split_seed=0))
    test = data.split == 1
    x, y = data.x[test].astype(np.float64), data.y[test]
    torch.manual_seed(seed)
    layer = torch.nn.Linear(x.shape[1], width)
    with torch.no_grad():
        h = torch.relu(layer(torch.tensor(x, dtype=torch.float32))).numpy()
    return h, x, y


def test_nhsic_of_a_run_does_not_depend_on_the_order_the_samples_are_stored_in():
    h, x, y = run_features()
    stored = hsic_measures(h, x, y, per_pass=True)
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(len(h))
        moved = hsic_measures(h[order], x[order], y[order], per_pass=True)
        for key in stored:
            # two means of 3 passes differ by ~0.8 of one pass's standard deviation
            assert abs(moved[key].mean() - stored[key].mean()) < 2 * stored[key].std(ddof=1)
    # batches in the stored order (by operand) move it by many times that spread
    as_stored = hsic_measures(h, x, y, seed=None)
    reordered = hsic_measures(h[order], x[order], y[order], seed=None)
    for key in stored:
        assert abs(as_stored[key] - reordered[key]) > 10 * stored[key].std(ddof=1)


def test_passes_that_cannot_differ_are_equal_and_bad_passes_raise():
    t, x = dependent_pair(seed=31)
    same = nhsic(t, x, seed=None, per_pass=True)  # the stored order every pass
    assert same.shape == (3,) and np.all(same == same[0])
    whole = nhsic(t, x, batch_size=None, per_pass=True)  # one batch of everything
    assert np.all(whole == whole[0]) and whole[0] == pytest.approx(reference_nhsic(t, x, batch_size=None))
    assert cka(t, x, passes=2, per_pass=True).shape == (2,)
    assert hsic(t, x, passes=1) == pytest.approx(reference_hsic(t, x, passes=1), rel=1e-10)
    for bad in (0, 1.5):
        with pytest.raises(GrokscopeError, match="passes"):
            nhsic(t, x, passes=bad)
    reference = hsic_reference(x, passes=2)
    with pytest.raises(GrokscopeError, match="passes: the reference was built with passes=2"):
        hsic_measures(t, reference, passes=4)


# --- token inputs: the one-hot kernels from Hamming distances, nothing of size V -----------------


def one_hot_tokens(tokens, vocabulary):
    """(n, T * V): each position's one-hot code, concatenated (what the Hamming kernel stands for)."""
    n, positions = tokens.shape
    codes = np.zeros((n, positions, vocabulary))
    codes[np.arange(n)[:, None], np.arange(positions)[None, :], tokens] = 1.0
    return codes.reshape(n, -1)


def token_pair(seed=40, n=230, positions=5, vocabulary=7):
    """Token sequences and a representation that depends on them (through an embedding)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocabulary, size=(n, positions))
    embedding = rng.normal(size=(vocabulary, 3))
    t = np.tanh(embedding[tokens].reshape(n, -1) @ rng.normal(size=(3 * positions, 6))) * 3
    return t + 0.3 * rng.normal(size=t.shape), tokens


@pytest.mark.parametrize(
    "options",
    [{}, {"bandwidth": "median"}, {"kernel_x": "linear"}, {"batch_size": None}, {"batch_size": 64, "seed": None},
     {"sigma": 0.05, "batch_size": 50}],
)
def test_nhsic_of_tokens_is_nhsic_of_their_one_hot_codes(options):
    t, tokens = token_pair()
    got = nhsic(t, TokenInputs(tokens, 7), **options)
    want = nhsic(t, one_hot_tokens(tokens, 7), **options)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
    if "sigma" not in options:  # the NumPy transcription has the default sigma
        explicit = reference_nhsic(t, one_hot_tokens(tokens, 7), **{"kernel_x": "gaussian", **options})
        assert got == pytest.approx(explicit, rel=1e-8)


def test_reference_and_plane_of_tokens_are_those_of_the_one_hot_codes():
    t, tokens = token_pair(seed=41, n=260)
    y = tokens[:, 0] % 3
    codes = one_hot_tokens(tokens, 9)  # a vocabulary larger than the ids seen: d = T * 9
    reference = hsic_reference(TokenInputs(tokens, vocabulary=9), y, batch_size=64)
    for t_step in drifting_series(codes, seed=42):
        got = hsic_measures(t_step, reference, per_pass=True)
        want = hsic_measures(t_step, codes, y, batch_size=64, per_pass=True)
        direct = hsic_measures(t_step, TokenInputs(tokens, 9), y, batch_size=64, per_pass=True)
        for key in ("nhsic_x", "nhsic_y"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(direct[key], want[key], rtol=1e-12, atol=1e-12)
    assert reference.kernel_x == "gaussian"
    for estimate in (hsic, cka):
        assert estimate(t, TokenInputs(tokens, 9)) == pytest.approx(estimate(t, codes), rel=1e-12, abs=1e-15)


def test_token_vocabulary_sets_the_kernel_dimension_and_subsets_keep_it():
    t, tokens = token_pair(seed=43, vocabulary=5)
    inputs = TokenInputs(tokens)
    assert inputs.vocabulary == int(tokens.max()) + 1 == 5
    wider = nhsic(t, TokenInputs(tokens, 50), sigma=0.2)
    assert wider == pytest.approx(nhsic(t, one_hot_tokens(tokens, 50), sigma=0.2), rel=1e-12)
    assert wider != pytest.approx(nhsic(t, inputs, sigma=0.2), rel=1e-3)  # d = T * V enters the width
    mask = torch.from_numpy(tokens[:, 0] != 0)
    subset = TokenInputs(tokens, 50)[mask]
    assert subset.vocabulary == 50 and len(subset) == int(mask.sum())
    assert nhsic(t[mask.numpy()], subset, sigma=0.2) == pytest.approx(
        nhsic(t[mask.numpy()], one_hot_tokens(tokens, 50)[mask.numpy()], sigma=0.2), rel=1e-12)


def test_a_vocabulary_no_one_hot_code_could_hold_is_measured_from_hamming_distances():
    t, tokens = token_pair(seed=44, n=300, positions=64, vocabulary=6)
    # 64 positions of 10^12 ids: a one-hot row would be 6.4e13 entries. The median bandwidth does not
    # depend on the dimension, so the value is that of the small code.
    got = hsic_measures(t, TokenInputs(tokens, vocabulary=10**12), tokens[:, 1], bandwidth="median")
    want = hsic_measures(t, one_hot_tokens(tokens, 6), tokens[:, 1], bandwidth="median")
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-12)


def test_chunks_of_any_size_give_the_same_values(monkeypatch):
    t, tokens = token_pair(seed=45, n=345, positions=6)
    y = tokens[:, 2]
    whole = hsic_measures(t, TokenInputs(tokens), y, per_pass=True)
    plain = cka(t, TokenInputs(tokens), per_pass=True)
    monkeypatch.setattr(hsic_batches, "CHUNK_BYTES", 1)  # one batch per chunk
    small = hsic_measures(t, TokenInputs(tokens), y, per_pass=True)
    for key in whole:
        np.testing.assert_allclose(small[key], whole[key], rtol=1e-12)
    np.testing.assert_allclose(cka(t, TokenInputs(tokens), per_pass=True), plain, rtol=1e-12)
    assert small["nhsic_x"] == pytest.approx(
        hsic_measures(t, one_hot_tokens(tokens, int(tokens.max()) + 1), y, per_pass=True)["nhsic_x"], rel=1e-12)


def test_model_inputs_become_tokens_or_features():
    tokens = np.array([[3, 0, 2], [1, 1, 0]], dtype=np.int32)
    inputs = as_hsic_inputs(tokens)
    assert isinstance(inputs, TokenInputs) and inputs.vocabulary == 4 and inputs.tokens.dtype == torch.int64
    assert torch.equal(inputs.tokens, torch.tensor(tokens, dtype=torch.int64))
    features = as_hsic_inputs(np.ones((2, 3), dtype=np.float32))
    assert isinstance(features, torch.Tensor) and features.dtype == torch.float32
    with pytest.raises(GrokscopeError, match="non-negative token ids"):
        as_hsic_inputs(-tokens)
    with pytest.raises(GrokscopeError, match="vocabulary"):
        TokenInputs(tokens, vocabulary=3)
    with pytest.raises(GrokscopeError, match="tokens: expected integer token ids"):
        TokenInputs(np.ones((2, 3)))
