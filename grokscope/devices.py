"""The ``--device`` option: auto, cpu or cuda (cuda:N) as a torch.device."""

from __future__ import annotations

import torch

from grokscope.errors import GrokscopeError


def resolve_device(device) -> torch.device:
    """``device`` as a torch.device: "auto" (CUDA where there is one, else the CPU), "cpu",
    "cuda" or "cuda:N"; a torch.device is taken as it is."""
    if isinstance(device, torch.device):
        return device
    device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise GrokscopeError("--device: cuda requested but no CUDA device is available")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise GrokscopeError(f"--device: unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)
