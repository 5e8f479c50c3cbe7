"""Stage `data` for causal LMs: read and split plain domain text once (no labels)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from distill.artifacts import RunContext
from distill.config import DataConfig
from distill.data import build_splits
from distill.dataset_files import SPLITS, write_label_names
from distill.tasks.causal_lm.files import write_split


def run(ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig) -> dict[str, Any]:
    splits, _, report = build_splits(data, ctx.recipe_dir, ctx.seed, labelled=False)
    for name in SPLITS:
        write_split(out / f"{name}.jsonl", splits[name])
    write_label_names(out, [])
    return {
        "sizes": {name: len(splits[name]) for name in SPLITS},
        "unused_rows": len(splits["unused"]),
        "cleaning": dataclasses.asdict(report),
    }
