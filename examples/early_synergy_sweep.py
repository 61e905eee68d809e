"""Clauw et al.'s sweep on a CPU, then the early-synergy predictor: does an early synergy peak
predict grokking?

    python examples/early_synergy_sweep.py OUT [--jobs 2] [--seeds 0-2] [--steps 4000]
        [--weight-decays 0.1,1,2,5,10,50] [--alphas 1,8,50] [--measure-steps 0-1500]
        [--stages train,measure,predict,figures]

Trains (a+b) mod 97 for weight decay {0.1, 1, 2, 5, 10, 50} x seeds {0, 1, 2} (the seed MLP,
AdamW lr 0.03, 4000 full-batch steps) and alpha {1, 8, 50} x seeds {0, 1, 2} with the weight norm
held constant, a zero last layer and no weight decay (Liu et al.'s large-initialisation setup, as
in Clauw et al. §7), measures O-information on every checkpoint (or those of
``--measure-steps``), and runs ``grokscope predict``:
leave-one-out accuracy and ROC AUC of "generalised" from the early-synergy features measured up
to the memorisation step + k, against a baseline of loss curves over the same window. Writes

    OUT/runs/...              27 runs (checkpoints, history, measures/oinfo.parquet)
    OUT/predict.csv           the predictor's table (also printed)
    OUT/report.csv            one row per run, with its early-synergy features
    OUT/early-synergy.png     each run's synergy curve up to its window's end, first peak marked
    OUT/phases.png            normalised synergy / redundancy of seed 0 of every setting
    OUT/timings.json          wall time of every stage

The defaults are the paper's sweep. ``--seeds``, ``--steps``, ``--weight-decays`` and ``--alphas``
make it smaller where the machine cannot run the whole of it in the time it has; rerunning with
more seeds adds runs to the same OUT (finished ones are skipped). Runs are trained seed by seed
(every setting of seed 0 first), so a sweep cut short is still balanced across settings.

Every stage is an ordinary grokscope command (printed on stderr). At most ``--jobs`` processes
run at once, each with one torch thread: on a shared 2-core machine two single-threaded
processes are the most that helps. Rerunning resumes: finished runs and measured checkpoints
are skipped. docs/early-synergy.md reports what this found and how long it took.

Checkpoints: every 100 steps plus 30 log-spaced (68 per run), a third of train's default, to
keep the O-information affordable; the log-spaced ones are dense where the early peak is. On
the project's shared 2-core machine the whole sweep did not fit in the time available: what was
run (16 runs, 2 seeds, O-information to step 1500) and how long it took is in
docs/early-synergy.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WEIGHT_DECAYS = "0.1,1,2,5,10,50"
ALPHAS = "1,8,50"
SEEDS = "0-2"
STEPS = 4000  # train's default, the paper's 4000 full-batch steps
CADENCE = ["--save-every", "100", "--save-log", "30"]
# Windows of the predictor: the memorisation step plus k steps.
KS = "0,100,300,600,1000"
STAGES = ("train", "measure", "predict", "figures")


def seed_list(text: str) -> list[int]:
    """'0-2' or '0,1,2' -> [0, 1, 2]."""
    seeds = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return seeds


def train_commands(runs: Path, seeds: list[int], steps: int, weight_decays: list[str],
                   alphas: list[str]) -> list[list[str]]:
    """One train command per setting and seed, seed-major, each run named for both."""
    commands = []
    for seed in seeds:
        for wd in weight_decays:
            commands.append(["train", "--weight-decay", wd, "--name", f"add-p97-wd{wd}-seed{seed}"])
        for alpha in alphas:
            commands.append(["train", "--alpha", alpha, "--fix-norm", "--zero-last", "--weight-decay", "0",
                             "--name", f"add-p97-alpha{alpha}-fixnorm-seed{seed}"])
        for command in commands[-(len(weight_decays) + len(alphas)):]:
            command += ["--seed", str(seed)]
    return [command + ["--steps", str(steps)] + CADENCE + ["--resume", "--out", str(runs), "-q"]
            for command in commands]


def grokscope(args: list[str], capture: bool = False) -> str:
    """Run one grokscope command with one torch thread; its stdout when ``capture``."""
    print(f"$ grokscope {' '.join(args)}", file=sys.stderr, flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    completed = subprocess.run([sys.executable, "-m", "grokscope", *args], env=env, text=True,
                               stdout=subprocess.PIPE if capture else subprocess.DEVNULL)
    if completed.returncode != 0:
        sys.exit(f"`grokscope {' '.join(args)}` failed (exit {completed.returncode})")
    return completed.stdout if capture else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--jobs", type=int, default=2, help="processes at once (default 2)")
    parser.add_argument("--seeds", default=SEEDS, help=f"seeds, 'a-b' or 'a,b' (default {SEEDS})")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"optimizer steps per run (default {STEPS})")
    parser.add_argument("--weight-decays", default=WEIGHT_DECAYS, help=f"(default {WEIGHT_DECAYS})")
    parser.add_argument("--alphas", default=ALPHAS, help=f"constant-norm runs' init scales (default {ALPHAS})")
    parser.add_argument("--measure-steps", default=None,
                        help="checkpoints to measure O-information on, as measure --steps (default all); "
                             "'0-1500' covers every window of predict --k up to 1000 for runs that memorise "
                             "by step 500, at about half the cost")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    args = parser.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"--stages: unknown {', '.join(unknown)}")
    try:
        seeds = seed_list(args.seeds)
    except ValueError:
        parser.error(f"--seeds: expected 'a-b' or 'a,b,...', got {args.seeds!r}")
    if args.jobs < 1 or args.steps < 1:
        parser.error("--jobs, --steps: must be at least 1")
    weight_decays = [v.strip() for v in args.weight_decays.split(",") if v.strip()]
    alphas = [v.strip() for v in args.alphas.split(",") if v.strip()]
    out, runs = args.out, args.out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}

    for stage in STAGES:
        if stage not in stages:
            continue
        started = time.perf_counter()
        if stage == "train":
            with ThreadPoolExecutor(args.jobs) as pool:
                list(pool.map(grokscope, train_commands(runs, seeds, args.steps, weight_decays, alphas)))
        elif stage == "measure":
            steps = ["--steps", args.measure_steps] if args.measure_steps else []
            grokscope(["measure", str(runs), "--metric", "o-info,grokking", *steps, "--workers", str(args.jobs), "-q"])
        elif stage == "predict":
            table = grokscope(["predict", str(runs), "--k", KS, "--format", "csv"], capture=True)
            (out / "predict.csv").write_text(table)
            print(grokscope(["predict", str(runs), "--k", KS], capture=True))
            (out / "report.csv").write_text(grokscope(["report", str(runs), "--format", "csv"], capture=True))
        else:
            grokscope(["plot", "early-synergy", str(runs), "--k", "300", "--facet", "alpha,weight_decay",
                       "-o", str(out / "early-synergy.png"), "--width", "10", "--height", "7"])
            grokscope(["plot", "phases", str(runs), "--where", "seed == 0", "--facet", "run", "--smooth", "1",
                       "-o", str(out / "phases.png"), "--width", "16", "--height", "5"])
        timings[stage] = round(time.perf_counter() - started, 1)
        timings_path.write_text(json.dumps(timings, indent=2) + "\n")
        print(f"{stage}: {timings[stage]:.0f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
