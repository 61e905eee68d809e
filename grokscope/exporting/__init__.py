"""Measures in other tools' formats (``grokscope export``): :mod:`~grokscope.exporting.tensorboard`."""
