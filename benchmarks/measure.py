"""Speed of the measure numerics on data shaped like the default run.

Part 1: grokscope's vectorised nHSIC against the authors' approach (Sakamoto & Sato's
``NormalizedHSIC``: a Python loop over minibatches of 100, pairwise distances by broadcasting,
``torch.inverse``), side by side on the default run's test split: n = 5646 samples, T = 250
hidden units, X = the 194-dim concatenated one-hot input, Y = 97 classes. The baseline is
centred on both sides and in float64 like grokscope, so the two must agree to 1e-6; the
timings compare the method, not the precision.

Part 2: seconds per checkpoint for collapse_measures + hsic_measures + weight_measures on
synthetic features of the default shape (all 9409 samples x 250 units, 97 classes) and the
state dict of a 194 -> 250 -> 97 MLP.

Each timing is the median of --repeats runs, the two sides alternating.

    .venv/bin/python benchmarks/measure.py --repeats 5
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/measure.py   # a loaded 2-core box
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from grokscope.measures.collapse import collapse_measures
from grokscope.measures.hsic import hsic_measures, nhsic
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
    t: torch.Tensor, x: torch.Tensor, kernel_x: str = "gaussian", batch_size: int = 100
) -> float:
    """The authors' estimator: unshuffled batches, last partial batch kept, unweighted mean."""
    scores = [
        _authors_score(t[start : start + batch_size], x[start : start + batch_size], kernel_x).item()
        for start in range(0, t.shape[0], batch_size)
    ]
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


# --- timing ------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_median(
    functions: list[Callable[[], object]], repeats: int, device: torch.device
) -> list[tuple[float, object]]:
    """Median seconds of each function, run alternately; also each one's last result."""
    seconds: list[list[float]] = [[] for _ in functions]
    results: list[object] = [None] * len(functions)
    for function in functions:  # warm-up: lazy initialisation, CUDA kernels, allocator
        function()
    for _ in range(repeats):
        for i, function in enumerate(functions):
            _sync(device)
            started = time.perf_counter()
            results[i] = function()
            _sync(device)
            seconds[i].append(time.perf_counter() - started)
    return [(statistics.median(s), r) for s, r in zip(seconds, results)]


def part_nhsic(device: torch.device, repeats: int) -> None:
    data = synthetic_run(TEST_SAMPLES, device)
    t64, x64 = data["h"].double(), data["x"].double()
    y_one_hot = torch.nn.functional.one_hot(data["y"], P).double()
    cases = [
        (
            "nHSIC(T;X)",
            lambda: baseline_nhsic(t64, x64),
            lambda: nhsic(data["h"], data["x"]),
        ),
        (
            "nHSIC(T;X) + nHSIC(T;Y)",
            lambda: (baseline_nhsic(t64, x64), baseline_nhsic(t64, y_one_hot, kernel_x="linear")),
            lambda: tuple(hsic_measures(data["h"], data["x"], data["y"]).values()),
        ),
    ]
    print(
        f"\nPart 1: nHSIC, n={TEST_SAMPLES}, T {HIDDEN}-dim, X {2 * P}-dim one-hot, "
        f"batches of 100 ({device})"
    )
    print(f"{'measure':<26} {'authors loop s':>15} {'grokscope s':>12} {'speed-up':>9} {'max |diff|':>11}")
    for name, baseline, ours in cases:
        (base_s, base_value), (our_s, our_value) = time_median([baseline, ours], repeats, device)
        base_values = base_value if isinstance(base_value, tuple) else (base_value,)
        our_values = our_value if isinstance(our_value, tuple) else (our_value,)
        diff = max(abs(a - b) for a, b in zip(base_values, our_values))
        print(f"{name:<26} {base_s:>15.4f} {our_s:>12.4f} {base_s / our_s:>8.1f}x {diff:>11.2e}")


def part_per_checkpoint(device: torch.device, repeats: int) -> None:
    n = P * P
    data = synthetic_run(n, device, seed=1)
    w = data["state"]["layers.1.weight"]
    cases = [
        ("collapse_measures", lambda: collapse_measures(data["h"], data["y"], w)),
        ("hsic_measures", lambda: hsic_measures(data["h"], data["x"], data["y"])),
        ("weight_measures", lambda: weight_measures(data["state"])),
    ]
    timings = time_median([function for _, function in cases], repeats, device)
    print(f"\nPart 2: seconds per checkpoint, {n} samples x {HIDDEN} units, {P} classes ({device})")
    print(f"{'measure':<20} {'seconds':>9}")
    for (name, _), (seconds, _) in zip(cases, timings):
        print(f"{name:<20} {seconds:>9.4f}")
    print(f"{'total':<20} {sum(s for s, _ in timings):>9.4f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side (median reported)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--part", choices=["nhsic", "checkpoint", "all"], default="all")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, median of {args.repeats}")
    if args.part in ("nhsic", "all"):
        part_nhsic(device, args.repeats)
    if args.part in ("checkpoint", "all"):
        part_per_checkpoint(device, args.repeats)


if __name__ == "__main__":
    main()
