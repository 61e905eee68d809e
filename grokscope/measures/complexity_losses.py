r"""The losses that complexity constrains and the bounds and penalties around it: the training
loss and error of an ``nn.Module`` with a coarse-grained state swapped in, the paper's
generalisation bound and the spectral-entropy regulariser (DeMoss et al.; see
:mod:`grokscope.measures.complexity`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Integral

import torch

from grokscope.errors import GrokscopeError
from grokscope.measures.thread_independent import on_one_thread

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
        sing = on_one_thread(torch.linalg.svdvals, matrix)  # (min(rows, cols),)
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


def training_subsample(n: int, size: int | None, seed: int = 0) -> torch.Tensor | None:
    """The samples a loss is evaluated on: the first ``size`` of ``torch.randperm(n)`` of a CPU
    generator seeded with ``seed``, sorted (so the same on every device and at every call);
    ``None`` (every sample) when ``size`` is None or at least ``n``."""
    if size is not None and not (isinstance(size, Integral) and not isinstance(size, bool) and size >= 1):
        raise GrokscopeError(f"subsample: must be a positive integer or None, got {size!r}")
    if size is None or size >= n:
        return None
    generator = torch.Generator().manual_seed(int(seed))
    return torch.sort(torch.randperm(n, generator=generator)[:size]).values


def _tied_names(model: torch.nn.Module) -> list[tuple[str, ...]]:
    """Groups of names that are one parameter or buffer of ``model`` (tied weights)."""
    groups: dict[int, list[str]] = {}
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, tensor in named:
        groups.setdefault(id(tensor), []).append(name)
    return [tuple(names) for names in groups.values() if len(names) > 1]


class _Evaluation:
    """A model run with a given state dict on a fixed set of samples, in batches."""

    def __init__(self, model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                 readout: Callable | None, subsample: int | None, seed: int, batch_size: int | None):
        if batch_size is not None and not (isinstance(batch_size, Integral) and not isinstance(batch_size, bool)
                                           and batch_size >= 1):
            raise GrokscopeError(f"batch_size: must be a positive integer or None, got {batch_size!r}")
        chosen = training_subsample(len(targets), subsample, seed)
        if chosen is not None:
            inputs, targets = inputs[chosen.to(inputs.device)], targets[chosen.to(targets.device)]
        self.model, self.inputs, self.targets, self.readout = model, inputs, targets, readout
        self.batch_size = batch_size
        #: The samples evaluated, and the seed that chose them (None: every sample, no choice).
        self.samples = len(targets)
        self.seed = None if chosen is None else int(seed)
        self._tied = _tied_names(model)

    def _untied(self, state: dict) -> dict:
        """``state`` with one name per tied tensor: ``functional_call`` refuses two values for it
        (even two equal tensors) and gives the one it gets to all its names."""
        if not self._tied:
            return state
        state = dict(state)
        for group in self._tied:
            present = [name for name in group if name in state]
            for name in present[1:]:
                kept, other = state[present[0]], state[name]
                if other is not kept and not (other.shape == kept.shape and torch.equal(other, kept)):
                    raise GrokscopeError(f"state: {present[0]!r} and {name!r} are one tied parameter of the "
                                         "model but hold different values")
                del state[name]
        return state

    def batches(self, state: dict):
        """(logits, targets) of each batch with ``state``'s weights swapped in."""
        state = self._untied(state)
        size = self.samples if self.batch_size is None else self.batch_size
        for start in range(0, self.samples, size):
            output = torch.func.functional_call(self.model, state, (self.inputs[start:start + size],))
            yield (output if self.readout is None else self.readout(output)), self.targets[start:start + size]


class ModelLoss(_Evaluation):
    """``loss(state) -> float``, built by :func:`model_loss`; ``samples`` and ``seed`` say which
    samples it is evaluated on (recorded in every :class:`~grokscope.measures.complexity.Complexity`)."""

    def __init__(self, model, inputs, targets, criterion, readout=None, *, subsample=None, seed=0, batch_size=None):
        super().__init__(model, inputs, targets, readout, subsample, seed, batch_size)
        self.criterion = criterion

    @torch.no_grad()
    def __call__(self, state: dict) -> float:
        values = [(float(self.criterion(logits, y)), len(y)) for logits, y in self.batches(state)]
        if len(values) == 1:
            return values[0][0]
        # Each batch's mean weighted by its share of the samples: the criterion's mean over all of them.
        return sum(value * size for value, size in values) / self.samples


class ModelError(_Evaluation):
    """``error(state) -> float``, built by :func:`model_error`."""

    @torch.no_grad()
    def __call__(self, state: dict) -> float:
        wrong = sum(int((logits.argmax(dim=-1) != y).sum()) for logits, y in self.batches(state))
        return wrong / self.samples


def model_loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
               criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               readout: Callable | None = None, *, subsample: int | None = None, seed: int = 0,
               batch_size: int | None = None) -> ModelLoss:
    """``loss(state)``: ``criterion(model(inputs), targets)`` with ``state``'s weights swapped in
    (``torch.func.functional_call``; the module itself is not modified). Works for any module
    whose forward takes ``inputs``, MLP or transformer; ``readout`` turns the model's output into
    (N, K) logits where it is something else (a tuple, a sequence).

    ``subsample`` evaluates it on that many samples only, the same ones at every call
    (:func:`training_subsample` with ``seed``): a network's loss on a fixed random subset, whose
    agreement with the whole training set docs/complexity.md measures. ``batch_size`` runs the
    model on that many samples at a time, for memory, and averages the batches' criteria weighted
    by their sizes, which is the criterion over all samples when it is a mean over samples (as
    cross-entropy and MSE are; equal up to float rounding). A tied parameter (several names of
    one tensor of ``model``) is passed once, under the first of its names in ``state``; its other
    names, if given, must hold the same values.
    """
    return ModelLoss(model, inputs, targets, criterion, readout, subsample=subsample, seed=seed,
                     batch_size=batch_size)


def model_error(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                readout: Callable | None = None, *, subsample: int | None = None, seed: int = 0,
                batch_size: int | None = None) -> ModelError:
    """``error(state)``: the share of ``inputs`` whose argmax logit is not the target (options as
    in :func:`model_loss`)."""
    return ModelError(model, inputs, targets, readout, subsample, seed, batch_size)
