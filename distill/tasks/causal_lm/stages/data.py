"""Stage `data` for causal LMs: read and split plain domain text once (no labels)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from distill.config import DataConfig
from distill.data.files import SPLITS, write_label_names
from distill.data.readers import require_rows, split_rows
from distill.pipeline.artifacts import RunContext
from distill.tasks.causal_lm.files import TextSplit, write_split


def run(ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig) -> dict[str, Any]:
    parts, unused, report = split_rows(data, ctx.recipe_dir, ctx.seed, labelled=False)
    for name in SPLITS:
        require_rows(parts, name)
    for name in SPLITS:
        split = TextSplit(
            ids=[r.example_id for r in parts[name]], texts=[r.text for r in parts[name]]
        )
        write_split(out / f"{name}.jsonl", split)
    write_label_names(out, [])
    return {
        "sizes": {name: len(parts[name]) for name in SPLITS},
        "unused_rows": len(unused),
        "cleaning": dataclasses.asdict(report),
    }
