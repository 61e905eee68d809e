"""grokscope: post-hoc analysis of training dynamics from checkpoint series.

The commands that write files are functions too, with the command line's options by name::

    import grokscope

    runs = grokscope.train(out="runs", weight_decay=[0.1, 2]).paths
    grokscope.probe(runs, steps="every:10")
    tables = grokscope.measure(runs, metrics=["collapse", "o-info"]).paths

Each returns a :class:`~grokscope.pipeline.reporting.Written` (the paths, and what failed).
Importing grokscope loads nothing heavy: each function imports torch and pandas when called.
"""

from grokscope.pipeline.measure import measure
from grokscope.pipeline.probe import probe
from grokscope.version import __version__

__all__ = ["__version__", "measure", "probe"]
