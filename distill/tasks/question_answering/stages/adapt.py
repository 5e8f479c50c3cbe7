"""Stage `adapt` for question answering: the shared masked-LM adaptation
(:mod:`distill.adapt.stage`) on this task's text, its contexts (each once): the training
split's and the transfer questions' (TAPT), or the unused questions', or a table; never a
context of the validation or test questions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.adapt.stage import adapt_encoder, teacher_reference
from distill.adapt.text import OwnText
from distill.config import AdaptConfig, DataConfig, TransferConfig
from distill.pipeline.artifacts import RunContext
from distill.tasks.question_answering.examples import ALL_SPLITS, QAExample, read_examples
from distill.tasks.question_answering.stages.labels import transfer_questions


def _contexts(examples: list[QAExample]) -> list[str]:
    return list(dict.fromkeys(e.context for e in examples))


def run(
    ctx: RunContext,
    inputs: dict[str, Path],
    out: Path,
    *,
    data: DataConfig,
    adapt: AdaptConfig,
    model: str,
    archive: list[str] | None,
    revision: str | None,
    trust_remote_code: bool,
    transfer: TransferConfig | None = None,
) -> dict[str, Any]:
    splits = {name: read_examples(inputs["data"], name) for name in ALL_SPLITS}
    transfer_texts: list[str] = []
    if transfer is not None and adapt.path is None:  # TAPT reads the transfer contexts too
        questions, _ = transfer_questions(transfer, data, ctx, inputs)
        transfer_texts = _contexts(questions)
    own = OwnText(
        train=_contexts(splits["train"]),
        transfer=transfer_texts,
        unused=_contexts(splits["unused"]),
        evaluation=_contexts(splits["validation"] + splits["test"]),
    )
    return adapt_encoder(
        ctx,
        out,
        data=data,
        adapt=adapt,
        teacher=teacher_reference(model, archive, revision, trust_remote_code),
        own=own,
    )
