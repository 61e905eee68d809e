"""Array conversion and argument checks shared by the O-information modules.

Every public O-information function takes NumPy arrays or torch tensors; these turn them into
float64 tensors and reject bad shapes, values and options with a one-line
:class:`~grokscope.errors.GrokscopeError` naming the argument.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from grokscope.errors import GrokscopeError

_UNITS = ("bits", "nats")


def _as_tensor(x, device=None, name: str = "x") -> torch.Tensor:
    """A float64 tensor on ``device`` (default: where ``x`` already is, else the CPU)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as exc:
            raise GrokscopeError(f"{name}: not a numeric array ({exc})") from None
    if not (t.dtype.is_floating_point or t.dtype in (torch.int8, torch.int16, torch.int32,
                                                      torch.int64, torch.uint8, torch.bool)):
        raise GrokscopeError(f"{name}: expected a real-valued array, got dtype {t.dtype}")
    return t.to(device=device if device is not None else t.device, dtype=torch.float64)


def _check_units(units: str) -> None:
    if units not in _UNITS:
        raise GrokscopeError(f"units: expected one of {', '.join(_UNITS)}, got {units!r}")


def _check_samples_matrix(x: torch.Tensor, name: str = "x") -> None:
    if x.ndim != 2:
        raise GrokscopeError(f"{name}: expected a 2-D array (samples, variables), got shape "
                             f"{tuple(x.shape)}")
    if x.shape[0] < 3:
        raise GrokscopeError(f"{name}: need at least 3 samples, got {x.shape[0]}")
    if not torch.isfinite(x).all():
        raise GrokscopeError(f"{name}: contains NaN or infinite values")


def _check_sizes(n_variables: int, min_size: int, max_size: int | None) -> int:
    max_size = n_variables if max_size is None else int(max_size)
    if min_size < 2:
        raise GrokscopeError(f"min_size: must be at least 2, got {min_size}")
    if max_size > n_variables:
        raise GrokscopeError(f"max_size: {max_size} exceeds the number of variables "
                             f"({n_variables})")
    if max_size < min_size:
        raise GrokscopeError(f"max_size: {max_size} is smaller than min_size ({min_size})")
    return max_size




def _unit_scale(units: str) -> float:
    return 1.0 / math.log(2.0) if units == "bits" else 1.0
