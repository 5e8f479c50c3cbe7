r"""Read and check tagged sentences for named-entity recognition; every sentence gets a stable
id (:mod:`distill.tasks.token_classification.splits` splits them).

Sources (``data.path``, ``data.validation_path``, ``data.test_path``; ``data.format``):
  * CoNLL-style column files (``auto``: any extension but .json/.jsonl/.parquet): one token per
    line (lines end at ``\n`` or ``\r\n`` only: U+2028 or U+0085 inside a token stays there),
    columns split on tabs (or on runs of spaces when a line has no tab), the token in column
    ``data.token_index`` and its tag in ``data.tag_index`` (negative counts from the end).
    Blank or whitespace-only lines (a line holding a single tab too) end a sentence;
    ``-DOCSTART-`` lines are skipped. Every token line must have as many columns as the first.
  * JSON lines (``auto``: .jsonl and .json) or Parquet (.parquet): one sentence per row, a list
    of tokens in ``data.tokens_column`` and a list of tag names in ``data.tags_column``;
    ``format = "json"`` reads one JSON array of such objects (or ``{"data": [...]}``).
  * A hub dataset id: ``datasets.load_dataset(path, split=data.hub_split)``; integer tags are
    named through the column's ``ClassLabel`` names.

Tag schemes: see :mod:`distill.tasks.token_classification.sentences` (everything is stored
as IOB2; a tag that continues no entity is an error or, with ``data.repair_tags``, repaired).

Readers are strict on purpose: a ragged line, a token/tag count mismatch or an unknown tag is an
error naming the file and line, never a silently shifted tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import DataConfig
from distill.data.readers import (
    decode_text,
    read_json_rows,
    read_jsonl_rows,
    read_parquet_rows,
    text_lines,
)
from distill.errors import DataError
from distill.sources.paths import SourceError, resolve_local
from distill.tasks.token_classification.sentences import Sentence, normalise_tags

DOCSTART = "-DOCSTART-"
# Column separators: tabs, else runs of spaces. Other whitespace (U+0085, U+2028, \x0c...)
# is part of a token, as it is part of a line (see text_lines).
_COLUMN_SPACE = " \t"
_COLUMN_GAP = re.compile(f"[{_COLUMN_SPACE}]+")
# Formats this task reads; csv is classification's (a CSV cell holds no token list).
FORMATS = ("auto", "json", "jsonl", "parquet")
_SUFFIX_FORMATS = {".json": "jsonl", ".jsonl": "jsonl", ".parquet": "parquet"}


@dataclass
class TagReport:
    """What reading and cleaning did, recorded in the data stage's metrics."""

    tag_scheme: str = "iob2"
    converted_to_iob2: bool = False
    sentences_read: dict[str, int] = field(default_factory=dict)
    empty_sentences_skipped: dict[str, int] = field(default_factory=dict)
    repaired_tags: int = 0  # I- (BIOES: E-) tags that continued nothing, read as B- (S-)
    duplicates_dropped: int = 0
    train_overlap_dropped: int = 0
    subsampled_from: int | None = None
    stratified: bool = True
    # Tags of unused sentences whose type training never has: written as O (unused is unlabelled).
    unused_tags_outside_training: int = 0


def source_format(path: Path, config: DataConfig) -> str:
    """``conll``, ``jsonl``, ``json`` or ``parquet`` for a local file."""
    if config.format not in FORMATS:
        raise DataError(
            f"data.format = {config.format!r}: token classification reads "
            "CoNLL column files, JSON lines, JSON or Parquet (set data.format = 'auto')"
        )
    if config.format != "auto":
        return config.format
    return _SUFFIX_FORMATS.get(path.suffix.lower(), "conll")


def data_columns(config: DataConfig, path: Path) -> tuple[str, dict[str, str]] | None:
    """For ``distill validate``: the format of a local data file and the columns the data
    stage reads from it; None for a CoNLL file (its columns are positions, not names)."""
    from distill.tasks.token_classification.task import TokenClassification

    fmt = source_format(path, config)
    return None if fmt == "conll" else (fmt, TokenClassification.named_columns(config))


# --- CoNLL column files ---------------------------------------------------------------------


def _conll_fields(line: str) -> list[str]:
    """Tabs separate columns when the line has one (a token may then hold a space), else runs
    of spaces; a blank line (whitespace only, any whitespace) has none. Only spaces and tabs
    separate columns or are stripped from them: U+0085 stays in its token."""
    if not line.strip():
        return []
    if "\t" in line:
        return [part.strip(_COLUMN_SPACE) for part in line.split("\t")]
    return _COLUMN_GAP.split(line.strip(_COLUMN_SPACE))


