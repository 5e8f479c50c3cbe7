"""Vocabulary trimming: keep the tokens the domain text uses, drop the rest of the embedding rows.

For a small student the embedding matrix is most of the model (30522 x 384 = 11.7M of a
2-layer MiniLM's 15.6M parameters), while tweets use a few thousand WordPiece tokens.
Trimming keeps the special tokens plus every token that occurs in the training text, in
their original order, so the kept ids stay sorted and low special ids stay where they are.

It is exact for the text it was built from: WordPiece matches the longest vocabulary
prefix first, and every piece that text used is kept while any longer prefix was never in
the vocabulary, so that text tokenizes to the same pieces. Unseen text may use a dropped
token; it then falls back to shorter pieces or the unknown token, as a deployed model would.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
from torch import nn

from distill.errors import ModelLoadError


def used_token_ids(tokenizer: Any, texts: list[str], max_length: int) -> set[int]:
    """Ids of the tokens ``texts`` use (as truncated for training), special tokens included."""
    used: set[int] = set(tokenizer.all_special_ids)
    for start in range(0, len(texts), 1024):
        batch = tokenizer(texts[start : start + 1024], truncation=True, max_length=max_length)
        for ids in batch["input_ids"]:
            used.update(ids)
    return used


def _remap_post_processor(processor: dict[str, Any] | None, new_id: dict[int, int]) -> None:
    """Renumber the special-token ids a tokenizers post-processor inserts ([CLS], [SEP], ...)."""
    if not processor:
        return
    kind = processor.get("type")
    if kind == "TemplateProcessing":
        for special in processor.get("special_tokens", {}).values():
            special["ids"] = [new_id[i] for i in special["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for field in ("sep", "cls"):
            token, old = processor[field]
            processor[field] = [token, new_id[old]]
    elif kind == "Sequence":
        for inner in processor.get("processors", []):
            _remap_post_processor(inner, new_id)
    elif kind not in (None, "ByteLevel"):
        raise ModelLoadError(
            f"student.trim_vocabulary: cannot renumber a {kind} post-processor's token ids"
        )


def trim_tokenizer(tokenizer: Any, keep: list[int]) -> Any:
    """A copy of a fast WordPiece tokenizer whose vocabulary is ``keep`` (old ids, ascending)."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelLoadError(
            f"student.trim_vocabulary needs a fast tokenizer; {type(tokenizer).__name__} is not"
        )
    spec = json.loads(backend.to_str())
    model = spec["model"]
    if model.get("type") != "WordPiece":
        raise ModelLoadError(
            f"student.trim_vocabulary supports WordPiece tokenizers (BERT, MiniLM, MPNet); this "
            f"student's tokenizer is {model.get('type')}: set student.trim_vocabulary = false"
        )
    new_id = {old: new for new, old in enumerate(keep)}
    by_id = {i: token for token, i in model["vocab"].items()}
    model["vocab"] = {by_id[old]: new for new, old in enumerate(keep)}
    spec["added_tokens"] = [
        {**added, "id": new_id[added["id"]]}
        for added in spec.get("added_tokens", [])
        if added["id"] in new_id
    ]
    _remap_post_processor(spec.get("post_processor"), new_id)
    trimmed = copy.deepcopy(tokenizer)
    trimmed._tokenizer = Tokenizer.from_str(json.dumps(spec))
    return trimmed


def plan_trim(
    tokenizer: Any, texts: list[str], max_length: int, rows: int, width: int
) -> tuple[Any, list[int], dict[str, int]]:
    """What trimming an embedding table of ``rows`` x ``width`` to the tokens ``texts`` use
    keeps: the trimmed tokenizer, the kept old ids (ascending) and the sizes."""
    keep = sorted(used_token_ids(tokenizer, texts, max_length))
    if keep[-1] >= rows:
        raise ModelLoadError(
            f"student.trim_vocabulary: the tokenizer produces id {keep[-1]} but the model has "
            f"only {rows} embedding rows"
        )
    sizes = {
        "vocabulary_before": rows,
        "vocabulary_after": len(keep),
        "embedding_parameters_saved": (rows - len(keep)) * width,
    }
    return trim_tokenizer(tokenizer, keep), keep, sizes


def trim_vocabulary(
    model: nn.Module, tokenizer: Any, texts: list[str], max_length: int
) -> tuple[nn.Module, Any, np.ndarray, dict[str, int]]:
    """Trim ``model``'s input embeddings and ``tokenizer`` to the tokens ``texts`` use.

    Returns the model (changed in place), the new tokenizer, ``new id -> old id`` and sizes.
    """
    embeddings = model.get_input_embeddings()
    old_rows, width = embeddings.weight.shape
    trimmed_tokenizer, keep, sizes = plan_trim(tokenizer, texts, max_length, old_rows, width)
    pad = trimmed_tokenizer.pad_token_id
    trimmed = nn.Embedding(len(keep), width, padding_idx=pad)
    trimmed.weight.data.copy_(embeddings.weight.data[keep])
    trimmed.weight.requires_grad_(embeddings.weight.requires_grad)
    model.set_input_embeddings(trimmed)
    model.config.vocab_size = len(keep)
    if pad is not None:
        model.config.pad_token_id = pad
        base = getattr(model, "base_model", model)
        if hasattr(getattr(base, "embeddings", None), "padding_idx"):  # MPNet / RoBERTa positions
            base.embeddings.padding_idx = pad
    return model, trimmed_tokenizer, np.asarray(keep, dtype=np.int64), sizes
