r"""Measures of the weights alone, from a state dict: norms, balancedness, spectra.

Every function here reads nothing but the parameters, so it runs on a checkpoint without
features. The default grokscope MLP's state dict holds ``layers.0.weight``, ``layers.0.bias``,
``layers.1.weight`` (Linear layers from input to output; the last has no bias).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from grokscope.errors import GrokscopeError


def _as_parameters(state: Mapping) -> dict[str, torch.Tensor]:
    """The floating-point entries of ``state`` as float64 tensors, in the given order."""
    if not isinstance(state, Mapping):
        raise GrokscopeError(
            f"state: expected a mapping of parameter names to arrays, got {type(state).__name__}"
        )
    parameters = {}
    for name, value in state.items():
        tensor = torch.as_tensor(value)
        # Integer buffers (e.g. BatchNorm's num_batches_tracked) are counters, not weights.
        if tensor.is_floating_point():
            parameters[name] = tensor.detach().to(torch.float64)
    if not parameters:
        raise GrokscopeError("state: holds no floating-point parameters")
    return parameters


def _row(metric: str, layer: str | None, value) -> dict:
    return {"metric": metric, "layer": layer, "value": float(value)}


def _spectral_rows(name: str, matrix: torch.Tensor) -> list[dict]:
    r"""Spectral entropy, effective rank and stable rank of one matrix.

    .. math::

        p_i = \frac{s_i}{\sum_j s_j}, \qquad H = -\sum_i p_i \log p_i, \qquad
        \operatorname{erank} = e^{H}, \qquad
        \operatorname{srank} = \frac{\lVert W \rVert_F^2}{\lVert W \rVert_2^2}
                             = \frac{\sum_i s_i^2}{\max_i s_i^2}

    with :math:`s_i` the singular values (not their squares), as in Roy & Vetterli's effective
    rank. All three are scale-invariant and undefined for a zero matrix (``nan``).
    """
    if not torch.isfinite(matrix).all() or not matrix.any():
        summary = dict.fromkeys(("spectral_entropy", "effective_rank", "stable_rank"), math.nan)
    else:
        summary = spectral_summary(torch.linalg.svdvals(matrix))  # (min(rows, cols),)
    return [_row(metric, name, value) for metric, value in summary.items()]


def spectral_summary(singular_values: torch.Tensor) -> dict[str, float]:
    r"""Spectral entropy, effective rank and stable rank from a matrix's singular values.

    The formulas of :func:`weight_measures`; taking the singular values lets a caller that
    already holds an SVD (``measures.complexity``) reuse it. All three are ``nan`` when every
    singular value is zero.
    """
    sing = torch.as_tensor(singular_values).to(torch.float64)
    if not torch.isfinite(sing).all() or not sing.any():
        return dict.fromkeys(("spectral_entropy", "effective_rank", "stable_rank"), math.nan)
    p = sing / sing.sum()
    entropy = float(-torch.special.xlogy(p, p).sum())
    return {
        "spectral_entropy": entropy,
        "effective_rank": math.exp(entropy),
        "stable_rank": float(sing.pow(2).sum() / sing.max().pow(2)),
    }


def _balancedness(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    # first: (h, in), second: (out, h); both Gram matrices are (h, h).
    return torch.linalg.matrix_norm(second.T @ second - first @ first.T)


@torch.no_grad()
def weight_measures(state: Mapping) -> list[dict]:
    r"""Norms, balancedness and spectral measures of a model's parameters.

    Rows, each ``{"metric", "layer", "value"}``:

    - ``weight_norm`` (layer ``None``): the global L2 norm over every floating-point entry,
      :math:`\sqrt{\sum_p \lVert \theta_p \rVert_F^2}`. (Sato & Sakamoto's code logs the
      *sum* of per-parameter norms instead; the rows below give those norms.)
    - ``param_norm`` (layer = parameter name): :math:`\lVert \theta_p \rVert_F`.
    - ``spectral_entropy``, ``effective_rank``, ``stable_rank`` (layer = name), for each 2-D
      parameter :math:`W` with singular values :math:`s_i`:

      .. math::

          H = -\sum_i p_i \log p_i, \quad p_i = s_i / \textstyle\sum_j s_j, \qquad
          \operatorname{erank} = e^H, \qquad
          \operatorname{srank} = \lVert W \rVert_F^2 / \lVert W \rVert_2^2

      :math:`p` is built from the singular values themselves, not their squares, following
      Roy & Vetterli (2007), "The effective rank: a measure of effective dimensionality",
      EUSIPCO. A zero matrix (e.g. a zero-initialised output layer at step 0) gives ``nan``:
      these are scale-invariant and have no value at zero.
    - ``balancedness`` (layer ``"A->B"``) for each pair of consecutive 2-D parameters A, B in
      the order given whose shapes chain (``B.shape[1] == A.shape[0]``):

      .. math::

          \lVert W_B^\top W_B - W_A W_A^\top \rVert_F

      which gradient flow keeps constant in a deep linear network (Arora, Cohen & Hazan 2018,
      "On the optimization of deep networks: implicit acceleration by overparameterization",
      ICML; Du, Hu & Lee 2018, NeurIPS, prove the per-neuron version for ReLU networks), and
      which is zero at the critical points of a weight-decayed linear network. Pairs that do
      not chain are not adjacent layers and are skipped.

    Parameters
    ----------
    state : Mapping[str, array_like]
        A state dict (torch tensors or numpy arrays). Non-floating entries (integer buffers)
        are ignored; computed in float64 on each tensor's device.

    Returns
    -------
    list[dict]
        ``weight_norm``, then ``param_norm`` per parameter, then the spectral rows per matrix,
        then ``balancedness`` per pair. Non-finite weights give non-finite values, never an
        exception.

    Raises
    ------
    GrokscopeError
        ``state`` is not a mapping or has no floating-point entries.
    """
    parameters = _as_parameters(state)
    squared = [p.pow(2).sum() for p in parameters.values()]
    rows = [_row("weight_norm", None, math.sqrt(sum(float(s) for s in squared)))]
    rows += [_row("param_norm", name, s.sqrt()) for name, s in zip(parameters, squared)]

    matrices = [(name, p) for name, p in parameters.items() if p.ndim == 2]
    for name, matrix in matrices:
        rows += _spectral_rows(name, matrix)
    for (name_a, a), (name_b, b) in zip(matrices, matrices[1:]):
        if b.shape[1] == a.shape[0]:
            rows.append(_row("balancedness", f"{name_a}->{name_b}", _balancedness(a, b)))
    return rows
