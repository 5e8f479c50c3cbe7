"""Read tables of examples (CSV/TSV, JSON, JSON Lines, Parquet, hub datasets), and clean and
split text examples; every example gets a stable id. What a task makes of the rows (labels,
tags) is the task's.

Readers are strict on purpose: a bad byte, a ragged CSV row or a broken JSON line
is an error naming the file and line, never a silent NaN.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.config import DataConfig
from distill.errors import DataError
from distill.sources.paths import SourceError, resolve_local

# A text field may be huge (a pasted document); the model sees max_length tokens, so the
# stored text is cut at a bound that keeps memory flat without touching normal texts.
MAX_TEXT_CHARS = 100_000
# Python's csv refuses fields over 128 KiB by default: allow large ones, then cut them.
csv.field_size_limit(64 * 1024 * 1024)

_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}


@dataclass
class Row:
    example_id: str
    text: str
    label: str
    where: str  # "file:line" for error messages


@dataclass
class LoadReport:
    """What cleaning did, recorded in the data stage's manifest."""

    rows_read: dict[str, int] = field(default_factory=dict)
    empty_text_dropped: dict[str, int] = field(default_factory=dict)
    texts_truncated: int = 0
    duplicates_dropped: int = 0
    train_overlap_dropped: int = 0
    subsampled_from: int | None = None
    stratified: bool = True


def decode_text(path: Path, encoding: str) -> str:
    """The file's text; a UTF-8 byte-order mark (Excel writes one) is not part of it."""
    raw = path.read_bytes()
    try:
        text = raw.decode(encoding)
        # The BOM would otherwise glue itself to the first column name ('\ufefftext').
        return text.removeprefix("\ufeff") if codecs.lookup(encoding).name == "utf-8" else text
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}: byte 0x{raw[exc.start]:02x} at offset {exc.start} (line {line}) is not valid "
            f'{encoding}; set data.encoding to the file\'s encoding (e.g. "latin-1")'
        ) from None
    except LookupError:
        raise DataError(f"data.encoding: unknown encoding {encoding!r}") from None


