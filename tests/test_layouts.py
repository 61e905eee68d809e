"""Checkpoint layouts as the tools researchers use write them, each made by the real library and
read end to end: Pythia-style revisions in the Hugging Face Hub cache, torch.distributed.checkpoint
folders, the ImageNet example's ``.pth.tar``, Lightning's filename template with ``save_last``
and accelerate's automatic checkpoint naming. For each: probe, measure --metric all, every plot,
report; the steps are the training loop's, and probe's accuracy is the loop's logged accuracy."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from grokscope.context import open_series
from grokscope.discovery import find_series
from series_helpers import P, accuracy, images, invoke, nets, pairs, pipeline, warnings_in

STEPS = (0, 10, 20, 30)


def adamw_loop(model: nn.Module, x, y, split, save, steps=STEPS, lr=1e-2) -> dict[int, float]:
    """Full-batch AdamW on the training rows; at every step in ``steps``, before that step's update,
    ``save(model, optimizer, step)`` and the test accuracy logged. Returns the log."""
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    train, test = np.flatnonzero(split == 0), np.flatnonzero(split == 1)
    inputs, labels = torch.as_tensor(x[train]), torch.as_tensor(y[train])
    logged = {}
    for step in range(max(steps) + 1):
        if step in steps:
            save(model, optimizer, step)
            logged[step] = accuracy(model, x, y, test)
        output = model(inputs)
        logits = getattr(output, "logits", output)
        logits = logits[:, -1] if logits.ndim == 3 else logits
        loss = nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return logged


def probed_accuracy(home: Path) -> dict[int, float]:
    history = open_series(home).history().dropna(subset=["test_acc"])
    return dict(zip(history["step"].astype(int), history["test_acc"]))


def assert_same_accuracy(home: Path, logged: dict[int, float]) -> None:
    probed = probed_accuracy(home)
    assert sorted(probed) == sorted(logged)
    for step, value in logged.items():
        assert probed[step] == pytest.approx(value, abs=1e-6), step


# --- the Hugging Face Hub cache ------------------------------------------------------------


def git_blob_sha1(data: bytes) -> str:
    """The name huggingface_hub gives a regular (non-LFS) file's blob: its git object id."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_revision(repo: Path, revision: str, saved: Path) -> str:
    """What ``from_pretrained(repo_id, revision=revision)`` leaves in the cache for the files of
    ``saved``: blobs named by git sha1 (sha256 for LFS files: the weights), a snapshot of
    relative symlinks into blobs/, and refs/<revision> holding the commit hash (no newline)."""
    commit = hashlib.sha1(f"{repo.name}@{revision}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for path in sorted(saved.iterdir()):
        data = path.read_bytes()
        blob = hashlib.sha256(data).hexdigest() if path.suffix == ".safetensors" else git_blob_sha1(data)
        if not (repo / "blobs" / blob).exists():
            (repo / "blobs" / blob).write_bytes(data)
        os.symlink(os.path.relpath(repo / "blobs" / blob, snapshot), snapshot / path.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return commit


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("hub")
    data = pairs(folder)
    config = transformers.GPTNeoXConfig(vocab_size=P + 1, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=32, max_position_embeddings=4, hidden_dropout=0.0,
                                        attention_dropout=0.0, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.GPTNeoXForCausalLM(config)
    cache = folder / "hub"
    repo = cache / "models--grokscope-tests--tiny-neox"
    commits = {}

    def save(model, optimizer, step):
        saved = folder / "saved" / str(step)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.save_pretrained(saved)
        commits[step] = add_revision(repo, f"step{step}", saved)

    logged = adamw_loop(model, data["tokens"], data["y"], data["split"], save)
    (repo / "refs" / "main").write_text(commits[max(STEPS)])  # main is the last step, as on the Hub
    return {"cache": cache, "repo": repo, "data": folder / "tokens.npz", "logged": logged, "commits": commits}


def test_hub_cache_revisions_are_a_series(hub_cache, tmp_path):
    cache, repo = hub_cache["cache"], hub_cache["repo"]
    snapshot = next((repo / "snapshots").iterdir())
    assert (snapshot / "config.json").is_symlink() and os.readlink(snapshot / "config.json").startswith("../../blobs/")
    from safetensors import safe_open

    with safe_open(str(snapshot / "model.safetensors"), framework="pt") as handle:
        assert "embed_out.weight" in handle.keys()  # on disk, as in every published Pythia checkpoint

    # The repository, its snapshots/ and the cache root all name the one series, at the refs' steps.
    for path in (repo, repo / "snapshots", cache):
        found = find_series([str(path)])
        assert len(found) == 1 and [c.step for c in found[0].checkpoints] == list(STEPS), path
        assert found[0].name == "grokscope-tests/tiny-neox"
    one = find_series([str(repo / "snapshots" / hub_cache["commits"][20])])
    assert one[0].selected == {20}

    # No --model: the snapshot's config.json describes it, read through its link into blobs/.
    tables = pipeline(repo, repo, tmp_path, "--data", hub_cache["data"])
    assert sorted(set(tables["weights"]["step"])) == list(STEPS)
    record = json.loads((repo / "features" / "probe.json").read_text())
    assert record["penultimate"] == "lm_head:input" and "/snapshots/" in record["model"]["transformers"]
    assert set(tables["collapse"]["run"]) == {"grokscope-tests/tiny-neox"}
    # embed_out was loaded as lm_head (transformers' renaming): probe's accuracy is the loop's.
    assert_same_accuracy(repo, hub_cache["logged"])


def test_hub_cache_without_step_revisions_says_so(hub_cache, tmp_path):
    repo = tmp_path / "hub" / "models--someone--plain"
    shutil.copytree(hub_cache["repo"], repo, symlinks=True, ignore=shutil.ignore_patterns("features", "measures"))
    for ref in (repo / "refs").iterdir():
        if ref.name != "main":
            ref.unlink()
    for path in (repo, tmp_path / "hub"):
        result = invoke("probe", path, "--data", hub_cache["data"])
        assert result.exit_code == 2
        line = " ".join(result.stderr.split())
        assert line.count("error:") == 1 and "refs/step1000" in line and "main" in line, line


# --- torch.distributed.checkpoint ----------------------------------------------------------


@pytest.fixture(scope="module")
def dcp_series(tmp_path_factory):
    import torch.distributed.checkpoint as dcp

    folder = tmp_path_factory.mktemp("dcp")
    data, factories = pairs(folder), nets(folder)
    series = folder / "outputs" / "checkpoint"

    def save(model, optimizer, step):
        # torchtitan's layout: model and optimizer states nested, the step beside them; no process group.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcp.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step},
                     checkpoint_id=series / f"step-{step}")

    logged = adamw_loop(factories["mlp"](), data["onehot"], data["y"], data["split"], save)
    return {"folder": folder, "series": series, "logged": logged}


def test_dcp_folders(dcp_series, tmp_path):
    series, folder = dcp_series["series"], dcp_series["folder"]
    assert sorted(p.name for p in (series / "step-10").iterdir()) == [".metadata", "__0_0.distcp"]
    tables = pipeline(series, series, tmp_path, "--model", folder / "nets.py:mlp", "--data", folder / "onehot.npz")
    assert sorted(set(tables["weights"]["step"])) == list(STEPS)
    assert_same_accuracy(series, dcp_series["logged"])


class Planted:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_dcp_metadata_never_runs_code(dcp_series, tmp_path):
    import pickle

    series = tmp_path / "checkpoint"
    shutil.copytree(dcp_series["series"], series, ignore=shutil.ignore_patterns("features", "measures"))
    marker = tmp_path / "pwned"
    (series / "step-20" / ".metadata").write_bytes(pickle.dumps(Planted(marker)))
    result = invoke("measure", series, "--metric", "weights", "-q")
    assert not marker.exists()
    line = " ".join(result.stderr.split())
    assert result.exit_code == 1 and "step-20/.metadata: not readable DCP metadata" in line, line


# --- the ImageNet example's .pth.tar -------------------------------------------------------


@pytest.fixture(scope="module")
def imagenet_series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imagenet")
    data, factories = images(folder), nets(folder)
    series = folder / "moco"
    series.mkdir()
    torch.manual_seed(0)
    model = torch.nn.DataParallel(factories["resnet"]())  # the example's wrapper: module. on every key
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train, test = np.flatnonzero(data["split"] == 0), np.flatnonzero(data["split"] == 1)
    batches = np.array_split(train, 2)
    logged, step, best = {}, 0, 0.0
    for epoch in range(4):
        model.train()
        for rows in batches:
            loss = nn.functional.cross_entropy(model(torch.from_numpy(data["X"][rows])), torch.from_numpy(data["y"][rows]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
        acc1 = accuracy(model, data["X"], data["y"], test)
        logged[step] = acc1
        best = max(best, acc1)
        state = {"epoch": epoch + 1, "arch": "resnet", "state_dict": model.state_dict(), "best_acc1": best,
                 "optimizer": optimizer.state_dict()}
        torch.save(state, series / f"checkpoint_{epoch:04d}.pth.tar")  # MoCo's name
        torch.save(state, series / "checkpoint.pth.tar")  # the ImageNet example's, rewritten every epoch
        if acc1 == best:
            shutil.copyfile(series / "checkpoint.pth.tar", series / "model_best.pth.tar")
    return {"folder": folder, "series": series, "logged": logged, "steps": sorted(logged)}


def test_pth_tar_series_with_module_keys(imagenet_series, tmp_path):
    series, folder = imagenet_series["series"], imagenet_series["folder"]
    options = ["--model", folder / "nets.py:resnet", "--data", folder / "images.npz"]
    # The names count epochs and the files store one: taken as they are, with one warning that says how to fix it.
    named = invoke("probe", series, *options, "--out", tmp_path / "named", "-q")
    assert named.exit_code == 0, named.output
    found = [w for w in warnings_in(named) if "may not be training steps" in w]
    assert len(found) == 1 and "checkpoint_0000.pth.tar" in found[0] and "steps.json" in found[0]
    skipped = [w for w in warnings_in(named) if "skipped" in w]
    assert len(skipped) == 1 and "2 (checkpoint.pth.tar, model_best.pth.tar)" in skipped[0]
    assert sorted(int(Path(p).stem.split("-")[1]) for p in named.stdout.split()) == [0, 1, 2, 3]

    # A step map names the optimizer steps; the series is then at the loop's steps.
    steps = imagenet_series["steps"]
    (series / "steps.json").write_text(json.dumps({f"checkpoint_{e:04d}.pth.tar": s for e, s in enumerate(steps)}))
    assert [c.step for c in find_series([str(series)])[0].checkpoints] == steps
    tables = pipeline(series, series, tmp_path / "figures", *options)
    assert sorted(set(tables["collapse"]["step"])) == steps
    assert set(tables["collapse"]["layer"]) == {"fc:input"}
    assert_same_accuracy(series, imagenet_series["logged"])


def test_a_folder_without_weights_counts_what_it_skipped(tmp_path):
    for i in range(14):
        (tmp_path / f"checkpoint_{i:04d}.tar").write_bytes(b"not a checkpoint")
    # A model and data that pass probe's checks before start-up, so the series is what is refused.
    inputs = tmp_path.parent / f"{tmp_path.name}-inputs"
    inputs.mkdir()
    (inputs / "x.py").write_text("def y():\n    pass\n")
    (inputs / "d.npz").write_bytes(b"")
    result = invoke("probe", tmp_path, "--model", f"{inputs / 'x.py'}:y", "--data", str(inputs / "d.npz"))
    line = " ".join(result.stderr.split())
    assert result.exit_code == 2 and line.count("error:") == 1
    assert "not weight files: 14 (checkpoint_0000.tar" in line and ".pth.tar" in line, line


# --- Lightning's filename template with save_last ------------------------------------------


@pytest.fixture(scope="module")
def lightning_template(tmp_path_factory):
    lightning = pytest.importorskip("lightning")
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    folder = tmp_path_factory.mktemp("lightning")
    data, factories = pairs(folder), nets(folder)
    x, y, split = data["onehot"], data["y"], data["split"]

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.model = factories["mlp"]()

        def step(self, batch, prefix):
            inputs, labels = batch
            logits = self.model(inputs)
            loss = nn.functional.cross_entropy(logits, labels)
            self.log(f"{prefix}_loss", loss)
            self.log(f"{prefix}_acc", (logits.argmax(1) == labels).float().mean())
            return loss

        def training_step(self, batch, index):
            return self.step(batch, "train")

        def validation_step(self, batch, index):
            self.step(batch, "val")

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-2)

    def loader(code, batch_size):
        rows = np.flatnonzero(split == code)
        dataset = torch.utils.data.TensorDataset(torch.from_numpy(x[rows]), torch.from_numpy(y[rows]))
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = lightning.Trainer(
            max_epochs=4, logger=CSVLogger(str(folder / "logs")), log_every_n_steps=1, accelerator="cpu",
            callbacks=[ModelCheckpoint(filename="sample-{epoch:02d}-{val_loss:.2f}", save_top_k=-1, save_last=True)],
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        )
        trainer.fit(Module(), loader(0, 10), loader(1, 100))  # 3 steps an epoch; validation in one batch
    return {"folder": folder, "run": folder / "logs" / "lightning_logs" / "version_0"}


def test_lightning_template_with_save_last(lightning_template, tmp_path):
    run, folder = lightning_template["run"], lightning_template["folder"]
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in names and sum(n.startswith("sample-epoch=") for n in names) == 4
    found = find_series([str(run / "checkpoints")])[0]
    # Each file's global_step, not the epoch in its name; last.ckpt is the last of them, not a fifth.
    assert [c.step for c in found.checkpoints] == [3, 6, 9, 12]
    assert all(c.path.name != "last.ckpt" for c in found.checkpoints)
    tables = pipeline(run / "checkpoints", run, tmp_path, "--model", folder / "nets.py:mlp", "--data", folder / "onehot.npz")
    assert sorted(set(tables["weights"]["step"])) == [3, 6, 9, 12]
    history = open_series(run).history().set_index("step")
    for step in (3, 6, 9, 12):  # the validation Lightning logged after each epoch is probe's at that step
        assert history.loc[step, "val_acc"] == pytest.approx(history.loc[step, "test_acc"], abs=1e-6)


# --- accelerate's automatic checkpoint naming ----------------------------------------------


def accelerate_run(project: Path, factories: dict, data: dict, register_step: bool) -> dict[int, float]:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    class StepCounter:
        step = 0

        def state_dict(self):
            return {"step": self.step}

        def load_state_dict(self, state):
            self.step = state["step"]

    accelerator = Accelerator(cpu=True, project_config=ProjectConfiguration(
        project_dir=str(project), automatic_checkpoint_naming=True))
    counter = StepCounter()
    if register_step:
        accelerator.register_for_checkpointing(counter)
    torch.manual_seed(0)
    model = factories["mlp"]()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)

    def save(model, optimizer, step):
        counter.step = step
        accelerator.save_state()  # checkpoints/checkpoint_<number of earlier saves>

    return adamw_loop(model, data["onehot"], data["y"], data["split"], save)


@pytest.fixture(scope="module")
def accelerate_project(tmp_path_factory):
    pytest.importorskip("accelerate")
    folder = tmp_path_factory.mktemp("accelerate")
    data, factories = pairs(folder), nets(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logged = accelerate_run(folder / "project", factories, data, register_step=False)
        counted = accelerate_run(folder / "counted", factories, data, register_step=True)
    return {"folder": folder, "project": folder / "project", "counted": folder / "counted", "logged": logged,
            "counted_logged": counted}


def test_accelerate_automatic_naming(accelerate_project, tmp_path):
    folder, project = accelerate_project["folder"], accelerate_project["project"]
    checkpoints = project / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [f"checkpoint_{i}" for i in range(4)]
    options = ["--model", folder / "nets.py:mlp", "--data", folder / "onehot.npz"]
    # The numbers count saves: taken as they are, with one warning naming the step map.
    result = invoke("probe", checkpoints, *options, "--steps", "0", "--out", tmp_path / "first", "-q")
    assert result.exit_code == 0, result.output
    found = [w for w in warnings_in(result) if "accelerate's automatic naming counts saves" in w]
    assert len(found) == 1 and str(checkpoints / "steps.json") in found[0]

    (checkpoints / "steps.json").write_text(json.dumps({f"checkpoint_{i}": s for i, s in enumerate(STEPS)}))
    tables = pipeline(checkpoints, project, tmp_path, *options)
    assert sorted(set(tables["weights"]["step"])) == list(STEPS)
    assert_same_accuracy(project, accelerate_project["logged"])
    again = invoke("report", project, "--format", "json")
    assert again.exit_code == 0 and not warnings_in(again)

    # A registered object that records the step gives it, and nothing needs saying.
    counted = accelerate_project["counted"] / "checkpoints"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [c.step for c in find_series([str(counted)])[0].checkpoints] == list(STEPS)


# --- discovery without a library -----------------------------------------------------------


def test_folders_without_a_number_are_series_of_their_own(tmp_path):
    for run, steps in (("lr0.1", (100, 200)), ("lr0.3", (300,))):
        (tmp_path / "sweep" / run).mkdir(parents=True)
        for i, step in enumerate(steps):
            torch.save({"model": {"w": torch.zeros(2)}, "iter_num": step}, tmp_path / "sweep" / run / f"ckpt_{'ab'[i]}.pt")
    found = {s.root.name: [c.step for c in s.checkpoints] for s in find_series([str(tmp_path / "sweep")])}
    assert found == {"lr0.1": [100, 200], "lr0.3": [300]}


def test_step_map_mistakes_are_one_line(tmp_path):
    from grokscope.errors import GrokscopeError

    for step in (1, 2):
        torch.save({"w": torch.zeros(1)}, tmp_path / f"model_{step}.pt")
    for document, expected in (({"model_3.pt": 5}, "names 'model_3.pt', which is not in"),
                               ({"model_1.pt": 5, "model_2.pt": 5}, "gives step 5 to several checkpoints"),
                               (["model_1.pt"], "a step map maps checkpoint names to steps")):
        (tmp_path / "steps.json").write_text(json.dumps(document))
        with pytest.raises(GrokscopeError, match=expected) as raised:
            find_series([str(tmp_path)])
        assert str(tmp_path / "steps.json") in str(raised.value) and "\n" not in str(raised.value)
    (tmp_path / "steps.json").write_text(json.dumps({"model_1.pt": 10}))  # the rest keep their names' steps
    assert [c.step for c in find_series([str(tmp_path)])[0].checkpoints] == [2, 10]
