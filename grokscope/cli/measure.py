"""Measure checkpoint series: neural collapse, nHSIC, O-information, weight and grokking measures."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from grokscope.cli.output import Output
from grokscope.cli.progress import waiting_for
from grokscope.errors import GrokscopeError

EPILOG = """\
Examples:

  grokscope measure runs/add-p97 --metric collapse,hsic     # measures/collapse.parquet, hsic.parquet

  grokscope measure runs/ --metric all --workers 2 -o all.parquet   # every run below runs/, one table

  grokscope measure runs/add-p97 --metric o-info --steps every:4 --per-size

  grokscope measure runs/add-p97 --metric o-info --ties index -o authors.parquet   # the authors' order-dependent ranks

  grokscope measure runs/add-p97 --metric rnc1 --format csv | head

  grokscope measure ckpts/ --metric weights        # another tool's series: weights need no probe

  grokscope probe ckpts/ --model net.py:build --data d.npz | grokscope measure - --metric all

  grokscope measure runs/ --metric complexity --workers 2        # DeMoss et al.'s complexity curve

  grokscope measure runs/ --metric o-info,collapse --scheduler tcp://head:8786   # on a Dask cluster (docs/scaling.md)

  grokscope measure runs/add-p97 --metric complexity --tolerance 0.01,0.03,0.1,0.3,1 --steps every:10

  grokscope measure runs/add-p97 --metric llc --workers 2     # local learning coefficient (docs/llc.md)

  grokscope measure runs/add-p113-transformer --metric fourier --key-frequencies 14,35,41,42,52

