"""Speed of the measure numerics on data shaped like the default run.

Part 1: grokscope's nHSIC against the authors' approach (Sakamoto & Sato's ``NormalizedHSIC``:
a Python loop over minibatches of 100 of three passes over a shuffled loader, pairwise distances
by broadcasting, ``torch.inverse``), side by side on the default run's test split: n = 5646
samples, T = 250 hidden units, X = the 194-dim concatenated one-hot input, Y = 97 classes. Both
sides cut their batches from the same three pass orders (``pass_orders(n, passes=3, seed=0)``).
The baseline is centred on both sides and in float64 like grokscope, so the two must agree to
1e-6; the timings compare the method, not the precision. Two settings:

  single call   one representation: everything computed once on both sides
  series        --series checkpoints (synthetic representations of the same samples), seconds
                per checkpoint: the authors' loop recomputes R_X and R_Y at every checkpoint (as
                their code does); grokscope builds ``hsic_reference(x, y)`` once and calls
                ``hsic_measures(t, reference)`` per checkpoint (as ``grokscope measure`` does)

Part 1 ends with the cost of the three shuffled passes (the default) against grokscope's previous
default, one pass in the stored order, per checkpoint with a reference.

Part 2: seconds per checkpoint for collapse_measures + hsic_measures (with a reference) +
weight_measures on synthetic features of the default shape (all 9409 samples x 250 units, 97
classes) and the state dict of a 194 -> 250 -> 97 MLP.

Part 3 (with --run DIR, a run trained by ``grokscope train --out DIR``): the collapse + hsic +
weights pass of ``grokscope measure`` over every checkpoint of that run, in this process (one
worker), seconds per checkpoint, with the hsic family also timed the way grokscope did it
before references (``hsic_measures(t, x, y)`` per checkpoint). Reads the run, writes nothing.

Each timing is the median of --repeats runs, the sides alternating.

    .venv/bin/python benchmarks/measure.py --repeats 5 --run /tmp/runs/add-p97-wd0.1
    .venv/bin/python benchmarks/measure.py --threads 1   # a loaded 2-core box
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from grokscope.measures.collapse import collapse_measures
from grokscope.measures.hsic import hsic_measures, hsic_reference, nhsic, pass_orders
from grokscope.measures.weights import weight_measures

P = 97
HIDDEN = 250
TEST_SAMPLES = 5646


# --- the baseline: the authors' per-batch loop -------------------------------------------------


def _authors_kernel(z: torch.Tensor, kernel: str, sigma: float = 5.0) -> torch.Tensor:
    m = z.shape[0]
    if kernel == "gaussian":
        dist = torch.norm(z[:, None, :] - z[None, :, :], dim=2)
        gram = torch.exp(-(dist**2) / (2 * sigma * sigma * z.shape[1]))
    else:
        gram = z @ z.T
    centring = torch.eye(m, dtype=z.dtype, device=z.device) - 1.0 / m
    return centring @ gram @ centring


def _authors_score(t: torch.Tensor, x: torch.Tensor, kernel_x: str, eps: float = 1e-5) -> torch.Tensor:
    m = t.shape[0]
    identity = torch.eye(m, dtype=t.dtype, device=t.device)
    k_t, k_x = _authors_kernel(t, "gaussian"), _authors_kernel(x, kernel_x)
    r_t = k_t @ torch.inverse(k_t + eps * m * identity)
    r_x = k_x @ torch.inverse(k_x + eps * m * identity)
    return torch.sum(r_t * r_x.T)


def baseline_nhsic(
    t: torch.Tensor, x: torch.Tensor, orders: torch.Tensor, kernel_x: str = "gaussian", batch_size: int = 100
) -> float:
    """The authors' estimator: a pass over the batches of each order in ``orders`` (their shuffled
    loader's epochs), last partial batch kept, unweighted mean over every batch of every pass."""
    scores = []
    for order in orders.to(t.device):
        for start in range(0, t.shape[0], batch_size):
            batch = order[start : start + batch_size]
            scores.append(_authors_score(t[batch], x[batch], kernel_x).item())
    return sum(scores) / len(scores)


# --- synthetic data of the default shapes ------------------------------------------------------


