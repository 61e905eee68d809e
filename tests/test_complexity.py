"""Complexity (DeMoss et al.): coarse-graining, quantisation, compression floor, the loss
constraint, the search against a brute-force grid, the bound, and the spectral-entropy penalty."""

from __future__ import annotations

import bz2
import lzma
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grokscope.errors import GrokscopeError
from grokscope.measures.complexity import (
    DEFAULT_MAX_LOSS_EVALUATIONS,
    CoarseGraining,
    compressed_bits,
    complexity,
    generalisation_bound,
    model_error,
    model_loss,
    quantise,
    rate_distortion,
    serialise,
    spectral_entropy_penalty,
    training_subsample,
    truncation_rank,
)


@pytest.fixture(autouse=True)
def one_thread():
    # Thousands of tiny forward passes: with intra-op threads on a shared 2-core box each one
    # waits on its sibling thread, ~15x slower than on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def trained_mlp(seed: int = 0, steps: int = 150):
    """A 10 -> 24 -> 5 ReLU MLP fitted to random labels: a memorising network with full-rank,
    unevenly spread spectra, small enough for a brute-force grid."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(60, 10, generator=generator)
    y = torch.randint(0, 5, (60,), generator=generator)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, 24), nn.ReLU(), nn.Linear(24, 5))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return model, x, y, state


# --- coarse-graining -----------------------------------------------------------------------


def test_truncation_rank_is_the_smallest_rank_reaching_tau():
    s = np.sort(np.random.default_rng(0).exponential(size=12))[::-1]
    for tau in np.linspace(0, 1, 41):
        expected = next(k for k in range(13) if s[:k].sum() >= tau * s.sum() - 1e-12)
        assert truncation_rank(s, float(tau)) == expected, tau


def test_matrix_of_known_rank_keeps_its_rank():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(40, 5)) @ rng.normal(size=(5, 30))  # rank 5
    grain = CoarseGraining({"w": torch.from_numpy(w)})
    assert grain.ranks(1.0) == (5,)  # stored as factors: 5 * 70 < 1200 entries
    assert grain.stored_ranks(grain.ranks(1.0)) == {"w": 5}
    coarse, codes = grain.coarse(grain.ranks(1.0), 2.0 ** -30)
    assert [c.shape for c in codes] == [(40, 5), (5, 30)]
    assert torch.linalg.matrix_rank(coarse["w"]).item() == 5
    assert torch.allclose(coarse["w"], torch.from_numpy(w), atol=1e-7)
    # A lower tau keeps the leading directions only.
    s = np.linalg.svd(w, compute_uv=False)
    k = truncation_rank(s, 0.5)
    assert 0 < k < 5 and grain.ranks(0.5) == (k,)


def test_full_matrix_is_kept_where_factors_would_not_save_entries():
    w = torch.from_numpy(np.random.default_rng(2).normal(size=(6, 6)))  # full rank 6: 6 * 12 > 36
    grain = CoarseGraining({"w": w})
    assert grain.ranks(1.0) == (None,)
    k = truncation_rank(torch.linalg.svdvals(w), 0.4)
    assert grain.ranks(0.4) == ((k,) if k * 12 < 36 else (None,))


@pytest.mark.parametrize("bin_size", [1e-3, 0.37, 5.0])
def test_quantisation_error_is_at_most_half_a_bin(bin_size):
    rng = np.random.default_rng(3)
    values = torch.from_numpy(rng.normal(scale=3.0, size=5000))
    codes = quantise(values, bin_size)
    assert codes.dtype == torch.int64
    assert (codes * bin_size - values).abs().max().item() <= bin_size / 2 * (1 + 1e-12)
    # The same bound through the coarse-graining of vectors and full matrices.
    state = {"v": values[:40].float(), "m": values[40:76].reshape(6, 6).float()}
    grain = CoarseGraining(state)
    coarse, _ = grain.coarse(grain.ranks(1.0), bin_size)
    for name in state:
        error = (coarse[name].double() - state[name].double()).abs().max().item()
        assert error <= bin_size / 2 + 1e-6 * max(1.0, bin_size)


def test_serialise_uses_the_narrowest_integer_type():
    small, large = torch.tensor([-128, 0, 127]), torch.tensor([-129, 5])
    data = serialise([small, large])
    assert data == np.array([-128, 0, 127], "<i1").tobytes() + np.array([-129, 5], "<i2").tobytes()


# --- complexity ----------------------------------------------------------------------------


@pytest.mark.parametrize("compressor,floor", [("bz2", bz2.compress(b"", 9)), ("lzma", lzma.compress(b""))])
def test_zero_network_costs_the_compressors_floor(compressor, floor):
    model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.ReLU(), nn.Linear(16, 4, bias=False))
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    x, y = torch.randn(30, 8), torch.randint(0, 4, (30,))
    result = complexity(state, model_loss(model, x, y, F.cross_entropy), 0.0, compressor=compressor)
    # Every matrix is rank 0 and there is nothing else to code: the compressed empty stream.
    assert result.bits == 8 * len(floor)
    assert result.ranks == {"0.weight": 0, "2.weight": 0}
    assert result.loss == pytest.approx(math.log(4))


@pytest.mark.parametrize("tolerance", [0.0, 0.01, 0.1, 1.0])
def test_loss_constraint_holds_at_the_chosen_point(tolerance):
    model, x, y, state = trained_mlp()
    loss = model_loss(model, x, y, F.cross_entropy)
    result = complexity(state, loss, tolerance, error=model_error(model, x, y))
    assert result.loss <= result.original_loss + tolerance
    assert result.bits <= result.raw_bits
    if result.bin_size > 0:
        # Rebuild the chosen network independently of the search's cache.
        grain = CoarseGraining(state)
        coarse, codes = grain.coarse(grain.ranks(result.tau), result.bin_size)
        recomputed = F.cross_entropy(torch.func.functional_call(model, coarse, (x,)), y).item()
        assert recomputed == pytest.approx(result.loss, abs=1e-6)
        assert recomputed <= result.original_loss + tolerance + 1e-6
        assert compressed_bits(serialise(codes)) == result.bits
        errors = (torch.func.functional_call(model, coarse, (x,)).argmax(1) != y).double().mean().item()
        assert result.error == pytest.approx(errors)


def brute_force(state, loss, tolerances, taus, bins_per_octave, compressor="bz2"):
    """Per tolerance, the smallest feasible size over every (tau, bin) of the grid and the identity."""
    grain = CoarseGraining(state)
    original = loss(grain.state)
    points = []  # (loss, bits) of every grid point
    low, high = grain.bin_range(bins_per_octave)
    for tau in taus:
        for j in range(low, high + 1):
            coarse, codes = grain.coarse(grain.ranks(tau), 2.0 ** (j / bins_per_octave))
            points.append((loss(coarse), compressed_bits(serialise(codes), compressor)))
    raw = grain.raw_bits(compressor)
    return [min([raw] + [bits for value, bits in points if value <= original + tolerance]) for tolerance in tolerances]


@pytest.mark.parametrize("seed", [0, 1])
def test_search_finds_the_brute_force_optimum_of_the_grid(seed):
    model, x, y, state = trained_mlp(seed)
    loss = model_loss(model, x, y, F.cross_entropy)
    taus, bins_per_octave = [i / 10 for i in range(11)], 2
    tolerances = [0.003, 0.03, 0.3, 3.0]
    found = rate_distortion(state, loss, tolerances, taus=taus, bins_per_octave=bins_per_octave)
    assert [r.bits for r in found] == brute_force(state, loss, tolerances, taus, bins_per_octave)
    # A looser tolerance never costs more bits.
    assert all(a.bits >= b.bits for a, b in zip(found, found[1:]))
    # Something was truncated somewhere along the curve, so the tau axis was exercised.
    assert any(r.tau < 1 for r in found)


def test_search_is_reproducible_and_cheaper_than_the_grid():
    model, x, y, state = trained_mlp(2)
    loss = model_loss(model, x, y, F.cross_entropy)
    first, second = (complexity(state, loss, 0.1) for _ in range(2))
    assert (first.bits, first.tau, first.bin_size) == (second.bits, second.tau, second.bin_size)
    grain = CoarseGraining(state)
    low, high = grain.bin_range(16)
    assert first.loss_evaluations < (high - low + 1) * 51 / 20


def test_works_on_a_module_with_token_inputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(11, 8), nn.Flatten(), nn.Linear(16, 11))
    tokens = torch.randint(0, 11, (50, 2))
    targets = (tokens[:, 0] + tokens[:, 1]) % 11
    loss = model_loss(model, tokens, targets, F.cross_entropy)
    result = complexity(dict(model.state_dict()), loss, 0.05)
    assert result.loss <= result.original_loss + 0.05
    assert set(result.ranks) == {"0.weight", "2.weight"}


def test_nonfinite_weights_give_nan():
    model, x, y, state = trained_mlp(steps=1)
    state["0.weight"][0, 0] = float("nan")
    result = complexity(state, model_loss(model, x, y, F.cross_entropy), 0.1)
    assert math.isnan(result.bits)


def test_bad_options_name_themselves():
    model, x, y, state = trained_mlp(steps=1)
    loss = model_loss(model, x, y, F.cross_entropy)
    with pytest.raises(GrokscopeError, match="--compressor"):
        complexity(state, loss, 0.1, compressor="zip")
    with pytest.raises(GrokscopeError, match="--tolerance"):
        complexity(state, loss, -1.0)


def test_generalisation_bound_formula():
    bits, error, n, delta = 1000.0, 0.02, 5000, 0.05
    expected = error + math.sqrt((bits + 2 * math.log(bits) + math.log(1 / delta)) / (2 * n))
    assert generalisation_bound(bits, error, n, delta) == pytest.approx(expected, rel=1e-12)
    assert generalisation_bound(2 * bits, error, n, delta) > generalisation_bound(bits, error, n, delta)


# --- the spectral-entropy penalty ----------------------------------------------------------


def test_spectral_entropy_penalty_value_and_finite_difference_gradient():
    rng = np.random.default_rng(4)
    matrices = [torch.tensor(rng.normal(size=shape), requires_grad=True) for shape in ((5, 3), (4, 6), (3, 3))]

    def direct(arrays):
        entropies = []
        for a in arrays:
            s = np.linalg.svd(a, compute_uv=False)
            p = s / s.sum()
            entropies.append(-(p * np.log(p + 1e-12)).sum())
        return float(np.mean(entropies))

    value = spectral_entropy_penalty(matrices)
    arrays = [m.detach().numpy().copy() for m in matrices]
    assert value.item() == pytest.approx(direct(arrays), rel=1e-12)
    value.backward()
    h = 1e-6
    for index, matrix in enumerate(matrices):
        numeric = np.zeros_like(arrays[index])
        for position in np.ndindex(*numeric.shape):
            plus = [a.copy() for a in arrays]
            minus = [a.copy() for a in arrays]
            plus[index][position] += h
            minus[index][position] -= h
            numeric[position] = (direct(plus) - direct(minus)) / (2 * h)
        np.testing.assert_allclose(matrix.grad.numpy(), numeric, rtol=1e-5, atol=1e-8)


def test_spectral_entropy_penalty_skips_zero_matrices():
    w = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))
    p = torch.tensor([0.75, 0.25], dtype=torch.float64)
    expected = -(p * torch.log(p + 1e-12)).sum()
    assert spectral_entropy_penalty([w, torch.zeros(4, 2, dtype=torch.float64)]).item() == pytest.approx(expected.item())
    assert spectral_entropy_penalty([torch.zeros(3, 3)]).item() == 0.0


# --- grokscope measure --metric complexity, plot complexity, train regularisers --------------


def invoke(*args):
    from typer.testing import CliRunner

    from grokscope.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two tiny runs, plain and with both regularisers."""
    out = tmp_path_factory.mktemp("runs")
    result = invoke("train", "--p", "7", "--width", "16", "--steps", "24", "--save-every", "8", "--save-log", "0",
                    "--spectral-entropy", "0,0.1", "--weight-noise", "0.01", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    return [out / "add-p7-se0", out / "add-p7-se0.1"]


def copy_run(run_dir, tmp_path):
    import shutil

    target = tmp_path / run_dir.name
    shutil.copytree(run_dir, target)
    return target


def test_measure_complexity_table(tiny_runs, tmp_path):
    import pandas as pd

    from grokscope import formats

    run = copy_run(tiny_runs[0], tmp_path)
    result = invoke("measure", run, "--metric", "complexity", "--tolerance", "0.01,0.3", "-q")
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(formats.tables.measures_path(run, "complexity"))]
    table = pd.read_parquet(formats.tables.measures_path(run, "complexity"))
    assert list(table.columns[:6]) == ["run", "step", "metric", "value", "split", "layer"]
    assert {"tolerance", "spectral_entropy", "weight_noise", "params"} <= set(table.columns)
    assert sorted(table["step"].unique()) == [0, 8, 16, 24]
    sizes = table[table["metric"] == "complexity"]
    assert len(sizes) == 4 * 2 and set(sizes["tolerance"]) == {0.01, 0.3}
    wide = table[table["layer"].isna()].pivot_table(index=["step", "tolerance"], columns="metric", values="value")
    assert (wide["complexity_loss"] <= wide["complexity_reference_loss"] + wide.index.get_level_values(1) + 1e-6).all()
    assert (wide["complexity"] <= wide["complexity_raw"]).all()
    # The reference loss is the history's training loss at the same step (both on the whole split).
    history = formats.run.read_history(run).set_index("step")["train_loss"]
    reference = wide.xs(0.01, level="tolerance")["complexity_reference_loss"]
    np.testing.assert_allclose(reference.values, history.loc[reference.index].values, rtol=1e-5)
    ranks = table[(table["metric"] == "complexity_rank")]
    assert set(ranks["layer"]) == {"layers.0.weight", "layers.1.weight"}
    # Spectral entropy from the coarse-graining's SVDs equals the weights family's.
    assert invoke("measure", run, "--metric", "weights", "-q").exit_code == 0
    weights = pd.read_parquet(formats.tables.measures_path(run, "weights"))
    keys = ["step", "layer"]
    both = table[table["metric"] == "spectral_entropy"].merge(
        weights[weights["metric"] == "spectral_entropy"], on=keys, suffixes=("", "_w"))
    assert len(both) == 8 and np.allclose(both["value"], both["value_w"], rtol=1e-10)


