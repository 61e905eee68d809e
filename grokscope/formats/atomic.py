"""Writing files safely: atomic writes, their temporaries, and the update lock of shared tables.

Writes are atomic: a temporary file in the same folder, then ``os.replace``, so a killed process
never leaves a truncated file under a real name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from pathlib import Path
from typing import Iterator

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
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{_host_tag()} {os.getpid()}\n".encode())
            except OSError as exc:  # a full disk: say which table, not its lock file
                with contextlib.suppress(OSError):
                    os.unlink(lock_path)
                raise OSError(exc.errno, exc.strerror, str(path)) from None
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


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a grokscope temporary (of a live writer or a killed one)."""
    return _TEMPORARY.match(name) is not None


def refuse_symlinked_folder(folder: Path) -> None:
    """A series' ``features/`` or ``measures/`` folder that is a symlink is refused before anything
    is written into it: files would land wherever it points, outside the series (docs/reliability.md)."""
    from grokscope.errors import GrokscopeError

    if Path(folder).is_symlink():
        raise GrokscopeError(f"{folder}: is a symlink (to {os.readlink(folder)}); grokscope writes only into a "
                             "real folder of the series; replace the link by the folder it points to")
