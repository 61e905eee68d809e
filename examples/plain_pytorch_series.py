"""A plain PyTorch training loop that saves a checkpoint series, then ``grokscope probe`` on it.

Nothing here knows about grokscope: the loop writes ``checkpoint-<step>/model.safetensors``
folders the way many training scripts (and the Hugging Face Trainer) do, plus the data as an
.npz. grokscope then needs only the model's factory and the data:

    python examples/plain_pytorch_series.py /tmp/series
    grokscope probe /tmp/series --model examples/plain_pytorch_series.py:build_model \\
        --data /tmp/series/data.npz

which writes /tmp/series/features/step-00000000.safetensors ... holding, per sample, the input
of the last nn.Linear (key ``4:input``, the penultimate layer), and samples.safetensors. Run
this file to do both steps.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

N_CLASSES, N_FEATURES, PER_CLASS = 5, 20, 120
STEPS, SAVE_EVERY = 300, 50


def build_model() -> nn.Module:
    """The factory grokscope calls (``--model file.py:build_model``): the untrained architecture."""
    return nn.Sequential(
        nn.Linear(N_FEATURES, 64), nn.ReLU(),
        nn.Linear(64, 32), nn.ReLU(),
        nn.Linear(32, N_CLASSES),
    )


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian clusters, one per class; half of each class for training (split 0), half for test."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(N_CLASSES, N_FEATURES))
    y = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    x = (centres[y] + rng.normal(size=(len(y), N_FEATURES))).astype(np.float32)
    split = np.tile(np.r_[np.zeros(PER_CLASS // 2), np.ones(PER_CLASS - PER_CLASS // 2)], N_CLASSES)
    return x, y, split.astype(np.uint8)


def train(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    x, y, split = make_data()
    np.savez(out / "data.npz", X=x, y=y, split=split)
    torch.manual_seed(0)
    model = build_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x_train = torch.from_numpy(x[split == 0])
    y_train = torch.from_numpy(y[split == 0])
    for step in range(STEPS + 1):
        if step % SAVE_EVERY == 0:
            folder = out / f"checkpoint-{step}"
            folder.mkdir(exist_ok=True)
            save_file(model.state_dict(), str(folder / "model.safetensors"))
        if step == STEPS:
            break
        loss = nn.functional.cross_entropy(model(x_train), y_train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "series")
    train(out)
    command = [sys.executable, "-m", "grokscope", "probe", str(out),
               "--model", f"{Path(__file__)}:build_model", "--data", str(out / "data.npz")]
    print("$ grokscope probe", *command[4:], file=sys.stderr)
    subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
