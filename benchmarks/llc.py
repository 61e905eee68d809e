"""grokscope's LLC against devinterp 2.0.1's on the same checkpoints, hyperparameters and threads.

Both sides estimate the local learning coefficient of each chosen checkpoint of a grokscope run
by SGLD localised at it, on the run's training split and its own training loss (cross-entropy
by default), with the same step size, localisation, n*beta (n / log n of the training set), number
of chains, draws (no burn-in) and batch size. devinterp's ``sample`` wants a Hugging Face dataset
of token sequences and a per-token loss: each sequence here is ``[sample index, 0]`` and the loss
looks the sample up, so its model and data are grokscope's. Both sides get the first
``n // batch_size * batch_size`` training samples: devinterp's loader drops the last partial
batch and replays its first epoch, so it would never see the rest. devinterp runs its chains one after
another, each drawing its own batches (``match_sampling_input_ids_across_chains=False``, as
grokscope's chains do: otherwise shared batches make its chain spread too small), its reference
loss over ``n / batch_size`` batches (every sample once); grokscope runs the chains together and
takes the reference loss on the whole set in one pass.

Per checkpoint: each side's mean over chains and its standard error (sample sd / sqrt(chains)),
z = difference / combined standard error (|z| <= 2: agreement at 95%), seconds and the ratio
devinterp / grokscope. The sides alternate which goes first, after one short warm-up run each.
torch runs on --threads threads (devinterp's zarr writer keeps its own I/O threads). devinterp's
seconds include what it does per checkpoint besides sampling (two ``gc.collect()`` per chain,
creating its zarr store, its reference loss), grokscope's its reference loss.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python -m grokscope train --steps 2000 --out /tmp/llcrun
    .venv/bin/python benchmarks/llc.py --run /tmp/llcrun/add-p97
    .venv/bin/python benchmarks/llc.py --run /tmp/llcrun/add-p97 --steps 0,40,400 --chains 8 --draws 1000
    .venv/bin/python benchmarks/llc.py --run /tmp/llcrun/add-p97 --routes   # grokscope's vmap route against its MLP route
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # devinterp's per-chain progress bars; read when tqdm loads

import numpy as np
import torch

from grokscope import formats
from grokscope.context import open_series
from grokscope.families.llc import chain_route
from grokscope.measures.llc import SGLDSettings, estimate_llc
from grokscope.model import build_model
from grokscope.training import first_step_reaching, loss_fn


def grokscope_side(model, state, criterion, x, y, settings: SGLDSettings) -> dict:
    started = time.perf_counter()
    chain_forward, inputs = chain_route(model, x)  # as measure --metric llc runs it
    estimate = estimate_llc(model, state, criterion, inputs, y, settings, chain_forward=chain_forward)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "chains": estimate.chain_llc, "reference": estimate.reference_loss,
            "reason": estimate.reason}


def index_dataset(n: int):
    """devinterp's input: a Hugging Face dataset whose sequence i is [i, 0] (built once per run)."""
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [[i, 0] for i in range(n)]}).with_format("torch")


def devinterp_side(model, state, per_sample_loss, x, y, dataset, settings: SGLDSettings, nbeta: float) -> dict:
    from devinterp.slt.llc import compute_llc
    from devinterp.slt.sampling import sample

    model.load_state_dict(state)
    n = len(y)

    def token_loss(module, input_ids):  # (batch, 2) -> (batch, 1), the per-"token" loss
        index = input_ids[:, 0]
        return per_sample_loss(module(x[index]), y[index]).unsqueeze(1)

    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        samples = sample(model, dataset, {}, lr=settings.step_size, n_beta=nbeta, localization=settings.localization,
                         num_chains=settings.chains, num_draws=settings.draws, num_burnin_steps=settings.burnin,
                         batch_size=settings.batch_size, num_init_loss_batches=n // settings.batch_size,
                         init_seed=settings.seed, match_sampling_input_ids_across_chains=False, device="cpu",
                         output_path=Path(folder) / "samples.zarr", loss_fn=token_loss)
        result = compute_llc(samples)
        chains = np.asarray(result["llc_per_chain"].values, dtype=np.float64)
        reference = float(result["init_loss"])
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "chains": chains, "reference": reference, "reason": None}


