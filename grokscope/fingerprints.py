"""What a features file was made from, and whether that still holds.

Every features file probe writes records, in its safetensors metadata (schema 1, new keys):

- ``grokscope.checkpoint_sha256``: SHA-256 of the checkpoint's bytes, hashed while probe reads
  them anyway (:func:`grokscope.loading.load_state_and_digest`);
- ``grokscope.data_sha256``: the series' data (:meth:`grokscope.context.SeriesContext.data_fingerprint`);
- ``grokscope.layers`` and ``grokscope.step``, which every features file always had.

Checking a file against its checkpoint costs one read and hash of the checkpoint's bytes
(docs/reliability.md gives the figures). No size or modification time gates it: a copied file
can carry both, and recording the inode would make a series' files differ from its copy's.
"""

from __future__ import annotations

from pathlib import Path

from grokscope import formats
from grokscope.errors import GrokscopeError
from grokscope.loading import Checkpoint, checkpoint_digest, load_state

CHECKPOINT_KEY = "grokscope.checkpoint_sha256"
DATA_KEY = "grokscope.data_sha256"
# The column of a feature family's measure rows naming the checkpoint digest its features came from.
SOURCE_COLUMN = "source_sha256"


def fingerprint_metadata(digest: str, data: str | None) -> dict[str, str]:
    """The metadata entries a features file records about what it was made from."""
    return {CHECKPOINT_KEY: digest, **({DATA_KEY: data} if data is not None else {})}


def mismatch(path: Path, step: int, checkpoint: Checkpoint | None, data: str | None) -> str | None:
    """What no longer matches in a features file, or None: its recorded step against ``step``
    (the step its name says), then its checkpoint and its data against the series' now. A file
    from an older probe, which records no fingerprint, matches as far as can be told (its step
    is still checked); so does one whose checkpoint is gone or no longer readable (its stored
    features are used, and what needs the weights names the checkpoint)."""
    metadata = formats.features.features_metadata(path)
    recorded_step = metadata.get("grokscope.step")
    if recorded_step != str(step):
        return f"its grokscope.step is {recorded_step}, not the step {step} its name says"
    digest = metadata.get(CHECKPOINT_KEY)
    if digest is None:
        return None
    now = current_digest(checkpoint, digest)
    if now is not None and now != digest:
        return f"made from another checkpoint than {checkpoint.path} (sha256 {digest}, the checkpoint's is {now})"
    recorded_data = metadata.get(DATA_KEY)
    if data is not None and recorded_data is not None and recorded_data != data:
        return f"made from other data (sha256 {recorded_data}, the series' data is {data})"
    return None


def current_digest(checkpoint: Checkpoint | None, recorded: str | None) -> str | None:
    """A checkpoint's digest now, or None when it cannot be compared with ``recorded``: it is
    gone, or it changed and is no longer readable (a truncated file is a broken checkpoint, not
    another one; reading it in full is paid only when its digest changed)."""
    if checkpoint is None:
        return None
    now = checkpoint_digest(checkpoint)
    if now != recorded:
        try:
            load_state(checkpoint)
        except GrokscopeError:
            return None
    return now


def recorded_source(path: Path) -> str | None:
    """The checkpoint digest a features file records (None for an older probe's file)."""
    return formats.features.features_metadata(path).get(CHECKPOINT_KEY)
