"""Read questions with their contexts and gold answers, and check every answer against its
context (:mod:`distill.tasks.question_answering.splits` splits them).

Sources (``data.path``, ``data.validation_path``, ``data.test_path``):
  * a SQuAD JSON document, v1.1 or v2.0 (``{"data": [{"title", "paragraphs": [{"context",
    "qas": [{"id", "question", "answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}``),
    told apart from a JSON list of records by its structure; v2.0's ``is_impossible``
    questions have no answer (their ``plausible_answers`` are not read);
  * any table :func:`distill.data.readers.read_table` reads (CSV/TSV, JSON lines, JSON
    records, Parquet, a hub dataset): one question per row, in ``data.question_column`` and
    ``data.context_column``; the answer in ``data.answer_column``, either SQuAD's object
    ``{"text": [...], "answer_start": [...]}`` (hub ``squad``/``squad_v2``; empty lists: no
    answer) or the answer's text with its first character in ``data.answer_start_column``.
    An empty or missing answer: the context does not answer the question (SQuAD 2.0). A
    ``title`` column, where there is one, is kept (as a SQuAD document's article titles are).

Questions lose their surrounding whitespace; contexts and answers are kept exactly, so that
``context[start:start + len(text)] == text`` holds for every gold answer (it is checked: an
answer not at its start is an error, never a silently shifted span). Every bad row is
reported at once (up to :data:`MAX_PROBLEMS`), each naming its line (or article, paragraph
and question id) and the recipe key that names the column.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from distill.config import DataConfig
from distill.data.problems import Problems
from distill.data.readers import decode_text, read_json_rows, read_table, table_format
from distill.errors import DataError
from distill.sources.paths import resolve_local
from distill.tasks.question_answering.examples import GoldAnswer, QAExample

# Bad rows listed in one error; the rest are counted.
# Characters of a string shown in an error (an answer, the context at its start, a title).
SHOWN_CHARS = 60


def shown(text: Any) -> str:
    """``repr`` of ``text``, cut to :data:`SHOWN_CHARS` characters."""
    if isinstance(text, str) and len(text) > SHOWN_CHARS:
        return repr(text[:SHOWN_CHARS]) + "..."
    return repr(text)


@dataclass(frozen=True)
class _Keys:
    """How an error names the answer's text and start: a table's columns with their recipe
    keys, or a SQuAD document's fields."""

    answer: str
    start: str


_DOCUMENT_KEYS = _Keys(answer="'answers'", start="'answer_start'")


def _table_keys(data: DataConfig) -> _Keys:
    return _Keys(
        answer=f"column {data.answer_column!r} (data.answer_column)",
        start=f"column {data.answer_start_column!r} (data.answer_start_column)",
    )


def _start_value(value: Any) -> int | None:
    """An answer start: an int, or a string of digits (a CSV cell); None: neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def checked_answers(
    context: str, texts: Any, starts: Any, keys: _Keys, problem: Callable[[str], None]
) -> tuple[GoldAnswer, ...]:
    """The gold answers of parallel lists of texts and starts, each checked against the
    context (every problem goes to ``problem``; a bad answer is left out)."""
    texts = list(texts) if isinstance(texts, list | tuple) else [texts]
    starts = list(starts) if isinstance(starts, list | tuple) else [starts]
    if len(texts) != len(starts):
        problem(f"{keys.answer}: {len(texts)} answer text(s) but {len(starts)} start(s)")
        return ()
    answers = []
    for number, (text, value) in enumerate(zip(texts, starts, strict=True), start=1):
        which = f"{keys.answer}: answer {number}" if len(texts) > 1 else keys.answer
        start = _start_value(value)
        if not isinstance(text, str):
            problem(f"{which}: the answer text is {type(text).__name__}, not a string")
        elif text == "":
            problem(f"{which}: an empty answer text with a start ({value!r})")
        elif start is None:
            problem(f"{keys.start}: answer start {shown(value)} is not a whole number")
        elif not 0 <= start < len(context):
            problem(
                f"{keys.start}: answer start {start} is outside the context "
                f"({len(context)} characters)"
            )
        elif context[start : start + len(text)] != text:
            problem(
                f"{which}: the answer {shown(text)} is not at its start {start}: the context "
                f"there reads {shown(context[start : start + len(text)])}"
            )
        else:
            answers.append(GoldAnswer(text, start))
    return tuple(answers)


# --- SQuAD JSON documents ---------------------------------------------------------------------


class _RepeatedKeyError(ValueError):
    """A JSON object names one key twice (json keeps the last value silently)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _RepeatedKeyError(key)
        found[key] = value
    return found