def print_routes(model, states: dict, criterion, x, y, settings: SGLDSettings) -> None:
    """grokscope's two routes for its MLP side by side: vmap of functional_call on the dense
    inputs, and MLP.chain_forward on the one-hot inputs' columns (what measure runs)."""
    chain_forward, columns = chain_route(model, x)
    routes = {"vmap": lambda state: estimate_llc(model, state, criterion, x, y, settings),
              "mlp": lambda state: estimate_llc(model, state, criterion, columns, y, settings,
                                                chain_forward=chain_forward)}
    warm = dataclasses.replace(settings, chains=2, draws=2)
    first = next(iter(states.values()))
    estimate_llc(model, first, criterion, x, y, warm)
    estimate_llc(model, first, criterion, columns, y, warm, chain_forward=chain_forward)
    print(f"{'step':>6s} | {'s vmap':>7s} {'s mlp':>7s} {'ratio':>6s} | max relative difference of the chains' LLC")
    for i, (step, state) in enumerate(states.items()):
        order = list(routes) if i % 2 == 0 else list(routes)[::-1]
        seconds, chains = {}, {}
        for name in order:
            started = time.perf_counter()
            chains[name] = routes[name](state).chain_llc
            seconds[name] = time.perf_counter() - started
        difference = float(np.max(np.abs(chains["mlp"] - chains["vmap"]) / np.abs(chains["vmap"])))
        print(f"{step:6d} | {seconds['vmap']:7.2f} {seconds['mlp']:7.2f} {seconds['vmap'] / seconds['mlp']:6.2f} | "
              f"{difference:.1e}")


