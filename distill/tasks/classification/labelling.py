"""The labelling pass's two ways of running the teacher, and the check that ties them.

- ONNX Runtime: the teacher exported to ONNX in fp32 (torch dynamo), its graph fused for
  onnxruntime (:mod:`distill.export.fusion`), the last
  layer pruned to the token the head reads (exact); then a seeded sample of the cached
  logits, spread over the token lengths, is recomputed with PyTorch and compared.
- PyTorch: the fine-tuned teacher through a predicting Trainer, which under a launcher
  shards the examples over the processes and gathers them back in order.

Both sort the texts by token length before batching (each batch is padded to its longest
text, so mixed lengths waste most of a batch on padding) and return the logits in the
order of the texts given, so ids keep their logits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from distill.errors import LabelParityError
from distill.export import onnx as onnx_utils
from distill.tasks.classification.files import Split
from distill.tasks.classification.keys import LabelsBackend
from distill.train.length_order import length_order, unsort

log = logging.getLogger("distill")

Backend = Literal["onnxruntime", "pytorch"]


class Labeller(Protocol):
    def __call__(self, split: Split, desc: str = "labels") -> np.ndarray:
        """The teacher's logits over ``split`` in split order, progress shown as ``desc``."""
        ...


OPTIMIZATION_LEVEL = 2
PARITY_BATCH_SIZE = 16


def resolve_backend(backend: LabelsBackend) -> Backend:
    """``auto``: ONNX Runtime on CPU; PyTorch when a GPU is there (onnxruntime runs on CPU)."""
    if backend != "auto":
        return backend
    import torch

    return "pytorch" if torch.cuda.is_available() else "onnxruntime"


# --------------------------------------------------------------------------- length order


def length_sample(lengths: Sequence[int] | np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` indices spread over the token lengths, in increasing order: the texts sorted
    by length, cut into ``size`` equal strata, one drawn (seeded) from each."""
    if size >= len(lengths):
        return np.arange(len(lengths))
    rng = np.random.default_rng(seed)
    strata = np.array_split(length_order(lengths), size)
    return np.sort(np.asarray([rng.choice(stratum) for stratum in strata], dtype=np.int64))


# --------------------------------------------------------------------------- ONNX Runtime


def export_teacher(teacher_dir: Path, work: Path) -> tuple[Path, dict[str, Any]]:
    """The teacher's fp32 ONNX graph, ORT-optimized; the plain export when onnxruntime's
    transformer optimizer does not know the model type."""
    from distill.tasks.classification.export_steps import CLS_PRUNING, MODEL_CLASS

    plain = onnx_utils.export_onnx(teacher_dir, work / "fp32", model_class=MODEL_CLASS)
    try:
        return onnx_utils.optimize_graph(
            plain,
            work / "optimized",
            level=OPTIMIZATION_LEVEL,
            rewrites=[CLS_PRUNING],
        )
    except NotImplementedError as exc:
        log.warning("labels: graph optimization skipped: %s", exc)
        return plain, {"level": OPTIMIZATION_LEVEL, "skipped": str(exc)}


def onnx_labeller(session: Any, tokenizer: Any, *, max_length: int, batch_size: int) -> Labeller:
    """Logits of an ONNX Runtime session over a split, batched by length, in split order."""

    def label(split: Split, desc: str = "labels") -> np.ndarray:
        lengths = onnx_utils.token_lengths(tokenizer, split.texts, max_length=max_length)
        order = length_order(lengths)
        logits = onnx_utils.session_logits(
            session,
            tokenizer,
            [split.texts[i] for i in order],
            max_length=max_length,
            batch_size=batch_size,
            desc=desc,
        )
        return unsort(logits, order)

    return label


# --------------------------------------------------------------------------- PyTorch


def torch_labeller(trainer: Any, tokenizer: Any, *, max_length: int) -> Labeller:
    """Logits of a predicting Trainer over a split, batched by length, in split order."""
    from distill.tasks.classification.encoding import encode
    from distill.train.trainer import predict_logits

    def label(split: Split, desc: str = "labels") -> np.ndarray:
        encoded = encode(tokenizer, split, max_length, with_labels=False)
        return predict_logits(trainer, encoded, desc)  # batched by length, in split order

    return label


def torch_logits(
    model: Any, tokenizer: Any, texts: Sequence[str], *, max_length: int, batch_size: int
) -> np.ndarray:
    """PyTorch logits in the order given, each batch padded to its longest text. No Trainer:
    under a launcher it would wait for the other processes, and only the main one checks."""
    import torch

    model.eval()
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        with torch.inference_mode():
            chunks.append(model(**batch).logits.float().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)


# --------------------------------------------------------------------------- parity


def check_cached_logits(
    logits: np.ndarray,
    split: Split,
    model: Any,
    tokenizer: Any,
    *,
    max_length: int,
    samples: int,
    seed: int,
    tolerance: float,
) -> dict[str, Any]:
    """Recompute a seeded sample of ``logits`` (rows of ``split``) with PyTorch; raises
    :class:`LabelParityError` naming the max |difference| when it exceeds ``tolerance``."""
    lengths = onnx_utils.token_lengths(tokenizer, split.texts, max_length=max_length)
    chosen = length_sample(lengths, samples, seed)
    chosen = chosen[length_order(lengths[chosen])]  # batches of like lengths pad less
    reference = torch_logits(
        model,
        tokenizer,
        [split.texts[i] for i in chosen],
        max_length=max_length,
        batch_size=PARITY_BATCH_SIZE,
    )
    per_example = np.abs(logits[chosen].astype(np.float64) - reference).max(axis=1, initial=0.0)
    worst = int(np.argmax(per_example)) if per_example.size else 0
    max_diff = float(per_example[worst]) if per_example.size else 0.0
    if not max_diff <= tolerance:  # NaN fails too
        raise LabelParityError(
            max_diff, tolerance, examples=len(chosen), worst_id=split.ids[int(chosen[worst])]
        )
    return {
        "examples": len(chosen),
        "seed": seed,
        "token_lengths": [int(lengths[chosen].min()), int(lengths[chosen].max())]
        if len(chosen)
        else [],
        "max_abs_diff": max_diff,
        "tolerance": tolerance,
    }
