"""How many samples a forward pass may take: the memory budget (``--max-memory``), a model's
footprint per sample, measured on a small first batch, and the one line an allocation that still
fails becomes.

Commands hold the data set's inputs and the features they write (n x units per layer: the output),
never the model's activations of every sample at once: the model runs on batches whose
activations (every module's outputs, the logits, attention's T x T) fit the budget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from grokscope.errors import GrokscopeError

# The default budget: a quarter of the memory the machine has free, at most 512 MiB. Batches
# beyond a few hundred MiB of activations run no faster (the kernels are already large), and a
# command's peak stays near its inputs, weights and features plus this.
DEFAULT_SHARE = 0.25
DEFAULT_CAP = 512 * 2**20
# On the CPU a batch's activations past a few hundred MiB run slower, not faster: each large
# tensor is fresh memory the kernel faults in page by page. GPT-2 4 x 256, 64 tokens, bfloat16,
# one thread, per 2,000 sequences: 160 a batch 4.8-5.5 s, 80 (512 MiB) 4.2-4.3 s, 48 and 32
# 3.6-4.0 s. A GPU's batches keep the whole budget.
CPU_CAP = 256 * 2**20
# The outputs the hooks see are not all a forward pass holds (a matmul's workspace, the attention
# scores inside fused kernels): the footprint counts them twice.
HEADROOM = 2.0
# Samples the footprint is measured on (one batch of the real data).
PROBE_SAMPLES = 8
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes, or None where there is none (not Linux)."""
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    found = re.search(r"^MemAvailable:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else None


def memory_budget(max_memory: str | int | None = None) -> int:
    """Bytes of activations one batch may take: ``max_memory`` (bytes, or text such as ``512M``,
    ``2GiB``), by default a quarter of the available memory, at most 512 MiB."""
    if max_memory is None:
        free = available_memory()
        return DEFAULT_CAP if free is None else max(16 * 2**20, min(DEFAULT_CAP, int(free * DEFAULT_SHARE)))
    if isinstance(max_memory, int) and not isinstance(max_memory, bool):
        size = max_memory
    else:
        found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(max_memory))
        if not found or found.group(2).lower() not in _UNITS:
            raise GrokscopeError(f"--max-memory: expected a size such as 512M or 2G, got {max_memory!r}")
        size = int(float(found.group(1)) * _UNITS[found.group(2).lower()])
    if size < 1:
        raise GrokscopeError(f"--max-memory: must be positive, got {max_memory!r}")
    return size


def _tensor_bytes(value) -> int:
    """Bytes of the tensors in a module's output (a tensor, a tuple or list, a dict or HF output)."""
    if torch.is_tensor(value):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(v) for v in value if torch.is_tensor(v))
    return 0


@dataclass(frozen=True)
class Footprint:
    """What one sample costs a forward pass: ``bytes`` of activations (every module's outputs,
    counted :data:`HEADROOM` times) and ``macs``, the multiply-accumulates of its weight matrices
    (embeddings, which only look up, excluded)."""

    bytes: float
    macs: float
    device_type: str = "cpu"

    def batch_size(self, budget: int, limit: int | None = None) -> int:
        """The largest batch whose activations fit ``budget`` (at least 1; on the CPU at most
        :data:`CPU_CAP`), at most ``limit``."""
        if self.device_type == "cpu":
            budget = min(budget, CPU_CAP)
        size = max(1, int(budget // max(self.bytes, 1.0)))
        return size if limit is None else max(1, min(size, limit))


@torch.no_grad()
def measure_footprint(run, inputs: torch.Tensor) -> Footprint:
    """The :class:`Footprint` of ``run(batch)`` (a model's forward, or a capture that calls it)
    measured on the first :data:`PROBE_SAMPLES` rows of ``inputs``, through a forward hook on
    every module."""
    batch = inputs[:PROBE_SAMPLES]
    seen = {"bytes": 0, "macs": 0}

    def count(module, args, output):
        seen["bytes"] += _tensor_bytes(output)
        weight = getattr(module, "weight", None)
        if (torch.is_tensor(weight) and weight.ndim == 2 and torch.is_tensor(output)
                and not isinstance(module, torch.nn.Embedding) and output.ndim >= 1):
            seen["macs"] += weight.numel() * (output.numel() // max(output.shape[-1], 1))

    handle = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        output = run(batch)
    finally:
        handle.remove()
    seen["bytes"] += _tensor_bytes(output)
    n = max(len(batch), 1)
    return Footprint(HEADROOM * seen["bytes"] / n, seen["macs"] / n, inputs.device.type)


def is_allocation_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is memory that could not be had (host or device), not another error."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("not enough memory", "DefaultCPUAllocator", "out of memory", "Cannot allocate memory"))


def allocation_message(family: str, exc: BaseException, option: str) -> str:
    """One line for an allocation that failed: the family, the size asked for where the error
    names it, and the option that lowers it."""
    found = re.search(r"(\d+) bytes", str(exc)) or re.search(r"allocate ([0-9.]+ [KMGT]i?B)", str(exc))
    if found and found.group(1).isdigit():
        asked = f"{int(found.group(1)) / 2**30:.2f} GiB"
    else:
        asked = found.group(1) if found else "more memory than is free"
    return f"{family}: could not allocate {asked} ({type(exc).__name__}); lower it with {option}"
