"""grokscope: post-hoc analysis of training dynamics from checkpoint series.

The commands that write files are functions too, with the command line's options by name::

    import grokscope

    runs = grokscope.train(out="runs", weight_decay=[0.1, 2]).paths
    grokscope.probe(runs, steps="every:10")
    grokscope.measure(runs, metrics=["collapse", "o-info"])
    measures = grokscope.load("runs/")        # the tables, as one DataFrame (docs/notebook.md)

``train``, ``probe`` and ``measure`` return a :class:`~grokscope.pipeline.reporter.Written`
(the paths, and what failed); ``load`` and ``runs`` read the tables into pandas.

Importing the package runs nothing: ``python -m grokscope`` imports it before its Ctrl-C handler
is set (see ``__main__``), and ``import grokscope`` stays free of pandas and torch; each name is
imported on first use.
"""

__all__ = ["__version__", "load", "measure", "probe", "runs", "train"]


def __getattr__(name: str):
    if name in __all__:
        # Before the names' modules load torch (grokscope.reproducibility says why).
        from grokscope.reproducibility import make_reproducible

        make_reproducible()
    if name == "__version__":
        from grokscope.version import __version__ as found
    elif name == "measure":
        from grokscope.pipeline.measure import measure as found
    elif name == "probe":
        from grokscope.pipeline.probe import probe as found
    elif name == "train":
        from grokscope.pipeline.train import train as found
    elif name == "load":
        from grokscope.notebook import load as found
    elif name == "runs":
        from grokscope.notebook import runs as found
    else:
        raise AttributeError(f"module 'grokscope' has no attribute {name!r}")
    globals()[name] = found
    return found


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
