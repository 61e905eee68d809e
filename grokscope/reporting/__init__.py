"""What ``grokscope report`` shows besides its rows: the columns a reader needs
(:mod:`~grokscope.reporting.columns`) and the one-page HTML view of a sweep
(:mod:`~grokscope.reporting.html`)."""