def text_lines(text: str) -> list[str]:
    r"""The lines of a file's text, split at ``\n`` (a ``\r`` before it is dropped) and nowhere
    else: ``str.splitlines`` also breaks at U+2028, U+0085 (byte 0x85 read as latin-1), \x0b,
    \x0c and \x1c-\x1e, which may sit inside a token or a JSON string, and would shift every
    later line number. Line ``i`` of the list is line ``i + 1`` of the file."""
    lines = text.split("\n")
    if lines[-1] == "":  # a final newline ends the last line, it starts none
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def _read_csv(path: Path, encoding: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    text = decode_text(path, encoding)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(path), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: the file is empty") from None
    except csv.Error as exc:
        raise DataError(f"{path}: line 1: malformed CSV header ({exc})") from None
    _check_unique_columns(path, header)
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                raise DataError(
                    f"{path}: line {reader.line_num}: {len(fields)} fields, the header has {len(header)}"
                )
            rows.append((reader.line_num, dict(zip(header, fields, strict=True))))
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from None
    return header, rows


def _check_unique_columns(path: Path, header: list[str], where: str = "line 1: the header") -> None:
    """A repeated column name would silently keep only its last column: refuse it."""
    positions: dict[str, list[int]] = {}
    for number, name in enumerate(header, start=1):
        positions.setdefault(name, []).append(number)
    repeated = {name: where for name, where in positions.items() if len(where) > 1}
    if repeated:
        listed = "; ".join(
            f"{name!r} is columns {', '.join(map(str, where))}" for name, where in repeated.items()
        )
        raise DataError(
            f"{path}: {where} repeats column name(s): {listed}; give every column a unique name"
        )


class _RepeatedKey(ValueError):
    """A JSON object names one key twice (json keeps the last value silently)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _RepeatedKey(key)
        seen[key] = value
    return seen


def _json_object_line(path: Path, number: int, line: str) -> dict[str, Any]:
    """Line ``number`` of a JSON Lines file as one JSON object (no key repeated), or a
    DataError naming the file and the line."""
    try:
        obj = json.loads(line, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {number}: not valid JSON ({exc.msg})") from None
    except _RepeatedKey as exc:
        raise DataError(
            f"{path}: line {number}: the object repeats the key {exc.args[0]!r}"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: line {number}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_jsonl_rows(
    path: Path, encoding: str
) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """A JSON Lines file's column names and its objects, each with its 1-based line number
    (blank lines skipped); a malformed line is a DataError naming it."""
    rows = []
    columns: dict[str, None] = {}
    for number, line in enumerate(text_lines(decode_text(path, encoding)), start=1):
        if not line.strip():
            continue
        obj = _json_object_line(path, number, line)
        columns.update(dict.fromkeys(obj))
        rows.append((number, obj))
    return list(columns), rows


def read_json_rows(path: Path, encoding: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """A JSON file's column names and its records (a list of objects, or {"data": [...]}),
    each with its 1-based position; malformed JSON is a DataError naming the line."""
    try:
        obj = json.loads(decode_text(path, encoding), object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    except _RepeatedKey as exc:
        raise DataError(f"{path}: an object repeats the key {exc.args[0]!r}") from None
    if isinstance(obj, dict) and isinstance(obj.get("data"), list):
        obj = obj["data"]
    if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
        raise DataError(f'{path}: expected a list of objects (or {{"data": [...]}})')
    columns: dict[str, None] = {}
    for record in obj:
        columns.update(dict.fromkeys(record))
    return list(columns), [(i + 1, r) for i, r in enumerate(obj)]


def read_parquet_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """A Parquet file's column names and its rows, each with its 1-based row number; a
    repeated column or an unreadable file is a DataError naming it."""
    import pyarrow.parquet as pq

    try:
        # The schema first: pyarrow cannot read a table whose columns repeat a name.
        _check_unique_columns(path, pq.read_schema(path).names, where="the schema")
        table = pq.read_table(path)
    except DataError:
        raise
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a readable Parquet file ({first})") from None
    return table.column_names, [(i + 1, r) for i, r in enumerate(table.to_pylist())]


def _read_hub(
    dataset_id: str, split: str, key: str
) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    import datasets

    try:
        dataset = datasets.load_dataset(dataset_id, split=split)
    except Exception as exc:  # offline, unknown id, unknown split: all one message for the user
        raise SourceError(
            f"{key}: {dataset_id!r} is not a local file and could not be loaded as a hub dataset "
            f"(split {split!r}): {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    return list(dataset.column_names), [(i + 1, r) for i, r in enumerate(dataset)]


def table_format(path: Path, config: DataConfig) -> str | None:
    """``csv``, ``json``, ``jsonl`` or ``parquet`` for a local file (None: unknown extension)."""
    return config.format if config.format != "auto" else _FORMATS.get(path.suffix.lower())


def read_header(path: Path, fmt: str, encoding: str) -> list[str] | None:
    """The column names of a local data file, read cheaply for ``distill validate``: a CSV/TSV
    header line, the first JSON line's keys, a Parquet schema; None for a JSON document
    (only a full read tells). A repeated column name is a DataError, as when the file is read."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
        except Exception as exc:  # pyarrow raises several unrelated types for a bad file
            raise DataError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None
        _check_unique_columns(path, names, where="the schema")
        return names
    if fmt not in ("csv", "jsonl"):
        return None
    try:
        bom = codecs.lookup(encoding).name == "utf-8"
        with path.open(encoding="utf-8-sig" if bom else encoding, newline="") as handle:
            if fmt == "csv":
                return _csv_header(path, handle)
            return _first_json_keys(path, handle)
    except UnicodeDecodeError:
        raise DataError(
            f"{path}: the first line is not valid {encoding}; set data.encoding to the file's "
            'encoding (e.g. "latin-1")'
        ) from None
    except LookupError:
        raise DataError(f"data.encoding: unknown encoding {encoding!r}") from None


def _csv_header(path: Path, handle: io.TextIOBase) -> list[str]:
    try:
        header = next(csv.reader(handle, delimiter=_delimiter(path), strict=True))
    except StopIteration:
        raise DataError(f"{path}: the file is empty") from None
    except csv.Error as exc:
        raise DataError(f"{path}: line 1: malformed CSV header ({exc})") from None
    _check_unique_columns(path, header)
    return header


def _first_json_keys(path: Path, handle: io.TextIOBase) -> list[str]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        obj = _json_object_line(path, number, line)
        return list(obj)
    raise DataError(f"{path}: the file is empty")


def read_table(
    reference: str, config: DataConfig, base_dir: Path, key: str
) -> tuple[str, list[str], list[tuple[int, dict[str, Any]]]]:
    """Read a file or hub dataset into (display name, columns, [(line, row)])."""
    path = resolve_local(reference, base_dir, key)
    if path is None:
        columns, rows = _read_hub(reference, config.hub_split, key)
        return reference, columns, rows
    if path.is_dir():
        raise DataError(f"{key}: {path} is a folder; name a .csv, .json, .jsonl or .parquet file")
    fmt = table_format(path, config)
    if fmt is None:
        raise DataError(f"{key}: cannot tell the format of {path.name}; set data.format")
    if fmt == "csv":
        columns, rows = _read_csv(path, config.encoding)
    elif fmt == "jsonl":
        columns, rows = read_jsonl_rows(path, config.encoding)
    elif fmt == "json":
        columns, rows = read_json_rows(path, config.encoding)
    else:
        columns, rows = read_parquet_rows(path)
    return str(path), columns, rows


def load_rows(
    reference: str,
    config: DataConfig,
    base_dir: Path,
    key: str,
    report: LoadReport,
    labelled: bool = True,
) -> list[Row]:
    """Rows with text, label and id; rows with empty text are dropped and counted.

    ``labelled = False`` (plain domain text, causal LM) reads no label column."""
    name, columns, raw_rows = read_table(reference, config, base_dir, key)
    label_column = config.label_column if labelled else None
    missing = [
        c for c in (config.text_column, label_column, config.id_column) if c and c not in columns
    ]
    if missing:
        raise DataError(
            f"{name}: no column {', '.join(map(repr, missing))}; the columns are {columns}"
        )
    stem = Path(name).name
    rows, empty = [], 0
    for line, record in raw_rows:
        text = record.get(config.text_column)
        text = "" if text is None else str(text).strip()
        if not text:
            empty += 1
            continue
        if len(text) > MAX_TEXT_CHARS:
            text = text[:MAX_TEXT_CHARS]
            report.texts_truncated += 1
        label = record.get(config.label_column) if labelled else ""
        if labelled and (label is None or str(label).strip() == ""):
            raise DataError(f"{name}: line {line}: empty label in column {config.label_column!r}")
        example_id = str(record[config.id_column]) if config.id_column else f"{stem}:{line}"
        rows.append(Row(example_id, text, str(label).strip(), f"{name}: line {line}"))
    report.rows_read[key] = len(raw_rows)
    report.empty_text_dropped[key] = empty
    if not raw_rows:
        raise DataError(f"{name}: the data set is empty")
    if not rows:
        raise DataError(
            f"{name}: all {len(raw_rows)} rows have empty text in column {config.text_column!r}"
        )
    seen: dict[str, str] = {}
    for row in rows:
        if row.example_id in seen:
            raise DataError(
                f"{name}: duplicate example id {row.example_id!r} ({seen[row.example_id]} and {row.where})"
            )
        seen[row.example_id] = row.where
    return rows


def _deduplicate(rows: list[Row]) -> tuple[list[Row], int]:
    seen: set[str] = set()
    kept = []
    for row in rows:
        key = text_key(row.text)
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept, len(rows) - len(kept)


def _split(
    rows: list[Row], fraction: float, seed: int, report: LoadReport
) -> tuple[list[Row], list[Row]]:
    """Stratified split into (rest, taken); falls back to a plain shuffle for tiny classes."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(rows))
    labels = [r.label for r in rows]
    try:
        rest, taken = train_test_split(
            indices, test_size=fraction, random_state=seed, stratify=labels
        )
    except ValueError:
        report.stratified = False
        rest, taken = train_test_split(indices, test_size=fraction, random_state=seed)
    return [rows[i] for i in sorted(rest)], [rows[i] for i in sorted(taken)]


def without_evaluation_items(
    train: list[Any],
    parts: dict[str, list[Any]],
    key: Callable[[Any], Any],
    noun: str,
    deduplicate: bool,
) -> tuple[list[Any], int]:
    """Keep evaluation honest: an item (``key`` says when two are the same) in validation/test
    must not also be trained on. Without ``deduplicate`` that is an error naming the first
    pairs of ids; with it the training copies are dropped: the kept items and how many went.
    Items have an ``example_id``; ``noun`` names them in the error ("text", "sentence")."""
    held_out = {key(item): item for name in ("validation", "test") for item in parts[name]}
    leaked = [item for item in train if key(item) in held_out]
    if not leaked:
        return train, 0
    if not deduplicate:
        pairs = ", ".join(f"{i.example_id} = {held_out[key(i)].example_id}" for i in leaked[:5])
        raise DataError(
            f"{len(leaked)} training {noun}(s) also appear in validation/test ({pairs}); "
            "set data.deduplicate = true to drop them from training"
        )
    return [item for item in train if key(item) not in held_out], len(leaked)


def text_key(text: str) -> str:
    """What makes two texts the same text: case and runs of whitespace do not count."""
    return " ".join(text.lower().split())


def split_rows(
    config: DataConfig, base_dir: Path, seed: int, labelled: bool = True
) -> tuple[dict[str, list[Row]], list[Row], LoadReport]:
    """Read, clean and split the data's rows: the rows of train, validation and test, the rows
    ``max_examples`` left out, and what cleaning did.

    Splits are stratified by label where every class allows it (a plain shuffle otherwise);
    a text of validation or test is dropped from training (or refused). With ``labelled =
    False`` (plain text) no label column is read. A split may be empty: :func:`require_rows`.
    """
    report = LoadReport()
    rows = load_rows(config.path, config, base_dir, "data.path", report, labelled)
    if config.deduplicate:
        rows, report.duplicates_dropped = _deduplicate(rows)
    if config.max_examples is not None and len(rows) > config.max_examples:
        report.subsampled_from = len(rows)
        rows, unused = _split(rows, 1 - config.max_examples / len(rows), seed, report)
    else:
        unused = []

    separate = {}
    for split_name, path_value in (
        ("validation", config.validation_path),
        ("test", config.test_path),
    ):
        if path_value is not None:
            separate[split_name] = load_rows(
                path_value, config, base_dir, f"data.{split_name}_path", report, labelled
            )
    parts: dict[str, list[Row]] = {}
    train = rows
    if "test" not in separate:
        train, parts["test"] = _split(train, config.test_fraction, seed, report)
    if "validation" not in separate:
        share = config.validation_fraction / (
            1 - (config.test_fraction if "test" not in separate else 0)
        )
        train, parts["validation"] = _split(train, share, seed + 1, report)
    parts.update(separate)
    parts["train"], report.train_overlap_dropped = without_evaluation_items(
        train, parts, lambda row: text_key(row.text), "text", config.deduplicate
    )
    return parts, unused, report


def require_rows(parts: dict[str, list[Row]], split_name: str) -> None:
    """A DataError when split ``split_name`` has no rows."""
    if not parts[split_name]:
        raise DataError(
            f"the {split_name} split is empty; add data or change data.{split_name}_fraction"
        )
