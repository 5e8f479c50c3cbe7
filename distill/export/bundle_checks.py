"""What the bundle reader (:func:`distill.export.bundle.read_bundle`) checks once every
listed file has been verified against its sha256: the manifest's own values against the
model's ``config.json``, and the ONNX graphs' external data against the manifest's list.

A manifest is not covered by any checksum, so its values are only as good as what they
agree with: ``max_length`` must fit the model's position table (a longer input makes
onnxruntime index past it), ``labels`` must be as many as the config's, and the ``task``
must be the one the config's ``architectures`` name (each task says how its architecture
names end, :attr:`~distill.tasks.base.Task.architecture_suffixes`). A graph may keep its
weights in other files (ONNX external data); onnxruntime would open them from the
graph's own ``location`` fields, so each must be a file the manifest lists (hence hashed),
inside the bundle, not reached through a link out of it.

Torch-free (``onnx`` is imported only to read the graphs, when a bundle is read).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from distill.errors import ArtifactError
from distill.serving.positions import usable_positions
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


# --------------------------------------------------------------------------- external data


def _tensors(model: Any) -> Iterator[Any]:
    """Every tensor of an ONNX model that can hold weights: initializers (dense and sparse)
    and node attributes, in the graph, its subgraphs and the model's functions."""

    def of_nodes(nodes: Any) -> Iterator[Any]:
        for node in nodes:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors
                sparse = [*attribute.sparse_tensors]
                if attribute.HasField("sparse_tensor"):
                    sparse.append(attribute.sparse_tensor)
                for tensor in sparse:
                    yield from (tensor.values, tensor.indices)
                if attribute.HasField("g"):
                    yield from of_graph(attribute.g)
                for graph in attribute.graphs:
                    yield from of_graph(graph)

    def of_graph(graph: Any) -> Iterator[Any]:
        yield from graph.initializer
        for tensor in graph.sparse_initializer:
            yield from (tensor.values, tensor.indices)
        yield from of_nodes(graph.node)

    yield from of_graph(model.graph)
    for function in model.functions:
        yield from of_nodes(function.node)


def _external_locations(path: Path) -> dict[str, str]:
    """Each external-data ``location`` the graph at ``path`` names, with one tensor reading it
    (a tensor marked external without a location maps from ``""``)."""
    import onnx  # reading the graph's structure only: no weight, no external file is opened

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and onnx's own errors: not a graph
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ArtifactError(f"{path}: not an ONNX model ({first})") from None
    locations: dict[str, str] = {}
    for tensor in _tensors(model):
        entries = {entry.key: entry.value for entry in tensor.external_data}
        if tensor.data_location == onnx.TensorProto.EXTERNAL or "location" in entries:
            locations.setdefault(entries.get("location", ""), tensor.name)
    return locations


def external_data_problems(bundle: Path, files: dict[str, Any]) -> list[str]:
    """A problem for each external-data file of a listed ONNX graph that is not a listed
    file inside the bundle: unlisted, absolute, with ``..``, or reached through a link
    that leaves the bundle. Checked before onnxruntime opens any of them."""
    problems = []
    for rel in files:
        if rel.endswith(".onnx"):
            for location, tensor in _external_locations(bundle / rel).items():
                problem = _location_problem(bundle, rel, files, location)
                if problem:
                    problems.append(f"{bundle / rel}: tensor {tensor!r} {problem}")
    return problems


def _location_problem(bundle: Path, rel: str, files: dict[str, Any], location: str) -> str:
    """What is wrong with the external-data ``location`` of the graph ``rel`` ("" if nothing)."""
    if not location:
        return "is stored outside the graph in no file (its 'location' is missing)"
    reads = f"reads its data from {location!r}"
    if location.startswith("/") or "\\" in location or ":" in location:
        return f"{reads}, an absolute path; refused (external data must be inside the bundle)"
    if ".." in PurePosixPath(location).parts:
        return f"{reads}, a path with '..'; refused (external data must be inside the bundle)"
    target = posixpath.normpath(posixpath.join(posixpath.dirname(rel), location))
    if target not in files:
        return (
            f"{reads} ({bundle / target}), which manifest.json does not list; every file the "
            "bundle loads must be listed with its sha256"
        )
    resolved = (bundle / target).resolve()
    if not resolved.is_relative_to(bundle.resolve()):
        return f"{reads}, a link to {resolved}, outside the bundle; refused"
    return ""
