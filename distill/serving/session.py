"""The one way distill opens an ONNX model: a CPU onnxruntime session with pinned threads.

Torch-free and light on imports (onnxruntime is imported on first use), so that the bundle
runners, the export stages, the timing code and the bench all open their graphs alike:
the same thread settings, and the same one-line error naming the file when onnxruntime
cannot load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.errors import ArtifactError


def onnx_session(model_path: Path | str, threads: int | None = None) -> Any:
    """A CPU ``InferenceSession`` with ``threads`` intra-op threads (None: onnxruntime's
    default) and one inter-op thread; :class:`ArtifactError` naming the file when
    onnxruntime cannot load it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: fusion notes would drown the progress log
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{model_path}: onnxruntime cannot load it: {first}") from None
