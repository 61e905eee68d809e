"""Weight measures against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from grokscope.errors import GrokscopeError
from grokscope.measures.weights import weight_measures


def as_table(rows):
    return {(row["metric"], row["layer"]): row["value"] for row in rows}


def test_norms_of_a_small_state_dict():
    state = {
        "layers.0.weight": torch.tensor([[3.0, 0.0], [0.0, 4.0]]),
        "layers.0.bias": torch.tensor([12.0, 0.0]),
        "layers.1.weight": torch.tensor([[0.0, 0.0]]),
    }
    table = as_table(weight_measures(state))
    assert table[("weight_norm", None)] == pytest.approx(13.0)  # sqrt(9 + 16 + 144)
    assert table[("param_norm", "layers.0.weight")] == pytest.approx(5.0)
    assert table[("param_norm", "layers.0.bias")] == pytest.approx(12.0)
    assert table[("param_norm", "layers.1.weight")] == 0.0


def test_diagonal_matrix_spectrum():
    # Singular values 3, 2, 1: p = (1/2, 1/3, 1/6).
    table = as_table(weight_measures({"w": np.diag([-3.0, 2.0, 1.0])}))
    entropy = -(0.5 * math.log(0.5) + math.log(1 / 3) / 3 + math.log(1 / 6) / 6)
    assert table[("spectral_entropy", "w")] == pytest.approx(entropy, rel=1e-12)
    assert table[("effective_rank", "w")] == pytest.approx(math.exp(entropy), rel=1e-12)
    assert table[("stable_rank", "w")] == pytest.approx(14 / 9, rel=1e-12)


def test_orthogonal_and_rank_one_matrices():
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(5, 5)))
    rank_one = np.outer([1.0, 2.0, 3.0], [4.0, 5.0])
    table = as_table(weight_measures({"q": 7.0 * q, "r": rank_one}))
    assert table[("effective_rank", "q")] == pytest.approx(5.0, rel=1e-10)
    assert table[("spectral_entropy", "q")] == pytest.approx(math.log(5), rel=1e-10)
    assert table[("stable_rank", "q")] == pytest.approx(5.0, rel=1e-10)
    assert table[("effective_rank", "r")] == pytest.approx(1.0, rel=1e-10)
    assert table[("stable_rank", "r")] == pytest.approx(1.0, rel=1e-10)


def test_rectangular_matrix_uses_its_singular_values():
    w = np.zeros((4, 2))
    w[0, 0], w[3, 1] = 2.0, 2.0  # singular values 2, 2
    table = as_table(weight_measures({"w": w}))
    assert table[("effective_rank", "w")] == pytest.approx(2.0, rel=1e-12)


def test_balanced_factorisation_has_zero_balancedness():
    # W0 = U S V^T (hidden 4, input 6), W1 = P S U^T (output 3): W1^T W1 = U S^2 U^T = W0 W0^T.
    rng = np.random.default_rng(1)
    u, _ = np.linalg.qr(rng.normal(size=(4, 3)))
    v, _ = np.linalg.qr(rng.normal(size=(6, 3)))
    p, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    s = np.diag([3.0, 2.0, 1.0])
    balanced = {"layers.0.weight": u @ s @ v.T, "layers.1.weight": p @ s @ u.T}
    pairs = [("layers.0.weight", "layers.1.weight")]
    table = as_table(weight_measures(balanced, pairs=pairs))
    assert table[("balancedness", "layers.0.weight->layers.1.weight")] == pytest.approx(0.0, abs=1e-12)
    unbalanced = {"layers.0.weight": 2.0 * u @ s @ v.T, "layers.1.weight": p @ s @ u.T}
    table = as_table(weight_measures(unbalanced, pairs=pairs))
    # W1^T W1 - W0 W0^T = (1 - 4) U S^2 U^T, whose Frobenius norm is 3 ||S^2||_F.
    want = 3.0 * math.sqrt(81 + 16 + 1)
    assert table[("balancedness", "layers.0.weight->layers.1.weight")] == pytest.approx(want, rel=1e-10)


def test_balancedness_by_hand_and_only_for_pairs_that_follow_each_other():
    first = np.array([[1.0, 0.0], [0.0, 2.0]])  # W W^T = diag(1, 4)
    second = np.array([[3.0, 0.0]])  # W^T W = diag(9, 0)
    state = {
        "layers.0.weight": first,
        "layers.0.bias": np.zeros(2),
        "layers.1.weight": second,
        "head.weight": np.ones((5, 7)),  # does not chain with layers.1 (1 row vs 7 columns)
        "side.weight": np.ones((3, 1)),  # chains with layers.1's shape, but is not said to follow it
    }
    assert not [r for r in weight_measures(state) if r["metric"] == "balancedness"]  # no order known
    pairs = [("layers.0.weight", "layers.1.weight"), ("layers.1.weight", "head.weight")]
    rows = weight_measures(state, pairs=pairs)
    balancedness = [r for r in rows if r["metric"] == "balancedness"]
    assert balancedness == [
        {
            "metric": "balancedness",
            "layer": "layers.0.weight->layers.1.weight",
            "value": pytest.approx(math.sqrt(64 + 16)),
        }
    ]


def test_default_mlp_state_dict_rows():
    model = torch.nn.Sequential()
    layers = torch.nn.ModuleList([torch.nn.Linear(194, 250), torch.nn.Linear(250, 97, bias=False)])
    model.layers = layers
    state = model.state_dict()
    rows = weight_measures(state, pairs=[("layers.0.weight", "layers.1.weight")])
    table = as_table(rows)
    flat = torch.cat([p.flatten() for p in state.values()]).double()
    assert table[("weight_norm", None)] == pytest.approx(float(flat.norm()), rel=1e-12)
    assert [r["layer"] for r in rows if r["metric"] == "param_norm"] == list(state)
    assert ("balancedness", "layers.0.weight->layers.1.weight") in table
    assert {m for m, layer in table if layer == "layers.0.bias"} == {"param_norm"}
    s = torch.linalg.svdvals(state["layers.1.weight"].double())
    want = float((s**2).sum() / s.max() ** 2)
    assert table[("stable_rank", "layers.1.weight")] == pytest.approx(want, rel=1e-10)


def test_zero_matrix_spectral_measures_are_nan():
    table = as_table(weight_measures({"layers.1.weight": np.zeros((3, 4))}))
    for metric in ("spectral_entropy", "effective_rank", "stable_rank"):
        assert math.isnan(table[(metric, "layers.1.weight")])


def test_non_finite_weights_give_non_finite_values_without_raising():
    w = np.ones((3, 3))
    w[1, 1] = np.nan
    table = as_table(weight_measures({"a": w, "b": np.ones((2, 3))}, pairs=[("a", "b")]))
    assert math.isnan(table[("weight_norm", None)])
    assert math.isnan(table[("effective_rank", "a")])
    assert math.isnan(table[("balancedness", "a->b")])


def test_integer_buffers_are_ignored():
    table = as_table(weight_measures({"w": np.eye(2), "bn.num_batches_tracked": torch.tensor(10)}))
    assert table[("weight_norm", None)] == pytest.approx(math.sqrt(2))
    assert ("param_norm", "bn.num_batches_tracked") not in table


@pytest.mark.parametrize(
    ("state", "match"),
    [([1, 2], "state: expected a mapping"), ({"n": torch.tensor(3)}, "no floating")],
)
def test_user_mistakes_raise_grokscope_error(state, match):
    with pytest.raises(GrokscopeError, match=match):
        weight_measures(state)


def test_buffers_are_not_weights_and_tied_weights_count_once():
    embedding = torch.randn(7, 4)
    state = {
        "embed.W_E": embedding,
        "unembed.weight": embedding,  # tied: the same storage saved under two names
        "blocks.0.attn.mask": torch.tril(torch.ones(3, 3)),  # TransformerLens' buffers
        "blocks.0.attn.IGNORE": torch.tensor(-1e5),
        "h.0.attn.bias": torch.ones(1, 1, 3, 3),  # GPT-2's old causal mask
        "h.0.attn.c_attn.bias": torch.full((12,), 2.0),  # a real bias
    }
    table = as_table(weight_measures(state))
    want = math.sqrt(float(embedding.double().pow(2).sum()) + 12 * 4.0)
    assert table[("weight_norm", None)] == pytest.approx(want, rel=1e-12)
    assert {layer for metric, layer in table if metric == "param_norm"} == {"embed.W_E", "h.0.attn.c_attn.bias"}
    # Told by the model: only its parameters, each group of tied names once.
    groups = [("embed.W_E", "unembed.weight"), ("h.0.attn.c_attn.bias",)]
    assert as_table(weight_measures(state, parameters=groups))[("weight_norm", None)] == pytest.approx(want, rel=1e-12)


def test_three_dimensional_weights_are_measured_per_head():
    heads = torch.stack([torch.diag(torch.tensor([3.0, 2.0, 1.0])), torch.eye(3)])  # (2 heads, 3, 3)
    table = as_table(weight_measures({"attn.W_Q": heads, "conv.weight": torch.ones(4, 2, 3, 3)}))
    entropy = -(0.5 * math.log(0.5) + math.log(1 / 3) / 3 + math.log(1 / 6) / 6)
    assert table[("spectral_entropy", "attn.W_Q[0]")] == pytest.approx(entropy, rel=1e-12)
    assert table[("effective_rank", "attn.W_Q[1]")] == pytest.approx(3.0, rel=1e-12)
    assert table[("param_norm", "attn.W_Q")] == pytest.approx(math.sqrt(14 + 3), rel=1e-12)
    assert table[("stable_rank", "conv.weight")] == pytest.approx(1.0, rel=1e-12)  # (4, 18) of ones: rank 1


def test_linear_chains_follow_the_data_not_the_shapes():
    from grokscope.state_dicts import linear_chains

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)  # parallel, shapes chain
            self.up, self.down = torch.nn.Linear(4, 8), torch.nn.Linear(8, 4)

        def forward(self, x):
            x = x + torch.softmax(self.q(x) @ self.k(x).T, -1) @ x
            return self.down(torch.nn.functional.gelu(self.up(x)))

    mlp = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 5), torch.nn.Linear(5, 2))
    assert linear_chains(mlp, torch.randn(6, 3)) == [("0.weight", "2.weight"), ("2.weight", "3.weight")]
    assert linear_chains(Block(), torch.randn(6, 4)) == [("up.weight", "down.weight")]
