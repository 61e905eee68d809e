"""What the layout tests share: the command line, the whole pipeline on one series, tiny data and
the factories of the models the loops train (written to a file, as a user's training code is)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from typer.testing import CliRunner

from grokscope.cli import app

P = 7  # (a + b) mod P: P * P = 49 samples
FAMILIES = {"collapse", "hsic", "weights", "grokking", "oinfo", "complexity"}
PLOTS = ("curves", "collapse", "info-plane", "phases")

NETS = '''
import torch
from torch import nn

P = 7


def mlp():
    return nn.Sequential(nn.Linear(2 * P, 24), nn.ReLU(), nn.Linear(24, P))


class BasicBlock(nn.Module):
    """torchvision's ResNet block, by hand (torchvision does not match the local torch)."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = BasicBlock(8, 8, 1)
        self.layer2 = BasicBlock(8, 16, 2)  # (B, 16, 4, 4) on 8 x 8 images
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.layer2(self.layer1(torch.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet():
    return ResNet()
'''


def invoke(*args, input: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def nets(folder: Path) -> dict:
    """The factories file in ``folder`` (``nets.py``) and its namespace."""
    path = Path(folder) / "nets.py"
    path.write_text(NETS)
    namespace: dict = {"__name__": "nets"}
    exec(compile(NETS, str(path), "exec"), namespace)
    return namespace


def pairs(folder: Path) -> dict[str, np.ndarray]:
    """(a + b) mod P as tokens [a, b, =] and as concatenated one-hots, a seeded 60/40 split;
    saved as ``tokens.npz`` and ``onehot.npz``."""
    a, b = (g.ravel() for g in np.meshgrid(np.arange(P), np.arange(P), indexing="ij"))
    tokens = np.stack([a, b, np.full_like(a, P)], axis=1).astype(np.int64)  # (P^2, 3)
    onehot = np.zeros((len(a), 2 * P), dtype=np.float32)
    onehot[np.arange(len(a)), a] = 1.0
    onehot[np.arange(len(a)), P + b] = 1.0
    y = ((a + b) % P).astype(np.int64)
    split = np.ones(len(y), dtype=np.uint8)
    split[np.random.default_rng(0).permutation(len(y))[: round(0.6 * len(y))]] = 0
    np.savez(folder / "tokens.npz", X=tokens, y=y, split=split)
    np.savez(folder / "onehot.npz", X=onehot, y=y, split=split)
    return {"tokens": tokens, "onehot": onehot, "y": y, "split": split}


def images(folder: Path, n: int = 60) -> dict[str, np.ndarray]:
    """8 x 8 one-channel images of 3 classes (a bright quadrant per class, plus noise); ``images.npz``."""
    rng = np.random.default_rng(1)
    y = np.arange(n) % 3
    x = rng.normal(0.0, 0.3, size=(n, 1, 8, 8)).astype(np.float32)
    for i, label in enumerate(y):
        row, column = divmod(int(label), 2)
        x[i, 0, 4 * row: 4 * row + 4, 4 * column: 4 * column + 4] += 1.0
    split = (np.arange(n) % 3 == np.arange(n) // 3 % 3).astype(np.uint8)  # a third held out
    np.savez(folder / "images.npz", X=x, y=y.astype(np.int64), split=split)
    return {"X": x, "y": y.astype(np.int64), "split": split}


@torch.no_grad()
def accuracy(model: nn.Module, x, y, rows) -> float:
    """The loop's own logged accuracy: argmax of the logits (the last token's, for sequences)."""
    was_training = model.training
    model.eval()
    output = model(torch.as_tensor(x[rows]))
    logits = getattr(output, "logits", output)
    logits = logits[:, -1] if logits.ndim == 3 else logits
    model.train(was_training)
    return float((logits.argmax(-1).numpy() == y[rows]).mean())


def pipeline(series: Path, home: Path, figures: Path, *probe_options) -> dict[str, pd.DataFrame]:
    """probe | measure - --metric all, every plot kind and report, each exit 0; the tables."""
    probed = invoke("probe", series, *probe_options, "-q")
    assert probed.exit_code == 0, probed.output
    assert probed.stdout.split() and all(Path(p).is_file() for p in probed.stdout.split())
    measured = invoke("measure", "-", "--metric", "all", "-q", input=probed.stdout)
    assert measured.exit_code == 0, measured.output
    tables = {Path(p).stem: pd.read_parquet(p) for p in measured.stdout.split()}
    assert set(tables) == FAMILIES
    figures.mkdir(exist_ok=True)
    for kind in PLOTS:
        drawn = invoke("plot", kind, home, "-o", figures / f"{kind}.png")
        assert drawn.exit_code == 0, (kind, drawn.output)
        assert (figures / f"{kind}.png").stat().st_size > 1000
    reported = invoke("report", home, "--format", "json")
    assert reported.exit_code == 0, reported.output
    rows = [json.loads(line) for line in reported.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["rnc1_test"] is not None
    return tables


def warnings_in(result) -> list[str]:
    """The ``warning:`` lines a command printed, each joined into one line."""
    text = " ".join(result.stderr.split())
    return ["warning:" + part for part in text.split("warning:")[1:]]
