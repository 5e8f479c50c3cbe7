"""Stage `adapt` for tagging: the shared masked-LM adaptation (:mod:`distill.adapt.stage`)
on this task's text, each sentence's words joined by spaces: its training split and
transfer sentences (TAPT), or the unused sentences, or a table; never its validation or
test sentences."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.adapt.stage import adapt_encoder, teacher_reference
from distill.adapt.text import OwnText
from distill.config import AdaptConfig, DataConfig, TransferConfig
from distill.data.files import SPLITS
from distill.pipeline.artifacts import RunContext
from distill.tasks.token_classification.files import read_tagged_split
from distill.tasks.token_classification.stages.labels import transfer_sentences


def _texts(sentences: list[list[str]]) -> list[str]:
    return [" ".join(words) for words in sentences]


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
    splits = {name: read_tagged_split(inputs["data"], name) for name in (*SPLITS, "unused")}
    transfer_texts: list[str] = []
    if transfer is not None and adapt.path is None:  # TAPT reads the transfer text too
        split, _ = transfer_sentences(transfer, data, ctx, inputs)
        transfer_texts = _texts(split.tokens)
    own = OwnText(
        train=_texts(splits["train"].tokens),
        transfer=transfer_texts,
        unused=_texts(splits["unused"].tokens),
        evaluation=_texts(splits["validation"].tokens) + _texts(splits["test"].tokens),
    )
    return adapt_encoder(
        ctx,
        out,
        data=data,
        adapt=adapt,
        teacher=teacher_reference(model, archive, revision, trust_remote_code),
        own=own,
    )
