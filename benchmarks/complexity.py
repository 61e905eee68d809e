"""Cost per checkpoint of ``measure --metric complexity`` against the authors' budget.

DeMoss et al. search (tau, Delta) by Bayesian optimisation with about 60 loss evaluations per
checkpoint (2 probes, 10 random points, 50 BO steps in their code), tau in [0, 1] and Delta in
[1e-3, 1] log-uniform, compressing every feasible point with bz2. The baseline here spends the
same 60 evaluations at fixed quasi-random points of that box (a Halton sequence, bases 2 and 3),
with grokscope's coarse-graining, loss (the whole training set) and compressor: the cost of the
authors' search without the Gaussian-process fitting, so a lower bound on it. grokscope's side is
``rate_distortion`` (the deterministic frontier search of ``grokscope.measures.complexity``) at
the same tolerance. Both sides run in this process, alternating per checkpoint, on one thread
unless --threads says otherwise.

Per checkpoint both sides report seconds, loss evaluations, compressions and the size they found
(the smallest compressed size among their feasible points; the baseline may find none). The
table summarises them over the run's checkpoints (--every N takes every Nth), by phase of
training, with the ratios baseline / grokscope.

    .venv/bin/python benchmarks/complexity.py --run runs/add-p97          # the default run
    .venv/bin/python benchmarks/complexity.py --run runs/add-p97 --every 4 --tolerance 0.1

With ``--subsample N,M,...`` it instead measures what a bounded, seeded subsample of the training
set (``model_loss(..., subsample=N, seed=--seed)``) and a bound on the loss evaluations
(``--max-evaluations``) change: per checkpoint, the whole-training-set search without a bound
(the reference) and, for each N, the search on N samples under the bound, side by side in this
process. Per phase it prints the seconds per checkpoint and their ratio, the loss evaluations,
the size found relative to the reference's (median and extremes), how often it is the same, and
the subsampled choice's loss increase on the *whole* training set (the constraint it stands in for).

    .venv/bin/python benchmarks/complexity.py --run runs/add-p97 --subsample 256,1024 --max-evaluations 24
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch

from grokscope import formats
from grokscope.context import open_series
from grokscope.measures.complexity import (
    CoarseGraining,
    compressed_bits,
    model_loss,
    rate_distortion,
    serialise,
)
from grokscope.model import build_model
from grokscope.training import first_step_reaching, loss_fn

EVALUATIONS = 60
BIN_RANGE = (1e-3, 1.0)


def halton(index: int, base: int) -> float:
    """The index-th element (from 1) of the van der Corput sequence in ``base``."""
    value, fraction = 0.0, 1.0 / base
    while index:
        index, digit = divmod(index, base)
        value += digit * fraction
        fraction /= base
    return value


def baseline(state, loss, tolerance: float, names, compressor: str = "bz2") -> dict:
    """60 (tau, Delta) points of the authors' box, each a loss evaluation, compressing the feasible ones."""
    started = time.perf_counter()
    grain = CoarseGraining(state, names)
    original = loss(grain.state)
    best, compressions = math.nan, 0
    low, high = (math.log(b) for b in BIN_RANGE)
    for i in range(1, EVALUATIONS + 1):
        tau = halton(i, 2)
        bin_size = math.exp(low + halton(i, 3) * (high - low))
        coarse, codes = grain.coarse(grain.ranks(tau), bin_size)
        value = loss(coarse)
        if math.isfinite(value) and value <= original + tolerance:
            bits = compressed_bits(serialise(codes), compressor)
            compressions += 1
            best = bits if math.isnan(best) else min(best, bits)
    return {"seconds": time.perf_counter() - started, "evaluations": EVALUATIONS + 1,
            "compressions": compressions, "bits": best}


def grokscope_side(state, loss, tolerance: float, names, compressor: str = "bz2") -> dict:
    started = time.perf_counter()
    (result,) = rate_distortion(state, loss, [tolerance], compressor=compressor, names=names)
    return {"seconds": time.perf_counter() - started, "evaluations": result.loss_evaluations + 1,
            "compressions": result.compressions + 1, "bits": result.bits}


