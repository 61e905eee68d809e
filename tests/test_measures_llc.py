"""The local learning coefficient on models whose learning coefficient is known."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from grokscope.errors import GrokscopeError
from grokscope.measures.llc import SGLDSettings, divergence_bound, estimate_llc, llc_rows


def gaussian_nll(output, target):
    # The per-sample negative log-likelihood of unit-variance Gaussian noise, up to a constant:
    # the loss the learning-coefficient theory is stated for.
    return 0.5 * ((output.reshape(target.shape) - target) ** 2).mean()


def regression_data(n, d, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator)
    y = x @ torch.linspace(-1.5, 1.5, d) + torch.randn(n, generator=generator)
    least_squares = torch.linalg.lstsq(x, y.unsqueeze(1)).solution.squeeze(1)
    return x, y, least_squares


SETTINGS = SGLDSettings(step_size=1e-4, localization=1.0, chains=8, draws=1500, batch_size=256, seed=3)


def standard_error(estimate):
    return estimate.llc_sd / math.sqrt(len(estimate.chain_llc))


def test_full_rank_linear_regression_has_half_its_parameters():
    n, d = 2000, 4
    x, y, w_star = regression_data(n, d)
    model = nn.Linear(d, 1, bias=False)
    estimate = estimate_llc(model, {"weight": w_star.unsqueeze(0)}, gaussian_nll, x, y, SETTINGS)
    assert estimate.n_parameters == d
    assert estimate.nbeta == pytest.approx(n / math.log(n))
    assert estimate.reference_loss == pytest.approx(float(gaussian_nll(x @ w_star, y)), rel=1e-5)
    # Regular model: lambda = d / 2.
    assert abs(estimate.llc - d / 2) <= 2 * estimate.llc_sd
    # The localised tempered posterior of a quadratic loss is Gaussian with precision
    # n beta H + gamma I, so E[n beta (L - L*)] = 1/2 sum_i n beta h_i / (n beta h_i + gamma).
    h = torch.linalg.eigvalsh((x.T @ x / n).double())
    nbeta, gamma = estimate.nbeta, SETTINGS.localization
    exact = float(0.5 * (nbeta * h / (nbeta * h + gamma)).sum())
    assert abs(estimate.llc - exact) <= 4 * standard_error(estimate)


class Product(nn.Module):
    """y = x . (a * b): 2k parameters, a k-dimensional set of equally good ones."""

    def __init__(self, k):
        super().__init__()
        self.a = nn.Parameter(torch.ones(k))
        self.b = nn.Parameter(torch.ones(k))

    def forward(self, x):
        return x @ (self.a * self.b)


class Unused(nn.Module):
    """y = x . w, plus a parameter the output never reads."""

    def __init__(self, k, unused):
        super().__init__()
        self.w = nn.Parameter(torch.ones(k))
        self.u = nn.Parameter(torch.ones(unused))

    def forward(self, x):
        return x @ self.w


def test_degenerate_directions_lower_the_coefficient():
    k = 2
    x, y, c_star = regression_data(2000, k, seed=1)
    regular = estimate_llc(nn.Linear(k, 1, bias=False), {"weight": c_star.unsqueeze(0)}, gaussian_nll, x, y,
                           SETTINGS)
    a = c_star.abs().sqrt()
    product = estimate_llc(Product(k), {"a": a, "b": c_star / a}, gaussian_nll, x, y, SETTINGS)
    unused = estimate_llc(Unused(k, 3), {"w": c_star, "u": torch.zeros(3)}, gaussian_nll, x, y, SETTINGS)
    assert (product.n_parameters, unused.n_parameters) == (2 * k, k + 3)
    # Both learn the same k-dimensional function: lambda = k / 2, below d / 2 of their parameters.
    for estimate in (product, unused):
        assert abs(estimate.llc - k / 2) <= 2 * estimate.llc_sd
        assert estimate.llc + 3 * estimate.llc_sd < estimate.n_parameters / 2
    assert abs(regular.llc - k / 2) <= 2 * regular.llc_sd


class Tied(nn.Module):
    """Two modules sharing one weight: y = 2 x . w."""

    def __init__(self, d):
        super().__init__()
        self.first = nn.Linear(d, 1, bias=False)
        self.second = self.first

    def forward(self, x):
        return self.first(x) + self.second(x)


def test_tied_parameters_count_once():
    d = 3
    x, y, w_star = regression_data(2000, d, seed=2)
    state = {"first.weight": w_star.unsqueeze(0) / 2, "second.weight": w_star.unsqueeze(0) / 2}
    estimate = estimate_llc(Tied(d), state, gaussian_nll, x, y, SETTINGS)
    assert estimate.n_parameters == d
    assert abs(estimate.llc - d / 2) <= 2 * estimate.llc_sd
    # Either name of the group will do.
    only_second = estimate_llc(Tied(d), {"second.weight": state["second.weight"]}, gaussian_nll, x, y, SETTINGS)
    np.testing.assert_array_equal(only_second.loss_trace, estimate.loss_trace)


def small_classifier():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 4))
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(300, 12, generator=generator)
    y = torch.randint(0, 4, (300,), generator=generator)
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}, x, y


def test_same_call_same_values_whatever_the_thread_count():
    model, state, x, y = small_classifier()
    settings = SGLDSettings(chains=3, draws=60, burnin=0, batch_size=50, seed=11)
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            runs.append(estimate_llc(model, state, nn.functional.cross_entropy, x, y, settings))
    finally:
        torch.set_num_threads(before)
    for other in runs[1:]:
        np.testing.assert_array_equal(other.loss_trace, runs[0].loss_trace)
        assert other.llc == runs[0].llc
    reseeded = estimate_llc(model, state, nn.functional.cross_entropy, x, y,
                            SGLDSettings(chains=3, draws=60, burnin=0, batch_size=50, seed=12))
    assert not np.array_equal(reseeded.loss_trace, runs[0].loss_trace)
    # The model's own values are never touched.
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name])


def test_the_sgld_step_by_hand():
    model, state, x, y = small_classifier()
    settings = SGLDSettings(step_size=1e-3, localization=50.0, nbeta=40.0, chains=2, draws=5, burnin=2,
                            batch_size=128, seed=4)
    estimate = estimate_llc(model, state, nn.functional.cross_entropy, x, y, settings)

    # The documented random streams, one chain after the other.
    n, m, steps = len(y), settings.batch_size, settings.burnin + settings.draws
    index_generator = torch.Generator().manual_seed(settings.seed)
    epochs = math.ceil(steps * m / n)
    orders = [torch.cat([torch.randperm(n, generator=index_generator) for _ in range(epochs)])
              for _ in range(settings.chains)]
    noise_generator = torch.Generator().manual_seed(settings.seed + 1)
    names = [name for name, _ in model.named_parameters()]
    chains = [{k: state[k].clone() for k in names} for _ in range(settings.chains)]
    losses = np.zeros((settings.chains, steps))
    for t in range(steps):
        flat_noise = torch.randn((settings.chains, sum(state[k].numel() for k in names)), generator=noise_generator)
        pieces = flat_noise.split([state[k].numel() for k in names], dim=1)
        noises = {k: piece.reshape(settings.chains, *state[k].shape) for k, piece in zip(names, pieces)}
        for c, w in enumerate(chains):
            idx = orders[c][t * m:(t + 1) * m]
            params = {k: v.clone().requires_grad_(True) for k, v in w.items()}
            loss = nn.functional.cross_entropy(torch.func.functional_call(model, params, (x[idx],)), y[idx])
            grads = torch.autograd.grad(loss, list(params.values()))
            losses[c, t] = float(loss.detach())
            for k, g in zip(names, grads):
                drift = settings.localization * (w[k] - state[k]) + settings.nbeta * g
                w[k] = w[k] - settings.step_size / 2 * drift + math.sqrt(settings.step_size) * noises[k][c]
    np.testing.assert_allclose(estimate.loss_trace, losses[:, settings.burnin:], rtol=1e-5)
    with torch.no_grad():
        reference = float(nn.functional.cross_entropy(model(x), y))
    assert estimate.reference_loss == pytest.approx(reference, rel=1e-6)
    per_chain = settings.nbeta * (losses[:, settings.burnin:].mean(axis=1) - reference)
    np.testing.assert_allclose(estimate.chain_llc, per_chain, rtol=1e-4)
    assert estimate.llc == pytest.approx(per_chain.mean(), rel=1e-4)
    assert estimate.llc_sd == pytest.approx(per_chain.std(ddof=1), rel=1e-3)


def test_burn_in_steps_are_left_out_of_the_mean():
    model, state, x, y = small_classifier()
    long = estimate_llc(model, state, nn.functional.cross_entropy, x, y,
                        SGLDSettings(chains=2, draws=30, burnin=0, batch_size=40, seed=9))
    burnt = estimate_llc(model, state, nn.functional.cross_entropy, x, y,
                         SGLDSettings(chains=2, draws=20, burnin=10, batch_size=40, seed=9))
    np.testing.assert_array_equal(burnt.loss_trace, long.loss_trace[:, 10:])
    # Draw 0 without burn-in is the minibatch loss at w* itself.
    assert long.loss_trace.shape == (2, 30)


def test_a_diverging_chain_gives_nan_with_the_reason():
    x, y, w_star = regression_data(500, 3)
    model = nn.Linear(3, 1, bias=False)
    estimate = estimate_llc(model, {"weight": w_star.unsqueeze(0)}, gaussian_nll, x, y,
                            SGLDSettings(step_size=0.05, localization=1.0, chains=3, draws=50, batch_size=100))
    assert estimate.diverged.all()
    assert math.isnan(estimate.llc) and math.isnan(estimate.llc_sd)
    assert np.isnan(estimate.chain_llc).all()
    assert "diverged" in estimate.reason and "chain 0" in estimate.reason and "step size" in estimate.reason
    # The bound: ten times the largest mean loss a healthy chain can hold, L* + d / (2 n beta).
    assert divergence_bound(0.5, 100.0, 4) == pytest.approx(10 * (0.5 + 4 / 200))

    healthy = estimate_llc(model, {"weight": w_star.unsqueeze(0)}, gaussian_nll, x, y,
                           SGLDSettings(step_size=1e-4, chains=2, draws=50, burnin=0, batch_size=100))
    assert healthy.reason is None and not healthy.diverged.any()
    bound = divergence_bound(healthy.reference_loss, healthy.nbeta, healthy.n_parameters)
    assert healthy.chain_max_loss.max() < bound


def test_rows_carry_every_chain_and_the_trace_summary():
    model, state, x, y = small_classifier()
    estimate = estimate_llc(model, state, nn.functional.cross_entropy, x, y,
                            SGLDSettings(chains=3, draws=20, burnin=0, batch_size=50))
    rows = llc_rows(estimate)
    table = {(r["metric"], r["chain"]): r["value"] for r in rows}
    assert table[("llc", None)] == estimate.llc
    assert [table[("llc_chain", c)] for c in range(3)] == list(estimate.chain_llc)
    assert table[("llc_max_loss", 1)] == estimate.loss_trace[1].max()
    assert table[("llc_final_loss", 2)] == estimate.loss_trace[2, -1]
    assert table[("llc_parameters", None)] == 12 * 32 + 32 + 32 * 4 + 4
    assert {r["layer"] for r in rows} == {None}


@pytest.mark.parametrize("change, option", [
    ({"step_size": 0.0}, "step_size"), ({"step_size": math.inf}, "step_size"),
    ({"localization": -1.0}, "localization"), ({"nbeta": 0.0}, "nbeta"), ({"chains": 0}, "chains"),
    ({"draws": 1.5}, "draws"), ({"burnin": -1}, "burnin"), ({"batch_size": 301}, "batch_size"),
    ({"seed": "x"}, "seed"),
])
def test_bad_settings_are_one_line_errors_naming_the_setting(change, option):
    model, state, x, y = small_classifier()
    with pytest.raises(GrokscopeError, match=rf"^{option}: "):
        estimate_llc(model, state, nn.functional.cross_entropy, x, y, SGLDSettings(**change))


def test_missing_or_misshapen_parameters_are_errors():
    model, state, x, y = small_classifier()
    with pytest.raises(GrokscopeError, match="no value for the model's parameter '0.bias'"):
        estimate_llc(model, {k: v for k, v in state.items() if k != "0.bias"}, nn.functional.cross_entropy, x, y)
    with pytest.raises(GrokscopeError, match="'2.weight' has shape"):
        estimate_llc(model, {**state, "2.weight": torch.zeros(3, 3)}, nn.functional.cross_entropy, x, y)
    with pytest.raises(GrokscopeError, match="inputs: 299 samples but 300 targets"):
        estimate_llc(model, state, nn.functional.cross_entropy, x[:-1], y)


def test_rows_draw_as_the_llc_figure(tmp_path):
    import pandas as pd

    from grokscope.plotting import style
    from grokscope.plotting.llc import llc_curve

    model, state, x, y = small_classifier()
    rows = []
    for step, seed in ((10, 0), (100, 1)):
        estimate = estimate_llc(model, state, nn.functional.cross_entropy, x, y,
                                SGLDSettings(chains=2, draws=10, burnin=0, batch_size=50, seed=seed))
        rows += [{"run": "r", "step": step, **row} for row in llc_rows(estimate)]
    events = pd.DataFrame([{"run": "r", "event": "memorisation", "step": 20}])
    options = style.FigureOptions(width=3, height=2, dpi=50)
    path = style.save(llc_curve(pd.DataFrame(rows), events, options), tmp_path / "llc.png", options)
    assert path.stat().st_size > 0
