"""What every figure shares: options, theme, colour and facet mappings, checks, and saving."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd

from grokscope import formats
from grokscope.errors import GrokscopeError, GrokscopeWarning

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
#: A numeric column with at most this many distinct values is coloured as categories.
MAX_DISCRETE_LEVELS = 8


@dataclass
class FigureOptions:
    color: str | None = None
    facet: str | None = None
    width: float = 7.0
    height: float = 4.5
    dpi: int = 150
    # kind-specific
    x: str = "weight_decay"
    y: str = "train_fraction"
    smooth: float = 0.1
    threshold: float = 0.99
    delay: int = 1000
    # complexity: checkpoints of the rate-distortion view (None: the complexity curve).
    steps: tuple[int, ...] | None = None
    # early-synergy: the window ends at the memorisation step + k (None: the figure's default).
    k: int | None = None


def figure_format(path: Path) -> str:
    try:
        return FORMATS[Path(path).suffix.lower()]
    except KeyError:
        raise GrokscopeError(
            f"--output: {path} has no known figure extension (use .png, .svg or .pdf)"
        ) from None


@contextlib.contextmanager
def quiet_plotting() -> Iterator[None]:
    """Agg backend, and plotnine / matplotlib warnings kept off the user's screen.

    The warnings these libraries raise while drawing (rows with missing values removed, a
    guide with no data) are about the figure's internals, not about the user's input;
    grokscope's own warnings are shown.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", GrokscopeWarning)  # grokscope's own are about the user's input
        yield


def save(plot, path: Path, options: FigureOptions) -> Path:
    """Render ``plot`` to ``path`` (format by extension) atomically: temporary name, then rename."""
    path = Path(path)
    fmt = figure_format(path)
    if not path.parent.exists():
        raise GrokscopeError(f"--output: folder {path.parent} does not exist")
    with quiet_plotting(), formats.atomic.atomic_path(path) as tmp:
        # plotnine infers the format from the extension; the temporary name has none of its own.
        plot.save(tmp, format=fmt, width=options.width, height=options.height, units="in",
                  dpi=options.dpi, verbose=False, limitsize=False)
    return path


def theme(options: FigureOptions):
    import plotnine as p9

    return p9.theme_bw(base_size=9) + p9.theme(
        figure_size=(options.width, options.height),
        legend_key_size=10,
        strip_background=p9.element_rect(fill="#eeeeee"),
        panel_grid_minor=p9.element_blank(),
    )


def require_columns(frame: pd.DataFrame, columns, what: str) -> None:
    """A one-line error naming the first of ``columns`` that ``frame`` lacks."""
    for column in columns:
        if column is not None and column not in frame.columns:
            raise GrokscopeError(f"{what}: no column {column!r} in the table")


def require_rows(frame: pd.DataFrame, what: str) -> None:
    if frame.empty:
        raise GrokscopeError(f"nothing to plot: no {what} (after --where, if given)")


def require_option_columns(frame: pd.DataFrame, options: FigureOptions) -> None:
    for flag, column in (("--color", options.color), ("--facet", options.facet)):
        if column is not None and column not in frame.columns:
            raise GrokscopeError(f"{flag}: no column {column!r} in the table")


def positive_steps(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows at step > 0: the step axis is logarithmic."""
    return frame[frame["step"] > 0]


def as_levels(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """``column`` as an ordered categorical when it has few values (numeric order kept)."""
    values = frame[column]
    if pd.api.types.is_numeric_dtype(values) and values.nunique() > MAX_DISCRETE_LEVELS:
        return frame
    levels = sorted(values.dropna().unique(), key=_sort_key)
    frame = frame.copy()
    frame[column] = pd.Categorical(values, categories=levels, ordered=True)
    return frame


def colour_scale(frame: pd.DataFrame, column: str):
    """A qualitative palette for a few categories (plotnine's default hue scale for more)."""
    import plotnine as p9

    values = frame[column]
    if isinstance(values.dtype, pd.CategoricalDtype) and len(values.cat.categories) <= MAX_DISCRETE_LEVELS:
        return p9.scale_color_brewer(type="qual", palette="Dark2")
    return None


def facet(options: FigureOptions, default: str | None = None, scales: str = "fixed"):
    """facet_wrap on --facet (labelled 'column: value'), else on ``default``, else nothing."""
    import plotnine as p9

    column = options.facet or default
    if column is None:
        return None
    return p9.facet_wrap(column, scales=scales, labeller="label_both" if options.facet else "label_value")


def log_step_axis():
    import plotnine as p9

    return p9.scale_x_log10(name="step")


def add(plot, *layers):
    for layer in layers:
        if layer is not None:
            plot = plot + layer
    return plot


def _sort_key(value):
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))
