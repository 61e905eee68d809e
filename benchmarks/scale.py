"""CPU seconds per checkpoint and peak memory of probe and measure on a GPT-2-style series.

Builds (or takes, ``--series DIR --data FILE.npz``) a series of Hugging Face ``checkpoint-N/``
folders of a GPT-2 classifier (``transformers.GPT2ForSequenceClassification``: 4 layers x 256,
4 heads, vocabulary 50,257, 10 classes read off the last token) with 2,000 sequences of 64
tokens as a ``--data`` npz: the checkpoints are the random initialisation and a few SGD steps
after it (``save_pretrained``; nothing is downloaded). The label of a sequence is its first token
mod 10, so the features have structure to measure; three quarters are the training split.

Each command runs in its own subprocess (``python -m grokscope ...``), one after the other; its
CPU time (user + system) and peak resident memory come from ``os.wait4`` of that child alone.
Linux carries a parent's peak RSS into a child it starts, so this process imports neither torch
nor the series: the series is built in a subprocess of its own (``--build DIR``).
Printed per command: wall and CPU seconds, CPU seconds per checkpoint, peak RSS, and whether it
met the issue's goals (probe and ``measure --metric all`` exit 0 with peak RSS <= 2 GiB; probe
<= 5 s CPU per checkpoint; complexity <= 2 CPU-minutes per checkpoint). A probe runs twice, on
all checkpoints and on the first alone: its CPU seconds per checkpoint are those of the further
checkpoints (the difference over N - 1), what a long series costs once the start-up (imports,
the model built once) is paid; the first-only row shows that start-up. The probe runs in float32
and, again, in mixed bfloat16 (``--dtype bfloat16``: float32 weights, matrix products on the
CPU's bfloat16 units where it has them). The machine's load average is printed with it: the CPU
seconds depend on load by tens of percent, the wall seconds several-fold.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/scale.py            # the issue's size (minutes)
    .venv/bin/python benchmarks/scale.py --small                      # a quick check (seconds)
    .venv/bin/python benchmarks/scale.py --family complexity --steps 2

The baseline "today" (before issue 27) is not rerun here: it asked for 24 GiB in hsic and 4.21 GB
in probe; docs/scaling.md quotes those figures beside this table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIB = 2**30
SIZES = {
    "issue": dict(layers=4, width=256, heads=4, vocabulary=50257, sequences=2000, tokens=64),
    "small": dict(layers=2, width=64, heads=2, vocabulary=1000, sequences=200, tokens=32),
}
FAMILIES = ("collapse", "hsic", "oinfo", "weights", "complexity")


def build_series(folder: Path, size: dict, steps: int, seed: int = 0) -> tuple[Path, Path]:
    """checkpoint-0 .. checkpoint-<steps> of a GPT-2 classifier and its data npz under ``folder``."""
    import numpy as np
    import torch
    import transformers

    rng = np.random.default_rng(seed)
    x = rng.integers(0, size["vocabulary"] - 1, size=(size["sequences"], size["tokens"]))  # (n, T)
    y = x[:, 0] % 10
    split = (rng.random(size["sequences"]) < 0.25).astype(np.int64)  # 1: test
    data = folder / "data.npz"
    np.savez(data, X=x, y=y, split=split)
    config = transformers.GPT2Config(vocab_size=size["vocabulary"], n_positions=size["tokens"], n_embd=size["width"],
                                     n_layer=size["layers"], n_head=size["heads"], num_labels=10,
                                     pad_token_id=size["vocabulary"] - 1, bos_token_id=0, eos_token_id=0)  # the pad id is never in the data: the last token is read
    torch.manual_seed(seed)
    model = transformers.GPT2ForSequenceClassification(config)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    inputs, labels = torch.from_numpy(x[split == 0][:64]), torch.from_numpy(y[split == 0][:64])
    series = folder / "series"
    for step in range(steps + 1):
        if step:
            loss = torch.nn.functional.cross_entropy(model(inputs).logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.save_pretrained(series / f"checkpoint-{step}")
    return series, data


def run_command(args: list[str]) -> dict:
    """Run ``python -m grokscope ARGS`` to its end: exit code, wall and CPU seconds, peak RSS (of
    this child alone: ``os.wait4`` reaps it, so stderr goes to a file, not a pipe)."""
    with tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "grokscope", *args], stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return {"rc": child.returncode, "wall": time.perf_counter() - started,
                "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss * 1024, "stderr": err.read()}


_MATMUL_SPEED = """
import time, torch
torch.set_num_threads(1)
a, b = torch.randn(8192, 256), torch.randn(256, 1024)
for dtype in (torch.float32, torch.bfloat16):
    x, y = a.to(dtype), b.to(dtype)
    x @ y
    started = time.process_time()
    for _ in range(20):
        x @ y
    print(20 * 8192 * 256 * 1024 / (time.process_time() - started) / 1e9)
