"""Building a static student: the teacher's tokenizer (trimmed to the domain's tokens with
``trim_vocabulary``), the model2vec table's rows for those tokens, and a fresh head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import set_seed

from distill.tasks.classification.static.model import StaticClassifier, StaticConfig
from distill.tasks.classification.static.table import cached_table
from distill.train.models import load_tokenizer
from distill.train.vocabulary import plan_trim


def build_static_student(
    config: Any,
    teacher_dir: Path,
    label_names: list[str],
    *,
    trim_texts: list[str] | None,
    max_length: int,
    cache_dir: Path,
    seed: int,
) -> tuple[StaticClassifier, Any, dict[str, Any]]:
    """The static student, its tokenizer, and how it was built (for the stage's metrics)."""
    set_seed(seed)
    tokenizer = load_tokenizer(str(teacher_dir), "teacher model")
    table = cached_table(cache_dir, teacher_dir, tokenizer, config.static_dim)
    built: dict[str, Any] = {
        "init": "static",
        "table": "model2vec distillation of the fine-tuned teacher",
        "dimension": int(table.shape[1]),
        "pooling": config.static_pooling,
        "hidden": config.static_hidden,
    }
    if trim_texts is not None:
        tokenizer, keep, built["vocabulary"] = plan_trim(
            tokenizer, trim_texts, max_length, *table.shape
        )
        table = table[np.asarray(keep)]
    model = StaticClassifier(
        StaticConfig(
            vocab_size=len(table),
            embedding_dim=int(table.shape[1]),
            pooling=config.static_pooling,
            hidden_size=config.static_hidden,
            pad_token_id=tokenizer.pad_token_id or 0,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
        )
    )
    with torch.no_grad():
        model.embeddings.weight.copy_(torch.from_numpy(table))
    return model, tokenizer, built
