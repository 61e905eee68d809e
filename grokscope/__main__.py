"""``python -m grokscope``, and the ``grokscope`` console script's entry point.

Kept free of imports so that Ctrl-C while the CLI's libraries load ends the process with one
line and exit code 130 instead of a traceback: nothing has been written yet, so leaving at once
is safe. ``grokscope.cli.main`` takes over the signal once it runs.
"""

import os
import signal


def _leave_at_once(signum, frame):
    os.write(2, b"error: interrupted before anything was written\n")
    os._exit(130)


def main() -> None:
    signal.signal(signal.SIGINT, _leave_at_once)
    # Before anything can load torch: MKL reads its reproducibility mode once, at its first call.
    from grokscope.reproducibility import make_reproducible

    make_reproducible()
    from grokscope.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
