"""The one exception type for user mistakes, and the one warning type.

Anything raised as :class:`GrokscopeError` is shown by the CLI as a single line on stderr
(``error: <message>``) with a non-zero exit code; anything else is a bug and keeps its traceback.
Messages name the file or option at fault and say what is wrong with it. An OSError (disk full,
read-only folder, no permission) is shown as one line too, by :func:`describe_os_error`.
"""

import os


class GrokscopeError(ValueError):
    """A problem with the user's input (a file, an option, a value), not with grokscope."""


class GrokscopeWarning(UserWarning):
    """Something the user should know about their input that does not stop the command (steps
    that may be epochs, files skipped); the CLI shows each once as ``warning: <message>``."""


def describe_os_error(exc: OSError) -> str:
    """``<path>: <reason>`` for an OSError, the path being the file the system refused."""
    reason = exc.strerror or str(exc)
    path = exc.filename2 if exc.filename2 is not None else exc.filename
    if path is None:
        return reason
    return f"{os.fsdecode(path) if isinstance(path, (str, bytes)) else path}: {reason}"


def similar_names(name: str, names, limit: int = 3) -> list[str]:
    """The ``limit`` entries of ``names`` closest to ``name`` by difflib's ratio (the ones worth a
    "did you mean"), best first; none when nothing is close."""
    import difflib

    return difflib.get_close_matches(name, list(dict.fromkeys(names)), n=limit, cutoff=0.6)


def did_you_mean(name: str, names) -> str:
    """``" (did you mean 'x'?)"`` (or ``'x' or 'y'``) for the names close to ``name``, else ``""``."""
    close = similar_names(name, names)
    return f" (did you mean {' or '.join(repr(n) for n in close)}?)" if close else ""


def listing(names, most: int = 12) -> str:
    """``names`` comma-separated, the first ``most`` of them and how many more there are."""
    names = list(names)
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names) - most} more)" if len(names) > most else "")
