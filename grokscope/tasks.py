"""Datasets for training and probing, generated or read from a file the user names.

Every task enumerates its samples in a fixed order (``index`` in features/samples.safetensors is
the position in that enumeration) and splits them with a seeded permutation, so the same
``run.json`` always gives the same train/test split. The split's SHA-256 is recorded in run.json
so a mismatch (say, a NumPy that permutes differently) is detected instead of silently probing
the wrong samples.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grokscope.config import MODULAR_OPS, TaskConfig
from grokscope.errors import GrokscopeError


@dataclass
class Dataset:
    x: np.ndarray  # (N, input_dim) float32
    y: np.ndarray  # (N,) int64
    split: np.ndarray  # (N,) uint8: 0 train, 1 test
    n_classes: int

    @property
    def input_dim(self) -> int:
        return self.x.shape[1]

    def split_digest(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.split).tobytes()).hexdigest()[:16]


def _modular_pairs(op: str, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    if op == "div":
        # a / b = a * b^(p-2) mod p (Fermat), defined only for b != 0 and prime p.
        keep = b != 0
        a, b = a[keep], b[keep]
        y = (a * np.array([pow(int(v), p - 2, p) for v in b])) % p
    elif op == "add":
        y = (a + b) % p
    elif op == "sub":
        y = (a - b) % p
    elif op == "mul":
        y = (a * b) % p
    elif op == "sq_sum":
        y = (a * a + b * b) % p
    elif op == "poly":
        y = (a * a + a * b + b * b) % p
    else:  # validated earlier; kept so a new op cannot fall through silently
        raise GrokscopeError(f"--task: unknown operation {op!r}")
    return a, b, y


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % k for k in range(2, int(p**0.5) + 1))


def _split(n: int, n_train: int, seed: int) -> np.ndarray:
    order = np.random.Generator(np.random.PCG64(seed)).permutation(n)
    split = np.ones(n, dtype=np.uint8)
    split[order[:n_train]] = 0
    return split


def _n_train(task: TaskConfig, n: int) -> int:
    n_train = task.train_size if task.train_size is not None else int(round(task.train_fraction * n))
    if not 1 <= n_train < n:
        raise GrokscopeError(
            f"--train-size/--train-fraction: gives {n_train} training samples out of {n}; "
            "need at least one for training and one for testing"
        )
    return n_train


def load_task(task: TaskConfig) -> Dataset:
    """Build the dataset of ``task`` with its train/test split (``task.split_seed`` must be resolved)."""
    task.validate()
    seed = task.split_seed if task.split_seed is not None else 0
    if task.name in MODULAR_OPS:
        if task.name == "div" and not _is_prime(task.p):
            raise GrokscopeError(f"--p: division mod p needs a prime p, got {task.p}")
        a, b, y = _modular_pairs(task.name, task.p)
        x = np.zeros((len(a), 2 * task.p), dtype=np.float32)  # (N, 2p) one-hot of a, then of b
        x[np.arange(len(a)), a] = 1.0
        x[np.arange(len(a)), task.p + b] = 1.0
        return Dataset(x, y.astype(np.int64), _split(len(y), _n_train(task, len(y)), seed), task.p)
    if task.name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        # Pixel values are 0..16; scale to [0, 1] so default learning rates behave.
        x = (digits.data / 16.0).astype(np.float32)
        y = digits.target.astype(np.int64)
        return Dataset(x, y, _split(len(y), _n_train(task, len(y)), seed), 10)
    return _load_npz(task, seed)


def _load_npz(task: TaskConfig, seed: int) -> Dataset:
    path = Path(task.path or "")
    if not path.is_file():
        raise GrokscopeError(f"--data: {path} is not a file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise GrokscopeError(f"--data: {path} is not a readable .npz file ({exc})") from None
    if "X" not in arrays or "y" not in arrays:
        raise GrokscopeError(f"--data: {path} must hold arrays 'X' and 'y', found {sorted(arrays)}")
    x = arrays["X"].reshape(len(arrays["X"]), -1).astype(np.float32)
    y = arrays["y"]
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise GrokscopeError(f"--data: {path}: 'y' must be 1-D integer labels, one per row of 'X'")
    if y.min() < 0:
        raise GrokscopeError(f"--data: {path}: labels in 'y' must be non-negative")
    if "split" in arrays:
        split = arrays["split"].astype(np.uint8)
        if split.shape != y.shape or not set(np.unique(split)) <= {0, 1}:
            raise GrokscopeError(f"--data: {path}: 'split' must be 0 (train) / 1 (test), one per row")
    else:
        split = _split(len(y), _n_train(task, len(y)), seed)
    return Dataset(x, y.astype(np.int64), split, int(y.max()) + 1)