def test_measure_complexity_with_workers_gives_the_same_rows(tiny_runs, tmp_path):
    import pandas as pd

    from grokscope import formats

    one, two = copy_run(tiny_runs[1], tmp_path / "a"), copy_run(tiny_runs[1], tmp_path / "b")
    assert invoke("measure", one, "--metric", "complexity", "-q").exit_code == 0
    assert invoke("measure", two, "--metric", "complexity", "--workers", "2", "-q").exit_code == 0
    a, b = (pd.read_parquet(formats.tables.measures_path(r, "complexity")) for r in (one, two))
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize(("args", "named"), [
    (["--tolerance", "-1"], "--tolerance"),
    (["--tolerance", "x"], "--tolerance"),
    (["--compressor", "zip"], "--compressor"),
])
def test_measure_complexity_bad_options(tiny_runs, args, named):
    result = invoke("measure", tiny_runs[0], "--metric", "complexity", *args)
    assert result.exit_code == 2 and named in result.stderr and "Traceback" not in result.output


def test_plot_complexity_curve_and_rate_distortion(tiny_runs, tmp_path):
    runs = [copy_run(r, tmp_path) for r in tiny_runs]
    for run in runs:
        assert invoke("measure", run, "--metric", "complexity", "--tolerance", "0.01,0.1,1", "-q").exit_code == 0
    curve = tmp_path / "curve.png"
    result = invoke("plot", "complexity", *runs, "--color", "spectral_entropy", "-o", curve)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(curve) and curve.stat().st_size > 10_000
    rd = tmp_path / "rd.svg"
    result = invoke("plot", "complexity", *runs, "--steps", "8,24", "-o", rd)
    assert result.exit_code == 0, result.output
    assert "step 8" in rd.read_text() and "step 24" in rd.read_text()
    # One tolerance only: the rate-distortion view says what to measure.
    single = copy_run(tiny_runs[0], tmp_path / "single")
    assert invoke("measure", single, "--metric", "complexity", "-q").exit_code == 0
    result = invoke("plot", "complexity", single, "--steps", "8", "-o", tmp_path / "x.png")
    assert result.exit_code == 2 and "--tolerance" in result.stderr
    result = invoke("plot", "curves", single, "--steps", "8", "-o", tmp_path / "x.png")
    assert result.exit_code == 2 and "--steps" in result.stderr


