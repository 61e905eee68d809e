"""The Gaussian noise of SGLD, one (chains, d) draw per step, drawn ahead on a second CPU thread.

Drawing the noise is a third of a chain step on a small model: torch's CPU normal sampler runs on
one thread whatever the thread count (~3 ns a value: 0.8 ms for the 4 × 73,000 values of a step on
the default run), as long as the forward and backward pass of the four chains together. Nothing
in it depends on the chains' state, so with two threads or more the next step's draw is made on
one thread while the current step computes on the others. The draws are the same either way:
one ``randn`` per step from one generator, in step order.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch


class NoiseStream:
    """Standard normal tensors of ``shape``, one per :meth:`next` call, from ``generator``.

    With ``ahead`` the draw for the next call runs on a thread of its own while the caller works
    (torch releases the GIL inside ``randn``); the tensor :meth:`next` returns is overwritten by
    the call after it. Use as a context manager, which joins that thread.
    """

    def __init__(self, shape: tuple[int, ...], generator: torch.Generator, *, dtype: torch.dtype,
                 device: torch.device, ahead: bool):
        self.shape, self.generator = shape, generator
        self.buffers = [torch.empty(shape, dtype=dtype, device=device) for _ in range(2 if ahead else 1)]
        self.turn = 0
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="sgld-noise") if ahead else None
        self.pending = self.pool.submit(self._draw, 0) if self.pool else None

    def _draw(self, turn: int) -> torch.Tensor:
        return torch.randn(self.shape, generator=self.generator, out=self.buffers[turn])

    def next(self) -> torch.Tensor:
        if self.pool is None:
            return self._draw(0)
        noise = self.pending.result()
        self.turn ^= 1
        self.pending = self.pool.submit(self._draw, self.turn)
        return noise

    def __enter__(self) -> "NoiseStream":
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def draws_ahead(device: torch.device) -> bool:
    """Whether a CPU thread can be spared for the noise: on the CPU with two threads or more (the
    compute then keeps one thread fewer, see :func:`compute_threads`); never on an accelerator,
    whose kernels already run while Python goes on."""
    return device.type == "cpu" and torch.get_num_threads() >= 2


def compute_threads() -> int:
    """torch's threads for the chains' passes while the noise takes one: the total stays the
    thread count that was chosen."""
    return max(1, torch.get_num_threads() - 1)
