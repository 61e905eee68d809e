"""Figures from grokscope's tables (plotnine), one module per family of figure.

``draw(kind, tables, options, metric=None)`` builds the ggplot for one kind; ``style.save``
writes it. Kinds: see :data:`KINDS`.
"""

from __future__ import annotations

from grokscope.errors import GrokscopeError

KINDS = {
    "curves": "train/test accuracy and loss against step (log), one line per run",
    "phases": "synergy and redundancy (normalised, smoothed) with test loss/accuracy and the grokking steps",
    "pareto": "synergy against redundancy, points coloured by step",
    "info-plane": "nHSIC(T;X) against nHSIC(T;Y) per layer, coloured by step",
    "collapse": "RNC1 on train and test splits beside test accuracy",
    "sweep": "phase diagram over two hyperparameters (--x, --y)",
    "fourier": "embedding Fourier spectrum over steps, and restricted/excluded loss beside train/test loss",
    "metric": "any measured quantity against step (metric NAME)",
    "complexity": "complexity against step with the grokking steps marked; size against tolerance with --steps",
    "subnet": "test and train accuracy of a run, its synergistic sub-network and the inverse",
    "llc": "local learning coefficient against step, chain spread as a ribbon, the grokking steps marked",
    "alpha": "power-law exponent alpha of each weight matrix's spectrum against step",
    "early-synergy": "synergy curves with the first peak before memorisation + --k, coloured by outcome",
    "onsets": "each measure's peak, steepest change and change point relative to the generalisation step, over seeds",
}


def draw(kind: str, tables, options, metric: str | None = None):
    from grokscope.plotting import complexity, early_synergy, fourier, info_plane, lines, llc, oinfo, onsets, subnet, sweep

    builders = {
        "curves": lines.curves,
        "phases": oinfo.phases,
        "pareto": oinfo.pareto,
        "info-plane": info_plane.info_plane,
        "collapse": lines.collapse,
        "sweep": sweep.sweep,
        "complexity": complexity.complexity,
        "fourier": fourier.fourier,
        "subnet": subnet.subnet,
        "early-synergy": early_synergy.early_synergy,
        "onsets": onsets.onsets,
        "llc": llc.llc,
        "alpha": llc.alpha,
    }
    if kind == "metric":
        if not metric:
            raise GrokscopeError("metric: name the quantity to plot (grokscope plot metric NAME INPUTS...)")
        return lines.metric(tables, options, metric)
    if kind not in builders:
        raise GrokscopeError(f"KIND: unknown figure {kind!r}; known: {', '.join(KINDS)}")
    return builders[kind](tables, options)
