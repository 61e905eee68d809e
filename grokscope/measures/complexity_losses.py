r"""The losses that complexity constrains and the bounds and penalties around it: the training
loss and error of an ``nn.Module`` with a coarse-grained state swapped in, the paper's
generalisation bound and the spectral-entropy regulariser (DeMoss et al.; see
:mod:`grokscope.measures.complexity`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from grokscope.errors import GrokscopeError

#: delta of the generalisation bound (a 95% bound).
DEFAULT_DELTA = 0.05

Loss = Callable[[dict], float]


def generalisation_bound(bits: float, train_error: float, n: int, delta: float = DEFAULT_DELTA) -> float:
    r"""The paper's bound on the test error of a hypothesis described in ``bits`` bits:

    .. math::

        R \le \hat R + \sqrt{\frac{K + 2\log K + \log(1/\delta)}{2n}}

    (natural logarithms; with :math:`K` in bits rather than nats the bound is, if anything,
    looser than Hoeffding's union bound needs). Values above 1 are returned as they are
    (a vacuous bound says so).
    """
    if not n > 0:
        raise GrokscopeError(f"n: the number of training samples must be positive, got {n}")
    if not 0 < delta < 1:
        raise GrokscopeError(f"delta: must lie in (0, 1), got {delta}")
    if not bits >= 1 or not math.isfinite(bits):
        return math.nan
    return train_error + math.sqrt((bits + 2 * math.log(bits) + math.log(1 / delta)) / (2 * n))


def spectral_entropy_penalty(matrices: Sequence[torch.Tensor], eps: float = 1e-12) -> torch.Tensor:
    r"""The spectral-entropy regulariser: the mean over weight matrices of the entropy of their
    normalised singular values,

    .. math::

        \frac{1}{|\mathcal W|} \sum_{W \in \mathcal W} -\sum_i p_i \log(p_i + \epsilon),
        \qquad p_i = \frac{s_i(W)}{\sum_j s_j(W)},

    differentiable (through ``torch.linalg.svdvals``). :math:`\epsilon` (1e-12; the authors use
    1e-10) keeps the gradient finite when a singular value reaches zero. All-zero matrices have
    no spectrum to normalise and are left out of the mean (a zero-initialised output layer at
    step 0); with no matrix left the penalty is 0.
    """
    terms = []
    for matrix in matrices:
        sing = torch.linalg.svdvals(matrix)  # (min(rows, cols),)
        total = sing.sum()
        if not bool(total > 0):
            continue
        p = sing / total
        terms.append(-(p * torch.log(p + eps)).sum())
    if not terms:
        reference = matrices[0] if len(matrices) else torch.zeros(())
        return reference.new_zeros(())
    return torch.stack(terms).mean()


# --- losses of an nn.Module ----------------------------------------------------------------


def model_loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
               criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               readout: Callable | None = None) -> Loss:
    """``loss(state)``: ``criterion(model(inputs), targets)`` with ``state``'s weights swapped in
    (``torch.func.functional_call``; the module itself is not modified). Works for any module
    whose forward takes ``inputs``, MLP or transformer; ``readout`` turns the model's output into
    (N, K) logits where it is something else (a tuple, a sequence)."""

    @torch.no_grad()
    def loss(state: dict) -> float:
        output = torch.func.functional_call(model, state, (inputs,))
        return float(criterion(output if readout is None else readout(output), targets))

    return loss


def model_error(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                readout: Callable | None = None) -> Loss:
    """``error(state)``: the share of ``inputs`` whose argmax logit is not the target."""

    @torch.no_grad()
    def error(state: dict) -> float:
        output = torch.func.functional_call(model, state, (inputs,))
        logits = output if readout is None else readout(output)  # (N, K)
        return float((logits.argmax(dim=-1) != targets).double().mean())

    return error
