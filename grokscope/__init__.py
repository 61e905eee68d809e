"""grokscope: post-hoc analysis of training dynamics from checkpoint series.

The commands that write files are functions too, with the command line's options by name::

    import grokscope

    runs = grokscope.train(out="runs", weight_decay=[0.1, 2]).paths
    grokscope.probe(runs, steps="every:10")
    tables = grokscope.measure(runs, metrics=["collapse", "o-info"]).paths

Each returns a :class:`~grokscope.pipeline.reporting.Written` (the paths, and what failed).

Importing the package runs nothing: ``python -m grokscope`` imports it before its Ctrl-C handler
is set (see ``__main__``), so the functions and ``__version__`` are imported on first use.
"""

__all__ = ["__version__", "measure", "probe", "train"]


def __getattr__(name: str):
    if name == "__version__":
        from grokscope.version import __version__ as found
    elif name == "measure":
        from grokscope.pipeline.measure import measure as found
    elif name == "probe":
        from grokscope.pipeline.probe import probe as found
    elif name == "train":
        from grokscope.pipeline.train import train as found
    else:
        raise AttributeError(f"module 'grokscope' has no attribute {name!r}")
    globals()[name] = found
    return found


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
