"""How much probing costs beyond the forward passes themselves.

Part 1, on a default run (p = 97, 250 hidden units; trained here for --steps steps into a
temporary folder unless --run names one): checkpoints per second of

  bare forward       weights already in memory, copied into the model, one pass over all samples
  iterate (memory)   iter_features(stored="never"): read each checkpoint, forward, as measure does
  probe (files)      the same plus writing each features file, as grokscope probe does
  grokscope probe    the whole command in this process (discovery, samples file, progress bar)

with the ratio to the bare forward pass (the I/O overhead).

Part 2, with --device cuda and a GPU: CPU against GPU for a synthetic width-4096, two-hidden-layer
MLP on 50,000 samples, both through the probe path (read checkpoint, forward, write features).

    .venv/bin/python benchmarks/probe.py [--run RUN] [--steps 400] [--device cuda]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from typer.testing import CliRunner

from grokscope import formats
from grokscope.cli import app
from grokscope.context import iter_features, open_series
from grokscope.features import compute_checkpoint
from grokscope.discovery import run_checkpoints
from grokscope.loading import Checkpoint, load_state


def best_times(functions: dict, repeat: int = 5) -> dict:
    """Best wall time of each function over ``repeat`` rounds; the rounds interleave the
    functions so that load from other processes falls on all of them alike."""
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(repeat):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def train_default_run(out: Path, steps: int) -> Path:
    result = CliRunner().invoke(app, ["train", "--steps", str(steps), "--save-every", "10", "--save-log", "0",
                                      "--eval-every", "50", "--out", str(out), "-q"])
    if result.exit_code != 0:
        raise SystemExit(result.output)
    return Path(result.stdout.strip())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def part1(run_dir: Path, device: torch.device) -> None:
    checkpoints = run_checkpoints(run_dir)
    n = len(checkpoints)
    extractor = open_series(run_dir).extractor(device=device)
    states = [load_state(c, device) for c in checkpoints]

    def bare():
        for state in states:
            extractor(state)
        sync(device)

    def in_memory():
        for _ in iter_features(run_dir, stored="never", device=device):
            pass
        sync(device)

    with tempfile.TemporaryDirectory() as scratch:
        def to_files():
            for checkpoint in checkpoints:
                item = compute_checkpoint(extractor, checkpoint, device)
                formats.features.save_features(Path(scratch) / formats.steps.step_file_name(item.step), item.step, item.layers,
                                    item.penultimate)

        def command():
            result = CliRunner().invoke(app, ["probe", str(run_dir), "--force", "-q", "--device", device.type])
            assert result.exit_code == 0, result.output

        rows = list(best_times({"bare forward": bare, "iterate (memory)": in_memory,
                                "probe (files)": to_files, "grokscope probe": command}).items())
    width = extractor.model.layers[0].out_features
    print(f"\n{run_dir}: {n} checkpoints, {extractor.n_samples} samples, width {width}, device {device}\n")
    print(f"{'path':<18} {'ckpt/s':>9} {'ms/ckpt':>9} {'x bare':>8}")
    base = rows[0][1]
    for name, elapsed in rows:
        print(f"{name:<18} {n / elapsed:>9.1f} {1000 * elapsed / n:>9.2f} {elapsed / base:>8.2f}")


def part2(n_checkpoints: int = 3, n_samples: int = 50_000, width: int = 4096, input_dim: int = 256,
          devices: tuple[str, ...] = ("cpu", "cuda")) -> None:
    from grokscope.features import user_extractor

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n_samples, input_dim, generator=generator).numpy()  # (N, d)

    def make_model() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(input_dim, width), torch.nn.ReLU(),
                                   torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, 100))

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        checkpoints = []
        for step in range(n_checkpoints):
            torch.manual_seed(step)
            path = folder / f"step-{step:08d}.safetensors"
            formats.tensors.save_tensors(path, make_model().state_dict(), {})
            checkpoints.append(Checkpoint(step, path))

        timings = {}
        for name in devices:
            device = torch.device(name)
            extractor = user_extractor(make_model(), x, ["2:input"], device=device)  # + "4:input"

            def run(extractor=extractor, device=device):
                for checkpoint in checkpoints:
                    item = compute_checkpoint(extractor, checkpoint, device)
                    formats.features.save_features(folder / f"features-{checkpoint.step}.safetensors", item.step,
                                        item.layers, item.penultimate)
                sync(device)

            run()  # warm-up: CUDA context, kernels, page cache
            timings[name] = best_times({name: run}, repeat=2)[name]
    print(f"\nsynthetic MLP {input_dim}->{width}->{width}->100, {n_samples} samples, {n_checkpoints} checkpoints "
          f"(read, forward, write 2 x {n_samples} x {width} float32)\n")
    print(f"{'device':<8} {'ckpt/s':>9} {'s/ckpt':>9} {'speed-up':>9}")
    for name, elapsed in timings.items():
        print(f"{name:<8} {n_checkpoints / elapsed:>9.2f} {elapsed / n_checkpoints:>9.2f} "
              f"{timings['cpu'] / elapsed:>9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a grokscope run to probe (default: train one)")
    parser.add_argument("--steps", type=int, default=400, help="steps of the run trained when --run is absent")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU here")
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.run or train_default_run(Path(scratch), args.steps)
        part1(run_dir, device)
    if device.type == "cuda":
        part2()


if __name__ == "__main__":
    main()
