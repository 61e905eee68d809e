"""Cost of measure's saves as it goes, against the work they protect.

``grokscope measure`` keeps a series' new rows in memory and saves its tables every
GROKSCOPE_SAVE_EVERY seconds (default 30), when the series is done and on Ctrl-C. A save takes the
table's lock, reads the table on disk, merges the process's rows in and writes it atomically
(``grokscope.pipeline.tables.SeriesTables.save``): its cost grows with the table, so saving after every
checkpoint would cost a quadratic total over a long series, while saving on a clock costs at
most (run time / interval + 1) saves.

Side by side, in one process, on tables shaped like the default run's collapse table (22 rows a
checkpoint: 11 metrics x 2 splits, plus the run's hyperparameter columns):

  one save, k checkpoints     seconds for one save of a table holding k checkpoints' rows
  per checkpoint (baseline)   seconds to compute one checkpoint's collapse measures on the default
                              shape (9409 samples x 250 units, 97 classes): the work between saves
  every checkpoint, total     the sum of the saves if every one of N checkpoints saved
  every 30 s, total           the saves of the default clock over the same N checkpoints

    .venv/bin/python benchmarks/saves.py --checkpoints 400 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from grokscope.measures.collapse import collapse_measures
from grokscope.discovery import Series
from grokscope.families.options import MeasureOptions
from grokscope.pipeline.measure_plan import SeriesPlan
from grokscope.pipeline.tables import DEFAULT_SAVE_EVERY_S, SeriesTables

P, HIDDEN, SAMPLES = 97, 250, 9409
COLUMNS = {"run": "add-p97", "task": "add", "p": 97, "train_fraction": 0.4, "seed": 0, "width": 250, "depth": 1,
           "alpha": 1.0, "optimizer": "adamw", "lr": 0.03, "weight_decay": 0.1, "loss": "ce"}


def checkpoint_rows(step: int) -> list[dict]:
    metrics = ("within_var", "between_var", "nc1", "rnc1", "rnc1_sup", "nc1_papyan", "nc2_equinorm",
               "nc2_equiangularity", "nc2_cond", "nc3", "nc4")
    return [{"step": step, "metric": m, "value": 0.5 + step * 1e-3, "split": split, "layer": "layers.0"}
            for m in metrics for split in ("train", "test")]


def one_save(home: Path, n_checkpoints: int, repeats: int) -> float:
    """Median seconds of a save that brings the table from n - 1 to n checkpoints."""
    options = MeasureOptions()
    times = []
    for repeat in range(repeats):
        folder = home / f"{n_checkpoints}-{repeat}"
        plan = SeriesPlan(Series(folder, "run", folder), COLUMNS, {"collapse": pd.DataFrame()}, {"collapse": []})
        tables = SeriesTables(plan, options, every=0.0)
        for step in range(n_checkpoints - 1):
            tables.add("collapse", checkpoint_rows(step))
        tables.save()
        tables.add("collapse", checkpoint_rows(n_checkpoints - 1))
        started = time.perf_counter()
        tables.save()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def per_checkpoint(repeats: int) -> float:
    generator = torch.Generator().manual_seed(0)
    h = torch.relu(torch.randn(SAMPLES, HIDDEN, generator=generator, dtype=torch.float64))
    y = torch.arange(SAMPLES) % P
    w = torch.randn(P, HIDDEN, generator=generator, dtype=torch.float64)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for code in (0, 1):  # both splits, as measure does
            collapse_measures(h[code::2], y[code::2], w)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", type=int, default=400, help="checkpoints in the series")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per point (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.checkpoints
    work = per_checkpoint(args.repeats)
    print(f"per checkpoint (baseline): {work:.3f} s  (collapse measures, {SAMPLES} x {HIDDEN}, both splits)")
    print(f"{'checkpoints in the table':>26} {'one save (s)':>13} {'save / checkpoint work':>23}")
    points = sorted({1, max(1, n // 4), max(1, n // 2), n})
    costs = {}
    with tempfile.TemporaryDirectory() as scratch:
        for k in points:
            costs[k] = one_save(Path(scratch), k, args.repeats)
            print(f"{k:>26} {costs[k]:>13.4f} {costs[k] / work:>23.3f}")
    # A save's cost is close to linear in the rows: interpolate between the measured points.
    ks = sorted(costs)

    def cost(k: int) -> float:
        for low, high in zip(ks, ks[1:]):
            if low <= k <= high:
                return costs[low] + (costs[high] - costs[low]) * (k - low) / (high - low)
        return costs[ks[-1]]

    every_checkpoint = sum(cost(k) for k in range(1, n + 1))
    run_time = n * work
    clock_saves = int(run_time // DEFAULT_SAVE_EVERY_S) + 1
    every_30s = sum(cost(min(n, round(n * (i + 1) / clock_saves))) for i in range(clock_saves))
    print(f"\n{n} checkpoints, {run_time:.0f} s of collapse work:")
    print(f"  saves after every checkpoint: {n} saves, {every_checkpoint:.1f} s "
          f"({100 * every_checkpoint / run_time:.1f}% of the work)")
    print(f"  saves every {DEFAULT_SAVE_EVERY_S:.0f} s (default):   {clock_saves} saves, {every_30s:.2f} s "
          f"({100 * every_30s / run_time:.2f}% of the work)")


if __name__ == "__main__":
    main()
