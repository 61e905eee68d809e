"""The same command gives the same bytes on any thread count and beside any load
(grokscope.reproducibility: MKL's strict mode, and training's own sums in a fixed order)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grokscope.reproducibility import reproducible_mode

ROOT = Path(__file__).resolve().parents[1]
# Big enough that MKL splits the weight gradient's reduction (3,763 samples) among 2 threads.
SMALL_RUN = ["--p", "97", "--width", "250", "--steps", "30", "--save-every", "10", "--save-log", "0",
             "--eval-every", "10"]


def grokscope(*args: str, env: dict | None = None) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    environment.update({"PYTHONPATH": str(ROOT), **(env or {})})
    subprocess.run([sys.executable, "-m", "grokscope", *args], check=True, env=environment,
                   capture_output=True, timeout=600)


def train_and_probe(out: Path, threads: int, model: str = "mlp", env: dict | None = None) -> Path:
    grokscope("train", "--model", model, *SMALL_RUN, "--threads", str(threads), "--out", str(out), env=env)
    (run_dir,) = out.iterdir()
    grokscope("probe", str(run_dir), "--threads", str(threads), env=env)
    return run_dir


def file_bytes(run_dir: Path) -> dict[str, bytes]:
    """Every file but run.json (which holds its creation time), byte for byte."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != "run.json"}


def mkl_has_a_strict_mode() -> bool:
    from grokscope.reproducibility import in_effect

    return in_effect() is not None


class BusyProcesses:
    """Two processes that keep a core each busy while the block runs."""

    def __enter__(self):
        self.processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
        return self

    def __exit__(self, *exc):
        for process in self.processes:
            process.kill()
            process.wait()


def test_training_and_probing_give_the_same_bytes_on_one_or_two_threads_and_beside_busy_processes(tmp_path):
    one = file_bytes(train_and_probe(tmp_path / "one", threads=1))
    two = file_bytes(train_and_probe(tmp_path / "two", threads=2))
    with BusyProcesses():
        busy = file_bytes(train_and_probe(tmp_path / "busy", threads=2))
    assert any(name.startswith("checkpoints/") for name in one)
    assert any(name.startswith("features/step-") for name in one)
    assert "history.parquet" in one
    assert one == two == busy


# Every family; LLC with short chains (its own seeded SGLD is what is compared, not its accuracy).
EVERY_FAMILY = ["--metric", "collapse,hsic,oinfo,weights,spectra,complexity,fourier,grokking,llc",
                "--llc-chains", "2", "--llc-draws", "20", "--llc-burnin", "5", "-q"]


def measure_tables_on_one_and_two_threads(tmp_path: Path, *measure_args: str, env: dict | None = None) -> dict:
    """{threads: {table name: bytes}} of one trained and probed run measured with ``measure_args``
    on a copy of it per thread count."""
    grokscope("train", *SMALL_RUN, "--threads", "2", "--out", str(tmp_path / "runs"))
    (run_dir,) = (tmp_path / "runs").iterdir()
    grokscope("probe", str(run_dir), "--threads", "2")
    tables = {}
    for threads in (1, 2):
        copy = shutil.copytree(run_dir, tmp_path / f"threads-{threads}")
        grokscope("measure", str(copy), *measure_args, "--threads", str(threads), env=env)
        tables[threads] = {p.name: p.read_bytes() for p in sorted((copy / "measures").glob("*.parquet"))}
    return tables


def test_every_measure_table_is_the_same_bytes_on_one_or_two_threads(tmp_path):
    """Width 250 on 9,409 samples: feature sums of 2.4M entries, 250 x 250 covariances and
    weights, where torch's one-number sums and MKL's factorisations follow the thread count
    unless grokscope.measures.thread_independent fixes them."""
    tables = measure_tables_on_one_and_two_threads(tmp_path, *EVERY_FAMILY)
    assert len(tables[1]) == 9
    assert tables[1] == tables[2]


