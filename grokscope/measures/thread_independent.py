r"""Results whose bits do not follow torch's thread count.

A measure table must be the same bytes with ``--threads 1`` and ``--threads 2``. MKL's strict
mode (:mod:`grokscope.reproducibility`) makes its matrix products so; two kinds of CPU
computation stay thread-dependent in their last bits (torch 2.13, float64, 1 against 2 and 4
threads; ``tests/test_thread_independent.py``):

- a reduction of a tensor to **one number** once it has 32,768 entries or more (torch's grain
  size): torch hands each thread a share and adds the threads' partial sums. A reduction *along
  a dimension* sums each output in one thread and is not affected;
- **LAPACK** factorisations past small sizes: Cholesky from about 250 x 250, its inverse
  (``cholesky_inverse``) from 64 x 64, the SVD of a 97 x 512 matrix, ``eigh``. The strict mode
  covers BLAS, not them. Triangular solves are BLAS and stay as they are.

:func:`fixed_order_sum` sums rows of :data:`ROW` entries (one output each), then those sums the
same way; :func:`on_one_thread` runs a factorisation on one thread. The cost is small: the
factorisations are of covariance and kernel matrices, not of the data. On a GPU the thread
count plays no part and both run as torch does.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch

# Far below torch's grain size (32,768): each row's sum is one output, made by one thread.
ROW = 1024

T = TypeVar("T")


def fixed_order_sum(values: torch.Tensor, keep: int = 0) -> torch.Tensor:
    """The sum of ``values`` over every dimension after the first ``keep``, in an order fixed by
    the shape alone: shape ``values.shape[:keep]``.

    Rows of :data:`ROW` consecutive entries are summed (the last one padded with zeros), then the
    row sums likewise until one row is left.
    """
    lead = values.shape[:keep]
    flat = values.reshape(*lead, -1)
    while flat.shape[-1] > ROW:
        n = flat.shape[-1]
        whole = n - n % ROW
        rows = [flat[..., :whole].reshape(*lead, -1, ROW).sum(dim=-1)]  # (*lead, whole / ROW)
        if whole < n:  # the last, short row padded to a whole one: the same sum as a padded copy
            tail = torch.nn.functional.pad(flat[..., whole:], (0, ROW - (n - whole)))
            rows.append(tail.sum(dim=-1, keepdim=True))  # (*lead, 1)
        flat = torch.cat(rows, dim=-1)
    return flat.sum(dim=-1)


def fixed_order_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of every entry, from :func:`fixed_order_sum`."""
    return fixed_order_sum(values) / values.numel()


def on_one_thread(function: Callable[..., T], *args, **kwargs) -> T:
    """``function(*args, **kwargs)`` (a LAPACK factorisation) with torch on one CPU thread for its
    duration; as it is when its first argument is on another device."""
    if args and torch.is_tensor(args[0]) and args[0].device.type != "cpu":
        return function(*args, **kwargs)
    threads = torch.get_num_threads()
    if threads == 1:
        return function(*args, **kwargs)
    torch.set_num_threads(1)
    try:
        return function(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)
