"""Stage `data` (token classification): read, check and split the tagged sentences once, for
every later stage; the files it writes are described in
:mod:`distill.tasks.token_classification.files`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from distill.config import DataConfig
from distill.pipeline.artifacts import RunContext
from distill.tasks.token_classification.files import (
    ALL_SPLITS,
    entity_types_of,
    write_tag_names,
    write_tagged_split,
)
from distill.tasks.token_classification.splits import (
    build_tagged_splits,
    entity_counts,
    token_count,
)


def run(ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig) -> dict[str, Any]:
    splits, tag_names, report = build_tagged_splits(data, ctx.recipe_dir, ctx.seed)
    for name in ALL_SPLITS:
        write_tagged_split(out / f"{name}.jsonl", splits[name])
    write_tag_names(out, tag_names)
    unused = splits.pop("unused")
    return {
        "labels": tag_names,
        "entity_types": entity_types_of(tag_names),
        "tag_scheme": report.tag_scheme,
        "converted_to_iob2": report.converted_to_iob2,
        "repaired_tags": report.repaired_tags,
        "sizes": {name: len(split) for name, split in splits.items()},
        "unused_rows": len(unused),
        "tokens": {
            name: token_count(split) for name, split in {**splits, "unused": unused}.items()
        },
        "entity_counts": {name: entity_counts(split, tag_names) for name, split in splits.items()},
        "cleaning": dataclasses.asdict(report),
    }
