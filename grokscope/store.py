"""Every on-disk format grokscope reads or writes (schema 1 of ../shared/DESIGN.md).

The only module that knows file names and layouts. Writes are atomic: a temporary file in the
same folder, then ``os.replace``, so a killed process never leaves a truncated file under a real
name. Heavy libraries (torch, pandas, safetensors) are imported inside the functions that need
them so that importing this module stays cheap for the CLI.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import sys
from pathlib import Path
from typing import Iterable, Iterator

from grokscope.errors import GrokscopeError

RUN_SCHEMA = "grokscope.run/1"
FORMAT_SCHEMA = "1"
STEP_DIGITS = 8

RUN_FILE = "run.json"
HISTORY_FILE = "history.parquet"
RESUME_FILE = "resume.safetensors"
CHECKPOINTS_DIR = "checkpoints"
FEATURES_DIR = "features"
MEASURES_DIR = "measures"
SAMPLES_FILE = "samples.safetensors"
PROBE_RECORD_FILE = "probe.json"
PROBE_SCHEMA = "grokscope.probe/1"

# grokscope's own names, then other tools' (DESIGN.md: "Series written by other tools are read too").
_STEP_PATTERNS = [
    re.compile(r"^step-(\d+)\.safetensors$"),
    re.compile(r"^checkpoint[-_](\d+)$"),
    re.compile(r"^(?:model[-_])?step[-_]?(\d+)(?:\.(?:safetensors|pt|pth|bin))?$"),
]


def step_file_name(step: int) -> str:
    return f"step-{step:0{STEP_DIGITS}d}.safetensors"


def parse_step(name: str) -> int | None:
    """The training step encoded in a checkpoint's file or folder name, or None."""
    for pattern in _STEP_PATTERNS:
        match = pattern.match(name)
        if match:
            return int(match.group(1))
    return None


# --- atomic writes -------------------------------------------------------------------------

# A temporary is ".<name>.tmp-<host>-<pid>-<random>" beside its destination: the host and pid say
# whose it is (so the next run can tell a killed writer's leftovers from a live writer's file),
# the random part makes the name unguessable. Older versions wrote ".<name>.tmp-<pid>"; those are
# recognised only for the extensions grokscope writes, so a user's ".notes.tmp-2024" is safe.
_TEMPORARY = re.compile(
    r"^\.(?:.+\.tmp-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}"
    r"|.+\.(?:json|parquet|safetensors|png|svg|pdf|csv)\.tmp-(?P<old_pid>\d+))$"
)
# A temporary of another machine (a shared file system) cannot be checked for a live writer; no
# write takes a day, so one that old is left over.
_FOREIGN_TEMPORARY_AGE_S = 24 * 3600
# Test hook: SIGKILL (or another signal: "N:SIGINT") this process just before its Nth rename, so the
# test suite can interrupt a command at every write it makes. Never set outside tests.
KILL_HOOK_ENV = "GROKSCOPE_TEST_KILL_BEFORE_RENAME"
_renames_done = 0
_cleaned_folders: set[str] = set()


def _host_tag() -> str:
    import hashlib
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _temporary_name(path: Path) -> str:
    import secrets

    return f".{path.name}.tmp-{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"


