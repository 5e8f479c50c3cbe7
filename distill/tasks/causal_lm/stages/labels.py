"""Stage `labels` for causal LMs: the teacher's distribution at every training token, cached.

A full distribution per token (49,152 floats for SmolLM2) is too large to cache. With
``student.teacher_outputs = "top-k"`` the top k (``student.top_k``) are kept, keyed by
example id, and the student learns from those
(:func:`distill.tasks.causal_lm.losses.token_distillation_loss`); with ``"sampled"``,
``student.samples_per_token`` token ids drawn per token from the teacher's softened
distribution (random-sampling KD: an unbiased estimate of forward KL, where top-k + tail is
biased). With ``"online"`` nothing is cached: the student stage runs the teacher at every
step instead.

Outputs: ``topk/train.npz`` with ``ids``, ``lengths`` (tokens per example), ``values``
(float16, [tokens, k]), ``indices`` (int32, [tokens, k]) and ``log_normalizer`` (float32,
[tokens]: ``logsumexp(logits / T)`` over the whole vocabulary at the student's temperature,
which gives the top-k ids their true probabilities and leaves the rest of the vocabulary
one "tail" bucket in the loss), rows in example order.

Or ``sampled/train.npz`` with ``ids``, ``lengths``, ``sample_ids`` (int32, [tokens, n]: drawn
with replacement from ``softmax(logits / T)``, a generator seeded with the run's seed) and
``sample_log_probs`` (float16, [tokens, n]: the teacher's log-probability of each at T,
which only makes the logged loss a KL; the gradient needs the ids alone).

The metrics record the cache's bytes per token and, for comparison, those of both layouts'
arrays at the recipe's ``top_k`` and ``samples_per_token``.
"""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.config import DataConfig
from distill.errors import ArtifactError
from distill.pipeline.artifacts import RunContext
from distill.pipeline.distributed import current
from distill.pipeline.progress import track
from distill.tasks.causal_lm.files import read_split
from distill.tasks.causal_lm.losses import sample_teacher_tokens
from distill.tasks.causal_lm.training import (
    CausalCollator,
    encode_texts,
    load_causal_lm,
    prepare_tokenizer,
)
from distill.train.models import load_tokenizer
from distill.train.topk import top_k_logits

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
    samples_per_token: int = 8,
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
    tokens = int(sum(len(s) for s in sequences))
    if teacher_outputs == "sampled":
        generator = torch.Generator().manual_seed(ctx.seed)
        samples = sampled_cache(
            model, sequences, tokenizer.pad_token_id, samples_per_token, temperature, generator
        )
        path = out / "sampled" / "train.npz"
        path.parent.mkdir()
        save_sampled(path, train.ids, sequences, *samples)
        mode: dict[str, Any] = {"mode": "sampled", "samples_per_token": samples_per_token}
    else:
        cache = top_k_cache(model, sequences, tokenizer.pad_token_id, top_k, temperature)
        path = out / "topk" / "train.npz"
        path.parent.mkdir()
        save_top_k(path, train.ids, sequences, *cache)
        mode = {"mode": "top-k", "k": top_k}
    size = path.stat().st_size
    return {
        **mode,
        "cached": True,
        "temperature": temperature,
        "examples": len(sequences),
        "tokens": tokens,
        "bytes": size,
        "bytes_per_token": size / tokens if tokens else None,
        # The per-token arrays of each layout (the file adds ids, lengths and a header).
        "array_bytes_per_token": {
            "top-k": top_k_bytes_per_token(top_k),
            "sampled": sampled_bytes_per_token(samples_per_token),
        },
        "seconds": round(time.perf_counter() - started, 2),
    }


def top_k_bytes_per_token(k: int) -> int:
    """float16 values and int32 ids of k logits, and the float32 log-normalizer."""
    return k * (2 + 4) + 4


def sampled_bytes_per_token(n: int) -> int:
    """int32 ids and float16 log-probabilities of n sampled tokens."""
    return n * (4 + 2)


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


@torch.no_grad()
def sampled_cache(
    model: Any,
    sequences: list[list[int]],
    pad_id: int,
    n: int,
    temperature: float,
    generator: torch.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` token ids drawn from the teacher's ``softmax(logits / temperature)`` at every
    real token of ``sequences`` and their log-probabilities, concatenated in order."""
    collate = CausalCollator(pad_id)
    ids, log_probs = [], []
    batches = range(0, len(sequences), BATCH_SIZE)
    for start in track(batches, desc="labels (sampled)", unit="batch"):
        chunk = sequences[start : start + BATCH_SIZE]
        batch = collate([{"input_ids": s} for s in chunk])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        for row, sequence in enumerate(chunk):
            # Row by row, real tokens only: the draws do not depend on the batch's padding.
            drawn, drawn_log_probs = sample_teacher_tokens(
                logits[row, : len(sequence)].float(), n, temperature, generator
            )
            ids.append(drawn.to(torch.int32).numpy())
            log_probs.append(drawn_log_probs.to(torch.float16).numpy())
    return np.concatenate(ids), np.concatenate(log_probs)


def save_sampled(
    path: Path, ids: list[str], sequences: list[list[int]], sample_ids: np.ndarray, log_probs: Any
) -> None:
    np.savez(
        path,
        ids=np.asarray(ids),
        lengths=np.asarray([len(s) for s in sequences], dtype=np.int32),
        sample_ids=sample_ids.astype(np.int32),
        sample_log_probs=log_probs.astype(np.float16),
    )


def _check_cache(
    path: Path, cached_ids: list[str], lengths: Any, ids: list[str], sequences: list[list[int]]
) -> None:
    if cached_ids != list(ids):
        raise ArtifactError(f"{path}: cached for other examples than the training split")
    if lengths.tolist() != [len(s) for s in sequences]:
        raise ArtifactError(
            f"{path}: cached for another tokenization of the training text (token counts differ)"
        )


def load_sampled(
    path: Path, ids: list[str], sequences: list[list[int]]
) -> tuple[list[Any], list[Any]]:
    """Per-example (sample ids, log-probabilities) lists aligned with ``ids``; refuses a cache
    made from other examples or another tokenization, as :func:`load_top_k` does."""
    if not path.is_file():
        raise ArtifactError(
            f"{path}: the teacher's sampled-token cache is missing; rerun --from labels"
        )
    with np.load(path) as cache:
        cached_ids = [str(i) for i in cache["ids"]]
        lengths, sample_ids = cache["lengths"], cache["sample_ids"]
        log_probs = cache["sample_log_probs"]
    _check_cache(path, cached_ids, lengths, ids, sequences)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    id_rows = [sample_ids[a:b].astype(np.int64) for a, b in itertools.pairwise(offsets)]
    log_prob_rows = [log_probs[a:b].astype(np.float32) for a, b in itertools.pairwise(offsets)]
    return id_rows, log_prob_rows


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
    _check_cache(path, cached_ids, lengths, ids, sequences)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    value_rows = [values[a:b].astype(np.float32) for a, b in itertools.pairwise(offsets)]
    index_rows = [indices[a:b].astype(np.int64) for a, b in itertools.pairwise(offsets)]
    normalizer_rows = [normalizers[a:b] for a, b in itertools.pairwise(offsets)]
    return value_rows, index_rows, normalizer_rows
