"""The orchestration layer of ``train``, ``probe`` and ``measure``: one function per command,
callable from Python with the command line's options (``grokscope.train``, ``grokscope.probe``,
``grokscope.measure``), which the CLI only parses options for and prints through.

Each command plans (what is to do, what is already stored), makes tasks (a run; consecutive
checkpoints of one series), has :mod:`grokscope.execution` run them where the user asked, and
writes as it goes (tables saved every few seconds, files atomically); it says what it does to a
:class:`~grokscope.pipeline.reporter.Reporter` and returns a
:class:`~grokscope.pipeline.reporter.Written`. The command modules (``train``, ``probe``,
``measure``) import nothing heavy at module level: their functions import torch and pandas when
called.
"""
