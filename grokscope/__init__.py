__version__ = "0.1.0"

# The notebook API (docs/notebook.md), imported on first use: `import grokscope` and the command
# line stay free of pandas and torch.
_NOTEBOOK_NAMES = ("load", "runs")


def __getattr__(name: str):
    if name in _NOTEBOOK_NAMES:
        from grokscope import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'grokscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_NOTEBOOK_NAMES])
