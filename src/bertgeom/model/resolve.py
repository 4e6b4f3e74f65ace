"""Naming a model: a directory, or a Hugging Face hub id found in the local cache, offline.

``--model`` takes a directory or ``ORG/NAME[@REVISION]`` (a branch, a tag or a full commit
hash; default ``main``). An existing path of that name wins. An id is looked up with
huggingface_hub's own offline resolution (``snapshot_download(..., local_files_only=True)``,
which reads ``refs/`` and ``snapshots/`` of the cache that ``HF_HUB_CACHE`` / ``HF_HOME``
name), never the network: bertgeom runs where the models were copied, not where they were
downloaded. The manifest records what was resolved (:meth:`ResolvedModel.to_json`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertgeom.errors import ModelError, first_line

DEFAULT_REVISION = "main"


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's files are: ``directory``; for a hub id also ``repo_id``, the
    ``revision`` asked for and the ``commit`` it resolved to (the snapshot's name)."""

    directory: Path
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None

    @property
    def name(self) -> str:
        """How the user named it: the hub id (with its revision when not ``main``) or the
        directory."""
        if self.repo_id is None:
            return str(self.directory)
        suffix = f"@{self.revision}" if self.revision not in (None, DEFAULT_REVISION) else ""
        return f"{self.repo_id}{suffix}"

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.directory.resolve()),
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
        }


ModelName = str | os.PathLike[str] | ResolvedModel
"""What ``load_model`` and ``load_classifier`` take."""


def hub_cache() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it once,
    at import): ``HF_HUB_CACHE``, ``HUGGINGFACE_HUB_CACHE``, else ``HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub`` or ``~/.cache/huggingface/hub``."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.path.expandvars(os.environ[variable])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface",
    )
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def _hub_id(text: str) -> tuple[str, str | None] | None:
    """``(repo_id, revision)`` when ``text`` reads as ``ORG/NAME[@REVISION]``, else None."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo_id, at, revision = text.partition("@")
    # NAME alone too: the hub's older canonical ids (bert-base-uncased) are cached as such
    if repo_id.count("/") > 1 or repo_id.startswith((".", "/", "~")) or (at and not revision):
        return None
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return None
    return repo_id, revision or None


def resolve_model(name: ModelName) -> ResolvedModel:
    """The directory of a model named by a path or a cached hub id (see the module docstring);
    a name that is neither is one ``ModelError`` line."""
    if isinstance(name, ResolvedModel):
        return name
    text = os.fspath(name)
    if Path(text).exists():
        return ResolvedModel(Path(text))
    parsed = _hub_id(text)
    if parsed is None:
        raise ModelError(f"{text}: model directory not found")
    repo_id, revision = parsed
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import LocalEntryNotFoundError

    cache = hub_cache()
    try:
        snapshot = Path(
            snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True)
        )
    except LocalEntryNotFoundError as error:
        fetch = f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")
        found = (
            f"the cached snapshot of {repo_id} is incomplete ({first_sentence(error)})"
            if type(error).__name__ == "IncompleteSnapshotError"
            else f"no {repo_id} at revision {revision or DEFAULT_REVISION} in the Hugging Face "
            f"cache {cache}"
        )
        raise ModelError(
            f"{text}: model directory not found, and {found}; bertgeom never downloads: on a "
            f"connected machine run '{fetch}' (huggingface-cli download in older versions) and "
            "copy its cache here (HF_HUB_CACHE or HF_HOME), or give a model directory"
        ) from error
    return ResolvedModel(snapshot, repo_id, revision or DEFAULT_REVISION, snapshot.name)


def first_sentence(error: BaseException) -> str:
    return first_line(error).split(". ")[0]