def squad_document(path: Path, encoding: str, key: str) -> dict[str, Any] | None:
    """The parsed JSON of a SQuAD document (``{"data": [{"paragraphs": ...}]}``); None for
    any other JSON (a list of records is a table)."""
    text = decode_text(path, encoding)
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} ({key}): line {exc.lineno}: not valid JSON ({exc.msg})") from None
    except _RepeatedKeyError as exc:
        raise DataError(f"{path} ({key}): an object repeats the key {exc.args[0]!r}") from None
    articles = document.get("data") if isinstance(document, dict) else None
    if isinstance(articles, list) and any(
        isinstance(article, dict) and "paragraphs" in article for article in articles
    ):
        return document
    return None


def _document_answers(
    qa: dict[str, Any], context: str, problem: Callable[[str], None]
) -> tuple[GoldAnswer, ...]:
    """A SQuAD question's answers (none for v2.0's ``is_impossible`` questions)."""
    answers = qa.get("answers", [])
    impossible = qa.get("is_impossible", False)
    if not isinstance(answers, list) or not all(isinstance(a, dict) for a in answers):
        problem('\'answers\' is not a list of objects ({"text", "answer_start"})')
        return ()
    if not isinstance(impossible, bool):
        problem(f"'is_impossible' is {shown(impossible)}, not true or false")
        return ()
    if impossible:
        if answers:
            problem(f"'is_impossible' is true but it has {len(answers)} answer(s)")
        return ()
    if not answers and "is_impossible" in qa:
        problem("'is_impossible' is false but it has no answer")
        return ()
    missing = sorted({k for a in answers for k in ("text", "answer_start") if k not in a})
    if missing:
        problem(f"an answer has no {', '.join(map(repr, missing))}")
        return ()
    texts = [a["text"] for a in answers]
    starts = [a["answer_start"] for a in answers]
    return checked_answers(context, texts, starts, _DOCUMENT_KEYS, problem)


def _paragraph_questions(
    paragraph: Any,
    where: str,
    anchor: str,
    title: str | None,
    data: DataConfig,
    problems: Problems,
) -> list[tuple[str, QAExample]]:
    """The questions of one paragraph of a SQuAD document, each with where it is; a
    question without an id is ``<file name>:<anchor>.<question number>``."""
    if not isinstance(paragraph, dict):
        problems.add(where, f"is {type(paragraph).__name__}, not an object")
        return []
    context, qas = paragraph.get("context"), paragraph.get("qas")
    if not isinstance(context, str) or not context.strip():
        problems.add(where, f"'context' is {shown(context)}: empty or not a string")
        return []
    if not isinstance(qas, list):
        problems.add(where, "'qas' is missing or not a list")
        return []
    found = []
    id_key = data.id_column or "id"
    for number, qa in enumerate(qas, start=1):
        if not isinstance(qa, dict):
            problems.add(f"{where}, question {number}", "is not an object")
            continue
        example_id = str(qa[id_key]) if qa.get(id_key) is not None else None
        at = f"{where}, question {example_id!r}" if example_id else f"{where}, question {number}"
        before = len(problems.found)
        question = qa.get("question")
        if not isinstance(question, str) or not question.strip():
            problems.add(at, f"'question' is {shown(question)}: empty or not a string")
        answers = _document_answers(qa, context, partial(problems.add, at))
        if len(problems.found) == before:
            example_id = example_id or f"{Path(problems.name).name}:{anchor}.{number}"
            found.append((at, QAExample(example_id, question.strip(), context, answers, title)))
    return found


def document_questions(
    document: dict[str, Any], data: DataConfig, problems: Problems
) -> list[tuple[str, QAExample]]:
    """Every question of a SQuAD document, each with where it is (article, paragraph, id)."""
    found = []
    for number, article in enumerate(document["data"], start=1):
        where = f"article {number}"
        if not isinstance(article, dict):
            problems.add(where, f"is {type(article).__name__}, not an object")
            continue
        title = article.get("title") if isinstance(article.get("title"), str) else None
        where += f" ({shown(title)})" if title else ""
        paragraphs = article.get("paragraphs")
        if not isinstance(paragraphs, list):
            problems.add(where, "'paragraphs' is missing or not a list")
            continue
        for index, paragraph in enumerate(paragraphs, start=1):
            found += _paragraph_questions(
                paragraph, f"{where}, paragraph {index}", f"{number}.{index}", title, data, problems
            )
    return found


# --- Tables -----------------------------------------------------------------------------------


def _check_columns(name: str, key: str, columns: list[str], data: DataConfig) -> None:
    wanted = {
        "data.question_column": data.question_column,
        "data.context_column": data.context_column,
        "data.answer_column": data.answer_column,
        "data.id_column": data.id_column,
    }
    missing = [f"{col!r} ({key})" for key, col in wanted.items() if col and col not in columns]
    if missing:
        raise DataError(
            f"{name} ({key}): no column {', '.join(missing)}; the columns are {columns}"
        )


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value == "")