def test_plot_complexity_figure_draws_what_the_table_holds(tiny_runs, tmp_path):
    from grokscope.plotting import draw, style
    from grokscope.plotting.data import load

    run = copy_run(tiny_runs[0], tmp_path)
    assert invoke("measure", run, "--metric", "complexity", "-q").exit_code == 0
    tables = load([str(run)])
    figure = draw("complexity", tables, style.FigureOptions())
    drawn = figure.data.sort_values("step")
    expected = tables.metric("complexity")
    expected = expected[expected["step"] > 0].sort_values("step")
    np.testing.assert_allclose(drawn["kbit"].values, expected["value"].values / 1000)


def test_spectral_entropy_penalty_lowers_the_spectral_entropy(tmp_path):
    from grokscope import formats
    from grokscope.measures.weights import weight_measures

    result = invoke("train", "--p", "7", "--width", "16", "--steps", "150", "--save-every", "150", "--save-log", "0",
                    "--spectral-entropy", "0,1", "--out", tmp_path, "-q")
    assert result.exit_code == 0, result.output
    entropies = []
    for name in ("add-p7-se0", "add-p7-se1"):
        state = formats.run.load_checkpoint(formats.run.checkpoint_path(tmp_path / name, 150))
        rows = [r for r in weight_measures(state) if r["metric"] == "spectral_entropy"]
        entropies.append(np.mean([r["value"] for r in rows]))
        assert formats.run.read_run(tmp_path / name).optim.spectral_entropy == float(name[len("add-p7-se"):])
    assert entropies[1] < entropies[0] - 0.1


