"""The bundle format: the one module that writes a bundle's ``manifest.json`` and the one
that reads and verifies it.

A bundle (``export/<name>/``) is a folder of files plus ``manifest.json``, written last:
``format`` / ``format_version``, the ``task`` whose runner serves it, the ``model`` file,
the task's own fields, and every other file with its role, sha256 and size.

:func:`write_bundle_manifest` writes it (the export stages). :func:`read_bundle` reads it,
tells which task the bundle is (the registry's :func:`~distill.tasks.task_of_bundle`) and
checks every file it lists (present and of its recorded size for all of them first, then
sha256) before any runner loads a byte; then the manifest's values against the model's
``config.json`` and the ONNX graphs' external data against the list
(:mod:`distill.export.bundle_checks`). Every ``distill predict``, ``distill generate`` and
``distill bench`` goes through it. Everything wrong raises
:class:`~distill.errors.ArtifactError` naming the file and the problem; the checks only a
task's runner can make (label names, tokenizer settings) stay in its runner.

This module must stay importable without torch or transformers (edge machines have
onnxruntime, tokenizers and numpy only): import only the standard library and light distill
modules here.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from distill.errors import ArtifactError, ModelLoadError
from distill.export.bundle_checks import config_problems, external_data_problems, is_int
from distill.export.quantize import QUANTIZATION_FILE
from distill.pipeline.artifacts import sha256_file, write_json_atomic
from distill.tasks import TASKS, task_of_bundle
from distill.tasks.base import Task
from distill.wording import listed

MANIFEST_FILE = "manifest.json"
BUNDLE_FORMAT = "distill-onnx-bundle"
BUNDLE_FORMAT_VERSION = 1
DEFAULT_MODEL = "model.onnx"
# Where the fp32 graph sits beside an int8 model.onnx: in the bundle (export.fp32_reference)
# or, left out of it, at the same path under the export stage's folder.
FP32_REFERENCE = "fp32/model_fp32.onnx"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Files from this size up say on stderr that they are being hashed, and how far every
# PROGRESS_S seconds (sha256 reads about 1 GB/s: a 1 TB file takes a quarter of an hour).
LARGE_FILE = 512 * 2**20
PROGRESS_S = 10.0

log = logging.getLogger("distill")


@dataclass(frozen=True)
class Bundle:
    """A bundle :func:`read_bundle` checked: its folder, its manifest and its task."""

    path: Path
    manifest: dict[str, Any]
    task: Task

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_FILE

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest["model"]


def write_bundle_manifest(
    bundle: Path, roles: dict[str, str], info: dict[str, Any]
) -> dict[str, Any]:
    """Hash every file of ``bundle`` and write ``bundle/manifest.json`` (atomically, last).

    ``roles`` maps each file (relative POSIX path) to its role; a file in the folder without
    a role, or a role without a file, is a bug and raises ``ValueError``. ``files`` has the
    shape :func:`distill.pipeline.artifacts.verify_files` checks.
    """
    present = {
        p.relative_to(bundle).as_posix()
        for p in bundle.rglob("*")
        if p.is_file() and p.name != MANIFEST_FILE
    }
    if present != set(roles):
        raise ValueError(
            f"{bundle}: files without a role {sorted(present - set(roles))}, "
            f"roles without a file {sorted(set(roles) - present)}"
        )
    files = {
        rel: {
            "role": roles[rel],
            "sha256": sha256_file(bundle / rel),
            "bytes": (bundle / rel).stat().st_size,
        }
        for rel in sorted(roles)
    }
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        **info,
        "files": files,
    }
    write_json_atomic(bundle / MANIFEST_FILE, manifest)
    return manifest


def assemble_bundle(
    bundle: Path,
    model_dir: Path,
    tokenizer: Any,
    fp32_path: Path,
    int8_path: Path | None,
    fp32_reference: bool = True,
) -> tuple[Path, dict[str, str]]:
    """Copy the deployable files into ``bundle``: the deployed graph as ``model.onnx`` (int8
    with quantization.json and, with ``fp32_reference``, its fp32 reference; or fp32 alone),
    config.json and the fast tokenizer; returns the folder with each file's role, for
    :func:`write_bundle_manifest`."""
    import onnx  # writing a bundle needs onnx and transformers; reading one does not
    from transformers import AutoTokenizer

    bundle.mkdir()
    roles: dict[str, str] = {}

    def place(source: Path, rel: str, role: str) -> None:
        target = bundle / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        roles[rel] = role

    if int8_path is None:
        place(fp32_path, "model.onnx", "fp32")
    else:
        place(int8_path, "model.onnx", "int8")
        if fp32_reference:
            place(fp32_path, FP32_REFERENCE, "fp32")
        if (int8_path.parent / QUANTIZATION_FILE).is_file():  # distill's quantizers write it
            place(int8_path.parent / QUANTIZATION_FILE, QUANTIZATION_FILE, "quantization-config")
    place(model_dir / "config.json", "config.json", "config")
    for onnx_file in (bundle / "model.onnx", bundle / FP32_REFERENCE):
        if onnx_file.is_file():  # the full check also rejects external data outside the bundle
            onnx.checker.check_model(str(onnx_file), full_check=True)
    # A fresh tokenizer: the one used above carries the fixed-length padding of the
    # latency runs, which tokenizer.json would otherwise record.
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    for written in tokenizer.save_pretrained(bundle):
        path = Path(written)
        if path.is_file():
            roles[path.relative_to(bundle).as_posix()] = "tokenizer"
    if not (bundle / "tokenizer.json").is_file():
        raise ModelLoadError(
            f"{model_dir}: the student's tokenizer has no fast version (tokenizer.json); "
            "the bundle needs one to be served without Python tokenizer code"
        )
    return bundle, roles


# --------------------------------------------------------------------------- reading


def safe_relpath(rel: Any) -> bool:
    """A relative POSIX path inside the bundle (no absolute path, no ``..``, no backslash)."""
    if not isinstance(rel, str) or not rel or "\\" in rel:
        return False
    path = PurePosixPath(rel)
    return not path.is_absolute() and ".." not in path.parts and rel != MANIFEST_FILE


def problems_error(bundle: Path, problems: list[str]) -> ArtifactError:
    """One error for every problem found: a single one as is, several as a list."""
    if len(problems) == 1:
        return ArtifactError(problems[0])
    listed = "\n".join(f"  - {p}" for p in problems)
    return ArtifactError(f"bundle {bundle}: {len(problems)} problems:\n{listed}")


def bundles_of(command: str | None) -> str:
    """Where the bundles ``distill COMMAND`` runs come from (None: any bundle), named from
    the registry."""
    names = [t.name for t in TASKS.values() if command is None or t.command == command]
    return f"export/<run name>/ of a {listed(names, 'or')} run"


def load_manifest(bundle: Path, command: str | None = None) -> dict[str, Any]:
    """``bundle/manifest.json`` as a JSON object; nothing in it checked yet."""
    if not bundle.exists():
        raise ArtifactError(f"{bundle}: no such bundle folder (expected {bundles_of(command)})")
    if not bundle.is_dir():
        raise ArtifactError(f"{bundle}: not a folder (expected {bundles_of(command)})")
    path = bundle / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactError(
            f"{path}: missing; {bundle} is not a complete distill bundle "
            "(the export stage writes manifest.json last)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: expected a JSON object, found {type(manifest).__name__}")
    return manifest


def _check_format(path: Path, manifest: dict[str, Any]) -> None:
    """The format and a version this distill reads: checked first, as they say how to read
    the rest (the task included)."""
    fmt, version = manifest.get("format"), manifest.get("format_version")
    if fmt != BUNDLE_FORMAT:
        raise ArtifactError(f"{path}: 'format' is {fmt!r}, expected {BUNDLE_FORMAT!r}")
    if not is_int(version) or version < 1:
        raise ArtifactError(f"{path}: 'format_version' must be a positive integer, not {version!r}")
    if version > BUNDLE_FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format_version {version} is newer than this distill reads "
            f"({BUNDLE_FORMAT_VERSION}); upgrade distill"
        )


def bundle_task(path: Path, manifest: dict[str, Any], command: str | None = None) -> Task:
    """The task the manifest records; with ``command`` (the verb the user ran), one whose
    bundles that verb runs, else an error naming the verb that runs this one."""
    task = task_of_bundle(manifest.get("task"), str(path))
    if command is None or task.command == command:
        return task
    runs = [t.bundle_task for t in TASKS.values() if t.command == command]
    raise ArtifactError(
        f"{path}: task is {task.bundle_task!r}, not {listed([repr(r) for r in runs], 'or')}: "
        f"not a {listed(runs, 'or')} bundle; use `distill {task.command}` for it"
    )


def _entry_problems(path: Path, manifest: dict[str, Any]) -> list[str]:
    """The ``model`` and ``files`` fields: safe paths, a sha256 and a size for every file."""
    problems: list[str] = []
    model = manifest.get("model", DEFAULT_MODEL)
    if not safe_relpath(model):
        problems.append(f"{path}: 'model' must be a relative path inside the bundle, not {model!r}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        problems.append(f"{path}: 'files' must map each file to its role, sha256 and bytes")
        return problems
    for rel, entry in files.items():
        if not safe_relpath(rel):
            problems.append(f"{path}: 'files' lists {rel!r}, which is not a path inside the bundle")
        elif (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not _SHA256.match(entry["sha256"])
            or not is_int(entry.get("bytes"))
            or entry["bytes"] < 0
        ):
            problems.append(
                f"{path}: the entry of {rel} needs a 64-hex-digit 'sha256' and a 'bytes' count"
            )
    if safe_relpath(model):
        problems += unlisted(path, files, [model])
    return problems


def unlisted(path: Path, files: dict[str, Any], needed: Iterable[str]) -> list[str]:
    """A problem for each file of ``needed`` that the manifest at ``path`` does not list
    (an unlisted file would be used unverified)."""
    return [
        f"{path}: 'files' does not list {name}, which the bundle needs "
        "(every file the bundle uses must be listed with its sha256)"
        for name in needed
        if name not in files
    ]


def file_problems(bundle: Path, files: dict[str, Any]) -> list[str]:
    """Every listed file against the manifest: present and of the recorded size (``stat``
    only), then, when all are, the same sha256. A missing or resized file refuses the bundle
    before a byte is read, however large (a 1 TB sparse file) the others are."""
    problems = []
    for rel, entry in files.items():
        path = bundle / rel
        if not path.is_file():
            problems.append(f"{path}: missing (manifest.json lists it)")
        elif (size := path.stat().st_size) != entry["bytes"]:
            problems.append(
                f"{path}: {size} bytes, but manifest.json records {entry['bytes']}; "
                "the file was changed after export"
            )
    if problems:
        return problems
    return [
        f"{bundle / rel}: sha256 differs from manifest.json; the file was changed after export"
        for rel, entry in files.items()
        if _sha256(bundle / rel, entry["bytes"]) != entry["sha256"]
    ]


def _sha256(path: Path, size: int) -> str:
    """The file's sha256; from :data:`LARGE_FILE` bytes up, a line on stderr (the ``distill``
    logger: hidden by ``-q``) when it starts and every :data:`PROGRESS_S` seconds."""
    if size < LARGE_FILE:
        return sha256_file(path)
    log.info("checking the sha256 of %s (%s) against manifest.json", path, _size_text(size))
    last = time.monotonic()

    def report(done: int) -> None:
        nonlocal last
        if time.monotonic() - last >= PROGRESS_S:
            last = time.monotonic()
            log.info("  %s: %d%% of %s read", path.name, 100 * done // size, _size_text(size))

    return sha256_file(path, progress=report)


def _size_text(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def read_bundle(bundle: Path | str, *, command: str | None = None) -> Bundle:
    """Read ``bundle/manifest.json``, tell its task and verify every file it lists.

    ``command`` is the verb the user ran (``Task.command``): a bundle of a task that another
    verb runs is refused with a hint naming that verb, before any file is hashed. Raises
    :class:`ArtifactError` listing every problem, each naming its file.
    """
    bundle = Path(bundle)
    manifest = load_manifest(bundle, command)
    path = bundle / MANIFEST_FILE
    _check_format(path, manifest)
    task = bundle_task(path, manifest, command)
    problems = _entry_problems(path, manifest) or file_problems(bundle, manifest["files"])
    if not problems:  # the files are the exported ones: now what the manifest says of them
        problems = config_problems(path, manifest, task)
        problems += external_data_problems(bundle, manifest["files"])
    if problems:
        raise problems_error(bundle, problems)
    manifest.setdefault("model", DEFAULT_MODEL)
    return Bundle(bundle, manifest, task)