def load_run(run: Path):
    """The run's model, training split, parameter names and the steps where it memorised and
    generalised."""
    config = formats.run.read_run(run)
    dataset = open_series(run).dataset()
    train = dataset.split == 0
    x, y = torch.from_numpy(dataset.x[train]), torch.from_numpy(dataset.y[train])
    model = build_model(dataset.input_dim, dataset.n_classes, config.model, config.seed)
    names = [name for name, _ in model.named_parameters()]
    history = formats.run.read_history(run)
    memorised = first_step_reaching(history, "train_acc") or 0
    generalised = first_step_reaching(history, "test_acc") or math.inf
    return model, x, y, lambda logits, targets: loss_fn(logits, targets, config), names, memorised, generalised


def phases(rows, memorised, generalised) -> dict[str, list]:
    def phase(step):
        return "before memorisation" if step < memorised else (
            "memorised, not generalised" if step < generalised else "generalised")

    groups = {}
    for row in rows:
        groups.setdefault(phase(row["step"]), []).append(row)
    groups["all"] = rows
    return groups


def against_baseline(args, checkpoints, model, x, y, criterion, names, memorised, generalised) -> None:
    loss = model_loss(model, x, y, criterion)
    rows = []
    for i, (step, path) in enumerate(checkpoints):
        state = formats.run.load_checkpoint(path)
        sides = [("grokscope", grokscope_side), ("baseline", baseline)]
        if i % 2:
            sides.reverse()
        row = {"step": step}
        for name, side in sides:
            row[name] = side(state, loss, args.tolerance, names, args.compressor)
        rows.append(row)

    print(f"run {args.run}: {len(rows)} checkpoints, tolerance {args.tolerance}, {args.compressor}, "
          f"{args.threads} thread(s); memorised at step {memorised}, generalised at step {generalised}")
    print(f"baseline: {EVALUATIONS} quasi-random (tau, Delta) in [0,1] x [1e-3,1] (the authors' budget, no GP cost)")
    print()
    header = (f"{'phase':28s} {'n':>4s} | {'s/ckpt base':>11s} {'s/ckpt grok':>11s} {'ratio':>6s} | "
              f"{'evals base':>10s} {'evals grok':>10s} | {'comp base':>9s} {'comp grok':>9s} | "
              f"{'bits base/grok':>14s} {'base none':>9s}")
    print(header)
    print("-" * len(header))
    for name, group in phases(rows, memorised, generalised).items():
        base_s = sum(r["baseline"]["seconds"] for r in group) / len(group)
        grok_s = sum(r["grokscope"]["seconds"] for r in group) / len(group)
        ratios = [r["baseline"]["bits"] / r["grokscope"]["bits"] for r in group
                  if math.isfinite(r["baseline"]["bits"]) and r["grokscope"]["bits"] > 0]
        none = sum(not math.isfinite(r["baseline"]["bits"]) for r in group)
        print(f"{name:28s} {len(group):4d} | {base_s:11.3f} {grok_s:11.3f} {base_s / grok_s:6.2f} | "
              f"{statistics.mean(r['baseline']['evaluations'] for r in group):10.1f} "
              f"{statistics.mean(r['grokscope']['evaluations'] for r in group):10.1f} | "
              f"{statistics.mean(r['baseline']['compressions'] for r in group):9.1f} "
              f"{statistics.mean(r['grokscope']['compressions'] for r in group):9.1f} | "
              f"{statistics.median(ratios) if ratios else math.nan:14.3f} {none:9d}")
    total = sum(r["grokscope"]["seconds"] for r in rows) * args.every
    print()
    print(f"grokscope, whole run (all {len(formats.run.list_checkpoints(args.run))} checkpoints, one process): "
          f"~{total:.0f} s; baseline ~{sum(r['baseline']['seconds'] for r in rows) * args.every:.0f} s")
    print("evals and compressions include the reference loss and the raw-size compression on both sides "
          "where they apply; bits base/grok: median over checkpoints where the baseline found a feasible point")


def searched(state, loss, args, names, bound) -> tuple:
    started = time.perf_counter()
    (result,) = rate_distortion(state, loss, [args.tolerance], compressor=args.compressor, names=names,
                                max_loss_evaluations=bound)
    return result, time.perf_counter() - started