def test_weight_noise_is_drawn_per_step_from_the_seed(tmp_path):
    from grokscope import formats

    args = ["--p", "7", "--width", "16", "--steps", "10", "--save-every", "10", "--save-log", "0", "-q"]
    for name, extra in (("a", ["--weight-noise", "0.05"]), ("b", ["--weight-noise", "0.05"]), ("c", [])):
        # Each in its own --out: in one folder, b (a's settings and seed) would be given a itself.
        assert invoke("train", *args, *extra, "--name", name, "--out", tmp_path / name).exit_code == 0
    a, b, c = (formats.run.load_checkpoint(formats.run.checkpoint_path(tmp_path / n / n, 10)) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed, same noise
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the noise changed the gradients


@pytest.mark.parametrize(("option", "value"), [("--weight-noise", "-0.1"), ("--spectral-entropy", "-1")])
def test_negative_regulariser_is_a_one_line_error(tmp_path, option, value):
    result = invoke("train", "--p", "7", "--steps", "2", option, value, "--out", tmp_path)
    assert result.exit_code == 2 and option in result.stderr and "Traceback" not in result.output


# --- bounded cost: a seeded subsample of the training set, a bound on the loss evaluations -----


def test_training_subsample_is_the_seeded_permutations_head_sorted():
    generator = torch.Generator().manual_seed(5)
    want = torch.sort(torch.randperm(60, generator=generator)[:17]).values
    assert torch.equal(training_subsample(60, 17, seed=5), want)
    assert torch.equal(training_subsample(60, 17, seed=5), want)  # the same at every call
    assert not torch.equal(training_subsample(60, 17, seed=6), want)
    assert training_subsample(60, None) is None and training_subsample(60, 60) is None
    for bad in (0, -3, 2.5, True):
        with pytest.raises(GrokscopeError, match="subsample"):
            training_subsample(60, bad)


def test_subsampled_and_batched_losses_are_the_criterion_on_those_samples():
    model, x, y, state = trained_mlp(steps=40)
    chosen = training_subsample(60, 23, seed=1)
    with torch.no_grad():
        logits = torch.func.functional_call(model, state, (x[chosen],))
        want_loss = F.cross_entropy(logits, y[chosen]).item()
        want_error = (logits.argmax(1) != y[chosen]).double().mean().item()
    loss = model_loss(model, x, y, F.cross_entropy, subsample=23, seed=1)
    assert (loss.samples, loss.seed) == (23, 1)
    assert loss(state) == pytest.approx(want_loss, rel=1e-6)
    assert model_error(model, x, y, subsample=23, seed=1)(state) == want_error
    whole = model_loss(model, x, y, F.cross_entropy)
    assert (whole.samples, whole.seed) == (60, None)
    # Batches of 7 (the last of 4): sizes weigh each batch's mean into the mean over all samples.
    batched = model_loss(model, x, y, F.cross_entropy, batch_size=7)
    assert batched(state) == pytest.approx(whole(state), rel=1e-6)
    assert model_error(model, x, y, batch_size=7)(state) == model_error(model, x, y)(state)
    with pytest.raises(GrokscopeError, match="batch_size"):
        model_loss(model, x, y, F.cross_entropy, batch_size=0)


def test_a_bounded_search_stops_at_its_bound_on_a_feasible_point():
    model, x, y, state = trained_mlp(seed=3)
    calls = []

    def loss(coarse_state):  # counts every evaluation, independently of the search's own count
        calls.append(1)
        return F.cross_entropy(torch.func.functional_call(model, coarse_state, (x,)), y).item()

    (unbounded,) = rate_distortion(state, loss, [0.1], max_loss_evaluations=None)
    assert not unbounded.exhausted and unbounded.max_loss_evaluations is None
    assert len(calls) == unbounded.loss_evaluations + 1  # and the original network's
    assert unbounded.loss_evaluations > 6
    (roomy,) = rate_distortion(state, loss, [0.1], max_loss_evaluations=unbounded.loss_evaluations)
    assert (roomy.bits, roomy.tau, roomy.bin_size, roomy.exhausted) == (
        unbounded.bits, unbounded.tau, unbounded.bin_size, False)
    for bound in (1, 3, 6):
        calls.clear()
        (bounded,) = rate_distortion(state, loss, [0.1], max_loss_evaluations=bound)
        assert bounded.exhausted and bounded.max_loss_evaluations == bound
        assert len(calls) == bounded.loss_evaluations + 1 <= bound + 1
        assert bounded.raw_bits >= bounded.bits >= unbounded.bits
        if bounded.bin_size > 0:  # a point of the grid, checked independently of the search
            grain = CoarseGraining(state)
            coarse, codes = grain.coarse(grain.ranks(bounded.tau), bounded.bin_size)
            assert loss(coarse) <= bounded.original_loss + 0.1
            assert compressed_bits(serialise(codes)) == bounded.bits
    with pytest.raises(GrokscopeError, match="max_loss_evaluations"):
        rate_distortion(state, loss, [0.1], max_loss_evaluations=0)


def test_the_result_records_the_samples_and_bound_it_was_searched_with():
    model, x, y, state = trained_mlp(steps=40)
    (result,) = rate_distortion(state, model_loss(model, x, y, F.cross_entropy, subsample=30, seed=4), [0.1])
    assert (result.loss_samples, result.loss_seed) == (30, 4)
    assert result.max_loss_evaluations == DEFAULT_MAX_LOSS_EVALUATIONS == 64
    (plain,) = rate_distortion(state, lambda s: model_loss(model, x, y, F.cross_entropy)(s), [0.1])
    assert (plain.loss_samples, plain.loss_seed) == (None, None)  # a loss that does not say


# --- tied weights: one tensor under two names, coded and perturbed once ----------------------


class TiedLanguageModel(nn.Module):
    """A tiny model whose output layer is its embedding (``head.weight`` is ``wte.weight``), as
    GPT-2's and nanoGPT's ``lm_head.weight`` is ``transformer.wte.weight``."""

    def __init__(self, vocabulary=13, width=6):
        super().__init__()
        self.wte = nn.Embedding(vocabulary, width)
        self.mlp = nn.Linear(width, width)
        self.head = nn.Linear(width, vocabulary, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, tokens):
        return self.head(torch.tanh(self.mlp(self.wte(tokens).mean(dim=1))))


class OneEmbeddingModel(nn.Module):
    """The same function with a single parameter where the tied model has two names."""

    def __init__(self, vocabulary=13, width=6):
        super().__init__()
        self.wte = nn.Embedding(vocabulary, width)
        self.mlp = nn.Linear(width, width)

    def forward(self, tokens):
        return F.linear(torch.tanh(self.mlp(self.wte(tokens).mean(dim=1))), self.wte.weight)


def trained_tied(steps=120):
    torch.manual_seed(0)
    model = TiedLanguageModel()
    tokens = torch.randint(0, 13, (80, 3), generator=torch.Generator().manual_seed(1))
    targets = (tokens[:, 0] + tokens[:, 1]) % 13
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(tokens), targets).backward()
        optimizer.step()
    return model, tokens, targets


