"""Stage `labels` for causal LMs: the teacher's top-k logits for every training token, cached.

A full distribution per token (49,152 floats for SmolLM2) is too large to cache; the top k
(``student.top_k``) are kept, keyed by example id, and the student learns from those
(:func:`distill.tasks.causal_lm.losses.token_distillation_loss`). With
``student.teacher_outputs = "online"`` nothing is cached: the student stage runs the teacher
at every step instead.

Outputs: ``topk/train.npz`` with ``ids``, ``lengths`` (tokens per example), ``values``
(float16, [tokens, k]), ``indices`` (int32, [tokens, k]) and ``log_normalizer`` (float32,
[tokens]: ``logsumexp(logits / T)`` over the whole vocabulary at the student's temperature,
which gives the top-k ids their true probabilities and leaves the rest of the vocabulary
one "tail" bucket in the loss), rows in example order.
"""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.artifacts import RunContext
from distill.config import DataConfig
from distill.dataset_files import read_split
from distill.distributed import current
from distill.errors import ArtifactError
from distill.models import load_tokenizer
from distill.progress import track
from distill.tasks.causal_lm.losses import top_k_logits
from distill.tasks.causal_lm.training import (
    CausalCollator,
    encode_texts,
    load_causal_lm,
    prepare_tokenizer,
)

log = logging.getLogger("distill")

BATCH_SIZE = 16


def run(
    ctx: RunContext,
    inputs: dict[str, Path],
    out: Path,
    *,
    data: DataConfig,
    teacher_outputs: str,
    top_k: int,
    temperature: float,
) -> dict[str, Any]:
    if teacher_outputs == "online":
        return {"mode": "online", "cached": False}
    if not current().is_main:  # one pass is enough; the others wait at the stage barrier
        return {}
    started = time.perf_counter()
    teacher_dir = inputs["teacher"] / "model"
    tokenizer = prepare_tokenizer(load_tokenizer(str(teacher_dir), "teacher model"))
    model = load_causal_lm(teacher_dir, "teacher model").eval()
    train = read_split(inputs["data"], "train")
    sequences = encode_texts(tokenizer, train, data.max_length)
    cache = top_k_cache(model, sequences, tokenizer.pad_token_id, top_k, temperature)
    (out / "topk").mkdir()
    save_top_k(out / "topk" / "train.npz", train.ids, sequences, *cache)
    return {
        "mode": "top-k",
        "cached": True,
        "k": top_k,
        "temperature": temperature,
        "examples": len(sequences),
        "tokens": int(sum(len(s) for s in sequences)),
        "bytes": (out / "topk" / "train.npz").stat().st_size,
        "seconds": round(time.perf_counter() - started, 2),
    }


@torch.no_grad()
def top_k_cache(
    model: Any, sequences: list[list[int]], pad_id: int, k: int, temperature: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k logits of every real token of ``sequences`` and the log-normalizer of the
    softened distribution (``logsumexp(logits / temperature)``), concatenated in order."""
    collate = CausalCollator(pad_id)
    values, indices, normalizers = [], [], []
    batches = range(0, len(sequences), BATCH_SIZE)
    for start in track(batches, desc="labels (top-k)", unit="batch"):
        chunk = sequences[start : start + BATCH_SIZE]
        batch = collate([{"input_ids": s} for s in chunk])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        top_values, top_indices = top_k_logits(logits.float(), min(k, logits.shape[-1]))
        normalizer = torch.logsumexp(logits.float() / temperature, dim=-1)
        for row, sequence in enumerate(chunk):
            values.append(top_values[row, : len(sequence)].to(torch.float16).numpy())
            indices.append(top_indices[row, : len(sequence)].to(torch.int32).numpy())
            normalizers.append(normalizer[row, : len(sequence)].numpy())
    return np.concatenate(values), np.concatenate(indices), np.concatenate(normalizers)


def save_top_k(
    path: Path,
    ids: list[str],
    sequences: list[list[int]],
    values: np.ndarray,
    indices: np.ndarray,
    log_normalizer: np.ndarray,
) -> None:
    lengths = np.asarray([len(s) for s in sequences], dtype=np.int32)
    np.savez(
        path,
        ids=np.asarray(ids),
        lengths=lengths,
        values=values,
        indices=indices,
        log_normalizer=log_normalizer.astype(np.float32),
    )


def load_top_k(
    path: Path, ids: list[str], sequences: list[list[int]]
) -> tuple[list[Any], list[Any]]:
    """Per-example (values, indices) lists aligned with ``ids``; refuses a cache made from
    other examples or another tokenization (the lengths must match token for token)."""
    if not path.is_file():
        raise ArtifactError(f"{path}: the teacher's top-k cache is missing; rerun --from labels")
    with np.load(path) as cache:
        cached_ids = [str(i) for i in cache["ids"]]
        lengths, values, indices = cache["lengths"], cache["values"], cache["indices"]
        normalizers = cache["log_normalizer"]
    if cached_ids != list(ids):
        raise ArtifactError(f"{path}: cached for other examples than the training split")
    expected = [len(s) for s in sequences]
    if lengths.tolist() != expected:
        raise ArtifactError(
            f"{path}: cached for another tokenization of the training text (token counts differ)"
        )
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    value_rows = [values[a:b].astype(np.float32) for a, b in itertools.pairwise(offsets)]
    index_rows = [indices[a:b].astype(np.int64) for a, b in itertools.pairwise(offsets)]
    normalizer_rows = [normalizers[a:b] for a, b in itertools.pairwise(offsets)]
    return value_rows, index_rows, normalizer_rows
