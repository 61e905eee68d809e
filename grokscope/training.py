"""The training loop behind ``grokscope train``: one run, checkpointed, resumable, deterministic.

Step s means "after s optimizer updates": step 0 is the initialisation. Every checkpoint step
also writes the optimizer state (``resume.safetensors``) and the history so far, so a run killed
anywhere continues from its last checkpoint and ends with the same weights as an uninterrupted
run (CPU, same seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F

from grokscope import store
from grokscope.config import RunConfig
from grokscope.errors import GrokscopeError
from grokscope.model import build_model, global_norm
from grokscope.tasks import Dataset, load_task

HISTORY_COLUMNS = ["step", "train_loss", "train_acc", "test_loss", "test_acc", "weight_norm"]


@dataclass
class Evaluation:
    step: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    weight_norm: float


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise GrokscopeError("--device: cuda requested but no CUDA device is available")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise GrokscopeError(f"--device: unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


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
        self.params = list(self.model.parameters())
        self.initial_norm = global_norm(self.params)
        self.optimizer = make_optimizer(self.params, config)
        self.history: list[dict] = []
        self.step = 0

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

    def train_step(self) -> None:
        warmup = self.config.optim.warmup
        if self.step <= warmup:
            # A function of the step alone (not scheduler state), so --resume stays exact.
            for group in self.optimizer.param_groups:
                group["lr"] = self.config.optim.lr * min((self.step + 1) / max(warmup, 1), 1.0)
        x, y = self._batch(self.step + 1)
        logits = self.model(x)  # (B, K)
        loss = loss_fn(logits, y, self.config)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
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
        store.save_checkpoint(self.run_dir, self.step, self.model.state_dict())
        optimizer_state = {}
        for index, state in self.optimizer.state_dict()["state"].items():
            for key, value in state.items():
                if torch.is_tensor(value):
                    optimizer_state[f"state.{index}.{key}"] = value
                elif value is not None:
                    optimizer_state[f"state.{index}.{key}"] = torch.tensor(value)
        store.save_tensors(
            self.run_dir / store.RESUME_FILE, optimizer_state, {"grokscope.step": str(self.step)}
        )
        store.write_history(self.run_dir, pd.DataFrame(self.history, columns=HISTORY_COLUMNS))

    def restore(self) -> None:
        """Continue from the last checkpoint whose optimizer state was saved."""
        checkpoints = store.list_checkpoints(self.run_dir)
        resume_file = self.run_dir / store.RESUME_FILE
        if not checkpoints or not resume_file.is_file():
            raise GrokscopeError(f"{self.run_dir}: nothing to resume from (no checkpoint with optimizer state)")
        optimizer_state, metadata = store.load_tensors(resume_file)
        step = int(metadata["grokscope.step"])
        # The resume state is written after its checkpoint, so the checkpoint of that step exists.
        path = dict(checkpoints).get(step)
        if path is None:
            raise GrokscopeError(f"{self.run_dir}: optimizer state is for step {step}, which has no checkpoint")
        state = store.load_checkpoint(path)
        self.model.load_state_dict({k: v.to(self.device) for k, v in state.items()})
        nested: dict[int, dict] = {}
        for key, value in optimizer_state.items():
            _, index, name = key.split(".", 2)
            nested.setdefault(int(index), {})[name] = value.to(self.device) if name != "step" else value
        full = self.optimizer.state_dict()
        full["state"] = nested
        self.optimizer.load_state_dict(full)
        history = store.read_history(self.run_dir)
        self.history = history[history["step"] <= step].to_dict(orient="records")
        self.step = step
        # Checkpoints past the resume point come from a newer, unfinished write: they would be
        # recomputed identically, so drop them rather than mix two timelines.
        for later_step, later_path in checkpoints:
            if later_step > step:
                later_path.unlink()

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
        if keep:
            self.history.append(vars(evaluation).copy())
        if on_eval is not None:
            on_eval(evaluation)
        return evaluation


def first_step_reaching(history: pd.DataFrame, column: str, threshold: float = 0.99) -> int | None:
    """The first evaluated step at which ``column`` >= threshold (None if never)."""
    reached = history.loc[history[column] >= threshold, "step"]
    return int(reached.iloc[0]) if len(reached) else None