def _create_temporary(path: Path) -> Path:
    """Create, exclusively, an empty temporary beside ``path`` and return its name.

    O_EXCL never follows a symlink planted at the name (it fails instead, and another name is
    drawn), and mode 0o666 lets the user's umask decide the permissions, as for any new file.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(_temporary_name(path))
        try:
            os.close(os.open(tmp, flags, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path.parent))


def clean_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries that killed grokscope processes left in ``folder``; return them.

    Only grokscope's own names count, and only those whose writer is provably gone: a process of
    this machine that no longer exists, or (another machine's) older than a day.
    """
    import time

    removed = []
    here = _host_tag()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        host, pid = match.group("host"), int(match.group("pid") or match.group("old_pid"))
        if host in (None, here):
            stale = pid != os.getpid() and not _process_exists(pid)
        else:
            try:
                stale = time.time() - entry.stat(follow_symlinks=False).st_mtime > _FOREIGN_TEMPORARY_AGE_S
            except OSError:
                continue
        if stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _kill_hook() -> None:
    global _renames_done
    spec = os.environ.get(KILL_HOOK_ENV)
    if not spec:
        return
    import signal

    _renames_done += 1
    count, _, name = spec.partition(":")
    if _renames_done == int(count):
        os.kill(os.getpid(), getattr(signal, name or "SIGKILL"))


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a new temporary file beside ``path``; on success rename it onto ``path``, else delete it.

    The first write into a folder also removes the temporaries that killed processes left there.
    A failed write (disk full, read-only folder, no permission) raises an OSError that names
    ``path``, whatever library did the writing.
    """
    path = Path(path)
    folder = os.path.abspath(path.parent)
    if folder not in _cleaned_folders:
        clean_stale_temporaries(path.parent)
        _cleaned_folders.add(folder)
    tmp = None
    try:
        tmp = _create_temporary(path)
        yield tmp
        _kill_hook()
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        failure = _write_failure(path, exc)
        if failure is not None:
            raise failure from None
        raise


def _write_failure(path: Path, exc: BaseException) -> OSError | None:
    """The I/O failure behind ``exc`` as an OSError naming ``path`` (None if it is no I/O failure).

    pyarrow's OSErrors carry the error number only in their text ("[Errno 28] No space ...").
    """
    if not isinstance(exc, OSError):
        return None
    text = str(exc)
    code = exc.errno
    if code is None:
        found = re.search(r"errno\s*(\d+)", text, re.IGNORECASE)
        code = int(found.group(1)) if found else None
    reason = os.strerror(code) if code else (getattr(exc, "strerror", None) or text)
    return OSError(code or errno.EIO, reason, str(path))


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_table(path: Path, table) -> None:
    """Write a pandas DataFrame as Parquet, atomically."""
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


def read_table(path: Path):
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise GrokscopeError(f"{path}: no such table")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - unreadable input is reported, not raised as a bug
        raise GrokscopeError(f"{path}: not a readable Parquet table ({type(exc).__name__})") from None


def save_tensors(path: Path, tensors: dict, metadata: dict[str, str]) -> None:
    from safetensors.torch import save

    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    # Serialised in memory and written by us: safetensors' own save_file makes a second, 0600
    # temporary of its own, which ignores the umask and which a kill would leave behind.
    data = _canonical_header(save(contiguous, metadata=metadata))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _canonical_header(data: bytes) -> bytes:
    """safetensors bytes with the JSON header's keys sorted: the library orders them differently
    in every process, and a rerun after a kill must write the same bytes as an unbroken run."""
    length = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + length]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the data section starts 8-byte aligned, as the format pads it
    return len(header).to_bytes(8, "little") + header + data[8 + length:]


def load_tensors(path: Path, keys: Iterable[str] | None = None) -> tuple[dict, dict[str, str]]:
    """Tensors (all, or just ``keys``) and metadata of a safetensors file, read lazily."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            wanted = list(handle.keys()) if keys is None else list(keys)
            missing = [k for k in wanted if k not in handle.keys()]
            if missing:
                raise GrokscopeError(f"{path}: has no tensor {missing[0]!r}")
            return {k: handle.get_tensor(k) for k in wanted}, dict(handle.metadata() or {})
    except GrokscopeError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated / corrupt files are the user's data
        raise GrokscopeError(f"{path}: not a readable safetensors file ({exc})") from None


# --- runs ----------------------------------------------------------------------------------


def write_run_config(run_dir: Path, config: dict) -> None:
    import platform
    from datetime import datetime, timezone

    import torch

    from grokscope import __version__

    document = {"schema": RUN_SCHEMA, **config}
    document.setdefault("grokscope_version", __version__)
    document.setdefault("torch_version", torch.__version__)
    document.setdefault("python_version", platform.python_version())
    document.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_text(Path(run_dir) / RUN_FILE, json.dumps(document, indent=2) + "\n")