def chosen_state(state, names, result):
    """The coarse-grained state dict a result chose (the weights themselves for the identity)."""
    grain = CoarseGraining(state, names)
    if result.bin_size == 0:
        return grain.state
    return grain.coarse(grain.ranks(result.tau), result.bin_size)[0]


def against_subsamples(args, checkpoints, model, x, y, criterion, names, memorised, generalised) -> None:
    sizes = [int(v) for v in args.subsample.split(",")]
    full = model_loss(model, x, y, criterion)
    losses = {size: model_loss(model, x, y, criterion, subsample=size, seed=args.seed) for size in sizes}
    rows = []
    for step, path in checkpoints:
        state = formats.run.load_checkpoint(path)
        reference, seconds = searched(state, full, args, names, None)
        row = {"step": step, "full": {"seconds": seconds, "evaluations": reference.loss_evaluations + 1}}
        for size, loss in losses.items():
            result, seconds = searched(state, loss, args, names, args.max_evaluations)
            increase = full(chosen_state(state, names, result)) - reference.original_loss
            row[size] = {"seconds": seconds, "evaluations": result.loss_evaluations + 1,
                         "ratio": result.bits / reference.bits, "increase": increase,
                         "exhausted": result.exhausted}
        rows.append(row)

    print(f"run {args.run}: {len(rows)} checkpoints, tolerance {args.tolerance}, {args.compressor}, "
          f"{args.threads} thread(s), {len(y)} training samples; memorised at step {memorised}, "
          f"generalised at step {generalised}")
    print(f"reference: the whole training set, no bound; subsamples seeded {args.seed}, "
          f"at most {args.max_evaluations} loss evaluations per search")
    print()
    header = (f"{'phase':28s} {'n':>4s} {'samples':>7s} | {'s/ckpt full':>11s} {'s/ckpt sub':>10s} {'ratio':>6s} | "
              f"{'evals full':>10s} {'evals sub':>9s} {'bound hit':>9s} | {'K sub/full: median':>18s} "
              f"{'min':>6s} {'max':>6s} {'same':>5s} | {'full-set loss rise: max':>23s} {'> tol':>5s}")
    print(header)
    print("-" * len(header))
    for name, group in phases(rows, memorised, generalised).items():
        full_s = statistics.mean(r["full"]["seconds"] for r in group)
        for size in sizes:
            sub = [r[size] for r in group]
            ratios = [s["ratio"] for s in sub]
            sub_s = statistics.mean(s["seconds"] for s in sub)
            print(f"{name:28s} {len(group):4d} {size:7d} | {full_s:11.3f} {sub_s:10.3f} {full_s / sub_s:6.2f} | "
                  f"{statistics.mean(r['full']['evaluations'] for r in group):10.1f} "
                  f"{statistics.mean(s['evaluations'] for s in sub):9.1f} {sum(s['exhausted'] for s in sub):9d} | "
                  f"{statistics.median(ratios):18.3f} {min(ratios):6.3f} {max(ratios):6.3f} "
                  f"{sum(r == 1.0 for r in ratios) / len(ratios):5.0%} | "
                  f"{max(s['increase'] for s in sub):23.4f} {sum(s['increase'] > args.tolerance for s in sub):5d}")
    print()
    print("evals include the reference loss; K sub/full: the size found on the subsample over the size found on "
          "the whole set (same: the share equal); full-set loss rise: the loss of the subsample's choice on the "
          "whole training set minus the original network's, against the tolerance (> tol: checkpoints beyond it)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a run trained by grokscope train")
    parser.add_argument("--tolerance", type=float, default=0.1)
    parser.add_argument("--compressor", default="bz2")
    parser.add_argument("--every", type=int, default=1, help="take every Nth checkpoint")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--subsample", help="compare subsamples of these sizes (comma-separated) to the whole set")
    parser.add_argument("--max-evaluations", type=int, default=None, help="the subsampled searches' bound")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsamples")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    checkpoints = formats.run.list_checkpoints(args.run)[:: args.every]
    compare = against_subsamples if args.subsample else against_baseline
    compare(args, checkpoints, *load_run(args.run))


if __name__ == "__main__":
    main()
