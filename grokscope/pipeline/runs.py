"""One run of ``train`` (and of ``subnet``): what its folder allows (new, restart, resume, done),
training it in this process, and training it as a worker's task.

A run folder goes through states that a rerun can always continue: nothing; run.json (an
unfinished start, which a rerun of the same settings starts over); checkpoints with resume state
(which ``--resume`` continues); finished.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from grokscope import formats
from grokscope.errors import GrokscopeError
from grokscope.pipeline.reporter import Recording, Reporter, SilentReporter


def prepare_out(out: Path) -> Path:
    """``out``, created if need be, once it is known to take files (else a GrokscopeError naming it)."""
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        # An anonymous file: nothing is left behind, even if the process is killed here.
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise GrokscopeError(f"--out: cannot write to {out} ({exc.strerror or exc})") from None
    return out


def run_folder(out: Path, name: str) -> Path:
    """The folder of run ``name`` in ``out``; a name that would leave ``out`` is refused."""
    run_dir = out / name
    # Sweep suffixes are built from option values; make sure none of them leaves --out either.
    if os.path.dirname(os.path.abspath(run_dir)) != os.path.abspath(out):
        raise GrokscopeError(f"--name: run {name!r} would be written outside --out {out}")
    return run_dir


def plan_run(run_dir: Path, config, resume: bool) -> str:
    """'new', 'restart', 'resume' or 'done', after checking that an existing directory may be touched.

    'restart': a run of these same settings that never committed its first save (killed or out
    of disk in its first writes); rerunning the command, with or without --resume, starts it over.
    """
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return "new"
    if formats.run.is_unfinished_start(run_dir) and (
        not (run_dir / formats.run.RUN_FILE).exists() or not differences_from_stored(run_dir, config)
    ):
        return "restart"
    if not resume:
        raise GrokscopeError(
            f"{run_dir}: already exists and is not empty; pass --resume to continue it, or choose another --out or --name"
        )
    mismatched = differences_from_stored(run_dir, config)
    if mismatched:
        raise GrokscopeError(
            f"{run_dir}: --resume with different settings than run.json ({', '.join(mismatched)})"
        )
    step = formats.run.resume_step(run_dir)
    if step is None:
        raise GrokscopeError(f"{run_dir}: nothing to resume from (no {formats.run.RESUME_FILE})")
    return "done" if step >= config.schedule.steps else "resume"


def find_twin(out: Path, run_dir: Path, config) -> tuple[Path, bool] | None:
    """Another run in ``out`` with exactly ``config``'s resolved settings and seed under another
    name (a sweep's ``add-p23-wd0.1`` for a lone ``--weight-decay 0.1``), and whether it is
    finished; None when there is none. Run folders that cannot be read are not twins."""
    wanted = {**config.to_dict(), "name": None}
    for stored in sorted(Path(out).glob(f"*/{formats.run.RUN_FILE}")):
        twin = stored.parent
        if twin.name == run_dir.name:
            continue
        try:
            if _config_differences({**_stored_config(twin), "name": None}, wanted):
                continue
            step = formats.run.resume_step(twin)
        except (GrokscopeError, OSError, KeyError, TypeError):
            continue
        return twin, step is not None and step >= config.schedule.steps
    return None


def differences_from_stored(run_dir: Path, config) -> list[str]:
    """The settings of ``config`` that differ from the run.json in ``run_dir``, one line each."""
    return _config_differences(_stored_config(run_dir), config.to_dict())


def _stored_config(run_dir: Path) -> dict:
    stored = formats.run.read_run(run_dir).to_dict()
    if stored["task"].get("path"):
        # Older runs stored --data as typed; it was relative to where training ran.
        stored["task"]["path"] = os.path.abspath(stored["task"]["path"])
    return stored


def _config_differences(stored: dict, wanted: dict, prefix: str = "") -> list[str]:
    differences = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += _config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            differences.append(f"{prefix}{key}: {a!r} in run.json, {b!r} now")
    return differences


def train_one(run_dir: Path, config, plan: str, device, say: Reporter, threads: int | None = None) -> None:
    """Train one run in this process (``plan``: what :func:`plan_run` said; ``threads``: torch's
    intra-op threads, if given), its messages and progress told to ``say``."""
    # training first: it imports numpy before torch. Left to torch, numpy is imported from torch's
    # C++ start-up, where a Ctrl-C is lost and leaves numpy half imported (or aborts the process).
    from grokscope.training import Trainer, first_step_reaching  # isort: skip
    from grokscope.devices import resolve_device
    from grokscope.execution import set_threads

    from grokscope import reproducibility

    device = resolve_device(device)
    if threads:
        set_threads(threads)
    else:
        reproducibility.make_reproducible()
    numerics = reproducibility.record()
    if reproducibility.warning(numerics):
        say.warn(f"{run_dir}: {reproducibility.warning(numerics)}")
    started = time.perf_counter()
    trainer = Trainer(config, run_dir, device)
    digest = trainer.data.split_digest()
    if plan == "resume":
        stored = formats.run.read_run_config(run_dir)
        if stored.get("split_sha256") != digest:
            raise GrokscopeError(f"{run_dir}: the task's train/test split no longer matches run.json")
        for warning in trainer.restore():
            say.warn(warning)
    else:
        if plan == "restart":
            say.info(f"{run_dir}: never finished its first save; starting it over")
            formats.run.clear_unfinished_start(run_dir)
        # run.json first: from then on every state of the folder is one a rerun can continue or
        # start over (see formats.run.is_unfinished_start).
        run_dir.mkdir(parents=True, exist_ok=True)
        formats.run.write_run_config(run_dir, {**config.to_dict(), "split_sha256": digest,
                                         "n_samples": len(trainer.data.y), "n_classes": trainer.data.n_classes,
                                               "numerics": numerics})
        (run_dir / formats.run.CHECKPOINTS_DIR).mkdir(exist_ok=True)
    warned = False

    def warn_if_diverged() -> None:
        nonlocal warned
        if trainer.diverged_at is not None and not warned:
            warned = True
            say.warn(f"{run_dir}: diverged: weights or training loss are not finite from step "
                     f"{trainer.diverged_at} on; training continues, later checkpoints hold NaN")

    warn_if_diverged()
    with say.progress("{task.fields[stats]}") as bar:
        task_id = bar.add_task(config.name, total=config.schedule.steps, completed=trainer.step, stats="")

        def on_eval(e):
            warn_if_diverged()
            bar.update(task_id, completed=e.step, stats=(
                f"loss {e.train_loss:.3g}/{e.test_loss:.3g}  acc {e.train_acc:.3f}/{e.test_acc:.3f}"
            ))

        trainer.run(on_eval)
    history = formats.run.read_history(run_dir)
    train_step = first_step_reaching(history, "train_acc")
    test_step = first_step_reaching(history, "test_acc")
    say.info(f"{run_dir}: {config.schedule.steps} steps in {time.perf_counter() - started:.1f}s; "
             f"99% train acc {_reached(train_step)}, 99% test acc {_reached(test_step)}")


def _reached(step: int | None) -> str:
    return "not reached" if step is None else f"at step {step}"


class _Messages(SilentReporter):
    """A worker's reporter: its information and warnings, kept to travel back with the result."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def info(self, message: str) -> None:
        self.messages.append(("info", message))

    def warn(self, message: str) -> None:
        self.messages.append(("warning", message))


def train_run(run_dir: Path, config, plan: str, device: str) -> list[tuple[str, str]]:
    """One run of a sweep, as a worker's task: trains it and returns its messages as
    (``"info"`` or ``"warning"``, text). A rerun of the task (Dask reruns the tasks of a worker
    that died) takes over what the earlier attempt left: it resumes from its last save, or
    starts over before the first, and ends bit for bit the same."""
    if plan in ("new", "restart") and run_dir.exists() and any(run_dir.iterdir()):
        plan = plan_run(run_dir, config, resume=True)
        if plan == "done":
            return []
    say = _Messages()
    train_one(run_dir, config, plan, device, say)
    return say.messages


def train_elsewhere(executor, tasks: list, say: Recording) -> None:
    """The runs of a sweep on the executor's workers, one task per run (tagged with its folder);
    each run's messages are said and its folder said as it finishes. A run that fails is named
    (refused when its settings are at fault) and the others go on."""
    from grokscope.execution import failure_message

    with say.progress() as bar:
        task_id = bar.add_task(f"train on {executor.description}", total=len(tasks))
        for outcome in executor.map(tasks):
            bar.advance(task_id)
            if outcome.error is not None:
                message = failure_message(outcome)
                say.error(message)
                (say.written.refused if isinstance(outcome.error, GrokscopeError) else say.written.failed).append(message)
                continue
            for kind, message in outcome.result:
                (say.warn if kind == "warning" else say.info)(message)
            say.result(outcome.task.tag)
    failed = len(say.written.refused) + len(say.written.failed)
    if failed:
        say.info(f"train: {failed} of {len(tasks)} run(s) failed (see above)")
