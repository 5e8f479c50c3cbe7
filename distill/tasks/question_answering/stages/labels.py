"""Stage `labels` for question answering: the teacher's start and end logits for every window
of the training questions, cached once (ragged, keyed by window id: ``<question id>#<k>``)
so the student never reruns the teacher. With `[student.transfer]` unlabelled questions
(about contexts of their own) are labelled too.

Outputs: ``logits/train.npz`` and, with transfer questions, ``logits/transfer.npz`` (each
window a [tokens, 2] array: start, end) and ``transfer.jsonl`` (the transfer questions; any
answers they hold are ignored).
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distill.config import DataConfig, TransferConfig
from distill.data.ragged import save_ragged
from distill.errors import DataError
from distill.pipeline.artifacts import RunContext
from distill.tasks.question_answering.examples import (
    SPLITS,
    QAExample,
    read_examples,
    write_examples,
)
from distill.tasks.question_answering.models import load_saved_qa_model
from distill.tasks.question_answering.training import (
    example_windows,
    predictor,
    window_dataset,
    window_logits,
    windowing_of,
)
from distill.tasks.question_answering.windows import Window
from distill.train.models import load_tokenizer


def window_ids(examples: Sequence[QAExample], windows: Sequence[Window]) -> list[str]:
    """Each window's id: its question's id and its place among that question's windows."""
    seen: dict[int, int] = {}
    ids = []
    for window in windows:
        k = seen.get(window.example, 0)
        seen[window.example] = k + 1
        ids.append(f"{examples[window.example].id}#{k}")
    return ids


def run(
    ctx: RunContext,
    inputs: dict[str, Path],
    out: Path,
    *,
    data: DataConfig,
    transfer: TransferConfig | None,
) -> dict[str, Any]:
    teacher_dir = inputs["teacher"] / "model"
    model = load_saved_qa_model(teacher_dir).eval()
    tokenizer = load_tokenizer(str(teacher_dir), "teacher model")
    splits = {"train": read_examples(inputs["data"], "train")}
    metrics: dict[str, Any] = {}
    if transfer is not None:
        splits["transfer"], metrics["transfer"] = transfer_questions(transfer, data, ctx, inputs)
        write_examples(out / "transfer.jsonl", splits["transfer"])
    (out / "logits").mkdir()
    with tempfile.TemporaryDirectory(prefix="distill-labels-") as scratch:
        runner = predictor(model, tokenizer, Path(scratch))
        for name, examples in splits.items():
            windows, counts = example_windows(tokenizer, examples, windowing_of(data), False)
            start, end = window_logits(runner, window_dataset(windows), windows, f"labels: {name}")
            stacked = [np.stack([s, e], axis=-1) for s, e in zip(start, end, strict=True)]
            save_ragged(out / "logits" / f"{name}.npz", window_ids(examples, windows), stacked)
            metrics[name] = {"questions": len(examples), "windows": counts.windows}
    return metrics


def transfer_questions(
    transfer: TransferConfig, data: DataConfig, ctx: RunContext, inputs: dict[str, Path]
) -> tuple[list[QAExample], dict[str, int]]:
    """Unlabelled questions: those max_examples left out, or a table's question and context
    columns; never a question of the labelled splits, each once, at most
    transfer.max_examples (sampled)."""
    if transfer.path == "unused":
        candidates = [
            QAExample(e.id, e.question, e.context) for e in read_examples(inputs["data"], "unused")
        ]
    else:
        candidates = _table_questions(transfer, data, ctx.recipe_dir)
    seen = {
        (e.question.lower(), e.context)
        for name in SPLITS
        for e in read_examples(inputs["data"], name)
    }
    unique = []
    for example in candidates:
        key = (example.question.lower(), example.context)
        if example.question and example.context.strip() and key not in seen:
            seen.add(key)
            unique.append(example)
    if transfer.max_examples is not None and len(unique) > transfer.max_examples:
        picked = sorted(random.Random(ctx.seed).sample(range(len(unique)), transfer.max_examples))
        unique = [unique[i] for i in picked]
    if not unique:
        raise DataError(
            f"student.transfer.path: {transfer.path!r} holds no question that is not already "
            "labelled"
        )
    return unique, {"read": len(candidates), "used": len(unique)}


def _table_questions(transfer: TransferConfig, data: DataConfig, base_dir: Path) -> list[QAExample]:
    """A table's questions and contexts (the columns data.question_column and
    data.context_column name), in any format distill reads."""
    from distill.data.readers import read_table

    config = data.model_copy(
        update={"format": "auto", "encoding": transfer.encoding or data.encoding}
    )
    name, columns, rows = read_table(transfer.path, config, base_dir, "student.transfer.path")
    wanted = {
        "data.question_column": data.question_column,
        "data.context_column": data.context_column,
    }
    missing = [f"{column!r} ({key})" for key, column in wanted.items() if column not in columns]
    if missing:
        raise DataError(f"{name}: no column {', '.join(missing)}; the columns are {columns}")
    stem = Path(name).name
    return [
        QAExample(
            f"transfer:{stem}:{line}",
            str(row.get(data.question_column) or "").strip(),
            str(row.get(data.context_column) or ""),
        )
        for line, row in rows
    ]
