"""Ctrl-C ignored by the worker processes of a local Dask cluster from their first instant.

Ctrl-C reaches the whole process group; the command alone must react (save what was done, say
one line, exit 130), not every worker with a traceback. A worker that inherits an ignored SIGINT
keeps it, but a command that ignores SIGINT while its cluster starts (tens of seconds on a busy
machine) loses the user's Ctrl-C; and a blocked signal does not survive the workers' spawn. So
the workers ignore it themselves, as the first thing their interpreter does: ``dask_cluster``
adds a warnings filter naming :class:`WorkerCtrlC` to ``PYTHONWARNINGS``, and Python imports this
module to resolve the filter's category while it starts, before multiprocessing or Dask run.

Imported for that filter only; importing it elsewhere would ignore Ctrl-C in that process.
"""

import signal


class WorkerCtrlC(Warning):
    """Never issued: naming it in a warnings filter is what imports this module in a worker."""


signal.signal(signal.SIGINT, signal.SIG_IGN)