def standard_error(chains: np.ndarray) -> float:
    return float(np.std(chains, ddof=1) / math.sqrt(len(chains))) if len(chains) > 1 else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a run trained by grokscope train")
    parser.add_argument("--steps", default=None,
                        help="checkpoint steps, comma-separated (default: 6 spread over the run)")
    defaults = SGLDSettings()
    parser.add_argument("--step-size", type=float, default=defaults.step_size)
    parser.add_argument("--localization", type=float, default=defaults.localization)
    parser.add_argument("--chains", type=int, default=defaults.chains)
    parser.add_argument("--draws", type=int, default=defaults.draws)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--routes", action="store_true",
                        help="time grokscope's vmap route against its MLP route instead of devinterp")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    logging.disable(logging.WARNING)

    config = formats.run.read_run(args.run)
    dataset = open_series(args.run).dataset()
    train = dataset.split == 0
    # devinterp's DataLoader drops the last partial batch and replays its first epoch, so a chain
    # never sees the remainder of n / batch_size: both sides get the first multiple of the batch
    # size of the training split, the same n samples.
    usable = int(train.sum()) // args.batch_size * args.batch_size
    x = torch.from_numpy(dataset.x[train][:usable])
    y = torch.from_numpy(dataset.y[train][:usable])
    model = build_model(dataset.input_dim, dataset.n_classes, config.model, config.seed)
    criterion = lambda logits, targets: loss_fn(logits, targets, config)  # noqa: E731
    if config.optim.loss != "ce":
        raise SystemExit("benchmarks/llc.py: the per-sample loss below is cross-entropy; this run trains on mse")
    def per_sample(logits, targets):
        return torch.nn.functional.cross_entropy(logits, targets, reduction="none")

    # No burn-in: devinterp 2.0.1 averages its burn-in steps too, grokscope leaves them out.
    settings = SGLDSettings(step_size=args.step_size, localization=args.localization, chains=args.chains,
                            draws=args.draws, burnin=0, batch_size=args.batch_size, seed=args.seed)
    nbeta = settings.resolved_nbeta(len(y))

    checkpoints = dict(formats.run.list_checkpoints(args.run))
    all_steps = sorted(checkpoints)
    if args.steps:
        steps = [int(s) for s in args.steps.split(",")]
    else:
        steps = sorted({all_steps[round(i * (len(all_steps) - 1) / 5)] for i in range(6)})
    history = formats.run.read_history(args.run)
    memorised = first_step_reaching(history, "train_acc")
    generalised = first_step_reaching(history, "test_acc")

    print(f"run {args.run}: n = {len(y)} training samples (of {int(train.sum())}), n*beta = n/log n = {nbeta:.2f}; "
          f"memorised at step {memorised}, generalised at step {generalised}; torch threads {args.threads}")
    print(f"SGLD: step size {settings.step_size:g}, localization {settings.localization:g}, {settings.chains} chains x "
          f"{settings.draws} draws, no burn-in, batch {settings.batch_size}, seed {settings.seed} + 1000 x checkpoint "
          f"index (both sides)")
    print()
    header = (f"{'step':>6s} | {'grokscope':>16s} {'devinterp':>16s} {'z':>6s} | {'L* grok':>9s} {'L* devi':>9s} | "
              f"{'s grok':>7s} {'s devi':>7s} {'ratio':>6s}")
    if args.routes:
        print_routes(model, {step: formats.run.load_checkpoint(checkpoints[step]) for step in steps}, criterion, x, y,
                     settings)
        return
    print(header)
    print("-" * len(header))
    dataset_for_devinterp = index_dataset(len(y))
    # One short run of each side first: the one-time costs of a process (vmap's first call,
    # devinterp's imports) belong to neither side's checkpoints.
    warm_state = formats.run.load_checkpoint(checkpoints[steps[0]])
    warm = SGLDSettings(step_size=settings.step_size, localization=settings.localization, chains=2, draws=2,
                        burnin=0, batch_size=settings.batch_size)
    grokscope_side(model, warm_state, criterion, x, y, warm)
    devinterp_side(model, warm_state, per_sample, x, y, dataset_for_devinterp, warm, nbeta)
    rows = []
    for i, step in enumerate(steps):
        state = formats.run.load_checkpoint(checkpoints[step])
        # A seed per checkpoint: with one seed every checkpoint would replay the same batches and
        # noise, and the checkpoints' differences would not be independent.
        # devinterp seeds chain c with seed + c: checkpoints 1000 apart share none.
        seeded = dataclasses.replace(settings, seed=settings.seed + 1000 * i)
        sides = [("grokscope", lambda: grokscope_side(model, state, criterion, x, y, seeded)),
                 ("devinterp", lambda: devinterp_side(model, state, per_sample, x, y, dataset_for_devinterp, seeded,
                                                      nbeta))]
        if i % 2:
            sides.reverse()
        result = {name: run() for name, run in sides}
        grok, devi = result["grokscope"], result["devinterp"]
        g_mean, d_mean = float(np.mean(grok["chains"])), float(np.mean(devi["chains"]))
        g_se, d_se = standard_error(grok["chains"]), standard_error(devi["chains"])
        z = (g_mean - d_mean) / math.hypot(g_se, d_se)
        ratio = devi["seconds"] / grok["seconds"]
        rows.append({"z": z, "ratio": ratio, "grok_s": grok["seconds"], "devi_s": devi["seconds"]})
        print(f"{step:6d} | {g_mean:9.3f} ± {g_se:5.3f} {d_mean:9.3f} ± {d_se:5.3f} {z:6.2f} | "
              f"{grok['reference']:9.4g} {devi['reference']:9.4g} | {grok['seconds']:7.2f} {devi['seconds']:7.2f} "
              f"{ratio:6.1f}" + (f"  grokscope: {grok['reason']}" if grok["reason"] else ""))
    print()
    agree = sum(abs(r["z"]) <= 2 for r in rows)
    print(f"{agree} of {len(rows)} checkpoints agree within 2 combined standard errors (max |z| "
          f"{max(abs(r['z']) for r in rows):.2f}); seconds per checkpoint: grokscope "
          f"{statistics.mean(r['grok_s'] for r in rows):.2f}, "
          f"devinterp {statistics.mean(r['devi_s'] for r in rows):.2f}; "
          f"devinterp / grokscope: median {statistics.median(r['ratio'] for r in rows):.1f}x, "
          f"min {min(r['ratio'] for r in rows):.1f}x")


if __name__ == "__main__":
    main()
