"""The training loop behind ``grokscope train``: one run, checkpointed, resumable, deterministic.

Step s means "after s optimizer updates": step 0 is the initialisation. Every checkpoint step
also writes the history so far and then the optimizer state (``resume.safetensors``), so a run
killed at any instant continues from its last complete save and ends bit for bit like an
uninterrupted run: weights, optimizer state and history (CPU, same seed; docs/reliability.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from grokscope import formats
from grokscope.config import RunConfig
from grokscope.errors import GrokscopeError
from grokscope.measures.complexity import spectral_entropy_penalty
from grokscope.measures.thread_independent import fixed_order_sum
from grokscope.model import build_model
from grokscope.tasks import Dataset, load_task

HISTORY_COLUMNS = ["step", "train_loss", "train_acc", "test_loss", "test_acc", "weight_norm"]
# Tags the weight-noise seeds (hashed with seed and step by SeedSequence), keeping them apart from
# any other stream derived from the same (seed, step).
_NOISE_STREAM = 0x6E6F6973  # "nois"


@dataclass
class Evaluation:
    step: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    weight_norm: float


def make_optimizer(params, config: RunConfig) -> torch.optim.Optimizer:
    optim = config.optim
    if optim.name == "adamw":
        return torch.optim.AdamW(
            params, lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps,
            weight_decay=optim.weight_decay,
        )
    return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)


def loss_fn(logits: torch.Tensor, y: torch.Tensor, config: RunConfig) -> torch.Tensor:
    if config.optim.loss_dtype == "float64":
        logits = logits.double()
    if config.optim.loss == "ce":
        return F.cross_entropy(logits, y)
    target = F.one_hot(y, logits.shape[1]).to(logits.dtype)  # (B, K)
    if config.optim.reduction == "mean":
        return F.mse_loss(logits, target)
    return ((logits - target) ** 2).sum(dim=1).mean()


class Trainer:
    """Owns the model, data and optimizer of one run; ``run`` trains it to the last step."""

    def __init__(self, config: RunConfig, run_dir: Path, device: torch.device):
        if device.type == "cpu":
            # With weight decay the weights of dead units and Adam's moments decay through the
            # subnormal range, where x86 arithmetic is ~10x slower (a wd 2.0 run took 13x the
            # time of wd 0.1). Flushing them to zero changes nothing measurable and keeps runs
            # deterministic.
            torch.set_flush_denormal(True)
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = device
        self.data: Dataset = load_task(config.task)
        self.x = torch.from_numpy(self.data.x).to(device)  # (N, input_dim)
        self.y = torch.from_numpy(self.data.y).to(device)  # (N,)
        is_train = torch.from_numpy(self.data.split == 0).to(device)
        self.train_idx = torch.nonzero(is_train).squeeze(1)
        self.test_idx = torch.nonzero(~is_train).squeeze(1)
        self.x_train, self.y_train = self.x[self.train_idx], self.y[self.train_idx]
        self.model = build_model(self.data.input_dim, self.data.n_classes, config.model, config.seed).to(device)
        # A sub-network: the same initialisation with the other neurons of its layer zeroed. The
        # norm that --fix-norm holds is then this masked model's, so the kept weights keep the
        # scale alpha gave them (Clauw et al. rescale to the unmasked model's norm, which scales
        # a small sub-network's weights up: in effect a larger alpha).
        self.mask = None
        if config.subnet is not None:
            from grokscope.masking import NeuronMask

            self.mask = NeuronMask(self.model, {config.subnet.layer: config.subnet.neurons})
            self.mask.apply_(self.model)
        self.params = list(self.model.parameters())
        self.matrices = [p for p in self.params if p.ndim == 2]
        self.initial_norm = global_norm(self.params)
        self.optimizer = make_optimizer(self.params, config)
        self.history: list[dict] = []
        self.step = 0
        # The first step whose weights or training loss are not finite (NaN, inf), if any.
        self.diverged_at: int | None = None

    # --- one step ------------------------------------------------------------------------

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size = self.config.optim.batch_size
        n = len(self.train_idx)
        if batch_size is None or batch_size >= n:
            return self.x_train, self.y_train
        # The batch of a step is a function of (seed, epoch, position) alone, so a resumed run
        # draws exactly the batches the uninterrupted one would have.
        per_epoch = math.ceil(n / batch_size)
        epoch, position = divmod(step - 1, per_epoch)
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=generator)[position * batch_size:(position + 1) * batch_size]
        order = order.to(self.device)
        return self.x_train[order], self.y_train[order]

    def _forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """The training forward pass: through weights + N(0, weight_noise^2) noise when asked."""
        sigma = self.config.optim.weight_noise
        if not sigma:
            return self.model(x)
        # The draw of a step is a function of (seed, step) alone, so --resume replays it exactly.
        seed = int(np.random.SeedSequence([self.config.seed, step, _NOISE_STREAM]).generate_state(1, np.uint64)[0])
        generator = torch.Generator(device=self.device).manual_seed(seed)
        noisy = {name: param + sigma * torch.randn(param.shape, generator=generator, device=param.device,
                                                   dtype=param.dtype)
                 for name, param in self.model.named_parameters()}
        if self.mask is not None:
            noisy = self.mask.masked(noisy)  # noise must not wake a masked neuron
        return torch.func.functional_call(self.model, noisy, (x,))

    def train_step(self) -> None:
        warmup = self.config.optim.warmup
        if self.step <= warmup:
            # A function of the step alone (not scheduler state), so --resume stays exact.
            for group in self.optimizer.param_groups:
                group["lr"] = self.config.optim.lr * min((self.step + 1) / max(warmup, 1), 1.0)
        x, y = self._batch(self.step + 1)
        logits = self._forward(x, self.step + 1)  # (B, K)
        loss = loss_fn(logits, y, self.config)
        if self.config.optim.spectral_entropy:
            # DeMoss et al.'s penalty, on the weights themselves (not the noisy copy).
            loss = loss + self.config.optim.spectral_entropy * spectral_entropy_penalty(self.matrices)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.mask is not None:
            # Masked entries get no gradient (so no optimizer state) and are zeroed again after
            # the update: exactly zero whatever the optimizer or regulariser does.
            self.mask.mask_grads_(self.model)
        self.optimizer.step()
        if self.mask is not None:
            self.mask.apply_(self.model)
        if self.config.optim.fix_norm:
            with torch.no_grad():
                scale = self.initial_norm / global_norm(self.params)
                torch._foreach_mul_(self.params, scale)
        self.step += 1

    @torch.no_grad()
    def evaluate(self) -> Evaluation:
        logits = self.model(self.x)  # (N, K): one pass over train and test together
        correct = logits.argmax(dim=1) == self.y

        def split_metrics(idx):
            if len(idx) == 0:
                return float("nan"), float("nan")
            return loss_fn(logits[idx], self.y[idx], self.config).item(), correct[idx].float().mean().item()

        train_loss, train_acc = split_metrics(self.train_idx)
        test_loss, test_acc = split_metrics(self.test_idx)
        return Evaluation(self.step, train_loss, train_acc, test_loss, test_acc, global_norm(self.params).item())

    # --- persistence ---------------------------------------------------------------------

    def save(self) -> None:
        """Checkpoint, then history, then optimizer state.

        resume.safetensors is written last and is the commit point: whatever instant the process
        dies at, the step it names has its checkpoint on disk and every history row up to it (the
        history only grows, and is written before). Anything newer is recomputed on resume.
        """
        formats.run.save_checkpoint(self.run_dir, self.step, self.model.state_dict())
        formats.run.write_history(self.run_dir, pd.DataFrame(self.history, columns=HISTORY_COLUMNS))
        optimizer_state = {}
        for index, state in self.optimizer.state_dict()["state"].items():
            for key, value in state.items():
                if torch.is_tensor(value):
                    optimizer_state[f"state.{index}.{key}"] = value
                elif value is not None:
                    optimizer_state[f"state.{index}.{key}"] = torch.tensor(value)
        formats.run.save_resume_state(self.run_dir, self.step, optimizer_state)

    def restore(self) -> list[str]:
        """Continue from the step resume.safetensors names; return warnings for the user.

        Every file is checked before anything on disk changes, so a refused resume leaves the run
        as it was.
        """
        resume_file = self.run_dir / formats.run.RESUME_FILE
        if not resume_file.is_file():
            raise GrokscopeError(f"{self.run_dir}: nothing to resume from (no {formats.run.RESUME_FILE})")
        step, optimizer_state = formats.run.load_resume_state(self.run_dir)
        checkpoints = formats.run.list_checkpoints(self.run_dir)
        path = dict(checkpoints).get(step)
        if path is None:
            raise GrokscopeError(f"{resume_file}: optimizer state is for step {step}, which has no checkpoint")
        state = formats.run.load_checkpoint(path)
        self._check_model_state(path, state)
        nested = self._optimizer_state(resume_file, optimizer_state)
        history = formats.run.read_history(self.run_dir)

        self.model.load_state_dict({k: v.to(self.device) for k, v in state.items()})
        full = self.optimizer.state_dict()
        full["state"] = nested
        self.optimizer.load_state_dict(full)
        self.history = history[history["step"] <= step].to_dict(orient="records")
        self.step = step
        warnings = []
        missing = [column for column in HISTORY_COLUMNS if column not in history.columns]
        if missing:
            # Written by another tool or edited: the resumed rows would hold NaN in these columns.
            warnings.append(f"{self.run_dir / formats.run.HISTORY_FILE}: lacks the column(s) {', '.join(missing)}; "
                            "the rows before the resume point hold NaN there")
        if not self.history or self.history[-1]["step"] != step:
            # Only runs saved by an older grokscope (optimizer state before history) get here.
            warnings.append(f"{self.run_dir / formats.run.HISTORY_FILE}: has no evaluation of step {step}; "
                            "the resumed history misses the rows between its last one and that step")
        if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
            self.diverged_at = step
        # Checkpoints past the resume point come from a newer, uncommitted save: they would be
        # recomputed identically, so drop them rather than mix two timelines.
        for later_step, later_path in checkpoints:
            if later_step > step:
                later_path.unlink()
        return warnings

    def _check_model_state(self, path: Path, state: dict) -> None:
        expected = self.model.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        if missing or unexpected:
            what = f"lacks tensor {missing[0]!r}" if missing else f"has unexpected tensor {unexpected[0]!r}"
            raise GrokscopeError(f"{path}: {what}; not a checkpoint of the model run.json describes")
        for key, tensor in expected.items():
            if tuple(state[key].shape) != tuple(tensor.shape):
                raise GrokscopeError(
                    f"{path}: tensor {key!r} has shape {tuple(state[key].shape)}, but the model run.json "
                    f"describes needs {tuple(tensor.shape)} (a checkpoint of another architecture)"
                )

    def _optimizer_state(self, path: Path, tensors: dict) -> dict[int, dict]:
        """resume.safetensors' flat ``state.<param index>.<name>`` tensors as the optimizer's nested state."""
        nested: dict[int, dict] = {}
        for key, value in tensors.items():
            parts = key.split(".", 2)
            if len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit() or int(parts[1]) >= len(self.params):
                raise GrokscopeError(f"{path}: unexpected tensor {key!r} (not optimizer state of this run's model)")
            index, name = int(parts[1]), parts[2]
            param = self.params[index]
            if name != "step" and tuple(value.shape) != tuple(param.shape):
                raise GrokscopeError(
                    f"{path}: {key!r} has shape {tuple(value.shape)}, but its parameter has "
                    f"{tuple(param.shape)} (optimizer state of another architecture)"
                )
            # Adam keeps its step counter on the CPU; everything else lives with the parameters.
            nested.setdefault(index, {})[name] = value if name == "step" else value.to(self.device)
        return nested

    # --- the loop ------------------------------------------------------------------------

    def run(self, on_eval: Callable[[Evaluation], None] | None = None) -> Evaluation:
        schedule = self.config.schedule
        checkpoint_steps = set(schedule.checkpoint_steps())
        eval_steps = set(schedule.eval_steps())
        last = None
        if self.step == 0 and not self.history:
            last = self._record(on_eval)
            self.save()
        while self.step < schedule.steps:
            self.train_step()
            if self.step in eval_steps:
                last = self._record(on_eval)
            if self.step in checkpoint_steps:
                self.save()
        return last or self._record(on_eval, keep=False)

    def _record(self, on_eval, keep: bool = True) -> Evaluation:
        evaluation = self.evaluate()
        if self.diverged_at is None and not all(
            math.isfinite(v) for v in (evaluation.train_loss, evaluation.weight_norm)
        ):
            self.diverged_at = evaluation.step
        if keep:
            self.history.append(vars(evaluation).copy())
        if on_eval is not None:
            on_eval(evaluation)
        return evaluation


def first_step_reaching(history: pd.DataFrame, column: str, threshold: float = 0.99) -> int | None:
    """The first evaluated step at which ``column`` >= threshold (None if never)."""
    reached = history.loc[history[column] >= threshold, "step"]
    return int(reached.iloc[0]) if len(reached) else None


def global_norm(params) -> torch.Tensor:
    """The L2 norm over every parameter entry, the same bits on any thread count (it sets the
    scale of --fix-norm's update, so it is part of the trajectory)."""
    return torch.sqrt(fixed_order_sum(torch.cat([p.detach().reshape(-1) ** 2 for p in params])))