def test_tied_weights_are_coded_and_counted_once_with_finite_values():
    from grokscope.state_dicts import parameter_groups

    model, tokens, targets = trained_tied()
    state = model.state_dict()  # both names, one storage
    assert set(state) == {"wte.weight", "mlp.weight", "mlp.bias", "head.weight"}
    loss = model_loss(model, tokens, targets, F.cross_entropy)
    names = [group[0] for group in parameter_groups(model)]  # what measure passes
    results = rate_distortion(state, loss, [0.01, 0.3], names=names, error=model_error(model, tokens, targets))
    for result in results:
        assert all(math.isfinite(v) for v in (result.bits, result.loss, result.original_loss, result.error))
        assert set(result.ranks) == {"wte.weight", "mlp.weight"}  # head.weight is wte.weight
        assert result.loss <= result.original_loss + result.tolerance
    unique = [state[n].detach().numpy().tobytes() for n in ("wte.weight", "mlp.weight", "mlp.bias")]
    assert results[0].raw_bits == 8 * len(bz2.compress(b"".join(unique), 9))
    # Found from shared memory without names, or told by `tied` for a copy that shares nothing.
    copied = {k: v.clone() for k, v in state.items()}
    for same in (rate_distortion(state, loss, [0.01, 0.3]),
                 rate_distortion(copied, loss, [0.01, 0.3], tied=parameter_groups(model))):
        assert [(r.bits, r.tau, r.bin_size, r.ranks) for r in same] == [
            (r.bits, r.tau, r.bin_size, r.ranks) for r in results]


