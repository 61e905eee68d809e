"""O-information speed, side by side with baselines, on the same data in one process.

    .venv/bin/python benchmarks/oinfo.py [--device cuda] [--threads N] [--numpy-sample 2000]

(1) all multiplets of sizes 3..20 of 20 variables (1,048,365 multiplets), 3763 samples of
    correlated, non-linearly warped data: grokscope (lattice) vs thoi 0.2.42 (if installed:
    `.venv/bin/pip install thoi==0.2.42`) vs a direct per-multiplet NumPy implementation (a
    random sample of multiplets timed and extrapolated). All three start from the same copula
    covariance, in float64, with the same (Ince) bias correction, in nats.
(2) one checkpoint in neurons mode: 250 ReLU-like neurons x 3763 samples, 10 Ward bins, 1013
    multiplets, including clustering and copula normalisation; and the same in bins mode.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import time

import numpy as np
import torch
from scipy.special import digamma

from grokscope.measures.multiplets import oinfo_search
from grokscope.measures.oinfo import copnorm, oinfo_multiplets, oinfo_values_from_cov

N_SAMPLES = 3763
os.environ.setdefault("TQDM_DISABLE", "1")  # thoi's progress bars would garble the table


def warped_data(n_vars: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N_SAMPLES, n_vars)) @ rng.standard_normal((n_vars, n_vars))
    warps = [np.tanh, np.exp, lambda v: v ** 3, lambda v: np.log1p(np.abs(v)) * np.sign(v)]
    return np.column_stack([warps[j % 4](x[:, j] / x[:, j].std()) for j in range(n_vars)])


def relu_features(n_neurons: int = 250, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((N_SAMPLES, 40))
    pre = latent @ rng.standard_normal((40, n_neurons)) + rng.standard_normal((N_SAMPLES,
                                                                                n_neurons))
    return np.maximum(pre - 0.5, 0.0).astype(np.float32)


def numpy_oinfo(cov: np.ndarray, subset: tuple[int, ...], bias: np.ndarray) -> float:
    """The textbook formula: slogdet of each sub-covariance, nats, Ince bias per entropy."""
    def h(s):
        return 0.5 * (len(s) * math.log(2 * math.pi * math.e)
                      + np.linalg.slogdet(cov[np.ix_(s, s)])[1]) - bias[len(s)]
    k = len(subset)
    total = (k - 2) * h(list(subset))
    for j in subset:
        total += h([j]) - h([v for v in subset if v != j])
    return total


def timed(fn, repeats: int = 1):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def all_multiplets_table(device: str, numpy_sample: int) -> list[tuple]:
    x = warped_data(20)
    z = copnorm(x)
    cov = np.cov(z, rowvar=False)
    cov_t = torch.tensor(cov, device=device)
    rows = []

    seconds, ours = timed(lambda: oinfo_values_from_cov(cov_t, N_SAMPLES, 3, 20).cpu().numpy(),
                          repeats=3)
    multiplets = [m for k in range(3, 21) for m in itertools.combinations(range(20), k)]
    rows.append(("grokscope lattice (cov -> values)", seconds, 1.0, 0.0))
    full, _ = timed(lambda: oinfo_multiplets(torch.tensor(x, device=device), 3, 20,
                                             units="nats"))
    rows.append(("grokscope oinfo_multiplets (x -> tuples, values)", full, full / seconds, None))

    try:
        from thoi.measures.gaussian_copula import multi_order_measures
    except ImportError:
        print("thoi not installed: skipping it (.venv/bin/pip install thoi==0.2.42)")
    else:
        def run_thoi():
            return multi_order_measures(cov_t, 3, 20, covmat_precomputed=True, T=N_SAMPLES,
                                        device=torch.device(device),
                                        batch_aggregation=lambda items: items)
        thoi_seconds, batches = timed(run_thoi)
        position = {m: i for i, m in enumerate(multiplets)}
        diff = 0.0
        for nplets, result in batches:
            idx = [position[tuple(sorted(r))] for r in nplets.cpu().tolist()]
            diff = max(diff, float(np.abs(result[:, 0, 2].cpu().numpy() - ours[idx]).max()))
        rows.append(("thoi 0.2.42 multi_order_measures (cov -> values)", thoi_seconds,
                     thoi_seconds / seconds, diff))

    rng = np.random.default_rng(0)
    sample = rng.choice(len(multiplets), size=min(numpy_sample, len(multiplets)), replace=False)
    bias = np.zeros(21)
    for k in range(1, 21):
        bias[k] = 0.5 * (k * math.log(2 / (N_SAMPLES - 1))
                         + sum(digamma((N_SAMPLES - i) / 2) for i in range(1, k + 1)))
    start = time.perf_counter()
    reference = np.array([numpy_oinfo(cov, multiplets[i], bias) for i in sample])
    per = (time.perf_counter() - start) / len(sample)
    rows.append((f"NumPy per multiplet (extrapolated from {len(sample)})", per * len(multiplets),
                 per * len(multiplets) / seconds, float(np.abs(reference - ours[sample]).max())))
    return rows


def checkpoint_table(device: str) -> list[tuple]:
    features = torch.tensor(relu_features(), device=device)
    rows = []
    for variables in ("neurons", "bins"):
        seconds, out = timed(lambda: oinfo_search(features, variables=variables, per_size=True),
                             repeats=3)
        rows.append((f"oinfo_search variables={variables} (cluster + copnorm + 1013 multiplets)",
                     seconds, out[0]["value"], out[1]["value"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--numpy-sample", type=int, default=2000)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads\n")

    print("(1) all 1,048,365 multiplets of sizes 3..20 of 20 variables, 3763 samples, nats")
    print(f"{'method':58s} {'seconds':>9s} {'x ours':>8s} {'max |diff|':>11s}")
    for name, seconds, ratio, diff in all_multiplets_table(args.device, args.numpy_sample):
        diff_text = "-" if diff is None else f"{diff:.1e}"
        print(f"{name:58s} {seconds:9.3f} {ratio:8.1f} {diff_text:>11s}")

    print("\n(2) one checkpoint: 250 ReLU neurons x 3763 samples, 10 bins, bits")
    print(f"{'entry point':72s} {'seconds':>8s} {'synergy':>9s} {'redund.':>9s}")
    for name, seconds, low, high in checkpoint_table(args.device):
        print(f"{name:72s} {seconds:8.3f} {low:9.4f} {high:9.4f}")


if __name__ == "__main__":
    main()
