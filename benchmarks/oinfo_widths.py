"""O-information per checkpoint at widths 250 to 4,096: the union walk against today's route.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/oinfo_widths.py [--widths 250,512,1024,2048,4096]
        [--threads 2] [--today-max 1024] [--repeats 3]

One checkpoint is what the o-info family computes per layer: ``oinfo_search`` with its defaults
(10 Ward bins, neurons as variables, every multiplet of 2..10 bins, exhaustive, random ties with 10
draws) on synthetic ReLU features, 3,763 samples (the default run's training split) x width, made
from 40 latent sources. Every (width, route) runs in a fresh subprocess with ``--threads`` torch
threads (set by ``torch.set_num_threads``, and OMP_NUM_THREADS / MKL_NUM_THREADS in its
environment), so that its peak resident memory (``ru_maxrss``) is its own: wall and CPU seconds
of the call (median of ``--repeats`` after one warm-up up to 1,024 units; one call past it), peak
RSS of the whole subprocess (Python, torch and the features included), and the synergy and
redundancy found. The growth exponent is the least-squares slope of log seconds on log width
over 512..4,096.

"today" is ``grokscope.measures.oinfo`` and ``.multiplets`` as of commit ``BASELINE`` (where this
work started), read from git into a temporary directory and imported from there: the breadth-first
block lattice, and past its 1 GiB cap the direct route, with the tie draws as they were. It runs
up to ``--today-max`` units (past 1,024 its time grows as width^4.1: minutes per checkpoint). At
the widths where both run, a third subprocess evaluates the 1,013 unions of the same covariance
with both routes and prints the largest difference (same numbers to rounding); the two routes'
synergy values differ by tie noise only, since the random tie orders are drawn differently.

The machine's load average is printed with every row: on a shared machine, wall time is only
comparable between rows of similar load, and CPU seconds (which include OpenMP's spin-waiting at
2 threads) are the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BASELINE = "1b1379e"  # the branch point of issue 27: today's route
N_SAMPLES = 3763
ROOT = Path(__file__).resolve().parent.parent


def relu_features(width: int, seed: int = 0) -> np.ndarray:
    """(3763, width) float32 post-ReLU features of 40 latent sources, as benchmarks/oinfo.py's."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((N_SAMPLES, 40))
    pre = latent @ rng.standard_normal((40, width)) + rng.standard_normal((N_SAMPLES, width))
    return np.maximum(pre - 0.5, 0.0).astype(np.float32)


def baseline_modules(directory: str) -> None:
    """Write today's oinfo.py and multiplets.py from git into ``directory`` as baseline_oinfo and
    baseline_multiplets (the one import between them redirected)."""
    for name in ("oinfo", "multiplets"):
        text = subprocess.run(["git", "-C", str(ROOT), "show",
                               f"{BASELINE}:grokscope/measures/{name}.py"],
                              check=True, capture_output=True, text=True).stdout
        text = text.replace("from grokscope.measures.oinfo import", "from baseline_oinfo import")
        Path(directory, f"baseline_{name}.py").write_text(text)


# --------------------------------------------------------------------------------------------
# the subprocess side


def run_one(route: str, width: int, threads: int, repeats: int, baseline_dir: str) -> dict:
    import resource
    import time

    import torch

    torch.set_num_threads(threads)
    if route == "today":
        sys.path.insert(0, baseline_dir)
        from baseline_multiplets import oinfo_search
    else:
        from grokscope.measures.multiplets import oinfo_search
    features = torch.from_numpy(relu_features(width))
    calls = repeats + 1 if width <= 1024 else 1
    walls, cpus = [], []
    for _ in range(calls):
        wall, cpu = time.perf_counter(), time.process_time()
        rows = oinfo_search(features)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    if calls > 1:
        walls, cpus = walls[1:], cpus[1:]
    return {"wall": float(np.median(walls)), "cpu": float(np.median(cpus)),
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "synergy": rows[0]["value"], "redundancy": rows[1]["value"]}


