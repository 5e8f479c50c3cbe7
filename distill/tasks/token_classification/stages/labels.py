"""Stage `labels` for tagging: the teacher's per-sub-token logits for every split, cached
once (ragged, keyed by example id), so the student never reruns the teacher. With
`[student.transfer]` unlabelled sentences (tokens split on whitespace) are labelled too.

Outputs: ``logits/<split>.npz`` for train, validation, test and, with transfer text,
``transfer``; ``transfer.jsonl`` (the transfer sentences; their tags are ignored).
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

from distill.config import DataConfig, TransferConfig
from distill.data.files import SPLITS
from distill.data.ragged import save_ragged
from distill.errors import DataError
from distill.pipeline.artifacts import RunContext
from distill.tasks.token_classification.files import (
    TaggedSplit,
    read_tagged_split,
    write_tagged_split,
)
from distill.tasks.token_classification.models import load_saved_tagger
from distill.tasks.token_classification.training import encode, predictor, sentence_logits
from distill.train.models import load_tokenizer


def run(
    ctx: RunContext,
    inputs: dict[str, Path],
    out: Path,
    *,
    data: DataConfig,
    transfer: TransferConfig | None,
) -> dict[str, Any]:
    teacher_dir = inputs["teacher"] / "model"
    model = load_saved_tagger(teacher_dir).eval()
    tokenizer = load_tokenizer(str(teacher_dir), "teacher model")
    splits = {name: read_tagged_split(inputs["data"], name) for name in SPLITS}
    metrics: dict[str, Any] = {}
    if transfer is not None:
        splits["transfer"], metrics["transfer"] = transfer_sentences(transfer, data, ctx, inputs)
        write_tagged_split(out / "transfer.jsonl", splits["transfer"])
    (out / "logits").mkdir()
    with tempfile.TemporaryDirectory(prefix="distill-labels-") as scratch:
        runner = predictor(model, tokenizer, Path(scratch))
        for name, split in splits.items():
            dataset, _ = encode(tokenizer, split.tokens, None, data.max_length)
            logits = sentence_logits(runner, dataset, f"labels: {name}")
            save_ragged(out / "logits" / f"{name}.npz", split.ids, logits)
            metrics[name] = {"sentences": len(split), "sub_tokens": int(sum(map(len, logits)))}
    return metrics


def transfer_sentences(
    transfer: TransferConfig, data: DataConfig, ctx: RunContext, inputs: dict[str, Path]
) -> tuple[TaggedSplit, dict[str, int]]:
    """Unlabelled sentences: the rows max_examples left out, or a table's texts split on
    whitespace; never a labelled sentence, each once, at most transfer.max_examples (sampled)."""
    if transfer.path == "unused":
        pool = read_tagged_split(inputs["data"], "unused")
        candidates = list(zip(pool.ids, pool.tokens, strict=True))
    else:
        candidates = _table_sentences(transfer, data, ctx.recipe_dir)
    seen = {
        " ".join(words).lower()
        for name in SPLITS
        for words in read_tagged_split(inputs["data"], name).tokens
    }
    unique = []
    for example_id, words in candidates:
        key = " ".join(words).lower()
        if words and key not in seen:
            seen.add(key)
            unique.append((example_id, words))
    if transfer.max_examples is not None and len(unique) > transfer.max_examples:
        picked = sorted(random.Random(ctx.seed).sample(range(len(unique)), transfer.max_examples))
        unique = [unique[i] for i in picked]
    if not unique:
        raise DataError(
            f"student.transfer.path: {transfer.path!r} holds no sentence that is not already labelled"
        )
    tokens = [words for _, words in unique]
    split = TaggedSplit(
        ids=[i for i, _ in unique], tokens=tokens, tags=[[0] * len(t) for t in tokens]
    )
    return split, {"read": len(candidates), "used": len(unique)}


def _table_sentences(
    transfer: TransferConfig, data: DataConfig, base_dir: Path
) -> list[tuple[str, list[str]]]:
    """A table's texts (any format distill reads, CSV included) as whitespace-split words."""
    from distill.data.readers import read_table

    config = data.model_copy(
        update={"format": "auto", "encoding": transfer.encoding or data.encoding}
    )
    column = transfer.text_column or "text"
    name, columns, rows = read_table(transfer.path, config, base_dir, "student.transfer.path")
    if column not in columns:
        raise DataError(
            f"{name}: no column {column!r} (student.transfer.text_column); the columns are {columns}"
        )
    stem = Path(name).name
    return [
        (f"transfer:{stem}:{line}", str(row[column]).split())
        for line, row in rows
        if row.get(column) is not None
    ]
