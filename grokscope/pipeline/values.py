"""Option values as the command line writes them or as Python holds them."""

from __future__ import annotations

from typing import Callable

from grokscope.sweep import parse_values


def listed(option: str, value, kind: Callable) -> list:
    """The values of a list option: text as the command line takes it ("0.1,2", integers also
    "0-4"), one value, or a sequence of values; checked as the command line checks them."""
    if isinstance(value, str):
        return parse_values(option, value, kind)
    values = list(value) if isinstance(value, (list, tuple, set, frozenset, range)) else [value]
    return parse_values(option, ",".join(str(v) for v in values), kind)
