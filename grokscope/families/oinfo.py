"""The oinfo family (O-information: the most synergistic and redundant multiplets) of one
checkpoint's features."""

from __future__ import annotations

import re

import torch

from grokscope.errors import GrokscopeError
from grokscope.families.options import MeasureOptions


def oinfo_rows(features, split: torch.Tensor, layers: list[str], options: MeasureOptions) -> list[dict]:
    from grokscope.measures.multiplets import oinfo_search

    rows = []
    train = split == 0
    for layer in layers:
        try:
            found = oinfo_search(
                features[layer][train], n_bins=options.bins, variables=options.variables, min_size=options.min_size,
                max_size=options.max_size, search=options.search, per_size=options.per_size, ties=options.ties,
                tie_draws=options.tie_draws, seed=options.seed, units=options.units, bias_correction=options.bias_correction,
            )
        except GrokscopeError as exc:
            raise GrokscopeError(oinfo_option_names(str(exc))) from None
        rows += [{**row, "split": "train", "layer": layer} for row in found]
    return rows


# oinfo_search's parameters and the measure options that set them, so its messages name options.
_OINFO_OPTIONS = {"n_bins": "--bins", "min_size": "--min-size", "max_size": "--max-size",
                  "tie_draws": "--tie-draws", "variables": "--variables", "search": "--search", "ties": "--ties",
                  "units": "--units", "features": "o-info"}


def oinfo_option_names(message: str) -> str:
    """An o-info message with its parameter names replaced by the options that set them
    (``min_size`` -> ``--min-size``); a plain word (``search``) only where it leads the message."""
    message = re.sub(r"\b(n_bins|min_size|max_size|tie_draws)\b", lambda m: _OINFO_OPTIONS[m.group(1)], message)
    head, colon, rest = message.partition(": ")
    return f"{_OINFO_OPTIONS[head]}{colon}{rest}" if colon and head in _OINFO_OPTIONS else message
