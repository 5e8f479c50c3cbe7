"""Stage `data` (question answering): read, check and split the questions once, by context,
for every later stage; it writes ``train``, ``validation``, ``test`` and ``unused`` ``.jsonl``
(see :mod:`distill.tasks.question_answering.examples`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.config import DataConfig
from distill.pipeline.artifacts import RunContext
from distill.tasks.question_answering.examples import ALL_SPLITS, write_examples
from distill.tasks.question_answering.splits import build_qa_splits


def run(ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig) -> dict[str, Any]:
    splits, report = build_qa_splits(data, ctx.recipe_dir, ctx.seed)
    for name in ALL_SPLITS:
        write_examples(out / f"{name}.jsonl", splits[name])
    unused = splits.pop("unused")
    return {
        "sizes": {name: len(split) for name, split in splits.items()},
        "contexts": {
            name: len({e.context for e in split})
            for name, split in {**splits, "unused": unused}.items()
        },
        "unanswerable": {
            name: sum(not e.answerable for e in split)
            for name, split in {**splits, "unused": unused}.items()
        },
        # SQuAD 2.0 data: the models learn (and may then give) "no answer".
        "no_answer": any(not e.answerable for e in splits["train"]),
        "unused_rows": len(unused),
        "cleaning": report,
    }
