"""Memory bounded by batch: the budget option, the footprint a forward pass is sized from, probe
under a small --max-memory writing the features of one batch, and an allocation that fails
becoming one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from grokscope import formats
from grokscope.cli import app
from grokscope.errors import GrokscopeError
from grokscope.memory import (CPU_CAP, Footprint, allocation_message, is_allocation_failure, measure_footprint,
                              memory_budget)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_budget_reads_sizes_and_defaults_to_a_share_of_the_free_memory():
    assert memory_budget("512M") == 512 * 2**20
    assert memory_budget("1.5GiB") == int(1.5 * 2**30)
    assert memory_budget("4096") == memory_budget(4096) == 4096
    assert 16 * 2**20 <= memory_budget() <= 512 * 2**20
    for bad in ("lots", "-1G", "0"):
        with pytest.raises(GrokscopeError, match="--max-memory"):
            memory_budget(bad)


def test_footprint_counts_every_module_output_and_the_matrix_products():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    tokens = torch.randint(0, 10, (20, 5))  # (n, T)
    footprint = measure_footprint(model, tokens)
    # Per sample (T = 5 positions), float32: outputs 4 + 6 + 6 + 3 values per position, the
    # Sequential's own output (3) as a module's and (3) as what the run returns; all twice for headroom.
    assert footprint.bytes == pytest.approx(2.0 * 4 * 5 * (4 + 6 + 6 + 3 + 3 + 3))
    assert footprint.macs == 5 * (4 * 6 + 6 * 3)  # the embedding only looks up
    assert Footprint(bytes=100.0, macs=0).batch_size(1000) == 10
    assert Footprint(bytes=100.0, macs=0).batch_size(1000, limit=4) == 4
    assert Footprint(bytes=1e9, macs=0).batch_size(1000) == 1
    assert footprint.device_type == "cpu"


def test_cpu_batches_stay_under_the_cpu_cap_whatever_the_budget():
    mib = 2**20
    assert CPU_CAP == 256 * mib
    on_cpu = Footprint(bytes=float(mib), macs=0)
    assert on_cpu.batch_size(2**30) == 256  # a 1 GiB budget, capped
    assert on_cpu.batch_size(64 * mib) == 64  # below the cap the budget decides
    assert Footprint(bytes=float(mib), macs=0, device_type="cuda").batch_size(2**30) == 1024


def _gpt2_series(root: Path) -> tuple[Path, Path]:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=31, n_positions=8, n_embd=16, n_layer=2, n_head=2, num_labels=3,
                                     pad_token_id=30, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2ForSequenceClassification(config).eval()
    series = root / "series"
    for step in (0, 1):
        if step:
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.add_(0.01 * torch.randn_like(parameter))
        model.save_pretrained(series / f"checkpoint-{step}")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 30, size=(40, 8))
    y = rng.integers(0, 3, size=40)
    split = (np.arange(40) % 4 == 0).astype(np.int64)
    data = root / "data.npz"
    np.savez(data, X=x, y=y, split=split)
    return series, data


def test_probe_under_a_small_budget_writes_the_features_of_one_batch(tmp_path):
    series, data = _gpt2_series(tmp_path)
    homes = {}
    for name, options in {"whole": ["--batch-size", "16384"], "small": ["--max-memory", "4K"]}.items():
        home = tmp_path / name
        probed = invoke("probe", series, "--data", data, "--out", home, "-q", *options)
        assert probed.exit_code == 0, probed.output
        homes[name] = home
    from grokscope.context import open_series

    extractor = open_series(homes["small"]).extractor(max_memory="4K")
    assert extractor.samples_per_batch() < 4  # the budget did split the 40 samples
    assert open_series(homes["whole"]).extractor(max_memory="1G").samples_per_batch() >= 40  # one batch
    for step in (0, 1):
        name = formats.steps.step_file_name(step)
        whole, _ = formats.tensors.load_tensors(homes["whole"] / "features" / name)
        small, _ = formats.tensors.load_tensors(homes["small"] / "features" / name)
        assert set(whole) == set(small) and whole
        for key in whole:
            assert whole[key].shape[0] == 40
            np.testing.assert_allclose(small[key].numpy(), whole[key].numpy(), rtol=1e-6, atol=1e-6)


def test_allocation_failures_are_told_apart_and_become_one_line():
    failed = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: "
                          "you tried to allocate 25769803776 bytes.")
    assert is_allocation_failure(failed) and is_allocation_failure(MemoryError())
    assert not is_allocation_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    line = allocation_message("hsic", failed, "--hsic-batch-size")
    assert line == "hsic: could not allocate 24.00 GiB (RuntimeError); lower it with --hsic-batch-size"
    assert "\n" not in allocation_message("probe", MemoryError(), "--max-memory")


def test_complexity_on_a_seeded_subsample_records_it_and_evaluates_that_loss(tmp_path):
    import pandas as pd
    import transformers

    series, data = _gpt2_series(tmp_path)
    home = tmp_path / "home"
    assert invoke("probe", series, "--data", data, "--out", home, "-q").exit_code == 0
    measured = invoke("measure", home, "--metric", "complexity", "--complexity-samples", "8", "--seed", "3",
                      "--complexity-evaluations", "5", "--max-memory", "4K", "-q")
    assert measured.exit_code == 0, measured.output
    table = pd.read_parquet(home / "measures" / "complexity.parquet")
    values = {(row.step, row.metric): row.value for row in table.itertuples() if pd.isna(row.layer)}
    assert '"complexity_samples": 8' in table["params"].iloc[0] and '"complexity_evaluations": 5' in table["params"].iloc[0]
    # The loss of the original weights on the 8 training samples a CPU generator seeded with 3 picks.
    stored = np.load(data)
    train = stored["split"] == 0
    chosen = torch.sort(torch.randperm(int(train.sum()), generator=torch.Generator().manual_seed(3))[:8]).values
    for step in (0, 1):
        model = transformers.GPT2ForSequenceClassification.from_pretrained(series / f"checkpoint-{step}").eval()
        with torch.no_grad():
            logits = model(torch.from_numpy(stored["X"][train][chosen.numpy()])).logits
        want = float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(stored["y"][train][chosen.numpy()])))
        assert values[(step, "complexity_reference_loss")] == pytest.approx(want, rel=1e-5)
        assert values[(step, "complexity_loss_samples")] == 8 and values[(step, "complexity_loss_seed")] == 3
        assert 1 <= values[(step, "complexity_loss_evaluations")] <= 5
        assert values[(step, "complexity_exhausted")] in (0.0, 1.0)
