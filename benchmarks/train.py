"""Steps per second of grokscope's trainer against a minimal plain-PyTorch loop of the same model.

Both train the same model (``grokscope.model.build_model``, same seed) with the same optimiser,
warmup and loss on the same data, and evaluate train/test loss and accuracy at the same steps.
grokscope also writes its checkpoints, optimizer state and history, and records the weight norm:
that bookkeeping is the overhead this benchmark measures. The two alternate, repeat times, and the
median of each is compared.

``--model mlp``: the seed experiment (2p -> 250 ReLU -> p on (a+b) mod 97, 40% of pairs,
full-batch AdamW lr 0.03, wd 0.1). ``--model transformer``: Nanda et al.'s setup (one-layer
transformer on (a+b) mod 113, 30% of pairs, full-batch AdamW lr 1e-3, wd 1, 10 warmup updates,
float64 loss). The schedule is the model's default with ``--steps`` steps and as many log-spaced
checkpoints per step as the default run has, so the bookkeeping has its real weight.

    .venv/bin/python benchmarks/train.py --model mlp --steps 1000 --repeats 3
    .venv/bin/python benchmarks/train.py --model transformer --steps 400 --repeats 3

``--load``: seconds per training step of the default model with 1 thread and with torch's
default threads, on an idle machine and beside two busy processes (``python -c "while True:
pass"``), each with MKL's strict reproducible mode (``MKL_CBWR=AUTO,STRICT``, what grokscope sets)
and without it. MKL reads the mode once per process, so every cell is a child process.

    .venv/bin/python benchmarks/train.py --load --steps 200
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from grokscope.config import ModelConfig, OptimConfig, RunConfig, ScheduleConfig, TaskConfig, model_defaults
from grokscope.model import build_model
from grokscope.tasks import load_task
from grokscope.training import Trainer, loss_fn, make_optimizer


def benchmark_config(kind: str, steps: int) -> RunConfig:
    """The model's default run, cut to ``steps`` with the default density of checkpoints."""
    defaults = model_defaults(kind)
    task = TaskConfig(p=113, train_fraction=0.3) if kind == "transformer" else TaskConfig()
    optim = OptimConfig(**{k: v for k, v in defaults.items() if k in {f.name for f in dataclasses.fields(OptimConfig)}})
    full = ScheduleConfig(**{k: v for k, v in defaults.items() if k in {f.name for f in dataclasses.fields(ScheduleConfig)}})
    schedule = dataclasses.replace(full, steps=steps, save_log=max(1, round(full.save_log * steps / full.steps)))
    return RunConfig(task=task, model=ModelConfig(kind=kind), optim=optim, schedule=schedule).resolved()


