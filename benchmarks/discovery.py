"""What finding a series costs now that every pickled checkpoint is opened for its stored step.

Discovery reads the step a checkpoint stores (Lightning's ``global_step``, nanoGPT's
``iter_num``), which wins over the number in its name, so every pickled weight file of a folder
is opened. It is opened memory-mapped (``torch.load(..., mmap=True, weights_only=True)``): the
pickle is read, the tensors' bytes are not. The baseline is the plain ``weights_only`` load that
reading the stored step used before, which reads every byte. Both run in this process on the
same files (Lightning-style ``{"state_dict", "optimizer_states", "global_step", "epoch"}`` dicts
of a model of ``--width``), alternating, best of ``--repeats``; the page cache is warm for both,
so the ratio is a lower bound on what a cold disk gives.

    .venv/bin/python benchmarks/discovery.py                      # 20 checkpoints of ~16 MiB
    .venv/bin/python benchmarks/discovery.py --checkpoints 10 --width 4096
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def write_series(folder: Path, checkpoints: int, width: int) -> int:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, 10))
    for index in range(checkpoints):
        torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                    "optimizer_states": [{"state": {}}], "global_step": 100 * (index + 1), "epoch": index},
                   folder / f"sample-epoch={index:02d}-val_loss=0.{index:02d}.ckpt")
    return sum(p.stat().st_size for p in folder.iterdir())


def full_reads(folder: Path) -> list[int]:
    steps = []
    for path in sorted(folder.glob("*.ckpt")):
        steps.append(int(torch.load(path, map_location="cpu", weights_only=True)["global_step"]))
    return sorted(steps)


def discovery(folder: Path) -> list[int]:
    from grokscope.discovery import find_series
    from grokscope.loading import _load_pickled_cached_key

    _load_pickled_cached_key.cache_clear()  # no help from an earlier repeat
    return [c.step for c in find_series([str(folder)])[0].checkpoints]


def best_of(function, folder: Path, repeats: int) -> tuple[float, list[int]]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(folder)
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=20)
    parser.add_argument("--width", type=int, default=2048, help="hidden width (a width-W model is ~4 W^2 bytes)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        size = write_series(folder, args.checkpoints, args.width)
        baseline, base_steps = best_of(full_reads, folder, args.repeats)
        ours, our_steps = best_of(discovery, folder, args.repeats)
        assert base_steps == our_steps, (base_steps, our_steps)
    print(f"{args.checkpoints} checkpoints, {size / 2 ** 20:.0f} MiB in all, best of {args.repeats}")
    print(f"{'':34} {'seconds':>9} {'per file (ms)':>14}")
    print(f"{'baseline: full weights_only loads':34} {baseline:9.3f} {1000 * baseline / args.checkpoints:14.1f}")
    print(f"{'grokscope: find_series (mmap)':34} {ours:9.3f} {1000 * ours / args.checkpoints:14.1f}")
    print(f"{'ratio baseline / grokscope':34} {baseline / ours:9.2f}")


if __name__ == "__main__":
    main()
