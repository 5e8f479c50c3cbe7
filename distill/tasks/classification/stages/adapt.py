"""Stage `adapt` for classification: the shared masked-LM adaptation
(:mod:`distill.adapt.stage`) on this task's text: its training split and transfer text
(TAPT), or the unused rows, or a table; never its validation or test texts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.adapt.stage import adapt_encoder, teacher_reference
from distill.adapt.text import OwnText
from distill.config import AdaptConfig, DataConfig, TransferConfig
from distill.data.files import SPLITS
from distill.pipeline.artifacts import RunContext
from distill.tasks.classification.data import load_transfer
from distill.tasks.classification.files import read_split


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
    splits = {name: read_split(inputs["data"], name) for name in (*SPLITS, "unused")}
    transfer_texts: list[str] = []
    if transfer is not None and adapt.path is None:  # TAPT reads the transfer text too
        split, _ = load_transfer(transfer, data, ctx.recipe_dir, inputs["data"], ctx.seed)
        transfer_texts = split.texts
    own = OwnText(
        train=splits["train"].texts,
        transfer=transfer_texts,
        unused=splits["unused"].texts,
        evaluation=splits["validation"].texts + splits["test"].texts,
    )
    return adapt_encoder(
        ctx,
        out,
        data=data,
        adapt=adapt,
        teacher=teacher_reference(model, archive, revision, trust_remote_code),
        own=own,
    )
