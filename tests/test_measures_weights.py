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
    table = as_table(weight_measures(balanced))
    assert table[("balancedness", "layers.0.weight->layers.1.weight")] == pytest.approx(0.0, abs=1e-12)
    unbalanced = {"layers.0.weight": 2.0 * u @ s @ v.T, "layers.1.weight": p @ s @ u.T}
    table = as_table(weight_measures(unbalanced))
    # W1^T W1 - W0 W0^T = (1 - 4) U S^2 U^T, whose Frobenius norm is 3 ||S^2||_F.
    want = 3.0 * math.sqrt(81 + 16 + 1)
    assert table[("balancedness", "layers.0.weight->layers.1.weight")] == pytest.approx(want, rel=1e-10)


def test_balancedness_by_hand_and_only_for_chaining_pairs():
    first = np.array([[1.0, 0.0], [0.0, 2.0]])  # W W^T = diag(1, 4)
    second = np.array([[3.0, 0.0]])  # W^T W = diag(9, 0)
    state = {
        "layers.0.weight": first,
        "layers.0.bias": np.zeros(2),
        "layers.1.weight": second,
        "head.weight": np.ones((5, 7)),  # does not chain with layers.1 (1 row vs 7 columns)
    }
    rows = weight_measures(state)
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
    rows = weight_measures(state)
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
    table = as_table(weight_measures({"a": w, "b": np.ones((2, 3))}))
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
