"""Locks between processes (``fcntl.flock``): the kernel releases them when the holder dies,
so a killed run never leaves a folder locked."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distill.errors import ArtifactError

try:  # POSIX; elsewhere runs and extractions are not serialised
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None  # type: ignore[assignment]

RUN_LOCK = ".lock"


class RunInUseError(ArtifactError):
    """Another live process holds the run folder's lock."""


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Wait for, then hold, an exclusive lock on ``path`` (created if missing)."""
    if fcntl is None:  # pragma: no cover - not on Linux
        yield
        return
    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def make_folder(folder: Path, what: str) -> None:
    """``mkdir -p`` with an error that names the folder instead of an OSError traceback."""
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            raise ArtifactError(f"{what}: {parent} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"{what}: cannot create {folder}: {exc.strerror or exc}") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ArtifactError(f"{what}: {folder} is not writable")


@contextmanager
def run_lock(run_dir: Path) -> Iterator[Path]:
    """Hold ``run_dir/.lock`` for a whole run; refuse at once when another process holds it.

    The file stays when the run ends (removing it would let a third process lock a file that
    a second one has just opened); only the lock on it matters. It holds the owner's PID and
    host, for the message another run gets.
    """
    make_folder(run_dir, "run folder (runs/<name> under --workdir)")
    path = run_dir / RUN_LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ArtifactError(f"cannot create the run lock {path}: {exc.strerror or exc}") from exc
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
                raise RunInUseError(
                    f"{run_dir} is in use by another distill run (PID and host: {holder}; lock "
                    f"file {path}). Two runs in one folder would overwrite each other's results: "
                    "wait for it to finish, stop it, or run under another name or --workdir"
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
