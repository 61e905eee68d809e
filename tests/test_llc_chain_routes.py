"""The fast routes of the LLC's chains give what the plain route gives: grokscope's MLP on every
chain at once (its first layer a lookup on one-hot inputs), and the noise drawn ahead on a
second thread."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from grokscope.config import ModelConfig
from grokscope.families.llc import chain_route
from grokscope.measures.llc import SGLDSettings, estimate_llc
from grokscope.measures.sgld_noise import NoiseStream
from grokscope.model import build_model, one_hot_columns


def modular_inputs(n, p, seed=0):
    """[a, b] as two one-hot blocks of p (the modular tasks' inputs), and labels (a + b) mod p."""
    generator = torch.Generator().manual_seed(seed)
    a, b = torch.randint(0, p, (n,), generator=generator), torch.randint(0, p, (n,), generator=generator)
    x = torch.zeros(n, 2 * p)
    x[torch.arange(n), a] = 1.0
    x[torch.arange(n), p + b] = 1.0
    return x, (a + b) % p


def test_one_hot_columns_are_the_positions_of_the_ones():
    x, _ = modular_inputs(50, 7)
    columns = one_hot_columns(x)
    assert columns.shape == (50, 2) and columns.dtype == torch.int64
    rebuilt = torch.zeros_like(x)
    rebuilt[torch.arange(50)[:, None], columns] = 1.0
    assert torch.equal(rebuilt, x)
    assert bool((columns[:, 0] < 7).all()) and bool((columns[:, 1] >= 7).all())


@pytest.mark.parametrize("change", ["a value of 0.5", "a third one in one row", "a row of zeros"])
def test_inputs_that_are_not_one_hot_have_no_columns(change):
    x, _ = modular_inputs(20, 5)
    if change == "a value of 0.5":
        x[3, x[3].argmax()] = 0.5
    elif change == "a third one in one row":
        x[4, (x[4] == 0).nonzero()[0]] = 1.0
    else:
        x[:] = 0.0
    assert one_hot_columns(x) is None


@pytest.mark.parametrize("depth,activation,output_bias", [(1, "relu", False), (2, "gelu", True)])
@pytest.mark.parametrize("one_hot", [True, False])
def test_the_mlp_on_every_chain_at_once_is_each_chains_functional_call(depth, activation, output_bias, one_hot):
    p, chains, batch = 11, 3, 16
    config = ModelConfig(width=24, depth=depth, activation=activation, output_bias=output_bias)
    model = build_model(2 * p, p, config, seed=1)
    x, y = modular_inputs(chains * batch, p, seed=2)
    if not one_hot:
        x = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(4)
    params = {k: torch.randn((chains, *v.shape), generator=generator).requires_grad_(True)
              for k, v in model.named_parameters()}
    batches = x.reshape(chains, batch, -1)  # (C, B, 2p)
    forward, inputs = chain_route(model, x)
    assert forward is not None and (inputs.dtype == torch.int64) == one_hot
    together = forward(params, inputs.reshape(chains, batch, *inputs.shape[1:]))  # (C, B, p)
    apart = torch.stack([functional_call(model, {k: v[c] for k, v in params.items()}, (batches[c],))
                         for c in range(chains)])
    torch.testing.assert_close(together, apart, rtol=1e-6, atol=1e-6)
    targets = y.reshape(chains, batch)
    grads_together = torch.autograd.grad(sum(nn.functional.cross_entropy(together[c], targets[c])
                                             for c in range(chains)), list(params.values()))
    grads_apart = torch.autograd.grad(sum(nn.functional.cross_entropy(apart[c], targets[c])
                                          for c in range(chains)), list(params.values()))
    for a, b in zip(grads_together, grads_apart):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_another_model_keeps_the_plain_route():
    model = nn.Sequential(nn.Linear(10, 4))
    x, _ = modular_inputs(8, 5)
    forward, inputs = chain_route(model, x)
    assert forward is None and inputs is x


def test_the_llc_through_the_mlp_route_is_the_llc_through_vmap():
    p = 13
    model = build_model(2 * p, p, ModelConfig(width=32), seed=0)
    x, y = modular_inputs(400, p, seed=5)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    settings = SGLDSettings(step_size=1e-3, chains=3, draws=40, burnin=5, batch_size=32, seed=6)
    plain = estimate_llc(model, state, nn.functional.cross_entropy, x, y, settings)
    forward, columns = chain_route(model, x)
    fast = estimate_llc(model, state, nn.functional.cross_entropy, columns, y, settings, chain_forward=forward)
    np.testing.assert_allclose(fast.loss_trace, plain.loss_trace, rtol=1e-5)
    assert fast.reference_loss == pytest.approx(plain.reference_loss, rel=1e-6)
    np.testing.assert_allclose(fast.chain_llc, plain.chain_llc, rtol=1e-4)


def test_noise_drawn_ahead_is_the_noise_drawn_in_turn():
    shape = (3, 1000)
    expected = torch.Generator().manual_seed(9)
    with NoiseStream(shape, torch.Generator().manual_seed(9), dtype=torch.float32, device=torch.device("cpu"),
                     ahead=True) as ahead, \
            NoiseStream(shape, torch.Generator().manual_seed(9), dtype=torch.float32,
                        device=torch.device("cpu"), ahead=False) as in_turn:
        for _ in range(5):
            drawn = ahead.next().clone()
            assert torch.equal(drawn, in_turn.next())
            assert torch.equal(drawn, torch.randn(shape, generator=expected))


def test_the_mlp_route_is_the_same_on_one_or_two_threads_and_leaves_the_thread_count():
    p = 11
    model = build_model(2 * p, p, ModelConfig(width=40), seed=3)
    x, y = modular_inputs(300, p, seed=7)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    forward, columns = chain_route(model, x)
    settings = SGLDSettings(chains=4, draws=50, burnin=0, batch_size=30, seed=2)
    before = torch.get_num_threads()
    try:
        traces = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            estimate = estimate_llc(model, state, nn.functional.cross_entropy, columns, y, settings,
                                    chain_forward=forward)
            assert torch.get_num_threads() == threads  # the noise's thread is given back
            traces.append(estimate.loss_trace)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(traces[0], traces[1])
