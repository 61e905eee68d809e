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
from grokscope.measures.thread_independent import fixed_order_sum, on_one_thread


# Entries that models keep in their state dicts but that are not trained weights: attention masks
# (TransformerLens' ``mask`` and ``IGNORE``, GPT-2's ``masked_bias``) and normalisation statistics.
BUFFER_NAMES = ("mask", "IGNORE", "masked_bias", "running_mean", "running_var", "num_batches_tracked")


def _is_buffer_name(name: str, tensor: torch.Tensor) -> bool:
    last = name.rsplit(".", 1)[-1]
    # GPT-2 stored its causal mask as attn.bias, a (1, 1, n, n) tensor: a bias is never 4-D.
    return last in BUFFER_NAMES or (last == "bias" and tensor.ndim == 4)


def _identity(tensor: torch.Tensor) -> tuple:
    return (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
            tensor.stride())


def shared_entries(state: Mapping) -> list[tuple[str, ...]]:
    """Groups of two or more names of ``state`` whose tensors are the same memory (same storage,
    offset, shape and strides): a tied weight saved or passed under each of its names, e.g.
    GPT-2's ``lm_head.weight`` and ``transformer.wte.weight``. In the order of their first names."""
    groups: dict[tuple, list[str]] = {}
    for name, value in state.items():
        tensor = torch.as_tensor(value)
        if tensor.numel():
            groups.setdefault(_identity(tensor), []).append(name)
    return [tuple(names) for names in groups.values() if len(names) > 1]


def _as_parameters(state: Mapping, parameters=None) -> dict[str, torch.Tensor]:
    """The trained weights of ``state`` as float64 tensors, each once, in the given order.

    With ``parameters`` (groups of names of one parameter, from the model), the first name of
    each group present in ``state``; without, every floating-point entry except those named like
    buffers, tensors that share storage (tied weights saved twice) counted once.
    """
    if not isinstance(state, Mapping):
        raise GrokscopeError(
            f"state: expected a mapping of parameter names to arrays, got {type(state).__name__}"
        )
    chosen: dict[str, torch.Tensor] = {}
    if parameters is not None:
        for group in parameters:
            names = (group,) if isinstance(group, str) else tuple(group)
            name = next((n for n in names if n in state), None)
            if name is not None:
                chosen[name] = torch.as_tensor(state[name])
    else:
        seen = set()
        for name, value in state.items():
            tensor = torch.as_tensor(value)
            # Integer buffers (e.g. BatchNorm's num_batches_tracked) are counters, not weights.
            if not tensor.is_floating_point() or _is_buffer_name(name, tensor):
                continue
            identity = _identity(tensor)
            if identity in seen:
                continue
            seen.add(identity)
            chosen[name] = tensor
    parameters = {n: t.detach().to(torch.float64) for n, t in chosen.items() if t.is_floating_point()}
    if not parameters:
        raise GrokscopeError("state: holds no floating-point parameters")
    return parameters


def _matrices(name: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """The matrices of one parameter for the spectral measures: a 2-D weight as it is; a 3-D one
    (per-head attention weights, heads first) as one matrix per head, ``name[h]``; a 4-D or larger
    one (a convolution kernel) reshaped to (out, in * kernel)."""
    if tensor.ndim == 2:
        return [(name, tensor)]
    if tensor.ndim == 3:
        return [(f"{name}[{i}]", tensor[i]) for i in range(tensor.shape[0])]
    if tensor.ndim > 3:
        return [(name, tensor.reshape(tensor.shape[0], -1))]
    return []


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
        summary = spectral_summary(on_one_thread(torch.linalg.svdvals, matrix))  # (min(rows, cols),)
    return [_row(metric, name, value) for metric, value in summary.items()]


def spectral_summary(singular_values: torch.Tensor) -> dict[str, float]:
    r"""Spectral entropy, effective rank and stable rank from a matrix's singular values.

    The formulas of :func:`weight_measures`; taking the singular values lets a caller that
    already holds an SVD (``measures.coarse_graining``) reuse it. All three are ``nan`` when every
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
    return fixed_order_sum((second.T @ second - first @ first.T).pow(2)).sqrt()


@torch.no_grad()
def weight_measures(state: Mapping, parameters=None, pairs=None) -> list[dict]:
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
    - ``balancedness`` (layer ``"A->B"``) for each pair in ``pairs`` (weights of layers where B
      takes A's output, through an elementwise activation) whose shapes chain
      (``B.shape[1] == A.shape[0]``):

      .. math::

          \lVert W_B^\top W_B - W_A W_A^\top \rVert_F

      which gradient flow keeps constant in a deep linear network (Arora, Cohen & Hazan 2018,
      "On the optimization of deep networks: implicit acceleration by overparameterization",
      ICML; Du, Hu & Lee 2018, NeurIPS, prove the per-neuron version for ReLU networks), and
      which is zero at the critical points of a weight-decayed linear network. Two matrices
      whose shapes merely fit are not adjacent layers: without ``pairs`` there is no
      balancedness row.

    A 3-D parameter (per-head attention weights) gives spectral rows per head (``name[h]``); a
    4-D or larger one is reshaped to (out, rest). Norms always cover the whole tensor.

    Parameters
    ----------
    state : Mapping[str, array_like]
        A state dict (torch tensors or numpy arrays); computed in float64 on each tensor's device.
    parameters : sequence of str or of tuples of str, optional
        The model's parameters (each as the tuple of its tied names): only these count, each
        once. Default: every floating-point entry except buffers named like attention masks or
        normalisation statistics (:data:`BUFFER_NAMES`), entries sharing storage counted once.
    pairs : sequence of (str, str), optional
        Weights of layers that follow each other in the forward pass (see
        :func:`grokscope.features.linear_chains`).

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
    chosen = _as_parameters(state, parameters)
    squared = [fixed_order_sum(p.pow(2)) for p in chosen.values()]
    rows = [_row("weight_norm", None, math.sqrt(sum(float(s) for s in squared)))]
    rows += [_row("param_norm", name, s.sqrt()) for name, s in zip(chosen, squared)]
    for name, tensor in chosen.items():
        for matrix_name, matrix in _matrices(name, tensor):
            rows += _spectral_rows(matrix_name, matrix)
    aliases = _alias_map(parameters)
    for name_a, name_b in pairs or ():
        a, b = (_lookup(chosen, state, name, aliases) for name in (name_a, name_b))
        if a is not None and b is not None and a.ndim == b.ndim == 2 and b.shape[1] == a.shape[0]:
            rows.append(_row("balancedness", f"{name_a}->{name_b}", _balancedness(a, b)))
    return rows


def _alias_map(parameters) -> dict[str, tuple[str, ...]]:
    groups = [(g,) if isinstance(g, str) else tuple(g) for g in parameters or ()]
    return {name: group for group in groups for name in group}


def _lookup(chosen: dict, state: Mapping, name: str, aliases: dict) -> torch.Tensor | None:
    for candidate in aliases.get(name, (name,)):
        if candidate in chosen:
            return chosen[candidate]
        if candidate in state:
            return torch.as_tensor(state[candidate]).detach().to(torch.float64)
    return None
