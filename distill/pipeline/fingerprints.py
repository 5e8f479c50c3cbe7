"""What a file, folder, package file or hub reference *holds*, for stage fingerprints.

A stage's fingerprint must change when a file it reads changes, not only when the recipe
text naming it does (``data.path = "reviews.csv"`` says nothing of the rows inside).
Hashing a 400 MB teacher on every run is too slow, so sha256s are cached per file,
keyed by the file's absolute path, size, mtime_ns, ctime_ns and inode: a file is rehashed
whenever any of them changes (``touch`` included; the hash then comes out the same and
nothing reruns). What the cache trusts is that a file whose size, modification time,
change time and inode are all unchanged holds the same bytes; rewriting a file in place
while restoring all of these is not something editors, ``cp``, ``git`` or ``pip`` do.

Hub references are identified by the commit their revision resolves to (hub.py): from the local
hub cache (``refs/<revision>``), else, when online, by asking the hub once with a short
timeout. Left unresolved (offline, nothing cached) they count by name and revision only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from distill.errors import DistillError
from distill.pipeline.artifacts import sha256_file, write_json_atomic
from distill.sources.hub import resolved_commit
from distill.sources.paths import PKG_PREFIX, resolve_local

log = logging.getLogger("distill")

CACHE_NAME = "content-hashes.json"
CACHE_FORMAT = 1
MAX_CACHE_ENTRIES = 50_000


def default_cache_path() -> Path:
    """``$DISTILL_CACHE/content-hashes.json``, else ``~/.cache/distill/content-hashes.json``."""
    base = os.environ.get("DISTILL_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "distill"
    return root / CACHE_NAME


class ContentHashes:
    """sha256 of files, remembered across runs by (path, size, mtime_ns, ctime_ns, inode)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_cache_path()
        self._entries: dict[str, dict[str, Any]] = self._load()
        self._changed: dict[str, dict[str, Any]] = {}
        self.hashed_bytes = 0  # how much had to be read this time (the rest came from the cache)

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            payload = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT:
            return {}
        entries = payload.get("files")
        return entries if isinstance(entries, dict) else {}

    def sha256(self, path: Path) -> str:
        resolved = path.resolve()
        info = resolved.stat()
        key = [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]
        entry = self._entries.get(str(resolved))
        if entry is not None and entry.get("key") == key:
            return entry["sha256"]
        digest = sha256_file(resolved)
        self.hashed_bytes += info.st_size
        entry = {"key": key, "sha256": digest, "used": time.time()}
        self._entries[str(resolved)] = self._changed[str(resolved)] = entry
        return digest

    def tree(self, path: Path) -> str:
        """A file's sha256, or for a folder one digest over every file's relative path and sha256."""
        if path.is_file():
            return self.sha256(path)
        digest = hashlib.sha256()
        for child in sorted(path.rglob("*")):
            rel = child.relative_to(path)
            if child.is_file() and "__pycache__" not in rel.parts:
                digest.update(f"{rel.as_posix()}\0{self.sha256(child)}\n".encode())
        return digest.hexdigest()

    def save(self) -> None:
        """Merge this run's new hashes into the cache file; a cache that cannot be written is
        only a slower next run, never an error."""
        if not self._changed:
            return
        merged = {**self._load(), **self._changed}
        if len(merged) > MAX_CACHE_ENTRIES:
            newest = sorted(merged.items(), key=lambda item: item[1].get("used", 0))
            merged = dict(newest[-MAX_CACHE_ENTRIES:])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, {"format": CACHE_FORMAT, "files": merged})
        except (OSError, DistillError) as exc:
            log.debug("content-hash cache not written (%s)", exc)
        self._changed = {}


@dataclass(frozen=True)
class Source:
    """A file, folder or hub reference a stage reads, and the recipe key that names it."""

    key: str
    reference: str
    revision: str | None = None
    repo_type: str = "model"  # hub ids: "model" or "dataset"


def identify(sources: list[Source], base_dir: Path, hashes: ContentHashes) -> dict[str, Any]:
    """Each source's current content identity, by recipe key."""
    return {
        s.key: source_identity(s.reference, base_dir, s.key, hashes, s.revision, s.repo_type)
        for s in sources
    }


def source_identity(
    reference: str,
    base_dir: Path,
    key: str,
    hashes: ContentHashes,
    revision: str | None = None,
    repo_type: str = "model",
) -> dict[str, Any]:
    """What ``reference`` (a path, ``pkg:`` path or hub id) holds right now."""
    local = resolve_local(reference, base_dir, key)
    if local is None:
        return {
            "hub": reference,
            "revision": revision,
            "commit": resolved_commit(reference, revision, repo_type),
        }
    identity: dict[str, Any] = {"sha256": hashes.tree(local)}
    if reference.startswith(PKG_PREFIX):
        dist = reference[len(PKG_PREFIX) :].lstrip("/").partition("/")[0]
        identity["package"] = f"{dist}=={metadata.version(dist)}"
    return identity
