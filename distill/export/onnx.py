"""ONNX graphs with plain onnxruntime: what a graph declares, parity against PyTorch and
batched inference. Export (:mod:`distill.export.exporter`), fusion (:mod:`distill.export.fusion`)
and int8 (:mod:`distill.export.quantize`) live beside it and are reachable from here, where the
stages call them.

Everything here tokenizes the same way (``tokenizer(texts, truncation=True,
max_length=..., padding=..., return_tensors="np")``) and feeds a graph only the inputs it
declares, so BERT (with ``token_type_ids``) and MPNet (without) are handled alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from distill.errors import ModelLoadError, ParityError
from distill.export.exporter import export_onnx
from distill.export.fusion import optimize_graph
from distill.export.quantize import (
    DYNAMIC_EXTRA_OPTIONS,
    DYNAMIC_MATMUL_OPERATORS,
    EMBEDDING_OPERATORS,
    QUANTIZATION_DEFAULTS,
    describe_quantization,
    quantization_config,
    quantize_dynamic,
    quantize_static,
)
from distill.pipeline.progress import track
from distill.serving.session import onnx_session

__all__ = [
    "DYNAMIC_EXTRA_OPTIONS",
    "DYNAMIC_MATMUL_OPERATORS",
    "EMBEDDING_OPERATORS",
    "QUANTIZATION_DEFAULTS",
    "describe_quantization",
    "export_onnx",
    "optimize_graph",
    "quantization_config",
    "quantize_dynamic",
    "quantize_static",
]

log = logging.getLogger("distill")

SESSION_THREADS = 2
Padding = Literal["max_length", "longest"]
_NUMPY_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}


# --------------------------------------------------------------------------- export


def graph_info(model_path: Path) -> dict[str, Any]:
    """Input and output names and the default-domain opset of an ONNX file."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "input_names": [i.name for i in model.graph.input if i.name not in initializers],
        "output_names": [o.name for o in model.graph.output],
        "opset": opset,
    }


# --------------------------------------------------------------------------- inference


def encode(
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    input_names: Sequence[str],
    padding: Padding = "longest",
    input_types: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Tokenize ``texts`` and keep exactly the graph's inputs (raises if one is missing)."""
    encoded = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        padding="max_length" if padding == "max_length" else True,
        return_tensors="np",
    )
    missing = [name for name in input_names if name not in encoded]
    if missing:
        raise ModelLoadError(
            f"the ONNX graph needs input(s) {missing} that the tokenizer does not produce "
            f"(it gives {sorted(encoded.keys())})"
        )
    types = input_types or {}
    return {
        name: np.asarray(encoded[name], dtype=types.get(name, np.int64)) for name in input_names
    }


def session_feeds(
    session: Any, tokenizer: Any, texts: Sequence[str], *, max_length: int, padding: Padding
) -> dict[str, np.ndarray]:
    """:func:`encode` for a session: its declared input names and integer types."""
    inputs = session.get_inputs()
    types = {i.name: _NUMPY_TYPES.get(i.type, np.int64) for i in inputs}
    return encode(
        tokenizer,
        texts,
        max_length=max_length,
        input_names=[i.name for i in inputs],
        padding=padding,
        input_types=types,
    )


def predict_logits(
    model_path: Path,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int = 32,
    threads: int = SESSION_THREADS,
    desc: str = "onnxruntime",
) -> np.ndarray:
    """Logits of an ONNX graph over ``texts`` (batched in order, each batch padded to its
    longest: the way ``distill predict`` batches, so dynamic int8, whose activation scales
    depend on the batch, gives the same numbers here and there); progress shown as ``desc``."""
    session = onnx_session(model_path, threads)
    return session_logits(
        session, tokenizer, texts, max_length=max_length, batch_size=batch_size, desc=desc
    )


def session_logits(
    session: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int,
    desc: str = "onnxruntime",
) -> np.ndarray:
    """:func:`predict_logits` on an open session: batches of ``batch_size`` in the order
    given, each padded to its longest text."""
    output = _logits_output(session)
    chunks = []
    for start in track(range(0, len(texts), batch_size), desc=desc, unit="batch"):
        feeds = session_feeds(
            session,
            tokenizer,
            texts[start : start + batch_size],
            max_length=max_length,
            padding="longest",
        )
        chunks.append(session.run([output], feeds)[0])
    if not chunks:
        num_labels = session.get_outputs()[0].shape[-1]
        return np.zeros((0, num_labels if isinstance(num_labels, int) else 0), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32)


def token_lengths(tokenizer: Any, texts: Sequence[str], *, max_length: int) -> np.ndarray:
    """Tokens per text (special tokens included), truncated at ``max_length``."""
    if not texts:
        return np.zeros(0, dtype=np.int64)
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return np.asarray([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)


def _logits_output(session: Any) -> str:
    names = [o.name for o in session.get_outputs()]
    return "logits" if "logits" in names else names[0]


# --------------------------------------------------------------------------- parity


def parity_differences(
    model_path: Path,
    torch_model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    threads: int = SESSION_THREADS,
) -> dict[str, float]:
    """Max |ONNX Runtime - PyTorch| per graph output, over ``texts`` padded to ``max_length``
    and padded dynamically (to the longest text)."""
    import torch

    session = onnx_session(model_path, threads)
    output_names = [o.name for o in session.get_outputs()]
    differences = dict.fromkeys(output_names, 0.0)
    torch_model.eval()
    for padding in ("max_length", "longest"):
        feeds = session_feeds(session, tokenizer, texts, max_length=max_length, padding=padding)
        onnx_outputs = session.run(output_names, feeds)
        with torch.inference_mode():
            reference = torch_model(
                **{k: torch.from_numpy(v.astype(np.int64)) for k, v in feeds.items()}
            )
        for name, got in zip(output_names, onnx_outputs, strict=True):
            expected = reference[name].detach().float().numpy()
            if got.shape != expected.shape:
                differences[name] = float("inf")
                continue
            diff = float(np.max(np.abs(got.astype(np.float64) - expected))) if got.size else 0.0
            differences[name] = max(differences[name], diff)
    return differences


def check_parity(
    model_path: Path,
    torch_model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    tolerance: float,
    threads: int = SESSION_THREADS,
) -> dict[str, float]:
    """:func:`parity_differences`, raising :class:`ParityError` when any output exceeds ``tolerance``."""
    differences = parity_differences(
        model_path, torch_model, tokenizer, texts, max_length=max_length, threads=threads
    )
    if any(not diff <= tolerance for diff in differences.values()):  # NaN counts as a failure
        raise ParityError(str(model_path), differences, tolerance)
    return differences
