"""O-information speed, side by side with baselines, on the same data in one process.

    .venv/bin/python benchmarks/oinfo.py [--threads 1,2] [--repeats 5] [--skip-thoi]
                                         [--device cuda] [--numpy-sample 2000] 2>/dev/null

For each torch thread count in ``--threads`` (default: 1 and torch's default), both parts run
with that same setting for every method, so ratios compare like with like:

(1) all multiplets of sizes 3..20 of 20 variables (1,048,365 multiplets), 3763 samples of
    correlated, non-linearly warped data: grokscope (the lattice from the covariance, and the
    whole ``oinfo_multiplets`` from the data, multiplets returned as arrays) vs thoi 0.2.42 (if
    installed: `.venv/bin/pip install thoi==0.2.42`, the ``bench`` extra) vs a direct
    per-multiplet NumPy implementation (a random sample of multiplets timed and extrapolated).
    thoi and the lattice start from the same copula covariance, in float64, with the same (Ince)
    bias correction, in nats; ``thoi / it`` is thoi's time over each method's.
(2) one checkpoint in neurons mode: 250 ReLU-like neurons x 3763 samples, 10 Ward bins, 1013
    multiplets. Step by step and whole (`oinfo_search`, clustering and copula normalisation
    included), against the previous implementation rebuilt here from its parts: sklearn's
    AgglomerativeClustering, copula ranks by two argsorts (random keys, then a stable argsort of
    the values), and one batched Cholesky per multiplet (the direct route). Bins mode too.

(3) ``--part ties``: the cost per checkpoint of each treatment of tied activations, against
    today's default as of this branch's start (random ties, one draw, the two-sort copula ranks
    rebuilt here), on the checkpoint of part (2): ``random`` with 10 draws (the default) and 1,
    ``average`` with and without the 10 draws of the spread, ``index``, and the naive way to get
    10 draws (10 whole searches). That default's unions run on today's union walk, so the
    ratios are the draws' cost. Measured (1 thread, load ~12, docs/oinfo.md): the default costs
    1.98x that one-draw default per checkpoint (2.36x before the draws shared one sort), the
    naive 10 searches 9.7x.
(4) ``--part estimators``: the treatments of ties compared on data with a point mass at zero,
    ``--datasets`` data sets of 3763 samples (the default run's training split) per structure:
    planted latent-Gaussian structures cut at their 60% quantile into exact zeros (as ReLU
    features), and the ReLU features of a freshly initialised 422 -> 250 MLP on (a+b) mod 211,
    whose 44,521 pairs are the population the data sets are drawn from. Per estimator: the mean
    over data sets, its bias against the population value (for the planted structures, the
    estimate on 200,000 samples, where all treatments agree), the sd over data sets, the tie
    spread (``value_sd``), and how far the value moves when the rows are shuffled or stored
    sorted by a source of the structure (as the task stores samples by operand).
    docs/oinfo.md quotes this table.
(5) ``--part claims --runs RUN...``: no timing; the synergy and redundancy curves of measured runs
    (``grokscope measure RUN --metric o-info``) summed up in the windows the phases of Clauw et
    al. are stated in: the initial transient (steps 0-2), before memorisation, between
    memorisation and generalisation, after generalisation (steps from the run's history, 0.99
    accuracy). Per window: the lowest O-information (the synergy peak) with its step and tie
    spread, the median of the synergy curve, the median redundancy. docs/oinfo.md quotes it.
(6) ``--part samples --runs RUN --steps 305,3700``: no timing; a trained run's penultimate
    features at those steps, on random subsets of 1000, 2000 and 3763 of its samples and on all of
    them (9409, both splits), bins fixed by Ward on the training split: synergy and redundancy
    with average ties and with the mean of 10 random tie orders. Both converge to the same value
    as samples grow; the one that moves less with the sample size has the smaller bias at the
    run's 3763 training samples. docs/oinfo.md quotes it.

Timings are medians of ``--repeats`` runs (thoi: of 1 run, it is slow); the machine's load
average is printed before and after, since other jobs share it.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import pandas as pd
import torch
from scipy.special import digamma

from scipy.special import ndtri

from grokscope.measures.multiplets import cluster_neurons, oinfo_search
from grokscope.measures.copula import _copnorm_tensor, _covariance
from grokscope.measures.ties import value_keys
from grokscope.measures.lattice import _all_multiplets
from grokscope.measures.oinfo import copnorm, oinfo_multiplets, oinfo_values_from_cov
from grokscope.measures.oinfo_direct import _direct_values_chunked
from grokscope.measures.union_lattice import _union_values

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


def timed(fn, repeats: int):
    """Median wall time of ``repeats`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


# --------------------------------------------------------------------------------------------
# the previous implementation of part (2), rebuilt from its parts as the baseline


def previous_cluster(features: np.ndarray, n_bins: int) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    return AgglomerativeClustering(n_clusters=n_bins, linkage="ward").fit_predict(features.T)


def previous_copnorm(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    n, m = x.shape
    gen = torch.Generator().manual_seed(seed)
    keys = torch.rand((n, m), generator=gen, dtype=torch.float64).to(x.device)
    shuffle = torch.argsort(keys, dim=0)
    within = torch.argsort(torch.gather(x, 0, shuffle), dim=0, stable=True)
    order = torch.gather(shuffle, 0, within)
    ranks = torch.empty_like(order)
    ranks.scatter_(0, order, torch.arange(n, device=x.device).unsqueeze(1).expand(n, m))
    return torch.special.ndtri((ranks.to(torch.float64) + 1.0) / (n + 1.0))


def union_sets(labels: np.ndarray) -> tuple[list[np.ndarray], list[list[int]]]:
    groups = [np.flatnonzero(labels == b) for b in np.unique(labels)]
    sets = [np.concatenate([groups[i] for i in m]).tolist()
            for m in _all_multiplets(len(groups), 2, len(groups))]
    return groups, sets


def previous_search(features: torch.Tensor) -> np.ndarray:
    labels = previous_cluster(features.cpu().numpy(), 10)
    cov = _covariance(previous_copnorm(features))
    _, sets = union_sets(labels)
    return _direct_values_chunked(cov, sets, N_SAMPLES, True)


def _sort_rows(keys: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.sort(keys.numpy(), axis=1))


def branch_point_copnorm(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Random-tie copula scores as this branch started computing them: a random permutation per
    column from one sort of random keys carrying the row, then one sort of packed keys."""
    n, m = x.shape
    key = torch.from_numpy(value_keys(x.numpy()))  # (m, n)
    positions = torch.arange(n).expand(m, n)
    row_bits = max(1, (n - 1).bit_length())
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 1 << (62 - row_bits), (m, n), generator=gen)
    noise.bitwise_left_shift_(row_bits).bitwise_or_(positions)
    shuffled = _sort_rows(noise).bitwise_and_((1 << row_bits) - 1)
    secondary = torch.empty_like(shuffled).scatter_(1, shuffled, positions)
    key.bitwise_left_shift_(31).bitwise_or_(secondary)
    order = torch.gather(shuffled, 1, _sort_rows(key).bitwise_and_((1 << 31) - 1))
    scores = torch.special.ndtri(torch.arange(1, n + 1, dtype=torch.float64) / (n + 1.0))
    return torch.empty((m, n), dtype=torch.float64).scatter_(1, order, scores.expand(m, n)).T


def branch_point_checkpoint(features: torch.Tensor, seed: int = 0) -> tuple[float, float]:
    """One checkpoint in neurons mode as the branch started: Ward bins, one random tie order,
    every union of bins (on today's union walk, which gives the block lattice's values);
    (synergy, redundancy) in nats."""
    x = features.to(torch.float64)
    labels = cluster_neurons(x, 10)
    groups = [np.flatnonzero(labels == b) for b in range(10)]
    values = _union_values(_covariance(branch_point_copnorm(x, seed)), groups, x.shape[0], 2, 10,
                           True)
    return float(values.min()), float(values.max())


# --------------------------------------------------------------------------------------------
# tables


def all_multiplets_table(device: str, numpy_sample: int, repeats: int, thoi: bool):
    """Rows (method, seconds, max |diff| in nats against the lattice's values or None)."""
    x = warped_data(20)
    z = copnorm(x)
    cov = np.cov(z, rowvar=False)
    cov_t = torch.tensor(cov, device=device)
    rows = []

    seconds, ours = timed(lambda: oinfo_values_from_cov(cov_t, N_SAMPLES, 3, 20).cpu().numpy(),
                          repeats)
    ours = ours.copy()
    multiplets = _all_multiplets(20, 3, 20)
    rows.append(("grokscope lattice (cov -> values)", seconds, 0.0))
    x_t = torch.tensor(x, device=device)
    full, (arrays, values) = timed(lambda: oinfo_multiplets(x_t, 3, 20, units="nats"), repeats)
    assert arrays[:1000] == multiplets[:1000] and len(arrays) == len(multiplets)
    rows.append(("grokscope oinfo_multiplets (x -> multiplet arrays, values)", full,
                 float(np.abs(values - ours).max())))
    tuples, _ = timed(lambda: list(oinfo_multiplets(x_t, 3, 20, units="nats")[0]), 1)
    rows.append(("  ... and a tuple per multiplet (list(multiplets))", tuples, None))

    if thoi:
        try:
            from thoi.measures.gaussian_copula import multi_order_measures
        except ImportError:
            print("thoi not installed: skipping it (.venv/bin/pip install thoi==0.2.42)")
        else:
            def run_thoi():
                return multi_order_measures(cov_t, 3, 20, covmat_precomputed=True, T=N_SAMPLES,
                                            device=torch.device(device),
                                            batch_aggregation=lambda items: items)
            thoi_seconds, batches = timed(run_thoi, 1)
            position = {m: i for i, m in enumerate(multiplets)}
            diff = 0.0
            for nplets, result in batches:
                idx = [position[tuple(sorted(r))] for r in nplets.cpu().tolist()]
                diff = max(diff, float(np.abs(result[:, 0, 2].cpu().numpy() - ours[idx]).max()))
            rows.append(("thoi 0.2.42 multi_order_measures (cov -> values)", thoi_seconds, diff))

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
                 float(np.abs(reference - ours[sample]).max())))
    return rows


def checkpoint_table(device: str, repeats: int):
    """Rows (step, ours s, previous s, max |diff| nats or None)."""
    features = torch.tensor(relu_features(), device=device)
    x = features.to(torch.float64)
    labels = cluster_neurons(x, 10)
    groups, sets = union_sets(labels)
    cov = _covariance(_copnorm_tensor(x, "random", 0))
    rows = []

    ours, new_labels = timed(lambda: cluster_neurons(x, 10), repeats)
    before, old_labels = timed(lambda: previous_cluster(x.cpu().numpy(), 10), repeats)
    same = len(set(zip(new_labels.tolist(), old_labels.tolist()))) == 10
    rows.append(("Ward clustering (Gram + scipy / sklearn)", ours, before,
                 "same bins" if same else "DIFFERENT bins"))

    ours, _ = timed(lambda: _copnorm_tensor(x, "random", 0), repeats)
    before, _ = timed(lambda: previous_copnorm(x), repeats)
    rows.append(("copula normalisation, random ties", ours, before, None))

    ours, fast = timed(lambda: _union_values(cov, groups, N_SAMPLES, 2, 10, True), repeats)
    before, slow = timed(lambda: _direct_values_chunked(cov, sets, N_SAMPLES, True), repeats)
    rows.append(("O-information of 1013 unions (union walk / direct)", ours, before,
                 float((fast - slow).abs().max())))

    ours, out = timed(lambda: oinfo_search(features, variables="neurons", per_size=True),
                      repeats)
    before, _ = timed(lambda: previous_search(features), repeats)
    rows.append(("whole checkpoint, neurons mode (oinfo_search)", ours, before, None))
    ours, _ = timed(lambda: oinfo_search(features, variables="bins", per_size=True), repeats)
    rows.append(("whole checkpoint, bins mode (oinfo_search)", ours, None, None))
    return rows, out[0]["value"], out[1]["value"]


def interleaved(calls: dict, repeats: int) -> dict:
    """Median seconds of each call, timed in turns (one round of every call, ``repeats`` rounds)
    so that a change in the machine's load falls on all of them alike; and each last result."""
    times = {name: [] for name in calls}
    results = {}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            results[name] = call()
            times[name].append(time.perf_counter() - start)
    return {name: (float(np.median(t)), results[name]) for name, t in times.items()}


def ties_cost_table(repeats: int, draws: int = 10):
    """Rows (treatment, seconds per checkpoint, its synergy row or None) and today's seconds."""
    features = torch.tensor(relu_features())
    today = "today's default: random ties, 1 draw (branch start)"
    calls = {today: lambda: branch_point_checkpoint(features)}
    for name, kwargs in (
            (f"random, mean of {draws} draws (the default)", dict(ties="random", tie_draws=draws)),
            ("random, 1 draw (--tie-draws 1)", dict(ties="random", tie_draws=1)),
            (f"average, {draws} draws for the spread", dict(ties="average", tie_draws=draws)),
            ("average, no draws (--tie-draws 0)", dict(ties="average", tie_draws=0)),
            ("index (the authors' order)", dict(ties="index"))):
        calls[name] = lambda kwargs=kwargs: oinfo_search(features, **kwargs)[0]
    calls[f"naive: {draws} whole searches"] = lambda: [branch_point_checkpoint(features, seed)
                                                       for seed in range(draws)]
    timings = interleaved(calls, repeats)
    rows = [(name, seconds, out if isinstance(out, dict) else None)
            for name, (seconds, out) in timings.items()]
    return timings[today][0], rows


PLANTED_ZEROS = 0.6  # fraction of exact zeros in every planted variable


def planted_latent(kind: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Latent Gaussian variables of a planted structure, and the latent the samples can be
    sorted by (a source of the structure, like an operand)."""
    if kind == "synergy, 3 variables":  # x3 ~ x1 + x2, x1 and x2 independent
        a = rng.standard_normal((n, 2))
        s = (a[:, 0] + a[:, 1]) / math.sqrt(2)
        return np.column_stack([a, 0.95 * s + math.sqrt(1 - 0.95 ** 2) * rng.standard_normal(n)]), a[:, 0]
    if kind == "redundancy, 3 variables":  # three noisy copies of one source
        s = rng.standard_normal(n)
        return np.column_stack([s + 0.7 * rng.standard_normal(n) for _ in range(3)]), s
    if kind == "independent, 24 variables":
        z = rng.standard_normal((n, 24))
        return z, z[:, 0]
    # 3 bins of 8 neurons; bin 3's source is the sum of bin 1's and bin 2's
    a = rng.standard_normal((n, 2))
    sources = np.column_stack([a, (a[:, 0] + a[:, 1]) / math.sqrt(2)])
    return np.column_stack([0.9 * sources[:, b] + math.sqrt(1 - 0.81) * rng.standard_normal(n)
                            for b in range(3) for _ in range(8)]), a[:, 0]


PLANTED = ("synergy, 3 variables", "redundancy, 3 variables", "independent, 24 variables",
           "24 neurons in 3 bins: copies of s1, s2, s1 + s2")
MLP = "random MLP on (a+b) mod 211: 250 ReLU neurons, 10 Ward bins"
ESTIMATORS = (("index (authors')", dict(ties="index")), ("random, 1 draw", dict(ties="random", tie_draws=1)),
              ("random, mean of 10 (default)", dict(ties="random", tie_draws=10)),
              ("average", dict(ties="average")))
POPULATION_SAMPLES = 200_000  # a planted structure's population value: the estimate on this many


def latent_oinfo_bits(kind: str) -> float:
    """O-information of the latent Gaussian, from the covariance of 10^6 of its samples."""
    z, _ = planted_latent(kind, 1_000_000, np.random.default_rng(12345))
    cov = np.cov(z, rowvar=False)
    k = len(cov)

    def half_logdet(subset):
        return 0.5 * np.linalg.slogdet(cov[np.ix_(subset, subset)])[1]

    every = list(range(k))
    total = (k - 2) * half_logdet(every) + sum(
        half_logdet([j]) - half_logdet([v for v in every if v != j]) for j in every)
    return total / math.log(2)


def mlp_features(p: int = 211, width: int = 250) -> tuple[torch.Tensor, np.ndarray]:
    """Post-ReLU features of a freshly initialised 2p -> width layer on every pair (a, b), in the
    task's order (by operand a), and each pair's a. All p^2 pairs are the population."""
    a, b = (v.ravel() for v in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    x = torch.zeros(p * p, 2 * p)
    x[torch.arange(p * p), torch.from_numpy(a)] = 1.0
    x[torch.arange(p * p), torch.from_numpy(p + b)] = 1.0
    torch.manual_seed(0)
    layer = torch.nn.Linear(2 * p, width)
    with torch.no_grad():
        return torch.relu(layer(x)).to(torch.float64), a


def extremes(x, groups, seed: int, **kwargs) -> list[tuple[float, float]]:
    """(value, tie sd) in bits of the synergy and redundancy rows of the multiplets of groups."""
    rows = oinfo_search(x, labels=groups, seed=seed, **kwargs)
    return [(row["value"], row["value_sd"]) for row in rows[:2]]


def planted_reference(kind: str) -> tuple[dict, np.ndarray]:
    """The latent Gaussian's O-information and the population value of a planted structure (the
    estimate on 200,000 samples, where every treatment of ties agrees), and its 3 groups."""
    big, _ = planted_latent(kind, POPULATION_SAMPLES, np.random.default_rng(54321))
    groups = np.arange(big.shape[1]) // (big.shape[1] // 3)  # 3 groups of variables: one multiplet
    population = extremes(np.maximum(big - ndtri(PLANTED_ZEROS), 0.0), groups, 0, ties="random",
                          tie_draws=1, min_size=3)[0][0]
    return {"latent Gaussian": latent_oinfo_bits(kind),
            f"population (n = {POPULATION_SAMPLES:,})": population}, groups


def data_set(kind: str, d: int, population=None, operand=None):
    """Data set ``d`` of a structure, its rows in a random order, and the key it can be stored
    sorted by (the first source; for the MLP, the operand a)."""
    rng = np.random.default_rng(d)
    if kind == MLP:
        pick = rng.choice(len(population), N_SAMPLES, replace=False)  # a random order already
        return population[torch.from_numpy(pick)], operand[pick]
    z, driver = planted_latent(kind, N_SAMPLES, rng)
    return np.maximum(z - ndtri(PLANTED_ZEROS), 0.0), driver


def estimators_table(n_datasets: int):
    """Per structure, per quantity: (name, reference values, {estimator: array of (value, tie sd,
    change when shuffled, change when stored sorted) over the data sets})."""
    tables = {}
    for kind in PLANTED + (MLP,):
        population = operand = None
        if kind == MLP:
            population, operand = mlp_features()
            groups = cluster_neurons(population, 10)
            whole = extremes(population, groups, 0, ties="random", tie_draws=2)
            references = [{"population (all 44,521 pairs)": value} for value, _ in whole]
            quantities, options = ("synergy", "redundancy"), {}
        else:
            reference, groups = planted_reference(kind)
            references, quantities, options = [reference], ("O-information",), {"min_size": 3}
        results = [{name: [] for name, _ in ESTIMATORS} for _ in quantities]
        for d in range(n_datasets):
            x, key = data_set(kind, d, population, operand)
            orders = (np.random.default_rng(10_000 + d).permutation(N_SAMPLES), np.argsort(key, kind="stable"))
            for name, kwargs in ESTIMATORS:
                base = extremes(x, groups, d, **kwargs, **options)
                moved = [extremes(x[order], groups, d, **kwargs, **options) for order in orders]
                for q in range(len(quantities)):
                    results[q][name].append([base[q][0], base[q][1]] + [m[q][0] - base[q][0] for m in moved])
        tables[kind] = [(quantity, references[q], {n: np.array(r) for n, r in results[q].items()})
                        for q, quantity in enumerate(quantities)]
    return tables


def claims_table(run_dir: str) -> tuple[str, list[tuple]]:
    """The run's label (name, ties) and rows (window, steps, synergy peak, its step, its sd,
    median synergy, median redundancy) of its measured O-information."""
    import json

    from grokscope.plotting.data import load
    from grokscope.plotting.summary import overall_oinfo, run_summaries

    tables = load([run_dir])
    summary = run_summaries(tables).iloc[0]
    synergy, redundancy = overall_oinfo(tables, "synergy"), overall_oinfo(tables, "redundancy")
    params = json.loads(synergy["params"].iloc[0]) if "params" in synergy.columns else {}
    sd = synergy["value_sd"] if "value_sd" in synergy.columns else pd.Series(np.nan, index=synergy.index)
    memorised, generalised = summary["memorization_step"], summary["generalization_step"]
    windows = [("initial transient", 0, 2), ("before memorisation", 3, memorised - 1),
               ("memorisation to generalisation", memorised, generalised - 1),
               ("after generalisation", generalised, np.inf)]
    rows = []
    for name, first, last in windows:
        inside = (synergy["step"] >= first) & (synergy["step"] <= last)
        if not inside.any():
            continue
        peak = synergy.loc[inside, "value"].idxmin()
        red = redundancy[(redundancy["step"] >= first) & (redundancy["step"] <= last)]["value"]
        rows.append((name, f"{int(first)}-{'' if last == np.inf else int(last)}",
                     synergy.loc[peak, "value"], int(synergy.loc[peak, "step"]), sd.loc[peak],
                     synergy.loc[inside, "value"].median(), red.median()))
    label = (f"{summary['run']} (memorised {memorised}, generalised {generalised}; "
             f"ties={params.get('ties', '?')})")
    return label, rows


def print_claims(runs: list[str]) -> None:
    print("(5) O-information curves by window; bits; synergy = lowest O-information (more negative: "
          "more synergy), sd = its tie spread")
    for run_dir in runs:
        label, rows = claims_table(run_dir)
        print(f"\n{label}")
        print(f"  {'window':32s} {'steps':>10s} {'peak synergy':>13s} {'at step':>8s} {'sd':>7s} "
              f"{'median syn.':>12s} {'median red.':>12s}")
        for name, steps, peak, step, sd, median, red in rows:
            sd_text = "-" if sd != sd else f"{sd:.3f}"
            print(f"  {name:32s} {steps:>10s} {peak:+13.3f} {step:8d} {sd_text:>7s} {median:+12.3f} {red:12.2f}")


def print_samples(run_dir: str, steps: list[int], bias_correction: bool = True) -> None:
    from grokscope.context import iter_features, open_series

    context = open_series(run_dir)
    samples = context.samples()
    train = torch.from_numpy(samples.split == 0)
    print(f"(6) {run_dir}: synergy / redundancy in bits on random subsets of its samples, 10 Ward bins "
          f"of the training split; random = mean of 10 random tie orders (± their sd); "
          f"bias correction {'on' if bias_correction else 'off'}")
    print(f"  {'step':>5s} {'samples':>8s} {'synergy, average':>17s} {'synergy, random':>17s} "
          f"{'redundancy, average':>20s} {'redundancy, random':>20s}")
    for item in iter_features(context, steps):
        features = item.layers[item.penultimate].to(torch.float64)
        alive = features[train].amax(0) != features[train].amin(0)  # as oinfo_search drops
        features = features[:, alive]
        bins = cluster_neurons(features[train], 10)
        for n in (1000, 2000, N_SAMPLES, len(features)):
            rows = torch.from_numpy(np.random.default_rng(0).permutation(len(features))[:n])
            average = oinfo_search(features[rows], labels=bins, ties="average", tie_draws=0,
                                   bias_correction=bias_correction)
            drawn = oinfo_search(features[rows], labels=bins, ties="random", tie_draws=10,
                                 bias_correction=bias_correction)
            print(f"  {item.step:5d} {n:8d} {average[0]['value']:+17.3f} "
                  f"{drawn[0]['value']:+10.3f} ± {drawn[0]['value_sd']:.3f} {average[1]['value']:20.3f} "
                  f"{drawn[1]['value']:13.3f} ± {drawn[1]['value_sd']:.3f}")


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", default=None,
                        help="comma-separated torch thread counts (default: 1 and torch's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--numpy-sample", type=int, default=2000)
    parser.add_argument("--skip-thoi", action="store_true")
    parser.add_argument("--part", choices=("1", "2", "both", "ties", "estimators", "claims", "samples"),
                        default="both")
    parser.add_argument("--steps", default="305,3700", help="checkpoints (part samples)")
    parser.add_argument("--no-bias-correction", action="store_true", help="part samples: without Ince's correction")
    parser.add_argument("--datasets", type=int, default=10, help="planted data sets per structure (part estimators)")
    parser.add_argument("--runs", nargs="+", default=[], help="measured run directories (part claims)")
    args = parser.parse_args()
    default_threads = torch.get_num_threads()
    threads = ([int(t) for t in args.threads.split(",")] if args.threads
               else sorted({1, default_threads}))
    print(f"torch {torch.__version__}, device {args.device}, {os.cpu_count()} CPUs, "
          f"torch default {default_threads} threads; {load()}")

    if args.part == "estimators":
        print_estimators(args.datasets)
        return
    if args.part == "samples":
        if len(args.runs) != 1:
            parser.error("--part samples needs --runs RUN (one run)")
        print_samples(args.runs[0], [int(step) for step in args.steps.split(",")], not args.no_bias_correction)
        return
    if args.part == "claims":
        if not args.runs:
            parser.error("--part claims needs --runs RUN...")
        print_claims(args.runs)
        return
    best: dict[str, tuple[float, int]] = {}  # method -> (seconds, threads) of its best run
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        if args.part in ("1", "both"):
            print(f"\n(1) all 1,048,365 multiplets of sizes 3..20 of 20 variables, 3763 samples, "
                  f"nats; {n_threads} thread(s), every method")
            print(f"{'method':60s} {'seconds':>9s} {'x lattice':>9s} {'thoi / it':>9s} "
                  f"{'max |diff|':>11s}")
            table = all_multiplets_table(args.device, args.numpy_sample, args.repeats,
                                         not args.skip_thoi)
            lattice = table[0][1]
            thoi_seconds = next((sec for name, sec, _ in table if name.startswith("thoi")), None)
            for name, seconds, diff in table:
                diff_text = "-" if diff is None else f"{diff:.1e}"
                versus = "-" if thoi_seconds is None else f"{thoi_seconds / seconds:9.1f}"
                print(f"{name:60s} {seconds:9.3f} {seconds / lattice:9.1f} {versus:>9s} "
                      f"{diff_text:>11s}")
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, n_threads)
            print(f"  [{load()}]")
        if args.part in ("2", "both"):
            print(f"\n(2) one checkpoint: 250 ReLU neurons x 3763 samples, 10 bins; "
                  f"{n_threads} thread(s); median of {args.repeats}")
            print(f"{'step':56s} {'ours s':>8s} {'previous s':>11s} {'speed-up':>9s} "
                  f"{'check':>15s}")
            rows, low, high = checkpoint_table(args.device, args.repeats)
            for name, ours, before, check in rows:
                before_text = "-" if before is None else f"{before:11.3f}"
                ratio_text = "-" if before is None else f"{before / ours:8.1f}x"
                check_text = ("-" if check is None else check if isinstance(check, str)
                              else f"|diff| {check:.0e}")
                print(f"{name:56s} {ours:8.3f} {before_text:>11s} {ratio_text:>9s} "
                      f"{check_text:>15s}")
            print(f"  neurons mode: synergy {low:.4f} bits, redundancy {high:.4f} bits; "
                  f"[{load()}]")
        if args.part == "ties":
            print(f"\n(3) cost per checkpoint of each treatment of ties: 250 ReLU neurons x 3763 "
                  f"samples, 10 bins, 1013 multiplets; {n_threads} thread(s); median of {args.repeats}")
            print(f"{'treatment':58s} {'seconds':>8s} {'x today':>8s} {'synergy, bits':>16s}")
            today, rows = ties_cost_table(args.repeats)
            for name, seconds, row in rows:
                value = "-" if row is None else f"{row['value']:+.3f} ± {row['value_sd']:.3f}" \
                    if row["value_sd"] == row["value_sd"] else f"{row['value']:+.3f}"
                print(f"{name:58s} {seconds:8.3f} {seconds / today:8.2f} {value:>16s}")
            print(f"  [{load()}]")
    ours_name = "grokscope lattice (cov -> values)"
    if len(threads) > 1 and ours_name in best:
        print("\n(1) each method at its best thread count")
        ours_seconds = best[ours_name][0]
        for name, (seconds, n_threads) in best.items():
            print(f"{name:60s} {seconds:9.3f} {seconds / ours_seconds:9.1f}   "
                  f"({n_threads} thread(s))")


def print_estimators(n_datasets: int) -> None:
    print(f"(4) estimators on data with a point mass at zero ({PLANTED_ZEROS:.0%} exact zeros in every planted "
          f"variable; ReLU zeros in the MLP's); {n_datasets} data sets of {N_SAMPLES} samples; bits")
    print("    bias: mean minus the population value; sd: over data sets; tie sd: mean value_sd (10 random")
    print("    tie orders); shuffled, sorted: mean |change| when the rows are shuffled / stored sorted by a")
    print("    source of the structure (the MLP's: by operand a, as the task stores its samples)")
    for kind, quantities in estimators_table(n_datasets).items():
        for quantity, references, results in quantities:
            population = next(v for k, v in references.items() if k.startswith("population"))
            print(f"\n{kind}, {quantity}: " + ", ".join(f"{k} {v:+.3f}" for k, v in references.items()))
            print(f"  {'estimator':30s} {'mean':>8s} {'bias':>8s} {'sd':>7s} {'tie sd':>7s} {'shuffled':>9s} {'sorted':>8s}")
            for name, r in results.items():
                tie_sd = "-" if np.isnan(r[:, 1]).all() else f"{np.nanmean(r[:, 1]):.4f}"
                print(f"  {name:30s} {r[:, 0].mean():+8.4f} {r[:, 0].mean() - population:+8.4f} "
                      f"{r[:, 0].std(ddof=1):7.4f} {tie_sd:>7s} {np.abs(r[:, 2]).mean():9.4f} "
                      f"{np.abs(r[:, 3]).mean():8.4f}")
    print(f"\n[{load()}]")


if __name__ == "__main__":
    main()