def check_one(width: int, threads: int, baseline_dir: str) -> dict:
    """The largest difference between the two routes' values of every union, one covariance."""
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, baseline_dir)
    import baseline_oinfo

    from grokscope.measures.binning import _live_bins
    from grokscope.measures.copula import TieCovariances
    from grokscope.measures.union_lattice import _union_values

    x = torch.from_numpy(relu_features(width)).to(torch.float64)
    alive, bin_of = _live_bins(x, 10, None)
    x = x[:, torch.from_numpy(alive)]
    groups = [np.flatnonzero(bin_of == b) for b in np.unique(bin_of)]
    cov = TieCovariances(x, "random", 0, 1).search
    new = _union_values(cov, groups, N_SAMPLES, 2, len(groups), True)
    old = baseline_oinfo._union_values(cov, groups, N_SAMPLES, 2, len(groups), True)
    return {"max_diff": float((new - old).abs().max()), "max_abs": float(old.abs().max())}


# --------------------------------------------------------------------------------------------
# the driver


def spawn(args: list[str], threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([str(ROOT)] + os.environ.get("PYTHONPATH", "").split(
                   os.pathsep)))
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True,
                         text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def slope(widths: list[int], seconds: list[float]) -> float:
    return float(np.polyfit(np.log(widths), np.log(seconds), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="250,512,1024,2048,4096")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--today-max", type=int, default=1024,
                        help="widest layer today's route is run on")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("ROUTE", "WIDTH", "DIR"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        route, width, directory = args.child
        result = (check_one(int(width), args.threads, directory) if route == "check"
                  else run_one(route, int(width), args.threads, args.repeats, directory))
        print(json.dumps(result))
        return

    widths = [int(w) for w in args.widths.split(",")]
    print(f"O-information per checkpoint: oinfo_search defaults (10 bins, neurons, sizes 2..10, "
          f"exhaustive, random ties x 10 draws), {N_SAMPLES} samples; {args.threads} torch "
          f"thread(s); {os.cpu_count()} CPUs; median of {args.repeats} calls up to 1,024 units")
    print(f"{'width':>6s} {'route':>6s} {'wall s':>8s} {'CPU s':>8s} {'peak MiB':>9s} "
          f"{'synergy':>9s} {'redund.':>9s} {'x today':>8s}  load (1, 5, 15 min)")
    results: dict[str, dict[int, dict]] = {"new": {}, "today": {}}
    checks = {}
    with tempfile.TemporaryDirectory() as directory:
        baseline_modules(directory)
        for width in widths:
            routes = ["new"] + (["today"] if width <= args.today_max else [])
            for route in routes:
                result = spawn(["--threads", str(args.threads), "--repeats", str(args.repeats),
                                "--child", route, str(width), directory], args.threads)
                results[route][width] = result
                ratio = ("" if route == "new" or width not in results["new"]
                         else f"{result['wall'] / results['new'][width]['wall']:8.1f}")
                print(f"{width:6d} {route:>6s} {result['wall']:8.2f} {result['cpu']:8.2f} "
                      f"{result['peak_mib']:9.0f} {result['synergy']:+9.4f} "
                      f"{result['redundancy']:9.3f} {ratio:>8s}  {load()}", flush=True)
            if width > args.today_max:
                print(f"{width:6d}  today  skipped: past --today-max {args.today_max} (its time "
                      f"grows as width^4.1 there)", flush=True)
            else:
                checks[width] = spawn(["--threads", str(args.threads), "--child", "check",
                                       str(width), directory], args.threads)
    fitted = [w for w in widths if 512 <= w <= 4096]
    for route in ("new", "today"):
        have = [w for w in fitted if w in results[route]]
        if len(have) >= 2:
            print(f"growth exponent, {route}, {have[0]}..{have[-1]} units: wall "
                  f"{slope(have, [results[route][w]['wall'] for w in have]):.2f}, CPU "
                  f"{slope(have, [results[route][w]['cpu'] for w in have]):.2f}")
    for width, check in checks.items():
        print(f"width {width}: the 1,013 unions of one covariance, union walk vs today's block "
              f"lattice: max |diff| {check['max_diff']:.1e} nats (values up to "
              f"{check['max_abs']:.0f})")
    print(f"[load average {load()}]")


if __name__ == "__main__":
    main()
