"""Whether a checkpoint holds the series' architecture: the check the weight-reading families
make before they measure it."""

from __future__ import annotations

from grokscope.discovery import Series
from grokscope.errors import GrokscopeError


def reference_shapes(layout, series: Series) -> tuple[str, dict[str, tuple]] | None:
    """(what it is, name -> shape) that every checkpoint of the series must match: the model's
    parameters when the series has a model, else its first readable checkpoint's."""
    from grokscope.loading import load_state

    if layout.model is not None:
        return "the series' model", {k: tuple(v.shape) for k, v in layout.model.state_dict().items()}
    for checkpoint in series.checkpoints:
        try:
            state = load_state(checkpoint)
        except GrokscopeError:
            continue
        return f"its first checkpoint (step {checkpoint.step})", {
            k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    return None


def check_architecture(checkpoint, state: dict, reference) -> None:
    if reference is None:
        return
    what, shapes = reference
    have = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    missing = sorted(set(shapes) - set(have))
    if missing and what.startswith("its first"):
        missing = []  # a foreign series' checkpoints may differ in optional extras; shapes decide
    extra = sorted(set(have) - set(shapes))
    differs = sorted(k for k in set(have) & set(shapes) if have[k] != shapes[k])
    if differs:
        name = differs[0]
        detail = f"{name} is {list(have[name])}, {what} has {list(shapes[name])}"
    elif missing:
        detail = f"it lacks {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    elif extra and not what.startswith("its first"):
        detail = f"it has {extra[0]}, which {what} lacks"
    else:
        return
    raise GrokscopeError(f"{checkpoint.path}: another architecture than the series' ({detail}); skipped")


def fitted_states(layout, series: Series, steps, device="cpu"):
    """(step, state, problems, digest) of each step's checkpoint under the model's names, checked
    against the series' architecture, with the checkpoint's digest (its rows' ``source_sha256``);
    a checkpoint that cannot be read or does not fit is (step, None, [its problem], None). What
    the families measured from the weights alone walk."""
    from grokscope.families.problems import Problem
    from grokscope.loading import checkpoint_digest, load_state

    checkpoints = {c.step: c for c in series.checkpoints}
    reference = reference_shapes(layout, series)
    for step in steps:
        try:
            # Hashed before it is read: a checkpoint rewritten in between is stale next time.
            digest = checkpoint_digest(checkpoints[step])
            state = layout.fit(load_state(checkpoints[step], device=device))
            check_architecture(checkpoints[step], state, reference)
        except GrokscopeError as exc:
            yield step, None, [Problem("error", str(exc), step=step)], None
            continue
        yield step, state, [], digest
