"""Cost per checkpoint of the features fingerprints (grokscope.fingerprints).

Three checkpoint sizes, written here as grokscope writes checkpoints: the default run's MLP
(2p -> 250 -> p, p = 97: 0.3 MB), a 4096-wide MLP (about 32 MB) and a 128 MB state. Per size,
in this process and alternating, the median over --repeats of:

- ``load_state``: reading the weights as before the fingerprints (safetensors memory-mapped),
  every tensor touched once (a sum), as the forward pass that follows does;
- ``load_state_and_digest``: what probe and measure now do where they compute features (one read,
  hashed, then parsed from memory); the ratio to ``load_state`` is the price of the fingerprint;
- ``check``: what probe pays per stored, unchanged features file (``fingerprints.mismatch``:
  a features header read and one read and hash of the checkpoint), against ``load_state`` plus
  the forward pass it saves being the alternative (re-probing).

    .venv/bin/python benchmarks/fingerprints.py
    .venv/bin/python benchmarks/fingerprints.py --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from grokscope import fingerprints, formats
from grokscope.loading import Checkpoint, load_state, load_state_and_digest


def timed(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def touch(state: dict) -> None:
    for tensor in state.values():
        tensor.sum()


def states() -> dict[str, dict]:
    generator = torch.Generator().manual_seed(0)
    p = 97
    return {
        "default MLP (p 97, width 250)": {"layers.0.weight": torch.randn(250, 2 * p, generator=generator),
                                          "layers.0.bias": torch.randn(250, generator=generator),
                                          "layers.1.weight": torch.randn(p, 250, generator=generator)},
        "MLP width 4096": {"layers.0.weight": torch.randn(4096, 2 * p, generator=generator),
                           "layers.1.weight": torch.randn(4096, 4096, generator=generator),
                           "layers.2.weight": torch.randn(p, 4096, generator=generator)},
        "128 MB state": {f"block.{i}.weight": torch.randn(2048, 2048, generator=generator) for i in range(8)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'checkpoint':32} {'MB':>7} {'load_state':>11} {'+digest':>10} {'ratio':>6} {'check':>10} {'check/load':>10}")
    with tempfile.TemporaryDirectory() as folder:
        for index, (name, state) in enumerate(states().items()):
            home = Path(folder) / str(index)
            (home / "checkpoints").mkdir(parents=True)
            path = formats.run.save_checkpoint(home, 100, state)
            checkpoint = Checkpoint(100, path)
            _, digest = load_state_and_digest(checkpoint)
            features = formats.features.features_path(home, 100)
            features.parent.mkdir(exist_ok=True)
            formats.features.save_features(features, 100, {"h": torch.zeros(4, 2)}, "h",
                                           fingerprints.fingerprint_metadata(digest, None))
            assert fingerprints.mismatch(features, 100, checkpoint, None) is None
            base = timed(lambda: touch(load_state(checkpoint)), args.repeats)
            hashed = timed(lambda: touch(load_state_and_digest(checkpoint)[0]), args.repeats)
            check = timed(lambda: fingerprints.mismatch(features, 100, checkpoint, None), args.repeats)
            size = path.stat().st_size / 1e6
            print(f"{name:32} {size:7.1f} {base * 1e3:9.2f}ms {hashed * 1e3:8.2f}ms {hashed / base:6.2f} "
                  f"{check * 1e3:8.2f}ms {check / base:10.2f}")


if __name__ == "__main__":
    main()
