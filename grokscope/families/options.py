"""The options of every measure family, and the JSON of those that shape a family's values."""

from __future__ import annotations

import json
from dataclasses import dataclass

SPLITS = {"train": (0,), "test": (1,), "both": (0, 1)}
SPLIT_NAMES = {0: "train", 1: "test"}


@dataclass(frozen=True)
class MeasureOptions:
    # collapse: both splits, because the paper's argument is about held-out within-class variance
    # while the authors' code measures the training split only.
    split: str = "both"
    # None: the penultimate layer, the one every seed paper measures.
    layers: tuple[str, ...] | None = None
    # hsic: the authors estimate on the test split in minibatches of 100 of a shuffled loader,
    # three passes; shuffling (seeded by `seed`) makes the value independent of the stored order.
    hsic_split: str = "test"
    hsic_batch_size: int | None = 100
    hsic_passes: int = 3
    hsic_shuffle: bool = True
    hsic_sigma: float = 5.0
    hsic_bandwidth: str = "fixed"
    # nocco is the seed paper's normalised HSIC; hsic (biased, Gretton et al.) and cka are the
    # other estimators readers compare it with.
    hsic_estimator: str = "nocco"
    # oinfo: Clauw et al.'s 10 Ward bins of the training activations, neurons as variables.
    bins: int = 10
    variables: str = "neurons"
    min_size: int = 2
    max_size: int | None = None
    search: str = "auto"
    per_size: bool = False
    # ReLU features are ~40-50% tied zeros: the mean over 10 random orders of them, and their
    # spread (docs/oinfo.md has the comparison that chose it over "average" and "index").
    ties: str = "random"
    tie_draws: int = 10
    # seeds o-info's random tie orders and annealing, and hsic's batch shuffles.
    seed: int = 0
    units: str = "bits"
    bias_correction: bool = True
    # grokking: the accuracy that counts as "reached".
    threshold: float = 0.99
    # complexity: the loss increase the coarse-grained network may cost (nats of training loss;
    # DeMoss et al. log 2^-4 ... 4), one value per curve; bz2 is the authors' compressor.
    tolerance: tuple[float, ...] = (0.1,)
    compressor: str = "bz2"
    # complexity's loss: None evaluates it on the whole training set where one evaluation costs at
    # most 2^35 multiply-accumulates, else on a seeded subsample that does (families/complexity.py);
    # 0 always on every sample. At most 64 new loss evaluations per tolerance (0: no bound).
    complexity_samples: int | None = None
    complexity_evaluations: int = 64
    # Bytes (or "512M") of activations one forward pass may take; None: a share of the free memory.
    # It sizes batches only, so it is not among the options that shape values.
    max_memory: int | str | None = None
    # fourier: None reads the key frequencies off the run's last checkpoint, as Nanda et al. fix
    # them from the trained model; give them to pin them.
    key_frequencies: tuple[int, ...] | None = None
    # llc: the SGLD settings of grokscope.measures.llc.SGLDSettings (calibrated on the default
    # MLP, docs/llc.md); step size None is the model kind's default (families/llc.py), nbeta
    # None is n / log n. The chains are seeded by `seed`.
    llc_step_size: float | None = None
    llc_localization: float = 100.0
    llc_nbeta: float | None = None
    llc_chains: int = 4
    llc_draws: int = 500
    llc_burnin: int = 200
    llc_batch_size: int = 64

    def params(self, family: str) -> str:
        """The options that shape a family's values, as the JSON stored beside them."""
        fields = {
            "collapse": ("split", "layers"),
            "hsic": ("hsic_split", "hsic_batch_size", "hsic_sigma", "hsic_bandwidth", "hsic_estimator",
                     "hsic_passes", "hsic_shuffle", "seed", "layers"),
            "oinfo": ("bins", "variables", "min_size", "max_size", "search", "per_size", "ties", "tie_draws",
                      "seed", "units", "bias_correction", "layers"),
            "weights": (),
            "grokking": ("threshold",),
            "complexity": ("tolerance", "compressor", "complexity_samples", "complexity_evaluations"),
            "fourier": ("key_frequencies",),
            "llc": ("llc_step_size", "llc_localization", "llc_nbeta", "llc_chains", "llc_draws", "llc_burnin",
                    "llc_batch_size", "seed"),
            "spectra": (),
        }[family]
        return json.dumps({f: getattr(self, f) for f in fields}, sort_keys=True)