Families: collapse (within_var, between_var, nc1, rnc1, rnc1_sup, nc1_papyan, nc2_*, nc3, nc4),
hsic (nhsic_x, nhsic_y; hsic_* or cka_* with --hsic-estimator), o-info (synergy, redundancy), weights (weight_norm, param_norm,
balancedness, spectral_entropy, effective_rank, stable_rank), grokking (memorization_step,
generalization_step, grokking_gap), complexity (complexity in bits, complexity_tau,
complexity_bin_size, complexity_loss, complexity_bound, complexity_rank, ...), fourier
(modular arithmetic: fourier_norm, fourier_gini, key_frequency, restricted_loss, excluded_loss;
Nanda et al. 2023), spectra (alpha, alpha_weighted, alpha_xmin, alpha_ks_distance, lambda_max, ...
per weight matrix; WeightWatcher's fit), llc (llc, llc_sd, llc_chain per chain, llc_max_loss, ...;
the local learning coefficient by SGLD, --llc-*; not part of all: name it), or all. A metric name computes its family and reports that
metric. Runs that were never probed get their features computed in memory. Checkpoints already
measured with the same settings are skipped unless --force. Tables are saved as measuring goes
(every 30 s, GROKSCOPE_SAVE_EVERY; and on Ctrl-C): a rerun computes only the rest. -o and
--format write nothing into the runs. See docs/measure.md.
"""

PANELS = {
    "What to measure": ("metric", "steps", "layer", "force"),
    "Output": ("out_table", "fmt", "quiet"),
    "collapse": ("split",),
    "hsic": ("hsic_split", "hsic_batch_size", "hsic_sigma", "hsic_bandwidth", "hsic_estimator", "hsic_passes",
             "hsic_order"),
    "o-info": ("bins", "variables", "min_size", "max_size", "search", "per_size", "ties", "tie_draws", "seed", "units",
               "bias_correction"),
    "grokking, complexity, fourier": ("threshold", "tolerance", "compressor", "complexity_samples",
                                      "complexity_evaluations", "key_frequencies"),
    "llc": ("llc_step_size", "llc_localization", "llc_nbeta", "llc_chains", "llc_draws", "llc_burnin",
            "llc_batch_size"),
    "Execution": ("workers", "scheduler", "threads", "device", "max_memory", "allow_global"),
}


def measure(
    inputs: List[str] = typer.Argument(..., metavar="PATH...", help="Runs, checkpoint series (probed, for every family but weights), folders of them, files that probe printed, or - to read paths from stdin."),
    metric: List[str] = typer.Option(["collapse"], "--metric", "-m", metavar="NAMES", help="Families or metric names, comma-separated or repeated."),
    out_table: Optional[Path] = typer.Option(None, "--output", "-o", help="Write one combined Parquet table here (and print only its path)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="csv or json: write the rows to stdout instead of paths."),
    steps: Optional[str] = typer.Option(None, "--steps", help="Checkpoints to measure: '1200', '0-1000', '2000-', 'every:5' (default all)."),
    split: str = typer.Option("both", "--split", help="collapse: train, test or both."),
    layer: Optional[List[str]] = typer.Option(None, "--layer", help="Feature keys to measure (default: the penultimate layer)."),
    hsic_split: str = typer.Option("test", "--hsic-split", help="hsic: the split to estimate on (the authors use test)."),
    hsic_batch_size: int = typer.Option(100, "--hsic-batch-size", help="hsic: minibatch size; 0 for the full sample."),
    hsic_sigma: float = typer.Option(5.0, "--hsic-sigma", help="hsic: Gaussian kernel width (scaled by the feature dimension)."),
    hsic_bandwidth: str = typer.Option("fixed", "--hsic-bandwidth", help="hsic: fixed (sigma) or median heuristic."),
    hsic_estimator: str = typer.Option("nocco", "--hsic-estimator", help="hsic: nocco (normalised HSIC, nhsic_*), hsic (biased HSIC, hsic_*) or cka (cka_*)."),
    hsic_passes: int = typer.Option(3, "--hsic-passes", help="hsic: passes over the samples, each in a new random order; value = their mean, value_sd = their spread (the authors make 3)."),
    hsic_order: str = typer.Option("shuffled", "--hsic-order", help="hsic: shuffled (seeded by --seed, as the authors' loader) or stored (batches follow the stored sample order)."),
    bins: int = typer.Option(10, "--bins", help="o-info: Ward clusters of neurons."),
    variables: str = typer.Option("neurons", "--variables", help="o-info: neurons (authors' code) or bins (paper's text)."),
    min_size: int = typer.Option(2, "--min-size", help="o-info: smallest multiplet, in bins."),
    max_size: Optional[int] = typer.Option(None, "--max-size", help="o-info: largest multiplet, in bins (default all)."),
    search: str = typer.Option("auto", "--search", help="o-info: auto, exhaustive, greedy or annealing."),
    per_size: bool = typer.Option(False, "--per-size", help="o-info: also the extremes of every multiplet size."),
    ties: str = typer.Option("random", "--ties", help="o-info: order of tied activations (ReLU zeros): random (mean over --tie-draws orders), average (exact mean covariance) or index (row order, the authors'; order-dependent)."),
    tie_draws: int = typer.Option(10, "--tie-draws", help="o-info: random tie orders each reported multiplet is evaluated on; value = their mean (random ties), value_sd = their spread."),
    seed: int = typer.Option(0, "--seed", help="o-info: seed of the random tie orders and annealing; hsic: of the batch shuffles."),
    units: str = typer.Option("bits", "--units", help="o-info: bits or nats."),
    bias_correction: bool = typer.Option(True, "--bias-correction/--no-bias-correction", help="o-info: Ince et al.'s entropy bias correction."),
    threshold: float = typer.Option(0.99, "--threshold", help="grokking: the accuracy that counts as reached."),
    tolerance: str = typer.Option("0.1", "--tolerance", help="complexity: loss increase allowed to the coarse-grained network; a list ('0.01,0.1,1') gives a rate-distortion curve."),
    compressor: str = typer.Option("bz2", "--compressor", help="complexity: bz2 (the authors') or lzma."),
    complexity_samples: Optional[int] = typer.Option(None, "--complexity-samples", help="complexity: training samples the loss is evaluated on, seeded by --seed; 0 all (default: all where one evaluation costs <= 2^35 multiply-adds, else a subsample that does)."),
    complexity_evaluations: int = typer.Option(64, "--complexity-evaluations", help="complexity: most new loss evaluations per tolerance (0: no bound); where they run out the size is the best point evaluated."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Memory a forward pass's activations may take, e.g. 512M (default: a quarter of the available memory, at most 512M; on the CPU at most 256M, which runs faster)."),
    key_frequencies: Optional[str] = typer.Option(None, "--key-frequencies", help="fourier: the key frequencies, e.g. 14,35,41 (default: read off each run's last checkpoint)."),
    llc_step_size: Optional[float] = typer.Option(None, "--llc-step-size", help="llc: SGLD step size epsilon (default by model: mlp 1e-3, transformer 1e-5)."),
    llc_localization: float = typer.Option(100.0, "--llc-localization", help="llc: localisation strength gamma."),
    llc_nbeta: Optional[float] = typer.Option(None, "--llc-nbeta", help="llc: inverse temperature n*beta (default n / log n, n the training samples)."),
    llc_chains: int = typer.Option(4, "--llc-chains", help="llc: SGLD chains, run together; their spread is llc_sd."),
    llc_draws: int = typer.Option(500, "--llc-draws", help="llc: draws per chain averaged after the burn-in."),
    llc_burnin: int = typer.Option(200, "--llc-burnin", help="llc: steps per chain left out of the mean."),
    llc_batch_size: int = typer.Option(64, "--llc-batch-size", help="llc: minibatch size of each SGLD step."),
    workers: int = typer.Option(1, "--workers", "-j", help="Measure checkpoints in N local worker processes (a local Dask cluster when Dask is installed)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Measure on an existing Dask scheduler, e.g. tcp://head:8786 (or set GROKSCOPE_SCHEDULER); see docs/scaling.md."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads per task (default: the cores shared among the workers, fewer on a busy machine)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    allow_global: Optional[List[str]] = typer.Option(None, "--allow-global", help="Let pickled checkpoints hold this class (module.Name, repeatable); only for files you trust."),
    force: bool = typer.Option(False, "--force", help="Recompute checkpoints already measured."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr; only paths on stdout."),
) -> None:
    """Compute measures over checkpoint series into tidy Parquet tables (measures/<family>.parquet)."""
    from grokscope.cli import checks

    checks.before_measure(inputs, metric, steps=steps, device=device, choices={
        "--split": split, "--hsic-split": hsic_split, "--hsic-estimator": hsic_estimator,
        "--hsic-bandwidth": hsic_bandwidth, "--hsic-order": hsic_order, "--variables": variables,
        "--search": search, "--ties": ties, "--units": units, "--compressor": compressor})
    import grokscope

    output = Output(quiet=quiet, waiting=waiting_for(inputs))
    if fmt is not None and fmt not in ("csv", "json"):
        raise GrokscopeError(f"--format: unknown format {fmt!r}; known: csv, json")
    written = grokscope.measure(
        inputs, metrics=metric, output=out_table, table=fmt is not None, steps=steps, split=split, layers=layer,
        hsic_split=hsic_split, hsic_batch_size=hsic_batch_size, hsic_sigma=hsic_sigma, hsic_bandwidth=hsic_bandwidth,
        hsic_estimator=hsic_estimator, hsic_passes=hsic_passes, hsic_order=hsic_order, bins=bins, variables=variables,
        min_size=min_size, max_size=max_size, search=search, per_size=per_size, ties=ties, tie_draws=tie_draws,
        seed=seed, units=units, bias_correction=bias_correction, threshold=threshold, tolerance=tolerance,
        compressor=compressor, key_frequencies=key_frequencies, llc_step_size=llc_step_size,
        llc_localization=llc_localization, llc_nbeta=llc_nbeta, llc_chains=llc_chains, llc_draws=llc_draws,
        llc_burnin=llc_burnin, llc_batch_size=llc_batch_size, complexity_samples=complexity_samples,
        complexity_evaluations=complexity_evaluations, max_memory=max_memory, workers=workers, scheduler=scheduler,
        threads=threads, device=device, allow_global=allow_global or [], force=force, reporter=output)
    if fmt is not None:
        output.rows(written.table, fmt)
    if written.exit_code:
        raise typer.Exit(written.exit_code)