def straightforward_forward(model, x: torch.Tensor) -> torch.Tensor:
    """The grokscope transformer's arithmetic written the usual way: every block at every
    position, projections per sample and position, PyTorch's fused attention. (B, 2p) -> (B, p)."""
    resid = model.embed(model.tokens(x)) + model.pos_embed.weight  # (B, T, C)
    batch, length, width = resid.shape
    for block in model.blocks:
        h = block.ln1(resid)
        heads = block.attn.n_heads

        def split(t):
            return t.view(batch, length, heads, width // heads).transpose(1, 2)  # (B, H, T, D)

        q, k, v = split(block.attn.query(h)), split(block.attn.key(h)), split(block.attn.value(h))
        z = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        resid = resid + block.attn.output(z.transpose(1, 2).reshape(batch, length, width))
        resid = resid + block.mlp(block.ln2(resid))[0]
    return model.unembed(model.ln_final(resid[:, -1]))  # (B, p)


def plain_loop(config: RunConfig, device: torch.device, straightforward: bool = False) -> float:
    """The reference: the same arithmetic with no framework around it. Returns seconds.

    ``straightforward``: the transformer computed by :func:`straightforward_forward` instead of
    grokscope's forward (same weights, same values up to rounding).
    """
    data = load_task(config.task)
    x = torch.from_numpy(data.x).to(device)  # (N, 2p)
    y = torch.from_numpy(data.y).to(device)  # (N,)
    train = torch.from_numpy(data.split == 0).to(device)
    x_train, y_train = x[train], y[train]
    model = build_model(data.input_dim, data.n_classes, config.model, config.seed).to(device)
    forward = (lambda inputs: straightforward_forward(model, inputs)) if straightforward else model
    optimizer = make_optimizer(model.parameters(), config)
    warmup, lr = config.optim.warmup, config.optim.lr
    eval_steps = set(config.schedule.eval_steps())
    started = time.perf_counter()
    for step in range(1, config.schedule.steps + 1):
        if step <= warmup + 1:
            for group in optimizer.param_groups:
                group["lr"] = lr * min(step / max(warmup, 1), 1.0)
        loss = loss_fn(forward(x_train), y_train, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step in eval_steps:
            with torch.no_grad():
                logits = forward(x)
                correct = logits.argmax(1) == y
                for mask in (train, ~train):
                    loss_fn(logits[mask], y[mask], config).item()
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


def step_seconds(model: str, steps: int, threads: int, mkl_mode: str | None, busy: bool) -> float:
    """Seconds per step of grokscope's trainer in a child process (``threads`` 0: torch's default)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if mkl_mode:
        env["MKL_CBWR"] = mkl_mode
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 if busy else 0)]
    try:
        done = subprocess.run([sys.executable, __file__, "--child", "--model", model, "--steps", str(steps),
                               "--threads", str(threads)], env=env, capture_output=True, text=True, check=True)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    return float(done.stdout.split()[-1])


def load_table(model: str, steps: int) -> None:
    """Step time by threads, load and MKL mode, as ratios to 1 thread, idle, strict."""
    cells = {}
    for busy in (False, True):
        for threads in (1, 0):
            for mode in ("AUTO,STRICT", None):
                cells[busy, threads, mode] = step_seconds(model, steps, threads, mode, busy)
    base = cells[False, 1, "AUTO,STRICT"]
    print(f"{model}, {steps} steps per cell, seconds per step (ratio to 1 thread, idle, strict)")
    print(f"{'load':<22}{'threads':<16}{'MKL strict':>18}{'MKL default':>18}{'strict/default':>16}")
    for busy in (False, True):
        for threads in (1, 0):
            strict, plain = cells[busy, threads, "AUTO,STRICT"], cells[busy, threads, None]
            print(f"{'2 busy processes' if busy else 'idle':<22}{'1' if threads else 'torch default':<16}"
                  f"{strict:>10.4f} ({strict / base:4.2f}){plain:>10.4f} ({plain / base:4.2f}){strict / plain:>16.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", action="store_true", help="step time by threads, load and MKL mode")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=("mlp", "transformer"), default="mlp")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    # One thread: on a shared 2-core machine a second thread waits on the other jobs' cores.
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.load:
        load_table(args.model, args.steps)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        config = benchmark_config(args.model, args.steps)
        torch.set_flush_denormal(True)
        print(grokscope_loop(config, torch.device("cpu")) / args.steps)
        return
    device = torch.device(args.device)
    config = benchmark_config(args.model, args.steps)
    n_checkpoints = len(config.schedule.checkpoint_steps())
    # The trainer flushes subnormal floats to zero on CPU (a process-wide flag); the baseline runs
    # once without it, for the record, and then with it, so both do the same arithmetic.
    torch.set_flush_denormal(False)
    unflushed_s = plain_loop(config, device)
    torch.set_flush_denormal(True)
    plain, ours, usual = [], [], []
    for _ in range(args.repeats):
        plain.append(plain_loop(config, device))
        ours.append(grokscope_loop(config, device))
        if args.model == "transformer":
            usual.append(plain_loop(config, device, straightforward=True))
    plain_s, ours_s = statistics.median(plain), statistics.median(ours)
    print(f"{args.model}, p {config.task.p}, {args.steps} full-batch steps, {len(config.schedule.eval_steps())} "
          f"evaluations, {n_checkpoints} checkpoints, device {device}, torch threads {torch.get_num_threads()}, "
          f"median of {args.repeats}")
    print(f"{'loop':<28}{'steps/s':>10}{'speed':>10}")
    print(f"{'plain PyTorch':<28}{args.steps / plain_s:>10.2f}{1.0:>10.2f}")
    print(f"{'grokscope train':<28}{args.steps / ours_s:>10.2f}{plain_s / ours_s:>10.2f}")
    print(f"{'plain, subnormals kept':<28}{args.steps / unflushed_s:>10.2f}{plain_s / unflushed_s:>10.2f}  (one run)")
    if usual:
        usual_s = statistics.median(usual)
        print(f"{'plain, every position':<28}{args.steps / usual_s:>10.2f}{plain_s / usual_s:>10.2f}"
              "  (the model computed the usual way)")
    print(f"grokscope overhead: {100 * (ours_s / plain_s - 1):+.1f}% (target: within 10%)")


if __name__ == "__main__":
    main()