def test_a_tied_network_measures_as_the_same_network_with_one_parameter():
    model, tokens, targets = trained_tied()
    single = OneEmbeddingModel()
    single.load_state_dict({k: v for k, v in model.state_dict().items() if k != "head.weight"})
    with torch.no_grad():
        assert torch.equal(single(tokens), model(tokens))
    tied = rate_distortion(model.state_dict(), model_loss(model, tokens, targets, F.cross_entropy), [0.01, 0.3])
    alone = rate_distortion(single.state_dict(), model_loss(single, tokens, targets, F.cross_entropy), [0.01, 0.3])
    for a, b in zip(tied, alone):
        assert (a.bits, a.tau, a.bin_size, a.loss, a.original_loss, a.raw_bits, a.ranks) == (
            b.bits, b.tau, b.bin_size, b.loss, b.original_loss, b.raw_bits, b.ranks)
    assert any(r.bin_size > 0 for r in tied)  # something was perturbed


def test_coarse_states_give_a_tied_tensor_one_value_and_contradictions_are_refused():
    model, tokens, targets = trained_tied(steps=5)
    grain = CoarseGraining(model.state_dict())
    assert grain.names == ["wte.weight", "mlp.weight", "mlp.bias"]
    coarse, _ = grain.coarse(grain.ranks(1.0), 2.0 ** -4)
    assert coarse["head.weight"] is coarse["wte.weight"]
    assert not torch.equal(coarse["wte.weight"], model.wte.weight)
    loss = model_loss(model, tokens, targets, F.cross_entropy)
    broken = dict(coarse, **{"head.weight": coarse["head.weight"] + 1.0})
    with pytest.raises(GrokscopeError, match="'wte.weight' and 'head.weight' are one tied parameter"):
        loss(broken)
    with pytest.raises(GrokscopeError, match="one tied tensor but hold different values"):
        CoarseGraining(broken, tied=[("wte.weight", "head.weight")])