"""


def matmul_speed() -> tuple[float, float]:
    """Multiply-accumulates per CPU second (1e9) of one core in a float32 and a bfloat16 matrix
    product, measured now: the floor a forward pass's matrix products cannot beat on this machine,
    which moves with what else its host runs (27-45 GMAC/s float32 on this project's machine)."""
    out = subprocess.run([sys.executable, "-c", _MATMUL_SPEED], capture_output=True, text=True, check=True).stdout
    fp32, bf16 = map(float, out.split())
    return fp32, bf16


def forward_macs(size: dict) -> float:
    """Multiply-accumulates of one forward pass over the data: per token and layer 12 d^2 in the
    projections and the MLP, 2 d T in attention (the classifier's head is negligible)."""
    d, t = size["width"], size["tokens"]
    return size["sequences"] * t * size["layers"] * (12 * d * d + 2 * d * t)


def _first_step(series: Path) -> str:
    return str(min(int(path.name.split("-")[1]) for path in Path(series).glob("checkpoint-*")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a small series (seconds), for a quick check")
    parser.add_argument("--series", type=Path, help="take this series instead of building one (needs --data)")
    parser.add_argument("--data", type=Path, help="the series' --data npz")
    parser.add_argument("--steps", type=int, default=4, help="SGD steps after the initialisation (checkpoints - 1)")
    parser.add_argument("--family", action="append", help="measure only these families (repeatable)")
    parser.add_argument("--only", help="run only these commands: probe, all and family names, comma-separated")
    parser.add_argument("--keep", type=Path, help="build and measure under this folder and keep it")
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)  # the subprocess that builds the series
    options = parser.parse_args()
    if options.build is not None:
        build_series(options.build, SIZES["small" if options.small else "issue"], options.steps)
        return
    size = SIZES["small" if options.small else "issue"]
    folder = options.keep or Path(tempfile.mkdtemp(prefix="grokscope-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if options.series is not None:
            series, data = options.series, options.data
        else:
            started = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--build", str(folder), "--steps", str(options.steps)]
                           + (["--small"] if options.small else []), check=True, stdout=subprocess.DEVNULL)
            series, data = folder / "series", folder / "data.npz"
            print(f"built {series} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        checkpoints = len(list(Path(series).glob("checkpoint-*")))
        home = folder / "home"
        probe = ["probe", str(series), "--data", str(data), "--force", "-q"]
        # Each probe also runs on its first checkpoint alone: the difference is the cost of the
        # further checkpoints, without the start-up (imports, the model built once per series).
        commands = [("probe", probe + ["--out", str(home)]),
                    ("probe bfloat16", probe + ["--out", str(folder / "home-bf16"), "--dtype", "bfloat16"])]
        for family in options.family or FAMILIES:
            commands.append((f"measure {family}", ["measure", str(home), "--metric", family, "--force", "-q"]))
        if not options.family:
            commands.append(("measure all", ["measure", str(home), "--metric", "all", "--force", "-q"]))
        if options.only:
            keep = {name if name.startswith("probe") else f"measure {name}" for name in options.only.split(",")}
            commands = [(name, args) for name, args in commands if name in keep or name.split()[0] in keep]
        load = os.getloadavg()
        print(f"# {checkpoints} checkpoints; {size}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
              f"{os.cpu_count()} cores; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
        fp32, bf16 = matmul_speed()
        macs = forward_macs(size)
        print(f"# one core's matrix products now: {fp32:.0f} GMAC/s float32, {bf16:.0f} GMAC/s bfloat16; the forward "
              f"pass is {macs:.2g} MAC per checkpoint: at least {macs / fp32 / 1e9:.1f} CPU s in float32, "
              f"{macs / bf16 / 1e9:.1f} in bfloat16")
        print(f"{'command':<28} {'rc':>3} {'wall s':>8} {'CPU s':>8} {'CPU s/ckpt':>11} {'peak RSS':>10}  goal")
        for name, args in commands:
            result = run_command(args)
            per = result["cpu"] / max(checkpoints, 1)
            goal = ""
            if name.startswith("probe") and checkpoints > 1:
                first = run_command(args + ["--steps", _first_step(series)])
                per = (result["cpu"] - first["cpu"]) / (checkpoints - 1)
                print(f"{name + ' (first only)':<28} {first['rc']:>3} {first['wall']:>8.1f} {first['cpu']:>8.1f} "
                      f"{first['cpu']:>11.1f} {first['rss'] / GIB:>8.2f} GiB  start-up included")
            if name.startswith("probe") or name == "measure all":
                goal = "ok" if result["rc"] == 0 and result["rss"] <= 2 * GIB else "MISSED (rc 0, <= 2 GiB)"
                if name.startswith("probe"):
                    goal += "; MISSED (<= 5 s CPU/ckpt)" if per > 5 else "; ok (<= 5 s CPU/ckpt)"
            if name == "measure complexity":
                goal = "ok" if per <= 120 else "MISSED (<= 120 s CPU/ckpt)"
            print(f"{name:<28} {result['rc']:>3} {result['wall']:>8.1f} {result['cpu']:>8.1f} {per:>11.1f} "
                  f"{result['rss'] / GIB:>8.2f} GiB  {goal}", flush=True)
            if result["rc"] != 0:
                print("    " + "\n    ".join(result["stderr"].strip().splitlines()[-3:]))
        fp32, bf16 = matmul_speed()
        print(f"# one core's matrix products after: {fp32:.0f} GMAC/s float32, {bf16:.0f} GMAC/s bfloat16")
        load = os.getloadavg()
        print(f"# load average after: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    finally:
        if options.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
