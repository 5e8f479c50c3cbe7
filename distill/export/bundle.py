"""The bundle format: the one module that writes a bundle's ``manifest.json``.

A bundle (``export/<name>/``) is a folder of files plus ``manifest.json``, written last:
``format`` / ``format_version``, the ``task`` whose runner serves it, the ``model`` file,
the task's own fields, and every other file with its role, sha256 and size.

This module must stay importable without torch or transformers (edge machines have
onnxruntime, tokenizers and numpy only): import only the standard library and light distill
modules here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.artifacts import sha256_file, write_json_atomic

MANIFEST_FILE = "manifest.json"
BUNDLE_FORMAT = "distill-onnx-bundle"
BUNDLE_FORMAT_VERSION = 1


def write_bundle_manifest(
    bundle: Path, roles: dict[str, str], info: dict[str, Any]
) -> dict[str, Any]:
    """Hash every file of ``bundle`` and write ``bundle/manifest.json`` (atomically, last).

    ``roles`` maps each file (relative POSIX path) to its role; a file in the folder without
    a role, or a role without a file, is a bug and raises ``ValueError``. ``files`` has the
    shape :func:`distill.artifacts.verify_files` checks.
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