def synthetic_run(n: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Pairs (a, b), one-hot input, labels (a+b) mod p, ReLU features and the MLP weights."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randint(0, P, (n,), generator=generator)
    b = torch.randint(0, P, (n,), generator=generator)
    x = torch.cat([torch.nn.functional.one_hot(a, P), torch.nn.functional.one_hot(b, P)], dim=1).float()
    w0 = torch.randn(HIDDEN, 2 * P, generator=generator) * 0.3
    b0 = torch.randn(HIDDEN, generator=generator) * 0.1
    w1 = torch.randn(P, HIDDEN, generator=generator) * 0.1
    h = torch.relu(x @ w0.T + b0)
    state = {"layers.0.weight": w0, "layers.0.bias": b0, "layers.1.weight": w1}
    return {
        "x": x.to(device),
        "y": ((a + b) % P).to(device),
        "h": h.to(device),
        "state": {k: v.to(device) for k, v in state.items()},
    }


def synthetic_series(data: dict[str, torch.Tensor], n_checkpoints: int) -> list[torch.Tensor]:
    """Features of the same samples at ``n_checkpoints`` synthetic checkpoints: the hidden
    layer's weights drift a little from one to the next."""
    generator = torch.Generator().manual_seed(2)
    w0, b0 = data["state"]["layers.0.weight"], data["state"]["layers.0.bias"]
    series = []
    for _ in range(n_checkpoints):
        w0 = w0 + 0.05 * torch.randn(w0.shape, generator=generator).to(w0.device)
        series.append(torch.relu(data["x"] @ w0.T + b0))
    return series


# --- timing ------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_median(
    functions: list[Callable[[], object]], repeats: int, device: torch.device, warm_up: bool = True
) -> list[tuple[float, object]]:
    """Median seconds of each function, run alternately; also each one's last result."""
    seconds: list[list[float]] = [[] for _ in functions]
    results: list[object] = [None] * len(functions)
    for function in functions if warm_up else []:  # lazy initialisation, CUDA kernels, allocator
        function()
    for _ in range(repeats):
        for i, function in enumerate(functions):
            _sync(device)
            started = time.perf_counter()
            results[i] = function()
            _sync(device)
            seconds[i].append(time.perf_counter() - started)
    return [(statistics.median(s), r) for s, r in zip(seconds, results)]


def _print_row(name: str, base_s: float, our_s: float, diff: float) -> None:
    print(f"{name:<38} {base_s:>15.4f} {our_s:>12.4f} {base_s / our_s:>8.1f}x {diff:>11.2e}")


def _max_diff(base_values, our_values) -> float:
    return max(abs(a - b) for a, b in zip(base_values, our_values, strict=True))


def part_nhsic(device: torch.device, repeats: int, n_checkpoints: int) -> None:
    data = synthetic_run(TEST_SAMPLES, device)
    x64 = data["x"].double()
    y_one_hot = torch.nn.functional.one_hot(data["y"], P).double()

    orders = pass_orders(TEST_SAMPLES, passes=3, seed=0)  # grokscope's default batches

    def authors_plane(t: torch.Tensor) -> tuple[float, float]:
        t64 = t.double()
        return baseline_nhsic(t64, x64, orders), baseline_nhsic(t64, y_one_hot, orders, kernel_x="linear")

    single = [
        ("nHSIC(T;X)", lambda: (baseline_nhsic(data["h"].double(), x64, orders),),
         lambda: (nhsic(data["h"], data["x"]),)),
        ("nHSIC(T;X) + nHSIC(T;Y)", lambda: authors_plane(data["h"]),
         lambda: tuple(hsic_measures(data["h"], data["x"], data["y"]).values())),
    ]
    print(
        f"\nPart 1: nHSIC, n={TEST_SAMPLES}, T {HIDDEN}-dim, X {2 * P}-dim one-hot, "
        f"batches of 100, 3 shuffled passes ({device})"
    )
    print(f"{'setting':<38} {'authors loop s':>15} {'grokscope s':>12} {'speed-up':>9} {'max |diff|':>11}")
    for name, baseline, ours in single:
        (base_s, base_values), (our_s, our_values) = time_median([baseline, ours], repeats, device)
        _print_row(f"single call, {name}", base_s, our_s, _max_diff(base_values, our_values))

    series = synthetic_series(data, n_checkpoints)

    def authors_series() -> list[float]:
        return [value for t in series for value in authors_plane(t)]

    def grokscope_series() -> list[float]:
        reference = hsic_reference(data["x"], data["y"])  # once per run, as grokscope measure
        return [value for t in series for value in hsic_measures(t, reference).values()]

    reference = hsic_reference(data["x"], data["y"])
    (base_s, base_values), (our_s, our_values), (ref_s, _) = time_median(
        [authors_series, grokscope_series, lambda: hsic_reference(data["x"], data["y"])],
        repeats, device, warm_up=False,
    )
    # Per checkpoint once the reference exists, and with its cost spread over the series.
    (per_s, _), = time_median([lambda: hsic_measures(series[0], reference)], repeats, device)
    diff = _max_diff(base_values, our_values)
    _print_row(f"series of {n_checkpoints}, per checkpoint", base_s / n_checkpoints, our_s / n_checkpoints, diff)
    _print_row("series, per checkpoint, ref. ready", base_s / n_checkpoints, per_s, diff)
    print(f"{'  hsic_reference, once per run':<38} {'':>15} {ref_s:>12.4f}")

    stored = hsic_reference(data["x"], data["y"], passes=1, seed=None)  # the previous default
    (three_s, _), (one_s, _) = time_median(
        [lambda: hsic_measures(series[0], reference), lambda: hsic_measures(series[0], stored)], repeats, device)
    print(f"per checkpoint, ref. ready: 3 shuffled passes {three_s:.4f} s, 1 pass in the stored order "
          f"{one_s:.4f} s ({three_s / one_s:.2f}x)")


