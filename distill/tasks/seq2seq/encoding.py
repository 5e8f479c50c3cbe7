"""Source-target pairs as token ids, and the batches the seq2seq Trainer reads.

A source is encoded with ``data.source_prefix`` in front and cut to ``data.max_length``
tokens; a target is encoded as the tokenizer encodes targets (``text_target``: Marian's
target vocabulary) and cut to ``data.max_target_length`` tokens with EOS kept last, so the
model learns where to stop. The collator pads sources with the pad id and labels with -100
(never scored), and carries the teacher's cached top-k per target token alongside.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from distill.tasks.seq2seq.files import PairSplit, with_prefix
from distill.train.topk import IGNORE_INDEX

# The teacher's cached top-k per target token (stages/labels.py), as batch columns.
TOP_K_COLUMNS = ("topk_values", "topk_indices", "topk_log_normalizer")
# 1 where an example's labels are also scored by cross-entropy, 0 where the KD term alone
# teaches them (transfer sources under word-level KD).
HARD = "hard"
_COLUMN_DTYPES = {
    "topk_values": torch.float32,
    "topk_indices": torch.long,
    "topk_log_normalizer": torch.float32,
}


def encode_sources(
    tokenizer: Any, sources: list[str], *, prefix: str, max_length: int
) -> list[list[int]]:
    """Token ids of each source with ``prefix`` in front, truncated to ``max_length``."""
    if not sources:
        return []
    encoded = tokenizer(with_prefix(prefix, sources), truncation=True, max_length=max_length)
    return [list(ids) for ids in encoded["input_ids"]]


def encode_targets(tokenizer: Any, targets: list[str], max_target_length: int) -> list[list[int]]:
    """Token ids of each target, truncated to ``max_target_length`` with EOS last."""
    if not targets:
        return []
    eos = tokenizer.eos_token_id
    encoded = tokenizer(text_target=targets, truncation=True, max_length=max_target_length)
    labels = []
    for ids in encoded["input_ids"]:
        ids = list(ids)
        if eos is not None and (not ids or ids[-1] != eos):
            ids = [*ids[: max_target_length - 1], eos]
        labels.append(ids)
    return labels


def encode_pairs(
    tokenizer: Any, split: PairSplit, *, prefix: str, max_length: int, max_target_length: int
) -> list[dict[str, Any]]:
    """One ``{"input_ids", "labels"}`` per pair, in the split's order."""
    sources = encode_sources(tokenizer, split.sources, prefix=prefix, max_length=max_length)
    labels = encode_targets(tokenizer, split.targets, max_target_length)
    return [
        {"input_ids": ids, "labels": target} for ids, target in zip(sources, labels, strict=True)
    ]


def _pad_column(features: list[dict[str, Any]], column: str, length: int) -> torch.Tensor:
    """One cached column ([tokens] or [tokens, k] per example), zero-padded to ``length``."""
    rows = [np.asarray(f[column]) for f in features]
    tail = rows[0].shape[1:]
    padded = torch.zeros((len(rows), length, *tail), dtype=_COLUMN_DTYPES[column])
    for row, values in enumerate(rows):
        padded[row, : len(values)] = torch.as_tensor(values).to(padded.dtype)
    return padded


class Seq2SeqCollator:
    """Pads ``input_ids`` (pad id) with their ``attention_mask`` to the longest source of the
    batch and ``labels`` (-100) to the longest target; the teacher's top-k columns, when the
    examples carry them, are padded to the labels' length (padding is never scored), and the
    per-example ``hard`` flag is kept as a tensor."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = len(features)
        source_length = max(len(f["input_ids"]) for f in features)
        target_length = max(len(f["labels"]) for f in features)
        ids = torch.full((rows, source_length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((rows, source_length), dtype=torch.long)
        labels = torch.full((rows, target_length), IGNORE_INDEX, dtype=torch.long)
        for row, feature in enumerate(features):
            n, m = len(feature["input_ids"]), len(feature["labels"])
            ids[row, :n] = torch.as_tensor(feature["input_ids"])
            mask[row, :n] = 1
            labels[row, :m] = torch.as_tensor(feature["labels"])
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        for column in TOP_K_COLUMNS:
            if column in features[0]:
                batch[column] = _pad_column(features, column, target_length)
        if HARD in features[0]:
            batch[HARD] = torch.as_tensor([bool(f[HARD]) for f in features])
        return batch


def as_dataset(
    examples: list[dict[str, Any]],
    cache: tuple[list[Any], list[Any], list[Any]] | None = None,
    hard: bool | None = None,
) -> Any:
    """The encoded pairs as a datasets.Dataset, with the teacher's cached top-k per example
    (values, ids, log-normalizers: stages/labels.load_top_k) and the ``hard`` flag when
    given."""
    import datasets

    columns: dict[str, Any] = {
        "input_ids": [e["input_ids"] for e in examples],
        "labels": [e["labels"] for e in examples],
    }
    if cache is not None:
        columns.update(zip(TOP_K_COLUMNS, cache, strict=True))
    if hard is not None:
        columns[HARD] = [hard] * len(examples)
    return datasets.Dataset.from_dict(columns)
