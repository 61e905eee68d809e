"""What ``measure`` is to do for one series: what its tables already hold, measured with the same
settings, and the steps each family still needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import pandas as pd

from grokscope import formats
from grokscope.discovery import Series
from grokscope.families import FEATURE_FAMILIES, SERIES_FAMILIES, applies
from grokscope.errors import GrokscopeError
from grokscope.families.checkpoints import CHECKPOINT_FAMILIES, POOLED_CHECKPOINT_FAMILIES
from grokscope.fingerprints import SOURCE_COLUMN, current_digest, recorded_source
from grokscope.families.options import MeasureOptions
from grokscope.pipeline.tables import same_params


@dataclass
class SeriesPlan:
    series: Series
    columns: dict  # run name and hyperparameters, repeated on every row
    existing: dict[str, pd.DataFrame]  # what the home's tables hold, measured with the same settings
    todo: dict[str, list[int]]  # family -> steps still to measure
    chosen: dict[str, list[int]] = field(default_factory=dict)  # family -> steps asked for
    stale: dict[str, set[int]] = field(default_factory=dict)  # family -> steps whose rows' features changed

    @property
    def n_steps(self) -> int:
        """Checkpoints to visit (the grokking family reads the history only)."""
        return len(set().union(*(s for f, s in self.todo.items() if f != "grokking")))

    def feature_todo(self) -> tuple[dict[str, list[int]], list[int]]:
        """(family -> steps, every step) of the feature families still to measure."""
        todo = {f: s for f, s in self.todo.items() if f in FEATURE_FAMILIES and s}
        return todo, sorted(set().union(*todo.values())) if todo else []

    def pooled_families(self) -> list[str]:
        """The checkpoint families to measure that run the model (shared out among workers)."""
        return [f for f in POOLED_CHECKPOINT_FAMILIES if self.todo.get(f)]

    def cheap_families(self) -> list[str]:
        """The checkpoint families to measure that only read the weights (measured in the command's process)."""
        return [f for f in CHECKPOINT_FAMILIES if self.todo.get(f) and f not in POOLED_CHECKPOINT_FAMILIES]


def plan_series(series: Series, families: Iterable[str], options: MeasureOptions,
                select: Callable[[list[int]], list[int]], force: bool, where_applicable: Iterable[str] = ()
                ) -> SeriesPlan:
    """What is already measured with the same parameters, and what remains.

    A table in the home that is not a measure table is refused by name (nothing is merged into
    it); one measured with other settings counts as empty (its rows are replaced, not mixed).
    ``where_applicable``: families left out of the plan for a series they do not apply to (see
    :data:`WHERE_THEY_APPLY`).
    """
    from grokscope.context import SeriesContext

    context = SeriesContext.open(series)
    families = [f for f in families if f not in set(where_applicable) or applies(f, context)]
    checkpoint_steps = [c.step for c in series.checkpoints]
    feature_steps = [s for s, _ in formats.features.list_features(series.home)]
    if options.layers:
        context.layer_keys(options.layers)  # an unknown --layer fails before any work
    needs_model = any(f == "complexity" for f in families) or (any(f in FEATURE_FAMILIES for f in families)
                                                                and not feature_steps)
    if needs_model and not context.can_compute:
        context.layer_keys()  # raises: names the series and the probe command to run
    existing: dict[str, pd.DataFrame] = {}
    todo: dict[str, list[int]] = {}
    stale: dict[str, set[int]] = {}
    sources: dict[tuple, str | None] = {}
    chosen: dict[str, list[int]] = {}
    for family in families:
        path = formats.tables.measures_path(series.home, family)
        table = formats.tables.read_measure_table(path) if path.is_file() else None
        existing[family] = table if table is not None and same_params(table, options.params(family)) \
            else pd.DataFrame()
        if family in SERIES_FAMILIES:
            chosen[family] = []
            todo[family] = [] if len(existing[family]) and not force else [-1]
            continue
        available = checkpoint_steps if family in CHECKPOINT_FAMILIES else \
            sorted(set(checkpoint_steps) | set(feature_steps))
        if series.selected is not None:
            available = [s for s in available if s in series.selected]
        done = set(existing[family]["step"]) if len(existing[family]) and not force else set()
        if done:
            stale[family] = stale_steps(existing[family], series, sources, with_features=family in FEATURE_FAMILIES)
            existing[family] = existing[family][~existing[family]["step"].isin(stale[family])]
            done -= stale[family]
        chosen[family] = select(available)
        todo[family] = [s for s in chosen[family] if s not in done]
    return SeriesPlan(series, context.columns, existing, todo, chosen, stale)


def stale_steps(table: pd.DataFrame, series: Series, sources: dict[tuple, str | None],
                with_features: bool = True) -> set[int]:
    """Steps whose rows were measured from another checkpoint than the step's checkpoint now
    (one read and hash of it) or, ``with_features`` (a feature family's rows), than the one its
    features file records now (a header read). ``sources`` caches the checkpoints' digests
    across families. Rows without a digest (older tables), and steps where neither can be told
    (a checkpoint gone or no longer readable, no features file), are kept."""
    if SOURCE_COLUMN not in table:
        return set()
    recorded = table.dropna(subset=[SOURCE_COLUMN]).groupby("step")[SOURCE_COLUMN].first()
    checkpoints = {c.step: c for c in series.checkpoints}
    stale = set()
    for step, digest in recorded.items():
        step = int(step)
        try:
            if (step, digest) not in sources:
                sources[step, digest] = current_digest(checkpoints.get(step), digest)
            found = {sources[step, digest]}
            path = formats.features.features_path(series.home, step)
            if with_features and path.is_file():
                found.add(recorded_source(path))
        except GrokscopeError:  # unreadable now: measuring the step says so
            continue
        if found - {None, digest}:
            stale.add(step)
    return stale
