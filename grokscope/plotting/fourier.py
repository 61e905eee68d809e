"""The ``fourier`` figure: Nanda et al.'s (2023) Fourier progress measures of a modular-arithmetic run."""

from __future__ import annotations

import numpy as np
import pandas as pd

from grokscope.errors import GrokscopeError
from grokscope.plotting import style
from grokscope.plotting.data import Tables

# The embedding's parameter: the transformer's token embedding, or the MLP's first layer.
EMBEDDING_LAYERS = ("embed.weight", "layers.0.weight")
LOSS_COLOURS = {"loss": "#222222", "restricted loss": "#1f77b4", "excluded loss": "#d62728"}


def fourier(tables: Tables, options: style.FigureOptions):
    r"""The embedding's Fourier spectrum over steps (a heatmap) above the losses (log-log).

    Top: the norm of each frequency of the embedding (``fourier_norm``) at every checkpoint,
    one row per frequency. Bottom: train and test loss (the history), and restricted and
    excluded loss on both splits (``restricted_loss``, ``excluded_loss``), after Nanda et al.
    (2023), Fig. 5: restricted loss falls before test loss, excluded loss rises while the
    Fourier circuit forms. One column per run (or per ``--facet`` value).
    """
    if options.color:
        raise GrokscopeError("--color: the fourier figure colours by norm and by quantity; use --facet to split it")
    norms = tables.metric("fourier_norm")
    if not norms.empty and "layer" in norms.columns:
        norms = norms[norms["layer"].isin(EMBEDDING_LAYERS)]
    style.require_rows(norms, "rows with metric 'fourier_norm' of an embedding (a fourier table)")
    style.require_columns(norms, ["frequency"], "fourier")
    style.require_option_columns(norms, options)
    spectrum = _tiles(style.positive_steps(norms))
    style.require_rows(spectrum, "fourier_norm rows at steps > 0 (the step axis is logarithmic)")
    losses = _losses(tables, set(norms["run"]))
    facet_column = options.facet or "run"
    top = _heatmap(spectrum, options, facet_column)
    if losses.empty:
        return top
    return top / _loss_lines(losses, options, facet_column)


def _tiles(norms: pd.DataFrame) -> pd.DataFrame:
    """One rectangle per (run, step, frequency), spanning halfway (in log step) to its neighbours."""
    parts = []
    for _, run in norms.groupby("run", sort=False):
        steps = np.sort(run["step"].unique()).astype(float)
        logs = np.log10(steps)
        # A lone step gets a tile a tenth of a decade wide.
        gaps = np.diff(logs) if len(logs) > 1 else np.array([0.1])
        edges = np.concatenate([[logs[0] - gaps[0] / 2], (logs[:-1] + logs[1:]) / 2, [logs[-1] + gaps[-1] / 2]])
        lookup = pd.DataFrame({"step": steps, "xmin": 10 ** edges[:-1], "xmax": 10 ** edges[1:]})
        parts.append(run.assign(step=run["step"].astype(float)).merge(lookup, on="step"))
    tiles = pd.concat(parts, ignore_index=True) if parts else norms.iloc[0:0]
    return tiles.assign(ymin=tiles["frequency"] - 0.5, ymax=tiles["frequency"] + 0.5)


def _losses(tables: Tables, runs: set) -> pd.DataFrame:
    frames = []
    for metric, name in (("restricted_loss", "restricted loss"), ("excluded_loss", "excluded loss")):
        rows = tables.metric(metric)
        if not rows.empty:
            frames.append(rows.assign(quantity=name))
    history = tables.history
    if not history.empty and {"train_loss", "test_loss"} <= set(history.columns):
        history = history[history["run"].isin(runs)]
        for column, split in (("train_loss", "train"), ("test_loss", "test")):
            frames.append(history.assign(value=history[column], split=split, quantity="loss"))
    if not frames:
        return pd.DataFrame()
    losses = pd.concat(frames, ignore_index=True)
    losses = style.positive_steps(losses.dropna(subset=["value"]))
    losses = losses[losses["value"] > 0]
    return losses.assign(quantity=pd.Categorical(losses["quantity"], categories=list(LOSS_COLOURS)),
                         line=losses["run"].astype(str) + "|" + losses["quantity"].astype(str) + "|"
                         + losses["split"].astype(str))


def _heatmap(spectrum: pd.DataFrame, options: style.FigureOptions, facet_column: str):
    import plotnine as p9

    return (
        p9.ggplot(spectrum, p9.aes(xmin="xmin", xmax="xmax", ymin="ymin", ymax="ymax", fill="value"))
        + p9.geom_rect()
        + p9.scale_fill_cmap("viridis")
        + style.log_step_axis()
        + p9.scale_y_continuous(expand=(0, 0))
        + p9.labs(y="frequency of the embedding", fill="norm")
        # Runs of different p have different frequencies.
        + _facet(options, facet_column, scales="free_y")
        + style.theme(options)
    )


def _loss_lines(losses: pd.DataFrame, options: style.FigureOptions, facet_column: str):
    import plotnine as p9

    return (
        p9.ggplot(losses, p9.aes("step", "value", color="quantity", linetype="split", group="line"))
        + p9.geom_line(size=0.6)
        + p9.scale_color_manual(values=LOSS_COLOURS, drop=True)
        + style.log_step_axis()
        + p9.scale_y_log10(name="cross-entropy")
        + p9.labs(color="", linetype="")
        + _facet(options, facet_column)
        + style.theme(options)
    )


def _facet(options: style.FigureOptions, column: str, scales: str = "fixed"):
    import plotnine as p9

    return p9.facet_wrap(column, nrow=1, scales=scales, labeller="label_both" if options.facet else "label_value")
