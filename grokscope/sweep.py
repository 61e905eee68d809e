"""Sweep grammar: every hyperparameter option takes a list, and train runs the full grid.

``--weight-decay 0.1,2,10`` is three values; ``--seed 0-4`` is the integers 0..4 inclusive; the
grid is their Cartesian product, in the order the options are declared.
"""

from __future__ import annotations

import itertools
import re
from typing import Callable

from grokscope.errors import GrokscopeError

_INT_RANGE = re.compile(r"^(\d+)-(\d+)$")

# Short names for run directories: add-p97-wd0.1-seed3 rather than a 100-character path.
SHORT_NAMES = {
    "weight_decay": "wd", "train_fraction": "frac", "train_size": "n", "split_seed": "split",
    "learning_rate": "lr", "batch_size": "bs", "spectral_entropy": "se", "weight_noise": "noise",
    "n_heads": "heads", "d_model": "d", "d_mlp": "mlp",
    # add-p97-mlp, add-p97-transformer: the value says it all.
    "model": "",
}


def parse_values(option: str, text: str, kind: Callable) -> list:
    """Parse ``"0.1,2"`` / ``"0-4"`` into a list of ``kind`` values, naming ``option`` on error."""
    values: list = []
    for token in (t.strip() for t in str(text).split(",")):
        if not token:
            raise GrokscopeError(f"{option}: empty value in {text!r}")
        match = _INT_RANGE.match(token)
        if match and kind is int:
            lo, hi = int(match.group(1)), int(match.group(2))
            if hi < lo:
                raise GrokscopeError(f"{option}: range {token!r} runs backwards")
            values.extend(range(lo, hi + 1))
            continue
        try:
            values.append(kind(token))
        except ValueError:
            name = {int: "an integer", float: "a number"}.get(kind, "a valid value")
            raise GrokscopeError(f"{option}: {token!r} is not {name}") from None
    if len(set(values)) != len(values):
        raise GrokscopeError(f"{option}: repeated value in {text!r}")
    return values


def expand_grid(axes: dict[str, list]) -> list[dict]:
    """Every combination of the axes' values, first axis slowest."""
    names = list(axes)
    return [dict(zip(names, combo)) for combo in itertools.product(*(axes[n] for n in names))]


def format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def run_names(base: str, grid: list[dict]) -> list[str]:
    """One name per grid point: the base plus the values of the axes that vary."""
    varying = [k for k in grid[0] if len({format_value(point[k]) for point in grid}) > 1]
    return [
        "-".join([base] + [f"{SHORT_NAMES.get(k, k)}{format_value(point[k])}" for k in varying])
        for point in grid
    ]
