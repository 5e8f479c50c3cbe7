"""The head every model row of a report starts with: what the model is and what it takes
on disk. Each task appends its own measurements (scores, latency or speed) after it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distill.pipeline.artifacts import onnx_files, relative_path, weight_files


def model_row(
    key: str,
    name: str,
    *,
    runtime: str,
    precision: str,
    parameters: int | None,
    architecture: dict[str, Any] | None,
    files: Sequence[Path],
    base: Path,
    kind: str | None = None,
    deployed: bool = False,
) -> dict[str, Any]:
    """A row's head: identity, runtime and precision, parameters, the bytes of ``files``
    and their paths relative to ``base`` (``kind`` comes second to ``name`` when given)."""
    return {
        "key": key,
        "name": name,
        **({"kind": kind} if kind is not None else {}),
        "runtime": runtime,
        "precision": precision,
        "deployed": deployed,
        "parameters": parameters,
        "architecture": architecture,
        "bytes": sum(f.stat().st_size for f in files),
        "weight_files": [relative_path(f, base) for f in files],
    }


def onnx_model_row(
    key: str,
    name: str,
    precision: str,
    path: Path,
    base: Path,
    *,
    like: dict[str, Any],
    kind: str | None = None,
    deployed: bool = False,
) -> dict[str, Any]:
    """The head of an ONNX file's row: its files (external data included) and the
    parameters and architecture of the PyTorch row ``like`` it was exported from."""
    return model_row(
        key,
        name,
        runtime="onnxruntime",
        precision=precision,
        parameters=like["parameters"],
        architecture=like.get("architecture"),
        files=onnx_files(path),
        base=base,
        kind=kind,
        deployed=deployed,
    )


def weights_bytes(model_dir: Path) -> int:
    """Bytes of a saved model folder's weight files."""
    return sum(f.stat().st_size for f in weight_files(model_dir))
