"""Run folders, manifests and atomic publication.

A stage works in a temporary sibling folder and writes ``manifest.json`` last; the
folder is renamed into place only after that. So a folder under ``runs/<name>/`` that
has a manifest is complete, and anything else (an interrupted stage, a half-copied
bundle) is never mistaken for a result.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from distill.errors import ArtifactError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
_TRACKED_PACKAGES = (
    "distill",
    "torch",
    "transformers",
    "datasets",
    "onnxscript",
    "onnx",
    "onnxruntime",
    "accelerate",
    "scikit-learn",
    "numpy",
    "tokenizers",
)


@dataclass(frozen=True)
class RunContext:
    """What every stage may know about the run: paths, seed and process role. Nothing else."""

    name: str
    seed: int
    task: str
    workdir: Path
    recipe_dir: Path
    is_main_process: bool = True
    # Set by the pipeline for the running stage: where its training checkpoints live. They
    # sit outside the stage's staging folder so that a killed stage can resume from them.
    checkpoints: Path | None = None

    @property
    def run_dir(self) -> Path:
        return self.workdir / "runs" / self.name

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def checkpoint_dir(self, out: Path, variant: str = "model") -> Path:
        """Where a training stage keeps checkpoints for ``variant`` (inside ``out`` when unset)."""
        return (self.checkpoints or out / "checkpoints") / variant

    @property
    def export_dir(self) -> Path:
        return self.workdir / "export" / self.name

    @property
    def report_dir(self) -> Path:
        return self.workdir / "reports" / self.name


def sha256_file(
    path: Path, chunk: int = 1 << 20, progress: Callable[[int], None] | None = None
) -> str:
    """The file's sha256, read ``chunk`` bytes at a time (never whole in memory);
    ``progress`` is called with the bytes read so far after each chunk."""
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
            if progress is not None:
                done += len(block)
                progress(done)
    return digest.hexdigest()


def fingerprint(obj: Any) -> str:
    """Stable hash of a JSON-able object (sorted keys), used to decide whether a stage is stale."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def list_files(folder: Path) -> dict[str, dict[str, Any]]:
    """Every regular file below ``folder`` (except the manifest) with its size and sha256."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            rel = path.relative_to(folder).as_posix()
            files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return files


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temporary file in the same folder, fsync it, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=False, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ArtifactError(f"could not write {path}: {exc.strerror or exc}") from exc


def write_manifest(folder: Path, payload: dict[str, Any]) -> dict[str, Any]:
    """Hash every file of ``folder`` and write its manifest last."""
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        **payload,
        "files": list_files(folder),
        "versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(folder / MANIFEST, manifest)
    return manifest


def read_manifest(folder: Path, name: str = MANIFEST) -> dict[str, Any] | None:
    """The folder's manifest, or None when it is missing or unreadable (never half-trusted)."""
    path = folder / name
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return None
    return manifest


def verify_files(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """Problems (missing files, size or sha256 mismatches) between a folder and its manifest."""
    problems = []
    for rel, entry in manifest["files"].items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != entry.get("bytes"):
            problems.append(f"{path}: size differs from the manifest")
        elif sha256_file(path) != entry.get("sha256"):
            problems.append(f"{path}: sha256 differs from the manifest")
    return problems


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def replace_dir(staging: Path, final: Path) -> None:
    """Move a finished staging folder into place, replacing any older copy."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
        os.replace(staging, final)
        _remove(old)
    else:
        os.replace(staging, final)


_STAGING_OWNER = re.compile(r"\.tmp-(?:(?P<host>.+)-)?(?P<pid>\d+)-[0-9a-f]{6}$")


def _owner_gone(staging: Path) -> bool:
    """Whether the process that made a staging folder has ended (its name holds host and PID).
    A folder of another host, or of an unknown owner, is left alone: its owner may be alive."""
    match = _STAGING_OWNER.search(staging.name)
    if match is None or match["host"] not in (None, socket.gethostname()):
        return False
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


@contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """A fresh temporary sibling of ``final``; removed if the block fails, else left for the caller.

    Leftovers of interrupted earlier attempts are removed, but only those whose owner
    process has ended: a live process's staging folder is never touched.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        if _owner_gone(stale):
            _remove(stale)
    staging = final.with_name(
        f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    )
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        _remove(staging)
        raise


def publish_copy(source: Path, final: Path) -> None:
    """Copy a finished folder to a public place (export/, reports/) atomically."""
    with staging_dir(final) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        replace_dir(staging, final)


def finished_manifest(folder: Path, name: str) -> dict[str, Any]:
    """The manifest of a finished stage folder; an error naming the stage when there is none."""
    from distill.errors import ArtifactError

    manifest = read_manifest(folder)
    if manifest is None:
        raise ArtifactError(f"{folder}: the {name} stage has no complete manifest; run it first")
    return manifest


def upstream_manifests(
    inputs: dict[str, Path], names: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """The manifests of the finished stages ``names`` a report reads; an error naming any
    folder that is missing or unfinished."""
    from distill.errors import ArtifactError

    missing = [name for name in names if name not in inputs]
    if missing:
        raise ArtifactError(f"report: missing upstream stage folder(s) {missing}")
    return {name: finished_manifest(inputs[name], name) for name in names}


def weight_files(model_dir: Path) -> list[Path]:
    """The weight files of a save_pretrained folder (safetensors, else PyTorch pickles)."""
    from distill.errors import ArtifactError

    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("pytorch_model*.bin"))
    if not files:
        raise ArtifactError(f"{model_dir}: no weight files (*.safetensors or pytorch_model*.bin)")
    return files


def onnx_files(model_path: Path) -> list[Path]:
    """An ONNX file plus its external-data file(s), when the weights are stored beside it."""
    files = [model_path]
    names = (
        f"{model_path.name}_data",  # model.onnx_data, an older exporter's name
        f"{model_path.name}.data",
        f"{model_path.stem}.data",
        f"{model_path.stem}.onnx_data",
    )
    for name in names:
        candidate = model_path.with_name(name)
        if candidate.is_file() and candidate not in files:
            files.append(candidate)
    return files


def relative_path(path: Path, base: Path) -> str:
    """``path`` below ``base`` as a POSIX string (its name when it is elsewhere): how reports
    name the files a row was measured from."""
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.name
