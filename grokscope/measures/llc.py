r"""The local learning coefficient (LLC) of a checkpoint, estimated by SGLD localised at its weights.

Lau, Furman, Wang, Murfet & Wei, "The local learning coefficient: a singularity-aware complexity
measure" (arXiv:2308.12108, AISTATS 2025; first titled "Quantifying degeneracy in singular models
via the learning coefficient"); Timaeus' ``devinterp`` implements it. For a model with
parameters :math:`w`, a training set of :math:`n` samples and its empirical loss
:math:`L_n(w) = \frac1n \sum_i \ell_i(w)` (a negative log-likelihood per sample), the LLC at a
checkpoint :math:`w^*` is estimated as

.. math::

    \hat\lambda(w^*) = n\beta \left( \mathbb{E}_{w \sim p_\gamma}[L_n(w)] - L_n(w^*) \right),
    \qquad
    p_\gamma(w) \propto \exp\!\Big(-n\beta\, L_n(w) - \frac{\gamma}{2} \lVert w - w^* \rVert^2\Big),

with inverse temperature :math:`n\beta = n / \log n` by default (:math:`\beta^* = 1/\log n`, the
paper's choice). The expectation is taken over stochastic-gradient Langevin dynamics (Welling &
Teh 2011) started at :math:`w^*`, on minibatches :math:`B_t` of :math:`m` samples:

.. math::

    w_{t+1} = w_t - \frac{\varepsilon}{2}\Big[\gamma (w_t - w^*) + n\beta\, \nabla L_{B_t}(w_t)\Big]
              + \xi_t, \qquad \xi_t \sim \mathcal N(0, \varepsilon I),

and the expectation is the mean over the draws of the minibatch loss :math:`L_{B_t}(w_t)` that
each step computes with its gradient (an unbiased estimate of :math:`L_n(w_t)`).

Conventions, checked against devinterp 2.0.1's source (``devinterp.optim.SGMCMC.sgld``,
``devinterp.slt.sampler``, ``devinterp.slt.llc.compute_llc``) so that the same hyperparameters
mean the same thing: the step and noise scale above are devinterp's (its ``lr`` is
:math:`\varepsilon`, ``localization`` is :math:`\gamma`, ``n_beta`` is :math:`n\beta`, noise
level 1); the loss of step :math:`t` is the minibatch loss at :math:`w_t` *before* the step, so
step 0 is at :math:`w^*`. Where grokscope differs:

- :math:`L_n(w^*)` is the loss on the whole training set (devinterp: the mean of 32 minibatch
  losses);
- burn-in steps are left out of the mean (devinterp 2.0.1 averages every step, burn-in
  included); with no burn-in the two agree, grokscope's default has 200;
- every chain draws its own minibatches, a fresh shuffle each epoch (devinterp's chains share
  one order by default, and each replays its first epoch's order, never seeing the last partial
  batch), so the chains' spread includes minibatch noise;
- the default :math:`n\beta` is the paper's :math:`n/\log n` (devinterp's ``default_nbeta`` is
  :math:`m/\log m`, :math:`m` the *batch* size);
- the spread is the sample standard deviation (devinterp's ``llc_std`` divides by the number of
  chains).

The chains run together: every chain's parameters live in one (chains, d) tensor, one batched
forward pass evaluates every chain's loss on its own minibatch (``torch.func.vmap`` of
``functional_call``, or a model's own ``chain_forward``: grokscope's MLP looks its first layer up
on one-hot inputs) and one backward pass gives every chain's gradient. With two CPU threads or
more, the next step's noise is drawn on one of them meanwhile (:mod:`~grokscope.measures.sgld_noise`).

**Divergence.** A chain has diverged when the loss of any of its steps (burn-in included) is
not finite or exceeds

.. math::

    L_{\max} = 10 \left( L_n(w^*) + \frac{d}{2\, n\beta} \right),

ten times the largest mean loss a chain can hold: no model of :math:`d` parameters has a
learning coefficient above :math:`d/2` (Watanabe 2009), so under :math:`p_\gamma`,
:math:`\mathbb{E}[L_n] \le L_n(w^*) + d / (2 n\beta)`. A chain past it has left the
neighbourhood of :math:`w^*` (a step size too large for the curvature). Its value is ``nan``,
and so are the mean and spread, with the reason: a diverged estimate is not a value. Slower
drifts stay below the bound; the per-chain maximum and final losses kept with every estimate
show them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from grokscope.errors import GrokscopeError
from grokscope.measures.sgld_noise import NoiseStream, compute_threads, draws_ahead


@dataclass(frozen=True)
class SGLDSettings:
    """The sampler's hyperparameters; each is an explicit option, recorded with the values."""

    # epsilon: the chain relaxes along the localisation at a rate epsilon * gamma / 2 per step
    # (0.05 here: stationary after ~100-250 steps on the default run), and stays stable while
    # epsilon * n beta * curvature / 4 < 1; divergence is detected, not assumed away.
    step_size: float = 1e-3
    # gamma: devinterp's recommended localisation; keeps the chain near w* where flat directions
    # let it wander, at the cost of a bias of order gamma / (n beta * curvature).
    localization: float = 100.0
    # n beta: None is n / log n, the paper's beta* = 1 / log n.
    nbeta: float | None = None
    # devinterp's default number of chains: their spread is the error bar.
    chains: int = 4
    draws: int = 500
    # The first ~250 draws from w* sit 5-8% below the stationary loss on the default run
    # (docs/llc.md); they are left out of the mean.
    burnin: int = 200
    batch_size: int = 64
    seed: int = 0

    def validate(self, n_samples: int) -> None:
        """One-line errors naming the setting; ``n_samples`` bounds the batch size."""
        for name in ("step_size", "localization"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (
                    name == "step_size" and value == 0):
                bound = "positive" if name == "step_size" else "at least 0"
                raise GrokscopeError(f"{name}: must be a finite number {bound}, got {value!r}")
        if self.nbeta is not None and (not isinstance(self.nbeta, (int, float)) or not math.isfinite(self.nbeta)
                                       or self.nbeta <= 0):
            raise GrokscopeError(f"nbeta: must be a finite number above 0 (or unset: n / log n), got {self.nbeta!r}")
        for name, least in (("chains", 1), ("draws", 1), ("burnin", 0), ("batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise GrokscopeError(f"{name}: must be an integer of at least {least}, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise GrokscopeError(f"seed: must be an integer, got {self.seed!r}")
        if self.batch_size > n_samples:
            raise GrokscopeError(f"batch_size: {self.batch_size} is more than the {n_samples} training samples")
        if self.nbeta is None and n_samples < 2:
            raise GrokscopeError("nbeta: n / log n needs at least 2 training samples; give nbeta")

    def resolved_nbeta(self, n_samples: int) -> float:
        return float(self.nbeta) if self.nbeta is not None else n_samples / math.log(n_samples)


@dataclass(frozen=True)
class LLCEstimate:
    """One checkpoint's LLC: per chain, their mean and spread, and the loss trace behind them.

    ``chain_llc`` is ``nan`` for a diverged chain; ``llc`` and ``llc_sd`` are ``nan`` when any
    chain diverged (``reason`` says which and why) and ``llc_sd`` also with a single chain.
    ``loss_trace`` (chains, draws) holds the minibatch loss of every draw after burn-in.
    """

    llc: float
    llc_sd: float
    chain_llc: np.ndarray
    diverged: np.ndarray
    reason: str | None
    reference_loss: float
    nbeta: float
    n_parameters: int
    loss_trace: np.ndarray

    @property
    def chain_max_loss(self) -> np.ndarray:
        return np.max(self.loss_trace, axis=1)

    @property
    def chain_final_loss(self) -> np.ndarray:
        return self.loss_trace[:, -1]


def sampled_parameters(model: nn.Module, parameters: Mapping) -> dict[str, torch.Tensor]:
    """The checkpoint's value of each of the model's parameters, once per tied group (under the
    group's first name present in ``parameters``), in the model's dtype and on its device."""
    groups: dict[int, list[str]] = {}
    reference: dict[int, torch.Tensor] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
        reference[id(param)] = param
    chosen = {}
    for key, names in groups.items():
        name = next((n for n in names if n in parameters), None)
        if name is None:
            raise GrokscopeError(f"parameters: no value for the model's parameter {names[0]!r}")
        value = torch.as_tensor(parameters[name]).detach()
        like = reference[key]
        if value.shape != like.shape:
            raise GrokscopeError(f"parameters: {name!r} has shape {tuple(value.shape)}, the model's is "
                                 f"{tuple(like.shape)}")
        # functional_call ties the group's other names to this one.
        chosen[names[0]] = value.to(device=like.device, dtype=like.dtype)
    return chosen


def _batch_indices(n: int, batch_size: int, chains: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    """(steps, chains, batch_size) sample indices: each chain walks its own shuffled epochs, every
    sample once per epoch, batches running on across epoch ends."""
    per_chain = steps * batch_size
    epochs = -(-per_chain // n)
    orders = torch.stack([torch.cat([torch.randperm(n, generator=generator) for _ in range(epochs)])[:per_chain]
                          for _ in range(chains)])  # (chains, steps * batch_size)
    return orders.reshape(chains, steps, batch_size).transpose(0, 1)


def _full_loss(loss_at: Callable, params: dict, inputs: torch.Tensor, targets: torch.Tensor,
               chunk: int = 4096) -> float:
    """L_n over every sample, in chunks weighted by their size (the loss is a mean)."""
    total = 0.0
    for start in range(0, len(targets), chunk):
        x, y = inputs[start:start + chunk], targets[start:start + chunk]
        total += float(loss_at(params, x, y)) * len(y)
    return total / len(targets)


def estimate_llc(model: nn.Module, parameters: Mapping, loss_fn: Callable, inputs: torch.Tensor,
                 targets: torch.Tensor, settings: SGLDSettings = SGLDSettings(), *,
                 readout: Callable | None = None, chain_forward: Callable | None = None) -> LLCEstimate:
    r"""The local learning coefficient at the checkpoint ``parameters`` by localised SGLD.

    .. math::

        \hat\lambda_c = \frac{n\beta}{T} \sum_{t=b}^{b+T-1} \big(L_{B_{c,t}}(w_{c,t}) - L_n(w^*)\big),
        \qquad \hat\lambda = \frac1C \sum_c \hat\lambda_c,

    for chains :math:`c = 1..C` of :math:`b` burn-in steps and :math:`T` draws of the SGLD step
    of the module docstring (Lau et al. 2023, arXiv:2308.12108, Algorithm 1; devinterp).

    Parameters
    ----------
    model : nn.Module
        The architecture; its own parameter values are not used. Run as it is (put it in
        ``eval()`` mode if it has dropout: random layers are refused under ``vmap``).
    parameters : Mapping[str, tensor]
        The checkpoint :math:`w^*` (a state dict). Every parameter of the model needs a value
        (tied parameters once, under any of their names); buffers present here replace the
        model's, the others are the model's own. Sampled in the model's dtype and device.
    loss_fn : callable
        ``loss_fn(output, targets) -> scalar``, the *mean* loss over the batch (a negative
        log-likelihood per sample, as the theory needs: cross-entropy, or
        :math:`\frac12 (y - f)^2` for Gaussian noise of unit variance).
    inputs, targets : torch.Tensor
        The :math:`n` training samples (first axis), on the model's device.
    settings : SGLDSettings
        Step size, localisation, :math:`n\beta`, chains, draws, burn-in, batch size, seed.
    readout : callable, optional
        Applied to the model's output before ``loss_fn`` (e.g. logits at the answer position).
    chain_forward : callable, optional
        ``chain_forward(params, x) -> output``: the model on every chain at once, ``params``
        mapping each parameter name to its (chains, ...) values and ``x`` (chains, batch, ...)
        holding each chain's minibatch of ``inputs`` (which are then what it takes: e.g. the
        column indices of one-hot inputs, :meth:`grokscope.model.MLP.chain_forward`). Default:
        ``torch.func.vmap`` of ``functional_call`` of ``model``.

    Returns
    -------
    LLCEstimate
        Per-chain values, their mean and sample standard deviation, divergence marks, the
        reference loss :math:`L_n(w^*)`, :math:`n\beta`, :math:`d` and the loss trace. The
        same call gives the same values, whatever the thread count: a CPU generator seeded
        ``seed`` draws the batches (chain after chain, one ``randperm`` per epoch) and a
        generator on the device seeded ``seed + 1`` the noise (each step, one ``randn`` of
        shape (chains, d), the parameters flattened and concatenated in the model's order). On
        the CPU with two threads or more, one of them draws the next step's noise while the
        others compute (:mod:`grokscope.measures.sgld_noise`): the same draws.

    Raises
    ------
    GrokscopeError
        A setting out of range, inputs and targets of different lengths, or a parameter
        missing or of the wrong shape.
    """
    from torch.func import functional_call, vmap

    n = len(targets)
    if len(inputs) != n:
        raise GrokscopeError(f"inputs: {len(inputs)} samples but {n} targets")
    settings.validate(n)
    center = sampled_parameters(model, parameters)
    buffers = {name: torch.as_tensor(parameters.get(name, buffer)).to(buffer.device)
               for name, buffer in model.named_buffers()}
    n_parameters = sum(t.numel() for t in center.values())
    nbeta = settings.resolved_nbeta(n)
    device = next(iter(center.values())).device

    def loss_at(params, x, y):
        output = functional_call(model, (params, buffers), (x,))
        return loss_fn(readout(output) if readout is not None else output, y)

    if chain_forward is None:
        chain_losses = vmap(loss_at, in_dims=(0, 0, 0))  # (chains, ...) -> (chains,)
    else:
        losses_of = vmap(lambda output, y: loss_fn(readout(output) if readout is not None else output, y))

        def chain_losses(params, x, y):
            return losses_of(chain_forward(params, x), y)

        def loss_at(params, x, y):  # noqa: F811 (one chain of the chain forward)
            return chain_losses({k: v[None] for k, v in params.items()}, x[None], y[None])[0]

    with torch.no_grad():
        reference = _full_loss(loss_at, center, inputs, targets)

    chains, steps = settings.chains, settings.burnin + settings.draws
    index_generator = torch.Generator().manual_seed(settings.seed)
    batches = _batch_indices(n, settings.batch_size, chains, steps, index_generator).to(device)
    noise_generator = torch.Generator(device=device).manual_seed(settings.seed + 1)
    # Every chain's parameters in one (chains, d) tensor: one noise draw and one update for all of
    # them; each parameter is a view of it, and its own leaf, so that its gradient comes back as
    # it is (a leaf of the whole tensor would gather the gradients into a (chains, d) copy).
    names = list(center)
    shapes = [center[k].shape for k in names]
    sizes = [center[k].numel() for k in names]
    flat_center = torch.cat([center[k].reshape(-1) for k in names])  # (d,)
    flat = flat_center.repeat(chains, 1)  # (chains, d)

    losses = torch.empty(chains, steps, dtype=torch.float64, device=device)
    half, noise_sd, gamma = settings.step_size / 2, math.sqrt(settings.step_size), settings.localization
    drift = torch.empty_like(flat)  # reused: no (chains, d) allocations per step
    bound = divergence_bound(reference, nbeta, n_parameters)
    gone = torch.zeros(chains, dtype=torch.bool, device=device)
    ahead, threads = draws_ahead(device), torch.get_num_threads()
    if ahead:
        torch.set_num_threads(compute_threads())
    try:
        with NoiseStream(tuple(flat.shape), noise_generator, dtype=flat.dtype, device=device,
                         ahead=ahead) as noise_stream:
            for t in range(steps):
                if bool(gone.all()):  # every chain has diverged: the rest of the trace is NaN, not computed
                    losses[:, t:] = math.nan
                    break
                idx = batches[t]  # (chains, batch_size)
                leaves = [piece.view(chains, *shape).requires_grad_(True)
                          for piece, shape in zip(flat.detach().split(sizes, dim=1), shapes)]
                loss = chain_losses(dict(zip(names, leaves)), inputs[idx], targets[idx])  # (chains,)
                # The chains are independent: the gradient of their sum is each chain's own gradient.
                # A parameter the loss does not reach has gradient zero.
                grads = torch.autograd.grad(loss.sum(), leaves, materialize_grads=True)  # (chains, *shape) each
                losses[:, t] = loss.detach()
                gone |= ~(losses[:, t] <= bound)  # NaN fails the comparison too
                with torch.no_grad():
                    noise = noise_stream.next()  # (chains, d)
                    torch.sub(flat, flat_center, out=drift).mul_(gamma)
                    for piece, grad in zip(drift.split(sizes, dim=1), grads):
                        piece.view(grad.shape).add_(grad, alpha=nbeta)
                    flat.add_(drift, alpha=-half).add_(noise, alpha=noise_sd)
    finally:
        torch.set_num_threads(threads)
    return _summarise(losses.cpu().numpy(), settings.burnin, reference, nbeta, n_parameters)


# How many times the largest mean loss of a healthy chain a step may reach (module docstring).
DIVERGENCE_FACTOR = 10.0


def divergence_bound(reference_loss: float, nbeta: float, n_parameters: int) -> float:
    """The loss above which a chain has diverged: 10 (L_n(w*) + d / (2 n beta))."""
    return DIVERGENCE_FACTOR * (reference_loss + n_parameters / (2 * nbeta))


def _summarise(trace: np.ndarray, burnin: int, reference: float, nbeta: float, n_parameters: int) -> LLCEstimate:
    """The estimate from the (chains, burnin + draws) loss trace."""
    bound = divergence_bound(reference, nbeta, n_parameters)
    # NaN fails both comparisons: "not (finite and below)" marks it.
    bad = ~(np.isfinite(trace) & (trace <= bound))
    diverged = bad.any(axis=1)
    draws = trace[:, burnin:]
    chain_llc = np.where(diverged, math.nan, nbeta * (draws.mean(axis=1) - reference))
    if diverged.any():
        reasons = []
        for c in np.flatnonzero(diverged):
            step = int(np.argmax(bad[c]))
            value = trace[c, step]
            what = "not finite" if not np.isfinite(value) else f"{value:.4g} above the bound {bound:.4g}"
            reasons.append(f"chain {c}: loss {what} at step {step}")
        mean = sd = math.nan
        reason = "SGLD diverged (" + "; ".join(reasons) + "): lower the step size"
    else:
        mean = float(chain_llc.mean())
        sd = float(chain_llc.std(ddof=1)) if len(chain_llc) > 1 else math.nan
        reason = None
    return LLCEstimate(llc=mean, llc_sd=sd, chain_llc=chain_llc, diverged=diverged, reason=reason,
                       reference_loss=reference, nbeta=nbeta, n_parameters=n_parameters, loss_trace=draws)


def llc_rows(estimate: LLCEstimate) -> list[dict]:
    """Tidy rows of one estimate, each ``{"metric", "layer", "chain", "value"}`` (layer ``None``):
    ``llc`` and ``llc_sd`` (chain ``None``), then per chain ``llc_chain``, ``llc_mean_loss``,
    ``llc_max_loss``, ``llc_final_loss`` (the loss trace's summary, where divergence shows) and
    ``llc_diverged`` (1 or 0); once, ``llc_reference_loss`` (:math:`L_n(w^*)`), ``llc_nbeta`` and
    ``llc_parameters`` (:math:`d`, tied parameters once)."""
    def row(metric, value, chain=None):
        return {"metric": metric, "layer": None, "chain": chain, "value": float(value)}

    rows = [row("llc", estimate.llc), row("llc_sd", estimate.llc_sd)]
    mean_loss = estimate.loss_trace.mean(axis=1)
    for c in range(len(estimate.chain_llc)):
        rows += [row("llc_chain", estimate.chain_llc[c], c), row("llc_mean_loss", mean_loss[c], c),
                 row("llc_max_loss", estimate.chain_max_loss[c], c),
                 row("llc_final_loss", estimate.chain_final_loss[c], c),
                 row("llc_diverged", float(estimate.diverged[c]), c)]
    rows += [row("llc_reference_loss", estimate.reference_loss), row("llc_nbeta", estimate.nbeta),
             row("llc_parameters", estimate.n_parameters)]
    return rows
