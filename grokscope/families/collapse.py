"""The collapse family (neural collapse: RNC1, NC1-NC4) of one checkpoint's features."""

from __future__ import annotations

import torch

from grokscope.discovery import Series
from grokscope.errors import GrokscopeError
from grokscope.families.options import SPLIT_NAMES, SPLITS, MeasureOptions


def collapse_rows(features, labels: torch.Tensor, split: torch.Tensor, layers: list[str], output_weight,
                  penultimate: str, options: MeasureOptions) -> list[dict]:
    from grokscope.measures.collapse import collapse_measures

    rows = []
    for layer in layers:
        for code in SPLITS[options.split]:
            mask = split == code
            if not bool(mask.any()):
                continue
            weight = output_weight if layer == penultimate else None
            values = collapse_measures(features[layer][mask], labels[mask], weight)
            rows += [{"metric": k, "value": v, "split": SPLIT_NAMES[code], "layer": layer} for k, v in values.items()]
    return rows


def check_classes(series: Series, labels: torch.Tensor, split: torch.Tensor, options: MeasureOptions) -> None:
    """Neural collapse compares classes: a split with samples of one class only is the data's
    problem, said once for the series rather than as NaN at every checkpoint."""
    for code in SPLITS[options.split]:
        mask = split == code
        if bool(mask.any()):
            n_classes = int(torch.unique(labels[mask]).numel())
            if n_classes < 2:
                raise GrokscopeError(f"{series.root}: neural-collapse measures need at least two classes, found "
                                     f"{n_classes} in the {SPLIT_NAMES[code]} split")
