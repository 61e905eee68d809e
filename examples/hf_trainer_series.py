"""A Hugging Face Trainer run that leaves checkpoint-N/ folders, then grokscope on it.

The run trains a one-layer GPT-2 classifier on (a + b) mod p from the tokens [a, b, =] with the
``transformers`` Trainer, exactly as a user would: ``checkpoint-N/`` folders (``config.json``,
``model.safetensors``, ``trainer_state.json``, optimizer files) every SAVE_EVERY steps, and an
evaluation on the held-out pairs at every save (``eval_accuracy`` in the log). The data goes
to ``data.npz`` (X: the tokens, y: the answers, split: 0 train / 1 test), the one file grokscope
needs beside the checkpoints: the model is rebuilt from ``config.json``.

    pip install 'grokscope[hf]' accelerate     # the Trainer needs accelerate
    python examples/hf_trainer_series.py /tmp/hf-run
    grokscope probe /tmp/hf-run --data /tmp/hf-run/data.npz | grokscope measure - --metric all
    grokscope plot curves /tmp/hf-run -o curves.png
    grokscope report /tmp/hf-run

Run this file to train, then probe, measure and report.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

P, TRAIN_FRACTION = 23, 0.6
STEPS, SAVE_EVERY = 300, 50


def make_data(p: int = P, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (a, b) as tokens [a, b, =] (``=`` is token p), the answer (a + b) mod p, and a
    seeded split (0 train, 1 test)."""
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    x = np.stack([a, b, np.full_like(a, p)], axis=1).astype(np.int64)  # (p^2, 3)
    y = ((a + b) % p).astype(np.int64)
    split = np.ones(len(y), dtype=np.uint8)
    split[np.random.default_rng(seed).permutation(len(y))[: round(TRAIN_FRACTION * len(y))]] = 0
    return x, y, split


def train(out: Path, p: int = P, steps: int = STEPS, save_every: int = SAVE_EVERY) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import GPT2Config, GPT2ForSequenceClassification, Trainer, TrainingArguments

    out.mkdir(parents=True, exist_ok=True)
    x, y, split = make_data(p)
    np.savez(out / "data.npz", X=x, y=y, split=split)

    class Pairs(torch.utils.data.Dataset):
        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            row = self.rows[i]
            return {"input_ids": torch.from_numpy(x[row]), "labels": torch.tensor(y[row])}

    # Vocabulary: the p residues, "=" (token p) and a padding token (p + 1) that never occurs, so
    # the classifier reads its logits at the last token, "=". No dropout: evaluation is exact.
    config = GPT2Config(vocab_size=p + 2, n_positions=3, n_embd=32, n_layer=1, n_head=4, num_labels=p,
                        pad_token_id=p + 1, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(config)

    def accuracy(evaluation):
        return {"accuracy": float((evaluation.predictions.argmax(-1) == evaluation.label_ids).mean())}

    arguments = TrainingArguments(
        str(out), max_steps=steps, save_steps=save_every, eval_strategy="steps", eval_steps=save_every,
        logging_steps=save_every, per_device_train_batch_size=64, per_device_eval_batch_size=1024,
        learning_rate=3e-3, weight_decay=1.0, report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=Pairs(np.flatnonzero(split == 0)),
                      eval_dataset=Pairs(np.flatnonzero(split == 1)), compute_metrics=accuracy)
    trainer.train()


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "hf-run")
    train(out)
    grokscope = [sys.executable, "-m", "grokscope"]
    probe = subprocess.run([*grokscope, "probe", str(out), "--data", str(out / "data.npz")],
                           check=True, stdout=subprocess.PIPE, text=True)
    subprocess.run([*grokscope, "measure", "-", "--metric", "all"], input=probe.stdout, text=True, check=True)
    subprocess.run([*grokscope, "report", str(out)], check=True)


if __name__ == "__main__":
    main()
