"""grokscope's power-law fits of the layer spectra against WeightWatcher 0.7.7's analyze().

On the chosen checkpoints of a grokscope run, WeightWatcher's ``analyze()`` with its defaults
(the checkpoint loaded into the run's model) and grokscope's ``spectra`` of the matrices the
weights family selects, layer by layer where both analyse: the largest difference in alpha,
alpha_weighted, xmin, the KS distance D and the tail size, the pass mark being
|difference| <= 1e-6 * max(1, |value|) on every one, and seconds per checkpoint for each side
(alternating which goes first) on --threads torch threads.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python -m grokscope train --steps 2000 --out /tmp/llcrun
    .venv/bin/python benchmarks/spectra.py --run /tmp/llcrun/add-p97 --every 10
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import time
from contextlib import redirect_stdout
from pathlib import Path

import torch

from grokscope import formats
from grokscope.context import open_series
from grokscope.measures.spectra import spectra, spectral_layers
from grokscope.model import build_model

COMPARED = (("alpha", "alpha"), ("alpha_weighted", "alpha_weighted"), ("xmin", "xmin"), ("D", "ks_distance"),
            ("num_pl_spikes", "tail_size"))


def weightwatcher_side(model, state) -> tuple[float, dict[str, dict]]:
    import weightwatcher

    model.load_state_dict(state)
    started = time.perf_counter()
    with redirect_stdout(io.StringIO()):  # its small-sample fit prints a line per layer
        details = weightwatcher.WeightWatcher(model=model).analyze()
    seconds = time.perf_counter() - started
    return seconds, {f"{row['longname']}.weight": row for _, row in details.iterrows()}


def grokscope_side(state) -> tuple[float, dict]:
    started = time.perf_counter()
    layers = {s.name: s for s in spectra(spectral_layers(state))}
    return time.perf_counter() - started, layers


def ours(spectrum, key: str) -> float:
    if key == "alpha_weighted":
        return spectrum.alpha_weighted
    return getattr(spectrum.fit, key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a run trained by grokscope train")
    parser.add_argument("--every", type=int, default=1, help="take every Nth checkpoint")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)

    config = formats.run.read_run(args.run)
    dataset = open_series(args.run).dataset()
    model = build_model(dataset.input_dim, dataset.n_classes, config.model, config.seed)
    checkpoints = formats.run.list_checkpoints(args.run)[:: args.every]

    worst = {name: 0.0 for name, _ in COMPARED}
    seconds = {"weightwatcher": [], "grokscope": []}
    compared = only_ww = only_grok = failures = 0
    for i, (step, path) in enumerate(checkpoints):
        state = formats.run.load_checkpoint(path)
        if i % 2:
            grok_s, grok = grokscope_side(state)
            ww_s, ww = weightwatcher_side(model, state)
        else:
            ww_s, ww = weightwatcher_side(model, state)
            grok_s, grok = grokscope_side(state)
        seconds["weightwatcher"].append(ww_s)
        seconds["grokscope"].append(grok_s)
        fitted = {name for name, s in grok.items() if s.fit is not None}
        only_ww += len(set(ww) - fitted)
        only_grok += len(fitted - set(ww))
        for name in fitted & set(ww):
            compared += 1
            row, spectrum = ww[name], grok[name]
            for theirs_key, our_key in COMPARED:
                theirs, mine = float(row[theirs_key]), float(ours(spectrum, our_key))
                gap = abs(theirs - mine)
                worst[theirs_key] = max(worst[theirs_key], gap / max(1.0, abs(theirs)))
                if gap > 1e-6 * max(1.0, abs(theirs)):
                    failures += 1
                    print(f"step {step} {name} {theirs_key}: WeightWatcher {theirs!r}, grokscope {mine!r}")

    layers = sorted({name for name, s in grok.items()})
    print(f"run {args.run}: {len(checkpoints)} checkpoints, layers {', '.join(layers)}; torch threads {args.threads}")
    print(f"{compared} (checkpoint, layer) pairs analysed by both; {only_ww} only by WeightWatcher, "
          f"{only_grok} only by grokscope")
    print()
    header = f"{'quantity':16s} {'max |diff| / max(1, |value|)':>30s}"
    print(header)
    print("-" * len(header))
    for name, _ in COMPARED:
        print(f"{name:16s} {worst[name]:30.3g}")
    print()
    ww_mean, grok_mean = statistics.mean(seconds["weightwatcher"]), statistics.mean(seconds["grokscope"])
    print(f"seconds per checkpoint: WeightWatcher {ww_mean:.4f}, grokscope {grok_mean:.4f} "
          f"(WeightWatcher / grokscope {ww_mean / grok_mean:.1f}x)")
    print("all within 1e-6" if failures == 0 else f"{failures} values differ by more than 1e-6")


if __name__ == "__main__":
    main()