def part_per_checkpoint(device: torch.device, repeats: int) -> None:
    n = P * P
    data = synthetic_run(n, device, seed=1)
    w = data["state"]["layers.1.weight"]
    test = torch.arange(n, device=device) >= n - TEST_SAMPLES  # the hsic split: test samples only
    reference = hsic_reference(data["x"][test], data["y"][test])  # once per run
    h_test = data["h"][test]
    cases = [
        ("collapse_measures", lambda: collapse_measures(data["h"], data["y"], w)),
        ("hsic_measures", lambda: hsic_measures(h_test, reference)),
        ("weight_measures", lambda: weight_measures(data["state"])),
    ]
    timings = time_median([function for _, function in cases], repeats, device)
    print(f"\nPart 2: seconds per checkpoint, {n} samples x {HIDDEN} units, {P} classes ({device})")
    print(f"{'measure':<20} {'seconds':>9}")
    for (name, _), (seconds, _) in zip(cases, timings):
        print(f"{name:<20} {seconds:>9.4f}")
    print(f"{'total':<20} {sum(s for s, _ in timings):>9.4f}")


def _hsic_without_reference(run_dir: Path, steps: list[int]) -> list[dict]:
    """The hsic family as grokscope computed it before references: R_X and R_Y at every
    checkpoint (``hsic_measures(t, x, y)``), otherwise the same reading and batching."""
    from grokscope.context import iter_features, open_series

    context = open_series(run_dir)
    samples = context.samples()
    test = torch.from_numpy(samples.split) == 1
    labels = torch.from_numpy(samples.labels)[test]
    inputs = torch.from_numpy(context.inputs())[test]
    rows = []
    for item in iter_features(context, steps):
        values = hsic_measures(item.layers[item.penultimate][test], inputs, labels)
        rows += [{"step": item.step, "metric": k, "value": v} for k, v in values.items()]
    return rows


def part_run(run_dir: Path, repeats: int) -> None:
    from grokscope.discovery import run_series
    from grokscope.families.feature_steps import measure_steps
    from grokscope.families.options import MeasureOptions
    from grokscope.families.weights import weight_rows

    series = run_series(run_dir)
    steps = [c.step for c in series.checkpoints]
    options = MeasureOptions()

    def family(*names: str) -> Callable[[], object]:
        return lambda: measure_steps(series, {name: steps for name in names}, options, "cpu")

    def whole_pass() -> tuple[dict, list]:
        rows, problems = measure_steps(series, {"collapse": steps, "hsic": steps}, options, "cpu")
        return rows, problems + weight_rows(series, steps)[1]

    cases = [
        ("collapse + hsic + weights", whole_pass),
        ("  collapse", family("collapse")),
        ("  hsic", family("hsic")),
        ("  weights", lambda: weight_rows(series, steps)),
        ("  hsic without reference", lambda: _hsic_without_reference(run_dir, steps)),
    ]
    timings = time_median([function for _, function in cases], repeats, torch.device("cpu"), warm_up=False)
    problems = timings[0][1][1]
    if problems:
        raise SystemExit(f"{run_dir}: {problems[0][1]}")
    with_reference = {(r["step"], r["metric"]): r["value"] for r in timings[2][1][0]["hsic"]}
    without = {(r["step"], r["metric"]): r["value"] for r in timings[4][1]}
    diff = max(abs(with_reference[key] - without[key]) for key in without)
    print(f"\nPart 3: grokscope measure over {run_dir} ({len(steps)} checkpoints, cpu, one worker;"
          " features computed in memory where not stored)")
    print(f"{'families':<28} {'s total':>9} {'s / checkpoint':>15}")
    for (name, _), (seconds, _) in zip(cases, timings):
        print(f"{name:<28} {seconds:>9.2f} {seconds / len(steps):>15.4f}")
    hsic_s, without_s = timings[2][0], timings[4][0]
    print(f"hsic family: reference once per run is {without_s / hsic_s:.1f}x faster than R_X, R_Y per "
          f"checkpoint (max |diff| {diff:.2e})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side (median reported)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--part", choices=["nhsic", "checkpoint", "run", "all"], default="all")
    parser.add_argument("--series", type=int, default=20, help="part 1: checkpoints in the series")
    parser.add_argument("--run", type=Path, default=None, help="part 3: a run directory (part 3 needs it)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, median of {args.repeats}")
    if args.part in ("nhsic", "all"):
        part_nhsic(device, args.repeats, args.series)
    if args.part in ("checkpoint", "all"):
        part_per_checkpoint(device, args.repeats)
    if args.part in ("run", "all") and args.run is not None:
        part_run(args.run, args.repeats)
    elif args.part == "run":
        parser.error("--part run needs --run DIR")


if __name__ == "__main__":
    main()