def _column(index: int, width: int, key: str, where: str) -> int:
    position = index if index >= 0 else width + index
    if not 0 <= position < width:
        raise DataError(f"{where}: {width} column(s); data.{key} = {index} names none of them")
    return position


def _conll_columns(fields: list[str], config: DataConfig, where: str) -> tuple[int, int]:
    """The token and tag columns, resolved against the first token line's width."""
    token = _column(config.token_index, len(fields), "token_index", where)
    tag = _column(config.tag_index, len(fields), "tag_index", where)
    if token == tag:
        raise DataError(
            f"{where}: data.token_index ({config.token_index}) and data.tag_index "
            f"({config.tag_index}) name the same column of {len(fields)}; columns are split "
            "on tabs, or on whitespace when a line has no tab"
        )
    return token, tag


def read_conll(path: Path, config: DataConfig) -> list[Sentence]:
    """The sentences of a CoNLL column file, tags as written."""
    sentences: list[Sentence] = []
    current: list[tuple[int, str, str]] = []  # (line, token, tag) of the open sentence
    first: tuple[int, int] | None = None  # (line, width) of the first token line
    columns = (0, 0)
    for number, line in enumerate(text_lines(decode_text(path, config.encoding)), start=1):
        if "\r" in line:  # not before a \n: splitlines ended a line there, text_lines does not
            raise DataError(
                f"{path}: line {number}: a carriage return (\\r) inside the line; lines end at "
                "\\n or \\r\\n (convert a file with old Mac line endings)"
            )
        fields = _conll_fields(line)
        if not fields or fields[0] == DOCSTART:
            _close_sentence(path, current, sentences)
            continue
        where = f"{path}: line {number}"
        if first is None:
            first = (number, len(fields))
            columns = _conll_columns(fields, config, where)
        elif len(fields) != first[1]:
            raise DataError(
                f"{where}: {len(fields)} column(s), line {first[0]} (the first token) has "
                f"{first[1]}"
            )
        # Whitespace around a tag is never part of it (a token keeps all but spaces and tabs).
        token, tag = fields[columns[0]], fields[columns[1]].strip()
        if not token.strip() or not tag:
            raise DataError(f"{where}: empty {'token' if not token.strip() else 'tag'} column")
        current.append((number, token, tag))
    _close_sentence(path, current, sentences)
    return sentences


def _close_sentence(
    path: Path, current: list[tuple[int, str, str]], sentences: list[Sentence]
) -> None:
    """End the open sentence (if any: blank lines in a row are one separator)."""
    if not current:
        return
    lines = [line for line, _, _ in current]
    sentences.append(
        Sentence(
            example_id=f"{path.name}:{lines[0]}",
            tokens=[token for _, token, _ in current],
            tags=[tag for _, _, tag in current],
            source=str(path),
            line=lines[0],
            token_lines=lines,
        )
    )
    current.clear()


# --- JSON lines, JSON, Parquet, hub ---------------------------------------------------------


def _read_hub(
    dataset_id: str, config: DataConfig, key: str
) -> tuple[list[str], list[tuple[int, dict[str, Any]]], list[str] | None]:
    """Rows of a hub dataset, and the names of its integer tags (``ClassLabel``) if it has them."""
    import datasets

    try:
        dataset = datasets.load_dataset(dataset_id, split=config.hub_split)
    except Exception as exc:  # offline, unknown id, unknown split: all one message for the user
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise SourceError(
            f"{key}: {dataset_id!r} is not a local file and could not be loaded as a hub dataset "
            f"(split {config.hub_split!r}): {type(exc).__name__}: {first}"
        ) from None
    feature = dataset.features.get(config.tags_column)
    inner = feature[0] if isinstance(feature, list) else getattr(feature, "feature", None)
    names = getattr(inner, "names", None)
    rows = [(i + 1, row) for i, row in enumerate(dataset)]
    return list(dataset.column_names), rows, list(names) if names else None


