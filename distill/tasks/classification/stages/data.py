"""Stage `data`: read, clean and split the labelled data once, for every later stage."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from distill.config import DataConfig
from distill.data.files import SPLITS, write_label_names
from distill.pipeline.artifacts import RunContext
from distill.tasks.classification.data import build_splits, label_counts
from distill.tasks.classification.files import write_split


def run(ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig) -> dict[str, Any]:
    splits, label_names, report = build_splits(data, ctx.recipe_dir, ctx.seed)
    for name in SPLITS:
        write_split(out / f"{name}.jsonl", splits[name])
    write_label_names(out, label_names)
    unused = splits.pop("unused")
    write_split(out / "unused.jsonl", unused)
    return {
        "labels": label_names,
        "sizes": {name: len(split) for name, split in splits.items()},
        "unused_rows": len(unused),
        "label_counts": {name: label_counts(split, label_names) for name, split in splits.items()},
        "cleaning": dataclasses.asdict(report),
    }
