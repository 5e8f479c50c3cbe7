"""What the bundle reader (:func:`distill.export.bundle.read_bundle`) checks once every
listed file has been verified against its sha256: the manifest's own values against the
model's ``config.json``.

A manifest is not covered by any checksum, so its values are only as good as what they
agree with: ``max_length`` must fit the model's position table (a longer input makes
onnxruntime index past it), ``labels`` must be as many as the config's, and the ``task``
must be the one the config's ``architectures`` name (each task says how its architecture
names end, :attr:`~distill.tasks.base.Task.architecture_suffixes`).

Torch-free.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.errors import ArtifactError
from distill.positions import usable_positions
from distill.tasks import TASKS
from distill.tasks.base import Task

CONFIG_FILE = "config.json"
EDITED = "was manifest.json edited?"


def is_int(value: Any) -> bool:
    """An int that is not a bool (JSON ``true`` must not pass for 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def read_config(bundle: Path, files: dict[str, Any]) -> dict[str, Any] | None:
    """``config.json`` when the manifest lists it (a verified file), else None."""
    if CONFIG_FILE not in files:
        return None
    path = bundle / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise ArtifactError(f"{path}: not a readable model config ({exc})") from None
    if not isinstance(config, dict):
        raise ArtifactError(f"{path}: not a readable model config (not a JSON object)")
    return config


def config_problems(path: Path, manifest: dict[str, Any], task: Task) -> list[str]:
    """The manifest at ``path``: its ``max_length``, ``labels`` and ``task`` against the
    bundle's ``config.json``; a key the manifest lacks or the config says nothing of is left
    to the task's runner."""
    config = read_config(path.parent, manifest["files"])
    if config is None:
        return []
    where = (path, path.parent / CONFIG_FILE)
    return [
        *_positions_problems(*where, manifest, config),
        *_label_count_problems(*where, manifest, config),
        *_architecture_problems(*where, manifest, config, task),
    ]


def _positions_problems(
    path: Path, config_path: Path, manifest: dict[str, Any], config: dict[str, Any]
) -> list[str]:
    max_length, limit = manifest.get("max_length"), usable_positions(config)
    if not is_int(max_length) or limit is None or max_length <= limit[0]:
        return []
    return [
        f"{path}: 'max_length' is {max_length}, but the model takes at most {limit[0]} tokens "
        f"({limit[1]} in {config_path}); {EDITED}"
    ]


def _config_labels(config: dict[str, Any]) -> tuple[int, str] | None:
    """How many labels the config has and what says so (``id2label``, else ``num_labels``)."""
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        try:
            names = [id2label[key] for key in sorted(id2label, key=int)]
        except (TypeError, ValueError):  # keys that are not numbers: show them as they are
            names = list(id2label.values())
        return len(id2label), f"id2label {names}"
    count = config.get("num_labels")
    return (count, f"num_labels = {count}") if is_int(count) else None


def _label_count_problems(
    path: Path, config_path: Path, manifest: dict[str, Any], config: dict[str, Any]
) -> list[str]:
    labels, found = manifest.get("labels"), _config_labels(config)
    if not isinstance(labels, list) or found is None or len(labels) == found[0]:
        return []
    return [
        f"{path}: 'labels' {labels} do not match the model's {found[0]} labels "
        f"({found[1]} in {config_path}); {EDITED}"
    ]


def _architecture_problems(
    path: Path, config_path: Path, manifest: dict[str, Any], config: dict[str, Any], task: Task
) -> list[str]:
    """A config naming another task's architecture only (an unknown name passes: a task's
    own model types need not follow the transformers naming)."""
    names = config.get("architectures")
    if not task.architecture_suffixes or not isinstance(names, list):
        return []
    names = [name for name in names if isinstance(name, str)]
    owners = {
        other.bundle_task
        for other in TASKS.values()
        if other.architecture_suffixes
        and any(name.endswith(other.architecture_suffixes) for name in names)
    }
    if not owners or task.bundle_task in owners:
        return []
    return [
        f"{path}: 'task' is {manifest.get('task')!r}, but 'architectures' {names} in "
        f"{config_path} is a {' or '.join(sorted(owners))} model; {EDITED}"
    ]
