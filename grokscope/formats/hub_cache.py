"""The Hugging Face Hub cache: what ``from_pretrained(repo, revision="step1000")`` leaves behind.

::

    <cache>/models--ORG--NAME/
        blobs/<sha>                       the files' contents (git sha1, or sha256 for LFS files)
        refs/step1000                     a file holding the commit the revision resolved to
        snapshots/<commit>/config.json    symlinks into blobs/ (copies where links are not allowed)
        snapshots/<commit>/model.safetensors

A repository folder is a checkpoint series when its revisions are named by step (Pythia's
``step0`` ... ``step143000``): the step comes from the ref's name, the checkpoint is the
snapshot it points to. Read by hand (no ``huggingface_hub`` needed): the layout is the one
``huggingface_hub.file_download`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

REPO_PREFIXES = ("models--", "datasets--", "spaces--")
SEPARATOR = "--"
BLOBS, REFS, SNAPSHOTS = "blobs", "refs", "snapshots"


@dataclass
class Revisions:
    """A cache repository's revisions: ``named`` ref name -> snapshot folder, for refs whose
    snapshot is there; ``dangling`` refs whose snapshot is not; ``unnamed`` snapshots no ref
    points to (downloaded by commit hash)."""

    named: dict[str, Path] = field(default_factory=dict)
    dangling: list[str] = field(default_factory=list)
    unnamed: list[str] = field(default_factory=list)


def is_repo(path: Path) -> bool:
    """Whether ``path`` is a cache repository folder (``refs/`` and ``snapshots/`` inside)."""
    path = Path(path)
    return path.is_dir() and (path / REFS).is_dir() and (path / SNAPSHOTS).is_dir()


def repo_of(path: Path) -> Path | None:
    """The cache repository that ``path`` (the repository, its ``snapshots/``, ``refs/`` or
    ``blobs/``, or one snapshot) belongs to, or None."""
    path = Path(path)
    for candidate in (path, path.parent, path.parent.parent):
        if is_repo(candidate):
            inside = path.relative_to(candidate).parts
            if not inside or inside[0] in (BLOBS, REFS, SNAPSHOTS):
                return candidate
    return None


def repo_id(repo: Path) -> str:
    """``ORG/NAME`` of ``models--ORG--NAME`` (the folder's name where it is not one)."""
    name = Path(repo).name
    for prefix in REPO_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):].replace(SEPARATOR, "/")
    return name


def revisions(repo: Path) -> Revisions:
    """Every ref of a cache repository (``refs/main``, ``refs/step1000``, ``refs/pr/1``) and the
    snapshot it resolved to."""
    repo = Path(repo)
    found = Revisions()
    pointed = set()
    for ref in sorted(p for p in (repo / REFS).rglob("*") if p.is_file() and not p.name.startswith(".")):
        name = ref.relative_to(repo / REFS).as_posix()
        try:
            commit = ref.read_text().strip()
        except OSError:
            found.dangling.append(name)
            continue
        snapshot = repo / SNAPSHOTS / commit
        if commit and snapshot.is_dir():
            found.named[name] = snapshot
            pointed.add(commit)
        else:
            found.dangling.append(name)
    found.unnamed = sorted(p.name for p in (repo / SNAPSHOTS).iterdir() if p.is_dir() and p.name not in pointed)
    return found
