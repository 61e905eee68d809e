"""The one exception type for user mistakes.

Anything raised as :class:`GrokscopeError` is shown by the CLI as a single line on stderr
(``error: <message>``) with a non-zero exit code; anything else is a bug and keeps its traceback.
Messages name the file or option at fault and say what is wrong with it.
"""


class GrokscopeError(ValueError):
    """A problem with the user's input (a file, an option, a value), not with grokscope."""
