"""grokscope.measures.thread_independent: sums and factorisations with the same bits on 1, 2 and
4 threads, checked against an exact sum and against a run on one thread."""

from __future__ import annotations

import math

import pytest
import torch

from grokscope.measures.thread_independent import ROW, fixed_order_mean, fixed_order_sum, on_one_thread

THREADS = (1, 2, 4)


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def on_each_thread_count(function) -> list[torch.Tensor]:
    results = []
    for threads in THREADS:
        torch.set_num_threads(threads)
        results.append(function())
    return results


@pytest.mark.parametrize("n", [1, ROW, ROW + 1, 3 * ROW * ROW + 17, 2_500_001])
def test_the_sum_is_the_same_bits_on_any_thread_count_and_close_to_the_exact_sum(n):
    generator = torch.Generator().manual_seed(n)
    # Mixed signs and magnitudes, so that the order of the additions shows in the last bits.
    values = torch.randn(n, generator=generator, dtype=torch.float64) * torch.logspace(-3, 3, n, dtype=torch.float64)
    first, *others = on_each_thread_count(lambda: fixed_order_sum(values))
    assert all(torch.equal(first, other) for other in others)
    exact = math.fsum(values.tolist())
    assert float(first) == pytest.approx(exact, rel=1e-12, abs=1e-9)


def test_kept_dimensions_are_summed_one_by_one():
    generator = torch.Generator().manual_seed(1)
    values = torch.randn(3, 200, 300, generator=generator, dtype=torch.float64)
    kept = on_each_thread_count(lambda: fixed_order_sum(values, keep=1))
    assert kept[0].shape == (3,)
    assert all(torch.equal(kept[0], other) for other in kept[1:])
    for row, total in zip(values, kept[0]):
        assert float(total) == pytest.approx(math.fsum(row.reshape(-1).tolist()), rel=1e-12)
    assert float(fixed_order_mean(values)) == pytest.approx(math.fsum(values.reshape(-1).tolist()) / values.numel())


def test_a_short_last_row_sums_as_its_zero_padded_copy():
    generator = torch.Generator().manual_seed(2)
    values = torch.randn(5 * ROW + 333, generator=generator, dtype=torch.float64)
    padded = torch.cat([values, values.new_zeros(ROW - 333)])
    assert torch.equal(fixed_order_sum(values), fixed_order_sum(padded))


@pytest.mark.parametrize("size", [64, 300])
def test_factorisations_on_one_thread_are_the_same_bits_on_any_thread_count(size):
    generator = torch.Generator().manual_seed(size)
    x = torch.randn(size, size + 7, generator=generator, dtype=torch.float64)
    covariance = x @ x.T / size + torch.eye(size, dtype=torch.float64)  # (size, size)

    def inverse() -> torch.Tensor:
        return on_one_thread(torch.cholesky_inverse, on_one_thread(torch.linalg.cholesky, covariance))

    first, *others = on_each_thread_count(inverse)
    assert all(torch.equal(first, other) for other in others)
    assert torch.allclose(first @ covariance, torch.eye(size, dtype=torch.float64), atol=1e-9)
    torch.set_num_threads(2)
    on_one_thread(torch.linalg.svdvals, x)
    assert torch.get_num_threads() == 2