def _row_answers(
    record: dict[str, Any],
    context: str,
    data: DataConfig,
    has_start: Callable[[], None],
    problem: Callable[[str], None],
) -> tuple[GoldAnswer, ...]:
    """A row's gold answers (none: the row's question has no answer in its context)."""
    keys = _table_keys(data)
    cell = record.get(data.answer_column)
    if isinstance(cell, dict):
        missing = [k for k in ("text", "answer_start") if k not in cell]
        if missing:
            problem(f"{keys.answer}: the answer object has no {', '.join(map(repr, missing))}")
            return ()
        return checked_answers(context, cell["text"], cell["answer_start"], keys, problem)
    if isinstance(cell, list) and all(isinstance(a, dict) for a in cell):
        if any("text" not in a or "answer_start" not in a for a in cell):
            problem(f"{keys.answer}: an answer object has no 'text' or 'answer_start'")
            return ()
        texts, starts = [a["text"] for a in cell], [a["answer_start"] for a in cell]
        return checked_answers(context, texts, starts, keys, problem)
    if _empty(cell):
        start = record.get(data.answer_start_column)
        if not _empty(start):
            problem(f"{keys.answer}: an empty answer text with a start ({start!r})")
        return ()
    if not isinstance(cell, str):
        problem(f"{keys.answer}: the answer is {type(cell).__name__}, not text or an answer object")
        return ()
    has_start()
    start = record.get(data.answer_start_column)
    if _empty(start):
        problem(f"{keys.start}: the answer {shown(cell)} has no start")
        return ()
    return checked_answers(context, [cell], [start], keys, problem)


def table_questions(
    name: str,
    columns: list[str],
    rows: list[tuple[int, dict[str, Any]]],
    data: DataConfig,
    problems: Problems,
) -> list[tuple[str, QAExample]]:
    """Every row's question, each with where it is (``line N``)."""
    _check_columns(name, problems.key, columns, data)

    def has_start() -> None:  # a plain-text answer needs the start column
        if data.answer_start_column not in columns:
            raise DataError(
                f"{name} ({problems.key}): no column {data.answer_start_column!r} "
                "(data.answer_start_column) "
                f"for the start of the plain-text answers in {data.answer_column!r}; the "
                f"columns are {columns}"
            )

    found = []
    for line, record in rows:
        at = f"line {line}"
        before = len(problems.found)
        question, context = record.get(data.question_column), record.get(data.context_column)
        question = question.strip() if isinstance(question, str) else question
        if not isinstance(question, str) or not question:
            problems.add(
                at, f"column {data.question_column!r} (data.question_column): empty question"
            )
        if not isinstance(context, str) or not context.strip():
            problems.add(at, f"column {data.context_column!r} (data.context_column): empty context")
            continue
        answers = _row_answers(record, context, data, has_start, partial(problems.add, at))
        if len(problems.found) == before:
            example_id = (
                str(record[data.id_column]) if data.id_column else f"{Path(name).name}:{line}"
            )
            title = record.get("title") if isinstance(record.get("title"), str) else None
            found.append((at, QAExample(example_id, question, context, answers, title)))
    return found


# --- One source -------------------------------------------------------------------------------


def _without_repeats(
    found: list[tuple[str, QAExample]], problems: Problems
) -> tuple[list[QAExample], int]:
    """The first of each question about each context; a repeated id is a problem."""
    seen: set[tuple[str, str]] = set()
    ids: dict[str, str] = {}
    kept = []
    for where, example in found:
        if (example.question, example.context) in seen:
            continue
        seen.add((example.question, example.context))
        if example.id in ids:
            problems.add(where, f"id {example.id!r} repeats that of {ids[example.id]}")
        ids.setdefault(example.id, where)
        kept.append(example)
    return kept, len(found) - len(kept)


def read_questions(
    reference: str, data: DataConfig, base_dir: Path, key: str
) -> tuple[list[QAExample], dict[str, int]]:
    """The questions of one source (recipe key ``key``), checked, repeats dropped; and what
    was read: questions, contexts, unanswerable, answers, repeats_dropped."""
    path = resolve_local(reference, base_dir, key)
    if path is not None and path.is_file() and table_format(path, data) == "json":
        problems = Problems(str(path), key)
        document = squad_document(path, data.encoding, key)
        if document is not None:
            found = document_questions(document, data, problems)
        else:
            columns, rows = read_json_rows(path, data.encoding)
            found = table_questions(str(path), columns, rows, data, problems)
    else:
        name, columns, rows = read_table(reference, data, base_dir, key)
        problems = Problems(name, key)
        found = table_questions(name, columns, rows, data, problems)
    problems.raise_any()
    examples, repeats = _without_repeats(found, problems)
    problems.raise_any()
    if not examples:
        raise DataError(f"{problems.name} ({key}): holds no question")
    counts = {
        "questions": len(examples),
        "contexts": len({e.context for e in examples}),
        "unanswerable": sum(not e.answerable for e in examples),
        "answers": sum(len(e.answers) for e in examples),
        "repeats_dropped": repeats,
    }
    return examples, counts
