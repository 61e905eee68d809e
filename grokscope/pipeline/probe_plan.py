"""What ``probe`` is to do for one series: its context (for another tool's series, the record of
the model, data and layers it is probed with), the checkpoints chosen, and those whose features
are not stored yet."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from grokscope import formats
from grokscope.context import SeriesContext
from grokscope.discovery import Series
from grokscope.errors import GrokscopeError
from grokscope.features import holds_layers
from grokscope.layers import user_layer_keys
from grokscope.loading import transformers_config, trust_globals


@dataclass
class ProbePlan:
    """One series: its context, the checkpoints chosen, those still to compute, the layers."""

    context: SeriesContext
    chosen: list
    todo: list
    keys: list
    n_samples: int = 0


def with_home(found: list[Series], model, data, out: Path | None, already: int = 0) -> list[Series]:
    """The series to probe, ``--out`` giving a single foreign series its home (``already``: series
    that earlier batches of stdin named)."""
    foreign = [s for s in found if not s.is_run]
    if (model is not None or data is not None) and found and not foreign:
        raise GrokscopeError("--model/--data: only for series written by other tools; grokscope runs rebuild theirs from run.json")
    if out is None:
        return found
    if len(found) + already != 1 or found[0].is_run:
        raise GrokscopeError("--out: only for a single series written by another tool; a grokscope run's features live in RUN/features")
    return [replace(found[0], home=Path(out))]


def plan_series(found: Series, selection, layers, force: bool, model, data, allow_globals, say,
                storage: str = "float32") -> ProbePlan:
    """The plan of one series (``selection``: the parsed ``--steps``); steps asked for that have
    no checkpoint are warned about through ``say``."""
    for step in selection.missing([c.step for c in found.chosen()]):
        say.warn(f"{found.root}: no checkpoint at step {step}")
    chosen = found.chosen(selection.select)
    if found.is_run:
        context = SeriesContext.open(found)
    else:
        context = probe_context(found, model=model, data=data, layers=layers, allow_globals=allow_globals, force=force)
    keys, _ = context.layer_keys(layers or None)
    folder = found.features_dir
    todo = [c for c in chosen if force or not is_stored(folder / formats.steps.step_file_name(c.step), keys, storage)]
    return ProbePlan(context, chosen, todo, keys)


def is_stored(path: Path, keys, storage: str) -> bool:
    """Whether a features file holds the layers, in the dtype asked for (a float16 file does not
    count for a float32 probe, nor the other way round)."""
    if not holds_layers(path, keys):
        return False
    return formats.features.features_storage(formats.features.features_metadata(path)) == storage


def probe_context(series: Series, *, model: str | None = None, data: Path | None = None,
                  layers: Iterable[str] | None = None, allow_globals: Iterable[str] = (),
                  force: bool = False) -> SeriesContext:
    """The context ``probe`` works from: for another tool's series, its options, completed by
    the series' earlier record (so ``probe SERIES`` again needs no flags); the record to write
    is ``.record``. Options that contradict the record need ``--force``."""
    if series.is_run:
        if model is not None or data is not None:
            raise GrokscopeError("--model/--data: only for series written by other tools; "
                                 "grokscope runs rebuild theirs from run.json")
        return SeriesContext.open(series)
    earlier = SeriesContext.open(series).record
    allowed = sorted(set(allow_globals) | set((earlier or {}).get("allow_globals", [])))
    trust_globals(allowed)
    record = {"series": os.path.relpath(Path(series.root).resolve(), Path(series.features_dir).resolve()),
              "allow_globals": allowed}
    record["model"] = _model_source(series, model, earlier)
    record["data"] = _data_source(series, data, earlier)
    if earlier and not force:
        for key, option in (("model", "--model"), ("data", "--data")):
            if earlier.get(key) != record[key]:
                raise GrokscopeError(
                    f"{series.features_dir}: was probed with another {option} ({_describe(earlier[key])}); "
                    "pass --force to recompute every features file with the new one"
                )
    context = SeriesContext(series, record=record)
    chosen = list(layers) if layers else (earlier or {}).get("layers")
    record["layers"], record["penultimate"] = user_layer_keys(context.model(), chosen)
    return context


def _model_source(series: Series, model: str | None, earlier: dict | None) -> dict:
    if model is not None:
        module, _, attribute = model.rpartition(":")
        if module.endswith(".py"):
            return {"factory": f"{Path(module).resolve()}:{attribute}"}
        return {"factory": model, "import_path": str(Path.cwd())}
    if earlier:
        return earlier["model"]
    config = transformers_config(series.checkpoints[0]) if series.checkpoints else None
    if config is not None:
        return {"transformers": str(config.resolve())}
    raise GrokscopeError(
        f"{series.root}: not a grokscope run; probing another tool's series needs --model MODULE:FACTORY "
        "(a callable returning the untrained nn.Module) unless its checkpoints carry a Hugging Face config.json"
    )


def _data_source(series: Series, data: Path | None, earlier: dict | None) -> dict:
    if data is not None:
        if not Path(data).is_file():
            raise GrokscopeError(f"--data: {data} is not a file")
        return {"path": str(Path(data).resolve()), "sha256": formats.features.file_digest(data)}
    if earlier:
        return earlier["data"]
    raise GrokscopeError(
        f"{series.root}: not a grokscope run; probing another tool's series needs --data DATA.npz "
        "(arrays X, y and optionally split: 0 train, 1 test)"
    )


def _describe(source: dict) -> str:
    return source.get("factory") or source.get("transformers") or source.get("path") or str(source)
