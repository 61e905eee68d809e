"""The seed papers' claims on Clauw et al.'s full grid, 3 seeds: train, measure, sub-networks with
random controls, the early-synergy predictor, onsets and lead-lag, figures.

    python examples/claims_sweep.py OUT [--jobs 2] [--seeds 0-2] [--steps 4000]
        [--weight-decays 0,0.1,1,2,5,10,50] [--alphas 8,50] [--families o-info,grokking,...]
        [--stages train,measure,subnet,predict,onsets,figures]

Trains (a+b) mod 97 (the seed MLP, AdamW lr 0.03, 4000 full-batch steps) at weight decay
{0, 0.1, 1, 2, 5, 10, 50} with alpha 1, and at alpha {8, 50} with weight decay 0, the weight norm
held constant and a zero last layer (Liu et al.'s large-initialisation setup, Clauw et al. §7):
9 settings x 3 seeds = 27 runs, seed by seed (every setting of seed 0 first, so a sweep cut short
is balanced across settings), each seed's settings on ``--jobs`` workers of ``grokscope train``.
Then, each stage an ordinary grokscope command (printed on stderr):

* measure: every family of ``--families`` on every checkpoint (O-information to the end of every
  run, so past every generalisation step), on ``--jobs`` workers of ``grokscope measure``;
* subnet: for each seed's weight-decay-``--subnet-weight-decay`` run, the ``--subnet-rule``
  multiplet's sub-network, its inverse and ``--draws`` size-matched random controls
  (``grokscope subnet --control random``), in OUT/subnets so that they stay out of the sweep;
* predict: claim (2), the early-synergy predictor at k = 100, 300, 1000 (leave-one-out accuracy,
  leave-pair-out ROC AUC and its permutation p-value, against the loss-only baseline);
* onsets: every measure's peak, steepest change and change point per run, and their lead or lag
  relative to generalisation over seeds with a bootstrap interval;
* figures: onsets, early-synergy, phase diagram, phases (seed 0), collapse, complexity (when
  measured), subnet (when trained).

Writes

    OUT/runs/...          the sweep's runs (checkpoints, history, measures/*.parquet)
    OUT/subnets/...       the sub-networks, inverses and random controls
    OUT/report.csv        one row per run (grokscope report)
    OUT/predict.csv       the predictor at each k
    OUT/onsets.csv        one row per run x measure x event
    OUT/lead-lag.csv      each event's lead or lag over seeds
    OUT/*.png             the figures
    OUT/timings.json      per stage: wall time and CPU time (user + system of the stage's
                          processes, workers included, as getrusage(RUSAGE_CHILDREN) counts them)

Rerunning resumes: finished runs and measured checkpoints are skipped; rerun with the same
--seeds and grid options, since run names hold the values that vary. The options that make the
sweep smaller (--p, --width, --train-fraction, --steps, --seeds, --weight-decays, --alphas,
--families, --bins) are for checking the script on a laptop; the claims need the defaults.

Compute. The full sweep (27 runs, 3 seeds; docs/claims.md has its results and the exact
commands) took on the project's shared 2-core CPU machine, at load 3-6: train 48 CPU min (40 min
wall, 2 workers); measure, every family of the default --families on all 27 x 68 checkpoints, 39
CPU min (1.3 CPU s per checkpoint; run as 4 processes over the runs, 51 min wall); subnet with 2-3
random controls per parent, 13 runs, 45 CPU min (some of it two spinning threads, since fixed);
predict, onsets and figures 6 CPU min. About 2.3 CPU hours in all; the script's default --draws 10
adds about 5 CPU min per control and parent. docs/claims.md's tables come from
examples/claims_table.py OUT.

A 2-run miniature checks every stage in minutes:

    python examples/claims_sweep.py mini --p 31 --width 128 --train-fraction 0.8 --steps 800 \
        --seeds 0 --weight-decays 2 --alphas 8 --families o-info,grokking,collapse,hsic,weights,fourier \
        --bins 4 --subnet-rule min --draws 2 --jobs 2

(both runs generalise; predict is skipped, leave-one-out needs 3 runs): 108 s CPU in all.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

WEIGHT_DECAYS = "0,0.1,1,2,5,10,50"
ALPHAS = "8,50"
SEEDS = "0-2"
STEPS = 4000
# Every 100 steps plus 30 log-spaced checkpoints (68 per run): dense where the early peak is.
CADENCE = ("--save-every", "100", "--save-log", "30")
FAMILIES = "o-info,grokking,collapse,hsic,weights,fourier,complexity"
KS = "100,300,1000"
STAGES = ("train", "measure", "subnet", "predict", "onsets", "figures")
# Leave-one-out needs at least this many runs (grokscope predict).
MIN_PREDICT_RUNS = 3


def seed_list(text: str) -> list[int]:
    """'0-2' or '0,1,2' -> [0, 1, 2]."""
    seeds = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return seeds


def grokscope(args: list[str], capture: bool = False) -> str:
    """Run one grokscope command (one torch thread per process unless it is told otherwise);
    its stdout when ``capture``; the script stops with the command's exit code when it fails."""
    print(f"$ grokscope {' '.join(args)}", file=sys.stderr, flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    completed = subprocess.run([sys.executable, "-m", "grokscope", *args], env=env, text=True,
                               stdout=subprocess.PIPE if capture else subprocess.DEVNULL)
    if completed.returncode != 0:
        sys.exit(f"`grokscope {' '.join(args)}` failed (exit {completed.returncode})")
    return completed.stdout if capture else ""


def train_commands(args, runs: Path) -> list[list[str]]:
    """Per seed: the weight-decay sweep at alpha 1, then the constant-norm alpha sweep, each on the workers."""
    common = ["--p", str(args.p), "--width", str(args.width), "--train-fraction", str(args.train_fraction),
              "--steps", str(args.steps), *CADENCE, "--workers", str(args.jobs), "--threads", "1",
              "--resume", "--out", str(runs), "-q"]
    commands = []
    for seed in seed_list(args.seeds):
        base = f"add-p{args.p}-seed{seed}"
        if args.weight_decays:
            commands.append(["train", "--weight-decay", args.weight_decays, "--seed", str(seed),
                             "--name", f"{base}-alpha1", *common])
        if args.alphas:
            commands.append(["train", "--alpha", args.alphas, "--fix-norm", "--zero-last", "--weight-decay", "0",
                             "--seed", str(seed), "--name", f"{base}-fixnorm", *common])
    return commands


def sweep_runs(runs: Path) -> list[tuple[Path, dict]]:
    """Every run of the sweep with its run.json."""
    return [(path.parent, json.loads(path.read_text())) for path in sorted(runs.glob("*/run.json"))]


def subnet_parents(runs: Path, weight_decay: float) -> list[Path]:
    """The alpha-1 runs at ``weight_decay``, one per seed: Clauw et al.'s sub-network run is wd 2."""
    return [run for run, config in sweep_runs(runs)
            if config["optim"]["weight_decay"] == weight_decay and config["model"]["alpha"] == 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--jobs", type=int, default=2, help="workers of train and measure (default 2)")
    parser.add_argument("--seeds", default=SEEDS, help=f"seeds, 'a-b' or 'a,b' (default {SEEDS})")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"optimizer steps per run (default {STEPS})")
    parser.add_argument("--weight-decays", default=WEIGHT_DECAYS, help=f"at alpha 1 (default {WEIGHT_DECAYS})")
    parser.add_argument("--alphas", default=ALPHAS, help=f"constant-norm runs' init scales (default {ALPHAS})")
    parser.add_argument("--p", type=int, default=97, help="modulus (default 97)")
    parser.add_argument("--width", type=int, default=250, help="hidden neurons (default 250)")
    parser.add_argument("--train-fraction", type=float, default=0.4, help="(default 0.4)")
    parser.add_argument("--families", default=FAMILIES, help=f"measure --metric (default {FAMILIES})")
    parser.add_argument("--bins", type=int, default=10, help="O-information's Ward bins (default 10)")
    parser.add_argument("--subnet-weight-decay", type=float, default=2.0, help="the sub-networks' parents (default 2)")
    parser.add_argument("--subnet-rule", default="emergence", help="subnet --at (default emergence)")
    parser.add_argument("--draws", type=int, default=10, help="random controls per sub-network (default 10)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    args = parser.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if set(stages) - set(STAGES):
        parser.error(f"--stages: unknown {', '.join(sorted(set(stages) - set(STAGES)))}")
    try:
        seed_list(args.seeds)
    except ValueError:
        parser.error(f"--seeds: expected 'a-b' or 'a,b,...', got {args.seeds!r}")
    if args.jobs < 1 or args.steps < 1 or args.draws < 1:
        parser.error("--jobs, --steps, --draws: must be at least 1")
    out, runs, subnets = args.out, args.out / "runs", args.out / "subnets"
    runs.mkdir(parents=True, exist_ok=True)
    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    families = [f.strip() for f in args.families.split(",") if f.strip()]

    for stage in (s for s in STAGES if s in stages):
        started, cpu = time.perf_counter(), _children_cpu()
        if stage == "train":
            for command in train_commands(args, runs):
                grokscope(command)
        elif stage == "measure":
            grokscope(["measure", str(runs), "--metric", ",".join(families), "--bins", str(args.bins),
                       "--workers", str(args.jobs), "--threads", "1", "-q"])
        elif stage == "subnet":
            subnets.mkdir(exist_ok=True)
            for parent in subnet_parents(runs, args.subnet_weight_decay):
                grokscope(["subnet", str(parent), "--at", args.subnet_rule, "--inverse", "--control", "random",
                           "--draws", str(args.draws), "--out", str(subnets), "--resume", "-q"])
        elif stage == "predict":
            count = len(sweep_runs(runs))
            if count < MIN_PREDICT_RUNS:
                print(f"predict: leave-one-out needs at least {MIN_PREDICT_RUNS} runs, the sweep has {count}: "
                      "skipped", file=sys.stderr, flush=True)
            else:
                (out / "predict.csv").write_text(grokscope(["predict", str(runs), "--k", KS, "-f", "csv"], True))
                print(grokscope(["predict", str(runs), "--k", KS], capture=True))
        elif stage == "onsets":
            (out / "report.csv").write_text(grokscope(["report", str(runs), "-f", "csv"], capture=True))
            (out / "onsets.csv").write_text(grokscope(["onsets", str(runs), "-f", "csv"], capture=True))
            (out / "lead-lag.csv").write_text(grokscope(["onsets", str(runs), "--over-seeds", "-f", "csv"], True))
            print(grokscope(["onsets", str(runs), "--over-seeds"], capture=True))
        else:
            figures(args, runs, subnets, out, families)
        timings[stage] = {"wall_s": round(time.perf_counter() - started, 1), "cpu_s": round(_children_cpu() - cpu, 1)}
        timings_path.write_text(json.dumps(timings, indent=2) + "\n")
        print(f"{stage}: {timings[stage]['wall_s']:.0f} s wall, {timings[stage]['cpu_s']:.0f} s CPU",
              file=sys.stderr, flush=True)


def figures(args, runs: Path, subnets: Path, out: Path, families: list[str]) -> None:
    """Every figure the measured families allow."""
    def plot(kind: list[str], name: str, *extra: str) -> None:
        grokscope(["plot", *kind, "-o", str(out / name), *extra])

    plot(["onsets", str(runs)], "onsets.png", "--width", "14", "--height", "9")
    plot(["sweep", str(runs), "--x", "weight_decay", "--y", "alpha"], "phase-diagram.png")
    if "o-info" in families or "oinfo" in families:
        plot(["early-synergy", str(runs), "--k", "300", "--facet", "alpha,weight_decay"], "early-synergy.png",
             "--width", "10", "--height", "7")
        plot(["phases", str(runs)], "phases.png", "--where", f"seed == {seed_list(args.seeds)[0]}", "--facet", "run",
             "--smooth", "1", "--width", "16", "--height", "5")
    if "collapse" in families:
        plot(["collapse", str(runs)], "collapse.png", "--width", "10")
    if "complexity" in families:
        plot(["complexity", str(runs)], "complexity.png", "--width", "10")
    parents = subnet_parents(runs, args.subnet_weight_decay)
    if parents and subnets.is_dir() and any(subnets.iterdir()):
        plot(["subnet", *map(str, parents), str(subnets)], "subnet.png", "--width", "12")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