def read_run_config(run_dir: Path) -> dict:
    path = Path(run_dir) / RUN_FILE
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise GrokscopeError(f"{run_dir}: not a grokscope run (no {RUN_FILE})") from None
    except (OSError, ValueError) as exc:
        raise GrokscopeError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise GrokscopeError(f"{path}: holds a JSON {type(document).__name__}, not an object")
    if document.get("schema") != RUN_SCHEMA:
        raise GrokscopeError(f"{path}: schema {document.get('schema')!r}, expected {RUN_SCHEMA!r}")
    return document


def read_run(run_dir: Path):
    """The run's :class:`~grokscope.config.RunConfig`, rebuilt from its run.json."""
    from grokscope.config import RunConfig

    try:
        return RunConfig.from_dict(read_run_config(run_dir))
    except (KeyError, TypeError) as exc:
        raise GrokscopeError(f"{Path(run_dir) / RUN_FILE}: lacks a valid {exc} entry") from None


def is_unfinished_start(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds only what ``train`` writes before its first commit.

    That is run.json, history.parquet, checkpoints and grokscope's temporaries, but no
    resume.safetensors: a run killed (or stopped by a full disk) in its first writes, which a
    rerun may start over. Anything else in the folder means it is not ours to clear.
    """
    run_dir = Path(run_dir)
    if (run_dir / RESUME_FILE).exists():
        return False
    for entry in run_dir.iterdir():
        if entry.name in (RUN_FILE, HISTORY_FILE) and entry.is_file() and not entry.is_symlink():
            continue
        if _TEMPORARY.match(entry.name) and not entry.is_dir():
            continue
        if entry.name == CHECKPOINTS_DIR and entry.is_dir() and not entry.is_symlink():
            if all(
                (parse_step(e.name) is not None and e.name == step_file_name(parse_step(e.name)))
                or _TEMPORARY.match(e.name)
                for e in entry.iterdir()
            ):
                continue
        return False
    return True


def clear_unfinished_start(run_dir: Path) -> None:
    """Delete the checkpoints, history and dead writers' temporaries of an unfinished start."""
    run_dir = Path(run_dir)
    folder = run_dir / CHECKPOINTS_DIR
    for _, path in list_checkpoints(run_dir):
        path.unlink()
    (run_dir / HISTORY_FILE).unlink(missing_ok=True)
    clean_stale_temporaries(run_dir)
    if folder.is_dir():
        clean_stale_temporaries(folder)


def is_run_dir(path: Path) -> bool:
    return (Path(path) / RUN_FILE).is_file()


def run_name(run_dir: Path) -> str:
    return read_run_config(run_dir).get("name") or Path(run_dir).name


def read_history(run_dir: Path):
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        raise GrokscopeError(f"{run_dir}: no {HISTORY_FILE} (was the run trained by grokscope?)")
    return read_table(path).sort_values("step", kind="stable").reset_index(drop=True)


def write_history(run_dir: Path, history) -> None:
    write_table(Path(run_dir) / HISTORY_FILE, history)


# --- resume state --------------------------------------------------------------------------

RESUME_STEP_KEY = "grokscope.step"


def save_resume_state(run_dir: Path, step: int, tensors: dict) -> None:
    """resume.safetensors: the optimizer state after ``step`` updates (the run's commit point)."""
    save_tensors(Path(run_dir) / RESUME_FILE, tensors, {RESUME_STEP_KEY: str(step)})


def resume_step(run_dir: Path) -> int | None:
    """The step resume.safetensors describes, without reading its tensors; None if there is none."""
    from safetensors import safe_open

    path = Path(run_dir) / RESUME_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - a corrupt file is the user's data
        raise GrokscopeError(f"{path}: not a readable safetensors file ({exc})") from None
    return _step_of(path, metadata)


def load_resume_state(run_dir: Path) -> tuple[int, dict]:
    """(step, tensors) of resume.safetensors."""
    path = Path(run_dir) / RESUME_FILE
    tensors, metadata = load_tensors(path)
    return _step_of(path, metadata), tensors


def _step_of(path: Path, metadata: dict[str, str]) -> int:
    raw = metadata.get(RESUME_STEP_KEY)
    if raw is None:
        raise GrokscopeError(f"{path}: has no {RESUME_STEP_KEY!r} metadata (not written by grokscope train)")
    if not re.fullmatch(r"[0-9]+", raw):
        raise GrokscopeError(f"{path}: {RESUME_STEP_KEY!r} is {raw!r}, not a step number")
    return int(raw)


# --- checkpoints ---------------------------------------------------------------------------


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / step_file_name(step)


def save_checkpoint(run_dir: Path, step: int, state: dict) -> Path:
    path = checkpoint_path(run_dir, step)
    metadata = {"format": "pt", "grokscope.schema": FORMAT_SCHEMA, "grokscope.step": str(step)}
    save_tensors(path, state, metadata)
    return path


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every grokscope checkpoint of a run, sorted numerically by step."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue  # temporary files of an interrupted write
        step = parse_step(entry.name)
        if step is not None and entry.suffix == ".safetensors":
            found.append((step, entry))
    return sorted(found)


def load_checkpoint(path: Path) -> dict:
    state, _ = load_tensors(path)
    return state


# --- features ------------------------------------------------------------------------------


def features_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / FEATURES_DIR / step_file_name(step)


def samples_path(run_dir: Path) -> Path:
    return Path(run_dir) / FEATURES_DIR / SAMPLES_FILE


def list_features(run_dir: Path) -> list[tuple[int, Path]]:
    folder = Path(run_dir) / FEATURES_DIR
    if not folder.is_dir():
        return []
    found = [
        (parse_step(p.name), p)
        for p in folder.glob("step-*.safetensors")
        if parse_step(p.name) is not None
    ]
    return sorted(found)


def save_samples(path: Path, labels, split, index) -> None:
    """features/samples.safetensors: labels int64, split uint8 (0 train, 1 test), index int64."""
    import torch

    tensors = {
        "labels": torch.as_tensor(labels, dtype=torch.int64),
        "split": torch.as_tensor(split, dtype=torch.uint8),
        "index": torch.as_tensor(index, dtype=torch.int64),
    }
    save_tensors(path, tensors, {"format": "pt", "grokscope.schema": FORMAT_SCHEMA})


def load_samples_file(path: Path) -> dict:
    """labels, split and index of a samples.safetensors file, as numpy arrays."""
    tensors, _ = load_tensors(path, ["labels", "split", "index"])
    return {key: value.numpy() for key, value in tensors.items()}


# Features files hold float32 matrices (DESIGN.md). float16 halves their size and is only ever
# written on request (probe --storage float16); such files say so in this metadata key.
STORAGE_DTYPES = ("float32", "float16")
STORAGE_KEY = "grokscope.storage_dtype"


def save_features(path: Path, step: int, layers: dict, penultimate: str, extra: dict | None = None,
                  storage: str = "float32") -> None:
    """A features file: one matrix per layer (insertion order = input to output), float32 unless
    ``storage="float16"`` (recorded as ``grokscope.storage_dtype``)."""
    import torch

    if storage not in STORAGE_DTYPES:
        raise GrokscopeError(f"storage: unknown dtype {storage!r}; known: {', '.join(STORAGE_DTYPES)}")
    metadata = {
        "format": "pt",
        "grokscope.schema": FORMAT_SCHEMA,
        "grokscope.step": str(step),
        "grokscope.layers": json.dumps(list(layers)),
        "grokscope.penultimate": penultimate,
        **(extra or {}),
    }
    if storage != "float32":
        metadata[STORAGE_KEY] = storage
    dtype = getattr(torch, storage)
    save_tensors(path, {k: v.to(dtype) for k, v in layers.items()}, metadata)


def features_storage(metadata: dict[str, str]) -> str:
    """The dtype a features file's matrices are stored in (float32 unless its metadata says)."""
    return metadata.get(STORAGE_KEY, "float32")


def features_metadata(path: Path) -> dict[str, str]:
    """The metadata of a features file (all strings), without reading its data."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign files are the user's data
        raise GrokscopeError(f"{path}: not a readable grokscope features file ({type(exc).__name__})") from None


def features_header(path: Path) -> tuple[int, list[str], str]:
    """(step, layer keys input to output, penultimate key) of a features file, without its data."""
    metadata = features_metadata(path)
    try:
        return int(metadata["grokscope.step"]), json.loads(metadata["grokscope.layers"]), metadata["grokscope.penultimate"]
    except (KeyError, ValueError, TypeError) as exc:
        raise GrokscopeError(f"{path}: not a readable grokscope features file ({type(exc).__name__})") from None


# --- how a series was probed ---------------------------------------------------------------


def probe_record_path(features_dir: Path) -> Path:
    return Path(features_dir) / PROBE_RECORD_FILE


def write_probe_record(features_dir: Path, record: dict) -> None:
    """features/probe.json: how a series written by another tool was probed (model, data and its
    SHA-256, layers), so that measure, plot and report need no flags repeated."""
    from datetime import datetime, timezone

    from grokscope import __version__

    document = {"schema": PROBE_SCHEMA, **record, "grokscope_version": __version__,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_text(probe_record_path(features_dir), json.dumps(document, indent=2) + "\n")


def read_probe_record(path: Path) -> dict:
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise GrokscopeError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("schema") != PROBE_SCHEMA:
        raise GrokscopeError(f"{path}: not a grokscope probe record (schema {PROBE_SCHEMA!r})")
    for key in ("series", "layers", "penultimate"):
        if key not in document:
            raise GrokscopeError(f"{path}: lacks its {key!r} entry")
    return document


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (hex, first 16 digits, as run.json's split digest)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


# --- measures ------------------------------------------------------------------------------


# The columns every measure table has (DESIGN.md, "Measure tables"); the rest vary by family.
MEASURE_COLUMNS = ("run", "step", "metric", "value")


def measures_path(run_dir: Path, family: str) -> Path:
    return Path(run_dir) / MEASURES_DIR / f"{family}.parquet"


def read_measure_table(path: Path):
    """A measure table, refused by name when it lacks one of :data:`MEASURE_COLUMNS` (a table
    that cannot be told apart from another kind of file is never merged into or plotted)."""
    table = read_table(path)
    missing = [c for c in MEASURE_COLUMNS if c not in table.columns]
    if missing:
        raise GrokscopeError(f"{path}: not a grokscope measure table (no {missing[0]!r} column)")
    return table


def read_measures(run_dir: Path, families: Iterable[str] | None = None):
    """All measure tables of a run concatenated (an empty frame if it has none)."""
    import pandas as pd

    folder = Path(run_dir) / MEASURES_DIR
    paths = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if families is not None:
        wanted = set(families)
        paths = [p for p in paths if p.stem in wanted]
    tables = [read_measure_table(p) for p in paths]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


# How long a command waits for another process's short update of the same table before it says
# so (an update is a read, a merge and a write: well under a second for any table grokscope writes).
LOCK_NOTICE_S = 10.0


@contextlib.contextmanager
def table_lock(path: Path, on_wait=None) -> Iterator[None]:
    """Hold the update lock of ``path`` (a table several processes may update): ``.<name>.lock``
    beside it, locked with ``flock``.

    The kernel releases the lock of a process that dies, so a killed holder never blocks anyone;
    the lock file is removed on release (and a file left by a killed holder by the next one).
    ``on_wait(holder)`` is called once if another process holds the lock for more than
    :data:`LOCK_NOTICE_S` seconds; the wait goes on until it is released.
    """
    import fcntl
    import time

    path = Path(path)
    lock_path = path.with_name(f".{path.name}.lock")
    waited_since = time.monotonic()
    noticed = False
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:  # a read-only folder: say which table could not be updated
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not noticed and on_wait is not None and time.monotonic() - waited_since > LOCK_NOTICE_S:
                        noticed = True
                        on_wait(_lock_holder(fd))
                    time.sleep(0.05)
            # The holder before us may have removed the file after we opened it: then our lock is
            # on a name nobody else will open, and we start over on the current file.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock_path, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if not same:
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{_host_tag()} {os.getpid()}\n".encode())
            try:
                yield
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock_path)
            return
        finally:
            os.close(fd)


def _lock_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode(errors="replace").split()
    except OSError:
        return "another process"
    return f"process {text[1]}" if len(text) == 2 and text[0] == _host_tag() else "another process"


# --- inputs ---------------------------------------------------------------------------------

STDIN = "-"


class InputPaths:
    """Command-line paths, with ``-`` standing for the paths on standard input (one per line).

    Iterating gives batches of paths as they become available: the command-line paths first (all
    checked to exist before anything is done), then, for ``-``, the lines that have arrived on
    stdin each time the pipe is read, so a command reading ``-`` starts on the first path while
    the command before it is still writing the next. ``waited`` is the time spent waiting for
    stdin (not work). ``-`` that gives no path at all is an error: the command before the pipe
    wrote nothing, most likely because it failed.
    """

    def __init__(self, paths: Iterable[str]):
        self.raw = list(paths)
        self.waited = 0.0

    def __iter__(self) -> Iterator[list[Path]]:
        named = [Path(raw) for raw in self.raw if raw != STDIN]
        for path in named:
            _require_exists(path)
        if STDIN not in self.raw:
            if named:
                yield named
            return
        before = self.raw[: self.raw.index(STDIN)]
        after = [Path(raw) for raw in self.raw[self.raw.index(STDIN) + 1:] if raw != STDIN]
        if before:
            yield [Path(raw) for raw in before]
        received = 0
        for lines in self._stdin_batches():
            batch = [Path(line) for line in lines]
            for path in batch:
                _require_exists(path)
            received += len(batch)
            yield batch
        if received == 0:
            raise GrokscopeError("-: no paths on standard input (did the command before the pipe fail?)")
        if after:
            yield after

    def _stdin_batches(self) -> Iterator[list[str]]:
        import select
        import time

        try:
            fd = sys.stdin.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None  # a stream without a file descriptor (tests): read it whole
        if fd is None:
            lines = [line.strip() for line in sys.stdin.read().splitlines()]
            yield [line for line in lines if line]
            return
        pending = b""
        while True:
            started = time.monotonic()
            select.select([fd], [], [])  # wait for the next path (or the end of input)
            self.waited += time.monotonic() - started
            chunk = os.read(fd, 1 << 16)
            ended = not chunk
            pending += chunk
            # Take whatever else has arrived already, so one batch holds every path written so far.
            while not ended and select.select([fd], [], [], 0)[0]:
                chunk = os.read(fd, 1 << 16)
                ended = not chunk
                pending += chunk
            *complete, pending = pending.split(b"\n")
            if ended:
                complete.append(pending)
            lines = [os.fsdecode(line).strip() for line in complete]
            lines = [line for line in lines if line]
            if lines:
                yield lines
            if ended:
                return


def _require_exists(path: Path) -> None:
    if not path.exists():
        raise GrokscopeError(f"{path}: no such file or directory")


def expand_inputs(paths: Iterable[str]) -> list[Path]:
    """Command-line paths, with ``-`` replaced by every path on standard input (see
    :class:`InputPaths`, which gives them as they arrive)."""
    return [path for batch in InputPaths(paths) for path in batch]