def _word_list(value: Any, what: str, where: str, names: list[str] | None = None) -> list[str]:
    """A row's tokens or tags as a list of non-empty strings (integer tags named by ``names``)."""
    if not isinstance(value, list | tuple):
        raise DataError(f"{where}: {what} is {type(value).__name__}, not a list")
    words = []
    for position, item in enumerate(value, start=1):
        if names is not None and isinstance(item, int) and 0 <= item < len(names):
            item = names[item]
        if not isinstance(item, str) or not item.strip():
            # Integer tags need names, which only a hub dataset's ClassLabel carries.
            named = " (a tag name such as 'B-PER')" if isinstance(item, int) else ""
            raise DataError(
                f"{where}: {what} item {position} is {item!r}; expected a non-empty string{named}"
            )
        words.append(item.strip())
    return words


def sentences_from_rows(
    name: str,
    columns: list[str],
    rows: list[tuple[int, dict[str, Any]]],
    config: DataConfig,
    tag_names: list[str] | None = None,
) -> tuple[list[Sentence], int]:
    """Sentences of table rows, and how many rows held no token (skipped)."""
    wanted = (config.tokens_column, config.tags_column, config.id_column)
    missing = [c for c in wanted if c and c not in columns]
    if missing:
        raise DataError(
            f"{name}: no column {', '.join(map(repr, missing))}; the columns are {columns}"
        )
    sentences, empty = [], 0
    for line, record in rows:
        where = f"{name}: line {line}"
        tokens = _word_list(record.get(config.tokens_column), config.tokens_column, where)
        tags = _word_list(record.get(config.tags_column), config.tags_column, where, tag_names)
        if len(tokens) != len(tags):
            raise DataError(
                f"{where}: {len(tokens)} tokens in {config.tokens_column!r} but {len(tags)} "
                f"tags in {config.tags_column!r}"
            )
        if not tokens:
            empty += 1
            continue
        example_id = (
            str(record[config.id_column]) if config.id_column else f"{Path(name).name}:{line}"
        )
        sentences.append(Sentence(example_id, tokens, tags, name, line))
    return sentences, empty


def read_source(
    reference: str, config: DataConfig, base_dir: Path, key: str, report: TagReport
) -> list[Sentence]:
    """The sentences of a file or hub dataset, tags as written; an empty source is an error."""
    path = resolve_local(reference, base_dir, key)
    if path is not None and path.is_dir():
        raise DataError(f"{key}: {path} is a folder; name a CoNLL, .jsonl, .json or .parquet file")
    fmt = "hub" if path is None else source_format(path, config)
    if path is not None and fmt == "conll":
        if config.id_column:
            raise DataError(f"{key}: {path} is a CoNLL column file; data.id_column names no column")
        name, sentences, empty = str(path), read_conll(path, config), 0
    else:
        name, columns, rows, tag_names = _read_rows(reference, path, fmt, config, key)
        sentences, empty = sentences_from_rows(name, columns, rows, config, tag_names)
    report.sentences_read[key] = len(sentences)
    report.empty_sentences_skipped[key] = empty
    if not sentences:
        raise DataError(f"{name}: holds no sentence (no token line or row with tokens)")
    _check_unique_ids(sentences)
    return sentences


def _read_rows(
    reference: str, path: Path | None, fmt: str, config: DataConfig, key: str
) -> tuple[str, list[str], list[tuple[int, dict[str, Any]]], list[str] | None]:
    if path is None:
        columns, rows, tag_names = _read_hub(reference, config, key)
        return reference, columns, rows, tag_names
    if fmt == "jsonl":
        columns, rows = read_jsonl_rows(path, config.encoding)
    elif fmt == "json":
        columns, rows = read_json_rows(path, config.encoding)
    else:
        columns, rows = read_parquet_rows(path)
    return str(path), columns, rows, None


def _check_unique_ids(sentences: list[Sentence]) -> None:
    seen: dict[str, Sentence] = {}
    for sentence in sentences:
        other = seen.setdefault(sentence.example_id, sentence)
        if other is not sentence:
            raise DataError(
                f"{sentence.source}: duplicate example id {sentence.example_id!r} "
                f"(lines {other.line} and {sentence.line})"
            )


# --- One source, read and its tags checked --------------------------------------------------


def load_sentences(
    reference: str, config: DataConfig, base_dir: Path, key: str, report: TagReport
) -> list[Sentence]:
    """The sentences of one source, tags checked and rewritten as IOB2."""
    sentences = read_source(reference, config, base_dir, key, report)
    for sentence in sentences:
        report.repaired_tags += normalise_tags(sentence, config.tag_scheme, config.repair_tags)
    return sentences
