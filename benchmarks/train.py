"""Steps per second of grokscope's trainer against a minimal plain-PyTorch loop.

Both train the default model (2p -> 250 ReLU -> p, no output bias) on (a+b) mod 97 with 40% of
pairs, full-batch AdamW (lr 0.03, betas 0.9/0.98, wd 0.1), and evaluate train/test loss and
accuracy at the same steps. grokscope also writes its checkpoints, optimizer state and history:
that bookkeeping is the overhead this benchmark measures. The two alternate, repeat times, and
the median of each is compared.

    .venv/bin/python benchmarks/train.py --steps 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from grokscope.config import RunConfig, ScheduleConfig
from grokscope.tasks import load_task
from grokscope.training import Trainer


def plain_loop(config: RunConfig, device: torch.device) -> float:
    """The reference: the same arithmetic with no framework around it. Returns seconds."""
    data = load_task(config.task)
    x = torch.from_numpy(data.x).to(device)
    y = torch.from_numpy(data.y).to(device)
    train = torch.from_numpy(data.split == 0).to(device)
    x_train, y_train = x[train], y[train]
    torch.manual_seed(config.seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(data.input_dim, config.model.width), torch.nn.ReLU(),
        torch.nn.Linear(config.model.width, data.n_classes, bias=False),
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.03, betas=(0.9, 0.98), weight_decay=0.1)
    eval_steps = set(config.schedule.eval_steps())
    started = time.perf_counter()
    for step in range(1, config.schedule.steps + 1):
        loss = F.cross_entropy(model(x_train), y_train)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step in eval_steps:
            with torch.no_grad():
                logits = model(x)
                correct = logits.argmax(1) == y
                for mask in (train, ~train):
                    F.cross_entropy(logits[mask], y[mask]).item()
                    correct[mask].float().mean().item()
    return time.perf_counter() - started


def grokscope_loop(config: RunConfig, device: torch.device) -> float:
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "run"
        (run_dir / "checkpoints").mkdir(parents=True)
        trainer = Trainer(config, run_dir, device)
        started = time.perf_counter()
        trainer.run()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    config = RunConfig(schedule=ScheduleConfig(steps=args.steps)).resolved()
    n_checkpoints = len(config.schedule.checkpoint_steps())
    # The trainer flushes subnormal floats to zero on CPU (a process-wide flag); the baseline runs
    # once without it, for the record, and then with it, so both do the same arithmetic.
    torch.set_flush_denormal(False)
    unflushed_s = plain_loop(config, device)
    torch.set_flush_denormal(True)
    plain, ours = [], []
    for _ in range(args.repeats):
        plain.append(plain_loop(config, device))
        ours.append(grokscope_loop(config, device))
    plain_s, ours_s = statistics.median(plain), statistics.median(ours)
    print(f"default model, {args.steps} full-batch steps, {len(config.schedule.eval_steps())} evaluations, "
          f"{n_checkpoints} checkpoints, device {device}, torch threads {torch.get_num_threads()}, "
          f"median of {args.repeats}")
    print(f"{'loop':<28}{'steps/s':>10}{'speed':>10}")
    print(f"{'plain PyTorch':<28}{args.steps / plain_s:>10.1f}{1.0:>10.2f}")
    print(f"{'grokscope train':<28}{args.steps / ours_s:>10.1f}{plain_s / ours_s:>10.2f}")
    print(f"{'plain, subnormals kept':<28}{args.steps / unflushed_s:>10.1f}{plain_s / unflushed_s:>10.2f}  (one run)")
    print(f"grokscope overhead: {100 * (ours_s / plain_s - 1):+.1f}% (target: within 10%)")


if __name__ == "__main__":
    main()
