"""Read, check and split the source-target pairs of a recipe (``task = "seq2seq"``).

Sources (``data.path``, ``data.validation_path``, ``data.test_path``): any table
:func:`distill.data.readers.read_table` reads (CSV/TSV, JSON records, JSON Lines, Parquet, a
hub dataset), one pair per row in ``data.source_column`` and ``data.target_column`` (ids in
``data.id_column``, else ``FILE:LINE``). Texts lose their surrounding whitespace; one longer
than :data:`~distill.data.readers.MAX_TEXT_CHARS` is cut there (counted). A missing column is
an error naming its recipe key and the columns there are; an empty source or target, a value
that is not a string (a JSON number, a Parquet integer) or a repeated id is a bad row, and every
bad row of a file is reported at once (up to :data:`MAX_PROBLEMS`, then a count), each naming
the file, its line and the recipe key of its column.

Cleaning: with ``data.deduplicate`` a pair repeating an earlier one (source and target both
the same, case and runs of whitespace aside) is dropped; ``data.max_examples`` keeps a seeded
sample of the pairs, the rest are ``unused`` (the transfer sources of ``student.transfer.path =
'unused'``); validation and test are seeded samples unless given as files; a source that
validation or test hold is dropped from training (or refused without ``data.deduplicate``)
and from ``unused``, so no model is scored on a source it was trained on. Same seed, same
splits.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.config import DataConfig
from distill.data.problems import Problems
from distill.data.readers import (
    MAX_TEXT_CHARS,
    read_table,
    table_format,
    text_key,
    without_evaluation_items,
)
from distill.errors import DataError
from distill.tasks.seq2seq.files import UNUSED, PairSplit

# Bad rows listed in one error; the rest are counted.
SPLITS = ("train", "validation", "test")
ALL_SPLITS = (*SPLITS, UNUSED)


@dataclass(frozen=True)
class Pair:
    """One source-target pair and where it was read (``FILE: line N``, for errors)."""

    example_id: str
    source: str
    target: str
    where: str


def source_key(pair: Pair) -> str:
    """What makes two sources the same source: case and runs of whitespace do not count."""
    return text_key(pair.source)


def pair_key(pair: Pair) -> tuple[str, str]:
    """What makes two pairs the same pair: the same source and the same target."""
    return text_key(pair.source), text_key(pair.target)


def _position_word(name: str, data: DataConfig) -> str:
    """How a row's position reads: a line of a text file, a record of a JSON document, a row
    of a Parquet file or hub dataset."""
    fmt = table_format(Path(name), data)
    return {"csv": "line", "jsonl": "line", "json": "record"}.get(fmt or "", "row")


def table_column(column: str, columns: list[str]) -> str:
    """The table column that holds ``column``: itself, or for a nested name the column
    before its first dot (``translation.en`` in a ``translation`` column of objects, as hub
    translation sets such as wmt16 store their pairs)."""
    if column in columns or "." not in column:
        return column
    return column.split(".", 1)[0]


def _check_columns(name: str, key: str, columns: list[str], data: DataConfig) -> None:
    """Every column the recipe names is in the table, else a DataError naming each key."""
    wanted = {
        "data.source_column": data.source_column,
        "data.target_column": data.target_column,
        "data.id_column": data.id_column,
    }
    missing = [
        f"{recipe_key} = {column!r}: no such column"
        for recipe_key, column in wanted.items()
        if column and table_column(column, columns) not in columns
    ]
    if missing:
        raise DataError(f"{name} ({key}): {'; '.join(missing)}; the columns are {columns}")


def _text(
    record: dict[str, Any], column: str, key: str, what: str, problems: list[str]
) -> str | None:
    """The stripped text of ``record[column]``; None (and a problem) when it has none."""
    named = f"column {column!r} ({key})"
    found, value = _lookup(record, column)
    if not found:
        problems.append(f"{named}: no value (the row has no {column!r})")
        return None
    if value is not None and not isinstance(value, str):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:60] + "..."
        problems.append(f"{named}: the {what} is {type(value).__name__} {shown}, not a string")
        return None
    text = (value or "").strip()
    if not text:
        problems.append(f"{named}: empty {what}")
        return None
    return text


def source_text(record: dict[str, Any], column: str, problems: list[str]) -> str | None:
    """A row's source text from ``column`` (nested names too), or None with its problem
    (missing, not text, empty) appended: how transfer files are read."""
    return _text(record, column, "data.source_column", "source", problems)


def _lookup(record: dict[str, Any], column: str) -> tuple[bool, Any]:
    """Whether the row has ``column`` (a nested ``a.b`` read as ``record["a"]["b"]`` when the
    row has no ``a.b`` itself), and its value."""
    if column in record:
        return True, record[column]
    head, _, rest = column.partition(".")
    inner = record.get(head) if rest else None
    if isinstance(inner, dict):
        return _lookup(inner, rest)
    return False, None


def _pair(
    record: dict[str, Any], stem: str, line: int, where: str, data: DataConfig, problems: Problems
) -> Pair | None:
    """The pair of the row at ``line`` (``where``: how errors name it; ``stem``: the file's
    name, the default id's prefix); None when the row is bad (its problems added)."""
    found: list[str] = []
    source = _text(record, data.source_column, "data.source_column", "source", found)
    target = _text(record, data.target_column, "data.target_column", "target", found)
    example_id = f"{stem}:{line}"
    if data.id_column:
        value = record.get(data.id_column)
        if value is None or str(value).strip() == "":
            found.append(f"column {data.id_column!r} (data.id_column): empty id")
        else:
            example_id = str(value)
    for problem in found:
        problems.add(where, problem)
    if found or source is None or target is None:
        return None
    return Pair(example_id, source, target, where)


def read_pairs(
    reference: str, data: DataConfig, base_dir: Path, key: str, report: dict[str, Any]
) -> list[Pair]:
    """The pairs of one file or hub dataset, in order, every bad row reported at once; counts
    the rows read (``report["read"][key]``) and the texts cut (``report["texts_truncated"]``)."""
    name, columns, rows = read_table(reference, data, base_dir, key)
    _check_columns(name, key, columns, data)
    if not rows:
        raise DataError(f"{name} ({key}): the data set is empty")
    stem, word = Path(name).name, _position_word(name, data)
    problems = Problems(name, key, "bad row")
    pairs: list[Pair] = []
    for line, record in rows:
        pair = _pair(record, stem, line, f"{stem}: {word} {line}", data, problems)
        if pair is not None:
            pairs.append(_truncated(pair, report))
    seen: dict[str, str] = {}
    for pair in pairs:
        if pair.example_id in seen:
            problems.add(
                pair.where,
                f"column {data.id_column!r} (data.id_column): duplicate id "
                f"{pair.example_id!r} (first at {seen[pair.example_id]})",
            )
        seen.setdefault(pair.example_id, pair.where)
    problems.raise_any()
    report["read"][key] = len(rows)
    return pairs


def _truncated(pair: Pair, report: dict[str, Any]) -> Pair:
    """``pair`` with a source or target over MAX_TEXT_CHARS cut there (each cut counted)."""
    source, target = pair.source, pair.target
    for text in (source, target):
        report["texts_truncated"] += len(text) > MAX_TEXT_CHARS
    if len(source) <= MAX_TEXT_CHARS and len(target) <= MAX_TEXT_CHARS:
        return pair
    return Pair(pair.example_id, source[:MAX_TEXT_CHARS], target[:MAX_TEXT_CHARS], pair.where)


def deduplicated(pairs: list[Pair]) -> tuple[list[Pair], int]:
    """The first of each pair (:func:`pair_key`), and how many repeats went."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for pair in pairs:
        if pair_key(pair) not in seen:
            seen.add(pair_key(pair))
            kept.append(pair)
    return kept, len(pairs) - len(kept)


def split_off(pairs: list[Pair], count: int, seed: int) -> tuple[list[Pair], list[Pair]]:
    """``(kept, taken)``: a seeded random sample of ``count`` pairs taken (all when fewer);
    both keep the input order."""
    taken = set(random.Random(seed).sample(range(len(pairs)), min(count, len(pairs))))
    return (
        [p for i, p in enumerate(pairs) if i not in taken],
        [p for i, p in enumerate(pairs) if i in taken],
    )


def _evaluation_splits(
    pool: list[Pair], data: DataConfig, base_dir: Path, seed: int, report: dict[str, Any]
) -> dict[str, list[Pair]]:
    """train/validation/test: the separate files where given, else shares of ``pool``;
    training loses every source validation or test hold."""
    parts: dict[str, list[Pair]] = {}
    for name, reference in (("validation", data.validation_path), ("test", data.test_path)):
        if reference is not None:
            parts[name] = read_pairs(reference, data, base_dir, f"data.{name}_path", report)
    train = pool
    if "test" not in parts:
        train, parts["test"] = split_off(train, math.ceil(data.test_fraction * len(pool)), seed)
    if "validation" not in parts:
        count = math.ceil(data.validation_fraction * len(pool))
        train, parts["validation"] = split_off(train, count, seed + 1)
    parts["train"], report["train_overlap_dropped"] = without_evaluation_items(
        train, parts, source_key, "source", data.deduplicate
    )
    return parts


def require_pairs(parts: dict[str, list[Pair]], report: dict[str, Any]) -> None:
    """A DataError when train, validation or test has no pair (the shared ``require_rows``
    message, naming the recipe key that would fill it)."""
    for name in SPLITS:
        if parts[name]:
            continue
        if name == "train":
            dropped = report["train_overlap_dropped"]
            why = f" ({dropped} source(s) also in validation/test dropped)" if dropped else ""
            raise DataError(
                f"the train split is empty{why}; add data or change data.validation_fraction "
                "/ data.test_fraction"
            )
        raise DataError(f"the {name} split is empty; add data or change data.{name}_fraction")


def build_pair_splits(
    data: DataConfig, base_dir: Path, seed: int
) -> tuple[dict[str, PairSplit], dict[str, Any]]:
    """Read, check, clean and split the pairs: train, validation, test and unused (what
    ``data.max_examples`` left out, less every source validation or test hold), and the
    cleaning report. Same seed, same splits."""
    report: dict[str, Any] = {
        "read": {},
        "texts_truncated": 0,
        "duplicates_dropped": 0,
        "subsampled_from": None,
        "train_overlap_dropped": 0,
        "unused_overlap_dropped": 0,
    }
    pool = read_pairs(data.path, data, base_dir, "data.path", report)
    if data.deduplicate:
        pool, report["duplicates_dropped"] = deduplicated(pool)
    unused: list[Pair] = []
    if data.max_examples is not None and len(pool) > data.max_examples:
        report["subsampled_from"] = len(pool)
        pool, unused = split_off(pool, len(pool) - data.max_examples, seed)
    parts = _evaluation_splits(pool, data, base_dir, seed, report)
    require_pairs(parts, report)
    held_out = {source_key(p) for name in ("validation", "test") for p in parts[name]}
    parts[UNUSED] = [p for p in unused if source_key(p) not in held_out]
    report["unused_overlap_dropped"] = len(unused) - len(parts[UNUSED])
    return {name: as_split(parts[name]) for name in ALL_SPLITS}, report


def as_split(pairs: list[Pair]) -> PairSplit:
    return PairSplit(
        ids=[p.example_id for p in pairs],
        sources=[p.source for p in pairs],
        targets=[p.target for p in pairs],
    )