@pytest.mark.skipif(not mkl_has_a_strict_mode() or reproducible_mode() is None,
                    reason="torch without MKL, or a processor whose MKL sums in one order by default")
def test_without_the_strict_mode_the_same_run_differs_between_one_and_two_threads(tmp_path):
    """The tests above check something: on Intel a non-strict MKL mode (the user's own, kept)
    splits the training's sums."""
    env = {"MKL_CBWR": "AUTO"}
    grokscope("train", *SMALL_RUN, "--threads", "1", "--out", str(tmp_path / "one"), env=env)
    grokscope("train", *SMALL_RUN, "--threads", "2", "--out", str(tmp_path / "two"), env=env)
    one, two = (file_bytes(next((tmp_path / n).iterdir())) for n in ("one", "two"))
    assert one.keys() == two.keys()
    assert one["checkpoints/step-00000030.safetensors"] != two["checkpoints/step-00000030.safetensors"]


@pytest.mark.skipif(not mkl_has_a_strict_mode() or reproducible_mode() is not None,
                    reason="torch without MKL, or a processor whose MKL needs its strict mode")
def test_with_a_conditional_mode_on_amd_the_measure_tables_differ_between_one_and_two_threads(tmp_path):
    """The tests above check something: on AMD, MKL's strict mode (the user's own, kept) splits the
    float64 sums of O-information's covariances by thread; its default, which grokscope keeps there,
    does not."""
    tables = measure_tables_on_one_and_two_threads(tmp_path, "--metric", "oinfo", "-q",
                                                   env={"MKL_CBWR": "AUTO,STRICT"})
    assert tables[1]["oinfo.parquet"] != tables[2]["oinfo.parquet"]


def test_the_transformer_trains_to_the_same_bytes_on_one_or_two_threads(tmp_path):
    one = file_bytes(train_and_probe(tmp_path / "one", threads=1, model="transformer"))
    two = file_bytes(train_and_probe(tmp_path / "two", threads=2, model="transformer"))
    assert one == two


def test_run_json_records_the_mode_and_a_rerun_with_other_threads_resumes_it(tmp_path):
    import json

    grokscope("train", *SMALL_RUN, "--threads", "1", "--out", str(tmp_path))
    (run_dir,) = tmp_path.iterdir()
    numerics = json.loads((run_dir / "run.json").read_text())["numerics"]
    assert numerics["mkl_cbwr"] == reproducible_mode()
    assert numerics["mkl_reproducible"] in (True, None)
    # The numerics are not settings: --resume with another thread count is the same run.
    grokscope("train", *SMALL_RUN, "--threads", "2", "--resume", "--out", str(tmp_path))


def test_a_process_whose_torch_computed_first_is_told(tmp_path):
    """MKL fixes its mode at its first call: grokscope cannot take effect afterwards, and says so."""
    script = (
        "import torch; a = torch.ones(64, 64); a @ a\n"
        "import grokscope\n"
        f"grokscope.train(out={str(tmp_path)!r}, p=[5], steps=[2], save_every=1, save_log=0)\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    done = subprocess.run([sys.executable, "-c", script], env={**environment, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    if mkl_has_a_strict_mode() and reproducible_mode() is not None:
        assert "torch computed before grokscope" in done.stderr
        assert done.stderr.count("may depend on the thread count") == 1
    else:  # MKL's default is the mode (AMD): torch computing first changes nothing, and nothing is said
        assert "thread count" not in done.stderr


def test_a_users_conditional_mode_on_amd_is_told_to_be_unset(tmp_path):
    if not mkl_has_a_strict_mode() or reproducible_mode() is not None:
        pytest.skip("torch without MKL, or a processor whose MKL needs its strict mode")
    script = f"import grokscope; grokscope.train(out={str(tmp_path)!r}, p=[5], steps=[2], save_every=1, save_log=0)\n"
    environment = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    done = subprocess.run([sys.executable, "-c", script],
                          env={**environment, "PYTHONPATH": str(ROOT), "MKL_CBWR": "AUTO,STRICT"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("unset MKL_CBWR") == 1
