"""The hsic family (nHSIC information plane, plain HSIC, CKA) of one checkpoint's features."""

from __future__ import annotations

import math

import numpy as np
import torch

from grokscope.families.options import SPLIT_NAMES, SPLITS, MeasureOptions


def _hsic_batching(options: MeasureOptions) -> dict:
    return dict(sigma=options.hsic_sigma, batch_size=options.hsic_batch_size, bandwidth=options.hsic_bandwidth,
                passes=options.hsic_passes, seed=options.seed if options.hsic_shuffle else None)


def hsic_references(inputs: torch.Tensor, labels: torch.Tensor, split: torch.Tensor,
                    options: MeasureOptions) -> dict[int, object]:
    """Split code -> the nHSIC reference of its samples (inputs and labels), built once per run:
    they do not change between checkpoints, so each checkpoint computes only its own kernel."""
    from grokscope.measures.hsic import hsic_reference

    references = {}
    for code in SPLITS[options.hsic_split]:
        mask = split == code
        if options.hsic_estimator != "nocco":
            references[code] = None  # the plain estimators have no reusable operators
            continue
        references[code] = hsic_reference(inputs[mask], labels[mask], **_hsic_batching(options))
    return references


def _spread(per_pass) -> tuple[float, float]:
    """Mean and standard deviation (n - 1 denominator; NaN for one draw) of per-draw values."""
    values = np.asarray(per_pass, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan


def hsic_rows(features, references: dict[int, object], split: torch.Tensor, layers: list[str],
              options: MeasureOptions, inputs: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    """One row per measure; ``value`` is the mean over the passes, ``value_sd`` their standard
    deviation, ``draws`` the number of passes."""
    from grokscope.measures.hsic import cka, hsic, hsic_measures

    plain = {"hsic": hsic, "cka": cka}
    rows = []
    for code, reference in references.items():
        mask = split == code
        for layer in layers:
            t = features[layer][mask]
            if options.hsic_estimator == "nocco":
                per_pass = hsic_measures(t, reference, per_pass=True)
            else:
                estimate = plain[options.hsic_estimator]
                kwargs = dict(_hsic_batching(options), per_pass=True)
                per_pass = {f"{options.hsic_estimator}_x": estimate(t, inputs[mask], **kwargs),
                            f"{options.hsic_estimator}_y": estimate(t, labels[mask], **kwargs)}
            for metric, values in per_pass.items():
                value, sd = _spread(values)
                rows.append({"metric": metric, "value": value, "split": SPLIT_NAMES[code], "layer": layer,
                             "value_sd": sd, "draws": len(values)})
    return rows
