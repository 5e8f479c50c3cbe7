"""Stage `data` (seq2seq): read, check and split the source-target pairs once, for every later
stage; it writes ``train``, ``validation``, ``test`` and ``unused`` ``.jsonl`` (see
:mod:`distill.tasks.seq2seq.files`) and measures the texts' lengths in characters, which tell
whether ``data.max_length`` and ``data.max_target_length`` fit the data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.config import DataConfig
from distill.pipeline.artifacts import RunContext
from distill.tasks.seq2seq.files import UNUSED, PairSplit, write_split
from distill.tasks.seq2seq.pairs import ALL_SPLITS, SPLITS, build_pair_splits


def length_stats(texts: list[str]) -> dict[str, float | int | None]:
    """Mean and longest length of ``texts`` in characters (None for no text)."""
    if not texts:
        return {"mean": None, "max": None}
    lengths = [len(text) for text in texts]
    return {"mean": round(sum(lengths) / len(lengths), 2), "max": max(lengths)}


def run(ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig) -> dict[str, Any]:
    splits, report = build_pair_splits(data, ctx.recipe_dir, ctx.seed)
    for name in ALL_SPLITS:
        write_split(out / f"{name}.jsonl", splits[name])
    return {
        "sizes": {name: len(splits[name]) for name in SPLITS},
        "unused_rows": len(splits[UNUSED]),
        "cleaning": report,
        "lengths": {name: _lengths(splits[name]) for name in ALL_SPLITS},
    }


def _lengths(split: PairSplit) -> dict[str, dict[str, float | int | None]]:
    return {"source": length_stats(split.sources), "target": length_stats(split.targets)}
