"""Question answering's data: SQuAD documents and tables read, every bad answer reported,
splits by context, data_columns for `distill validate`, and the data stage's files and
metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from distill.config import DataConfig
from distill.data.problems import MAX_PROBLEMS
from distill.errors import DataError
from distill.pipeline.artifacts import RunContext
from distill.tasks.question_answering.data_check import data_columns
from distill.tasks.question_answering.examples import GoldAnswer, QAExample, read_examples
from distill.tasks.question_answering.splits import build_qa_splits, take_share
from distill.tasks.question_answering.squad import read_questions
from distill.tasks.question_answering.stages import data as data_stage

NORMANS = "The Normans were the people who gave their name to Normandy, a region in France."
PARIS = "Paris is the capital of France. It lies on the Seine."


def config(path: Path | str, **overrides: Any) -> DataConfig:
    return DataConfig(path=str(path), **overrides)


def read(path: Path, **overrides: Any) -> tuple[list[QAExample], dict[str, int]]:
    return read_questions(str(path), config(path, **overrides), path.parent, "data.path")


def error_of(path: Path, **overrides: Any) -> str:
    with pytest.raises(DataError) as info:
        read(path, **overrides)
    return str(info.value)


def write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def qa(qid: str, question: str, *answers: tuple[str, int], **extra: Any) -> dict[str, Any]:
    return {
        "id": qid,
        "question": question,
        "answers": [{"text": t, "answer_start": s} for t, s in answers],
        **extra,
    }


def document(*paragraphs: dict[str, Any], version: str = "1.1") -> dict[str, Any]:
    return {"version": version, "data": [{"title": "Normans", "paragraphs": list(paragraphs)}]}


# --- SQuAD documents --------------------------------------------------------------------------


def test_a_squad_v11_document_is_read_with_ids_titles_and_every_answer(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "dev-v1.1.json",
        document(
            {
                "context": NORMANS,
                "qas": [
                    qa(
                        "q1",
                        "  Who gave their name to Normandy?\n",
                        ("The Normans", 0),
                        ("Normans", 4),
                    ),
                    qa("q2", "Where is Normandy?", ("France", 73)),
                ],
            },
            {"context": PARIS, "qas": [qa("q3", "What is the capital of France?", ("Paris", 0))]},
        ),
    )
    examples, counts = read(path)
    assert examples[0] == QAExample(
        "q1",
        "Who gave their name to Normandy?",
        NORMANS,
        (GoldAnswer("The Normans", 0), GoldAnswer("Normans", 4)),
        "Normans",
    )
    assert [e.id for e in examples] == ["q1", "q2", "q3"]
    assert examples[1].answers[0].end == 79 and NORMANS[73:79] == "France"
    assert counts == {
        "questions": 3,
        "contexts": 2,
        "unanswerable": 0,
        "answers": 4,
        "repeats_dropped": 0,
    }


def test_a_squad_v20_document_reads_impossible_questions_without_answers(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "train-v2.0.json",
        document(
            {
                "context": PARIS,
                "qas": [
                    qa("a", "What is the capital of France?", ("Paris", 0), is_impossible=False),
                    {
                        "id": "b",
                        "question": "What is the capital of Spain?",
                        "answers": [],
                        "plausible_answers": [{"text": "Paris", "answer_start": 0}],
                        "is_impossible": True,
                    },
                ],
            },
            version="v2.0",
        ),
    )
    examples, counts = read(path)
    assert [e.answerable for e in examples] == [True, False]
    assert examples[1].answers == ()
    assert counts["unanswerable"] == 1 and counts["answers"] == 1


def test_questions_without_ids_are_named_by_file_article_paragraph_and_number(
    tmp_path: Path,
) -> None:
    unnamed = {"question": "Capital?", "answers": [{"text": "Paris", "answer_start": 0}]}
    path = write_json(
        tmp_path / "plain.json",
        document({"context": NORMANS, "qas": []}, {"context": PARIS, "qas": [unnamed, unnamed]}),
    )
    examples, counts = read(path)
    assert [e.id for e in examples] == ["plain.json:1.2.1"] and counts["repeats_dropped"] == 1
    path = write_json(
        tmp_path / "flag.json",
        document({"context": PARIS, "qas": [{**unnamed, "is_impossible": "no"}]}),
    )
    assert error_of(path).endswith(
        "paragraph 1, question 1: 'is_impossible' is 'no', not true or false"
    )


def test_a_question_asked_twice_of_one_context_is_kept_once(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "d.json",
        document(
            {
                "context": PARIS,
                "qas": [
                    qa("a", "What is the capital of France?", ("Paris", 0)),
                    qa("b", " What is the capital of France? ", ("Paris", 0)),
                    qa("c", "What river?", ("Seine", 47)),
                ],
            },
            # The same question about another context is another question.
            {"context": NORMANS, "qas": [qa("d", "What is the capital of France?")]},
        ),
    )
    examples, counts = read(path)
    assert [e.id for e in examples] == ["a", "c", "d"]
    assert counts["repeats_dropped"] == 1 and counts["questions"] == 3


def test_a_squad_document_with_a_wrong_structure_says_where(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "bad.json",
        {
            "data": [
                {"title": "Normans", "paragraphs": [{"context": NORMANS, "qas": "none"}]},
                {"title": "Paris", "paragraphs": 3},
                "an article",
                {
                    "title": "Seine",
                    "paragraphs": [
                        {"context": "  ", "qas": []},
                        {
                            "context": PARIS,
                            "qas": [{"id": "x", "question": "Where?", "answers": 5}],
                        },
                    ],
                },
            ]
        },
    )
    assert error_of(path) == (
        f"{path} (data.path): 5 problem(s):\n"
        "  - article 1 ('Normans'), paragraph 1: 'qas' is missing or not a list\n"
        "  - article 2 ('Paris'): 'paragraphs' is missing or not a list\n"
        "  - article 3: is str, not an object\n"
        "  - article 4 ('Seine'), paragraph 1: 'context' is '  ': empty or not a string\n"
        "  - article 4 ('Seine'), paragraph 2, question 'x': 'answers' is not a list of "
        'objects ({"text", "answer_start"})'
    )


def test_a_squad_document_repeating_a_key_or_broken_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(
        '{"data": [{"paragraphs": [{"context": "a", "context": "b", "qas": []}]}]}',
        encoding="utf-8",
    )
    assert error_of(path) == f"{path} (data.path): an object repeats the key 'context'"
    path.write_text('{"data": [\n{"paragraphs": [}]}', encoding="utf-8")
    assert error_of(path) == f"{path} (data.path): line 2: not valid JSON (Expecting value)"


def test_every_bad_squad_answer_is_reported_with_its_question_id(tmp_path: Path) -> None:
    long_answer = "The Normans were the people who gave their name to Normandy, a region"
    path = write_json(
        tmp_path / "answers.json",
        document(
            {
                "context": NORMANS,
                "qas": [
                    qa("wrong", "Who?", ("Normans", 0)),
                    qa("far", "Who?!", ("Normans", 500)),
                    qa("negative", "Who??", ("Normans", -1)),
                    qa("text", "Who???", ("", 4)),
                    {
                        "id": "start",
                        "question": "Who!",
                        "answers": [{"text": "The", "answer_start": "x"}],
                    },
                    qa("long", "Which?", (long_answer, 1)),
                    {"id": "keys", "question": "What?", "answers": [{"text": "The"}]},
                    qa("empty", "   ", ("The", 0)),
                    qa("possible", "Why?", ("The", 0), is_impossible=True),
                    {"id": "none", "question": "How?", "answers": [], "is_impossible": False},
                ],
            }
        ),
    )
    where = "article 1 ('Normans'), paragraph 1, question"
    shown = repr(long_answer[:60]) + "..."
    context_there = repr(NORMANS[1 : 1 + 60]) + "..."
    assert error_of(path) == (
        f"{path} (data.path): 10 problem(s):\n"
        f"  - {where} 'wrong': 'answers': the answer 'Normans' is not at its start 0: the "
        "context there reads 'The Nor'\n"
        f"  - {where} 'far': 'answer_start': answer start 500 is outside the context "
        f"({len(NORMANS)} characters)\n"
        f"  - {where} 'negative': 'answer_start': answer start -1 is outside the context "
        f"({len(NORMANS)} characters)\n"
        f"  - {where} 'text': 'answers': an empty answer text with a start (4)\n"
        f"  - {where} 'start': 'answer_start': answer start 'x' is not a whole number\n"
        f"  - {where} 'long': 'answers': the answer {shown} is not at its start 1: the context "
        f"there reads {context_there}\n"
        f"  - {where} 'keys': an answer has no 'answer_start'\n"
        f"  - {where} 'empty': 'question' is '   ': empty or not a string\n"
        f"  - {where} 'possible': 'is_impossible' is true but it has 1 answer(s)\n"
        f"  - {where} 'none': 'is_impossible' is false but it has no answer"
    )


def test_problems_are_capped_and_the_rest_counted(tmp_path: Path) -> None:
    qas = [qa(f"q{i}", f"Question {i}?", ("Paris", 1)) for i in range(MAX_PROBLEMS + 5)]
    path = write_json(tmp_path / "many.json", document({"context": PARIS, "qas": qas}))
    message = error_of(path)
    assert message.startswith(f"{path} (data.path): {MAX_PROBLEMS + 5} problem(s):\n")
    assert message.count("is not at its start 1") == MAX_PROBLEMS
    assert message.endswith("\n  - ... and 5 more")


def test_a_repeated_id_is_an_error_naming_both(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "ids.json",
        document({"context": PARIS, "qas": [qa("a", "One?"), qa("a", "Two?")]}),
    )
    where = "article 1 ('Normans'), paragraph 1, question 'a'"
    assert error_of(path) == (
        f"{path} (data.path): 1 problem(s):\n  - {where}: id 'a' repeats that of {where}"
    )


def test_json_records_are_a_table_not_a_squad_document(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "records.json",
        [
            {
                "question": "Capital?",
                "context": PARIS,
                "answers": {"text": ["Paris"], "answer_start": [0]},
            },
            {"question": "Spain?", "context": PARIS, "answers": {"text": [], "answer_start": []}},
        ],
    )
    examples, counts = read(path)
    assert [e.id for e in examples] == ["records.json:1", "records.json:2"]
    assert examples[0].answers == (GoldAnswer("Paris", 0),) and not examples[1].answerable
    assert counts["unanswerable"] == 1


# --- Tables -----------------------------------------------------------------------------------


def test_a_csv_with_answer_text_and_start_columns(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "qa.csv",
        ["question", "context", "answer", "start"],
        [
            [" Capital? ", PARIS, "Paris", "0"],
            ["River?", PARIS, "the Seine", "43"],
            ["Spain?", PARIS, "", ""],
        ],
    )
    examples, counts = read(path, answer_column="answer", answer_start_column="start")
    assert examples == [
        QAExample("qa.csv:2", "Capital?", PARIS, (GoldAnswer("Paris", 0),)),
        QAExample("qa.csv:3", "River?", PARIS, (GoldAnswer("the Seine", 43),)),
        QAExample("qa.csv:4", "Spain?", PARIS, ()),
    ]
    assert counts["contexts"] == 1 and counts["unanswerable"] == 1


def test_a_csv_reports_every_bad_row_with_its_line_and_key(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "bad.csv",
        ["id", "question", "context", "answer", "start"],
        [
            ["a", "", PARIS, "Paris", "0"],
            ["b", "Q?", " ", "Paris", "0"],
            ["c", "Q?", PARIS, "Paris", "zero"],
            ["d", "Q?", PARIS, "Paris", "99"],
            ["e", "Q?", PARIS, "Seine", "0"],
            ["f", "Q?", PARIS, "", "3"],
            ["g", "Q?", PARIS, "Paris", ""],
            ["h", "Fine?", PARIS, "Paris", "0"],
        ],
    )
    message = error_of(path, answer_column="answer", answer_start_column="start", id_column="id")
    start = "column 'start' (data.answer_start_column)"
    answer = "column 'answer' (data.answer_column)"
    assert message == (
        f"{path} (data.path): 7 problem(s):\n"
        "  - line 2: column 'question' (data.question_column): empty question\n"
        "  - line 3: column 'context' (data.context_column): empty context\n"
        f"  - line 4: {start}: answer start 'zero' is not a whole number\n"
        f"  - line 5: {start}: answer start 99 is outside the context ({len(PARIS)} characters)\n"
        f"  - line 6: {answer}: the answer 'Seine' is not at its start 0: the context there "
        "reads 'Paris'\n"
        f"  - line 7: {answer}: an empty answer text with a start ('3')\n"
        f"  - line 8: {start}: the answer 'Paris' has no start"
    )


def test_missing_columns_name_their_keys_and_the_columns_found(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "cols.csv", ["q", "context", "answer"], [["Q?", PARIS, "Paris"]])
    assert error_of(path) == (
        f"{path} (data.path): no column 'question' (data.question_column), 'answers' "
        "(data.answer_column); the columns are ['q', 'context', 'answer']"
    )
    assert error_of(path, question_column="q", answer_column="answer", id_column="key") == (
        f"{path} (data.path): no column 'key' (data.id_column); the columns are ['q', 'context', 'answer']"
    )
    # A plain-text answer needs its start column.
    assert error_of(path, question_column="q", answer_column="answer") == (
        f"{path} (data.path): no column 'answer_start' (data.answer_start_column) for the start of the "
        "plain-text answers in 'answer'; the columns are ['q', 'context', 'answer']"
    )


def test_jsonl_with_squad_answer_objects(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "squad.jsonl",
        [
            {
                "id": "x1",
                "title": "Paris",
                "question": "Capital?",
                "context": PARIS,
                "answers": {"text": ["Paris", "Paris"], "answer_start": [0, 0]},
            },
            {
                "id": "x2",
                "question": "Spain?",
                "context": PARIS,
                "answers": {"text": [], "answer_start": []},
            },
            {"id": "x3", "question": "Moon?", "context": PARIS},  # missing answer: none
            {
                "id": "x4",
                "question": "River?",
                "context": PARIS,
                "answers": [{"text": "Seine", "answer_start": 47}],
            },
        ],
    )
    examples, counts = read(path, id_column="id")
    assert [e.id for e in examples] == ["x1", "x2", "x3", "x4"]
    assert examples[0].answers == (GoldAnswer("Paris", 0),) * 2 and examples[0].title == "Paris"
    assert [e.answerable for e in examples] == [True, False, False, True]
    assert examples[3].answers == (GoldAnswer("Seine", 47),)
    assert counts["unanswerable"] == 2 and counts["answers"] == 3


def test_jsonl_answer_objects_with_bad_lists(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {
                "question": "A?",
                "context": PARIS,
                "answers": {"text": ["Paris"], "answer_start": []},
            },
            {"question": "B?", "context": PARIS, "answers": {"text": ["Paris"]}},
            {"question": "C?", "context": PARIS, "answers": {"text": [7], "answer_start": [0]}},
            {"question": "D?", "context": PARIS, "answers": 12},
            {
                "question": "E?",
                "context": PARIS,
                "answers": {"text": ["Paris"], "answer_start": [True]},
            },
        ],
    )
    answer = "column 'answers' (data.answer_column)"
    assert error_of(path) == (
        f"{path} (data.path): 5 problem(s):\n"
        f"  - line 1: {answer}: 1 answer text(s) but 0 start(s)\n"
        f"  - line 2: {answer}: the answer object has no 'answer_start'\n"
        f"  - line 3: {answer}: the answer text is int, not a string\n"
        f"  - line 4: {answer}: the answer is int, not text or an answer object\n"
        "  - line 5: column 'answer_start' (data.answer_start_column): answer start True is "
        "not a whole number"
    )


def test_parquet_with_answer_structs_and_plain_answers(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table(
            {
                "question": ["Capital?", "Spain?"],
                "context": [PARIS, PARIS],
                "answers": [
                    {"text": ["Paris"], "answer_start": [0]},
                    {"text": [], "answer_start": []},
                ],
            }
        ),
        tmp_path / "squad.parquet",
    )
    examples, _ = read(tmp_path / "squad.parquet")
    assert examples[0].answers == (GoldAnswer("Paris", 0),) and not examples[1].answerable
    pq.write_table(
        pa.table(
            {
                "question": ["Capital?", "Spain?"],
                "context": [PARIS, PARIS],
                "answer": ["Paris", None],
                "start": [0, None],
            }
        ),
        tmp_path / "plain.parquet",
    )
    examples, _ = read(
        tmp_path / "plain.parquet", answer_column="answer", answer_start_column="start"
    )
    assert [e.answers for e in examples] == [(GoldAnswer("Paris", 0),), ()]
    assert [e.id for e in examples] == ["plain.parquet:1", "plain.parquet:2"]


def test_an_empty_table_holds_no_question(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "empty.csv", ["question", "context", "answers"], [])
    assert error_of(path) == f"{path} (data.path): holds no question"


# --- Splits -----------------------------------------------------------------------------------


def corpus(path: Path, contexts: int, per_context: int = 3, unanswerable: int = 0) -> Path:
    """``contexts`` paragraphs of ``per_context`` questions each (the first ``unanswerable``
    paragraphs' last question has no answer), as JSON lines."""
    rows = []
    for c in range(contexts):
        context = f"Paragraph {c} says that the answer is word{c} and nothing else."
        start = context.index(f"word{c}")
        for q in range(per_context):
            answer: dict[str, list[Any]] = {"text": [f"word{c}"], "answer_start": [start]}
            if q == per_context - 1 and c < unanswerable:
                answer = {"text": [], "answer_start": []}
            rows.append(
                {"question": f"Question {q} about {c}?", "context": context, "answers": answer}
            )
    return write_jsonl(path, rows)


def contexts_of(splits: dict[str, list[QAExample]]) -> dict[str, set[str]]:
    return {name: {e.context for e in split} for name, split in splits.items()}


def test_every_context_stays_in_one_split_and_shares_come_close(tmp_path: Path) -> None:
    path = corpus(tmp_path / "c.jsonl", 20, per_context=3)
    splits, report = build_qa_splits(config(path.name), tmp_path, seed=0)
    assert {name: len(s) for name, s in splits.items()} == {
        "train": 42,
        "validation": 6,
        "test": 12,
        "unused": 0,
    }
    seen = contexts_of(splits)
    for first in seen:
        for second in seen:
            assert first == second or not seen[first] & seen[second]
    assert sum(len(c) for c in seen.values()) == 20
    assert report["read"]["data.path"]["questions"] == 60
    assert report["train_overlap_dropped"] == 0 and report["subsampled_from"] is None


def test_the_same_seed_gives_the_same_splits_another_seed_others(tmp_path: Path) -> None:
    path = corpus(tmp_path / "c.jsonl", 20)
    data = config(path.name)
    first, _ = build_qa_splits(data, tmp_path, seed=3)
    again, _ = build_qa_splits(data, tmp_path, seed=3)
    other, _ = build_qa_splits(data, tmp_path, seed=4)
    ids = {name: [e.id for e in split] for name, split in first.items()}
    assert ids == {name: [e.id for e in split] for name, split in again.items()}
    assert ids["test"] != [e.id for e in other["test"]]
    # Each split keeps the input order.
    assert ids["train"] == sorted(ids["train"], key=lambda i: int(i.split(":")[1]))


def test_take_share_comes_as_close_as_whole_groups_allow() -> None:
    groups = [[0, 1, 2, 3, 4], [5], [6, 7], [8, 9, 10]]
    taken, rest = take_share(groups, 3)
    assert taken == [[5], [6, 7]] and rest == [[0, 1, 2, 3, 4], [8, 9, 10]]
    # A group too big for the share alone: the smallest, rather than an empty split.
    assert take_share([[0, 1, 2, 3], [4, 5, 6]], 1) == ([[4, 5, 6]], [[0, 1, 2, 3]])
    assert take_share([[0, 1]], 1) == ([], [[0, 1]])


def test_max_examples_samples_whole_contexts_and_the_rest_is_unused(tmp_path: Path) -> None:
    path = corpus(tmp_path / "c.jsonl", 30, per_context=2)
    splits, report = build_qa_splits(config(path.name, max_examples=21), tmp_path, seed=1)
    kept = sum(len(splits[name]) for name in ("train", "validation", "test"))
    assert kept == 22  # whole contexts of 2 until there are at least 21
    assert len(splits["unused"]) == 38 and report["subsampled_from"] == 60
    seen = contexts_of(splits)
    assert not seen["unused"] & (seen["train"] | seen["validation"] | seen["test"])
    same, _ = build_qa_splits(config(path.name, max_examples=21), tmp_path, seed=1)
    assert [e.id for e in same["unused"]] == [e.id for e in splits["unused"]]


def test_separate_validation_and_test_files_drop_their_contexts_from_training(
    tmp_path: Path,
) -> None:
    path = corpus(tmp_path / "train.jsonl", 10, per_context=2)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    write_jsonl(tmp_path / "dev.jsonl", [*rows[:2], {**rows[2], "question": "Another?"}])
    write_jsonl(tmp_path / "test.jsonl", rows[6:8])
    data = config(path.name, validation_path="dev.jsonl", test_path="test.jsonl", max_examples=6)
    splits, report = build_qa_splits(data, tmp_path, seed=0)
    assert [e.id for e in splits["validation"]] == ["dev.jsonl:1", "dev.jsonl:2", "dev.jsonl:3"]
    assert [e.id for e in splits["test"]] == ["test.jsonl:1", "test.jsonl:2"]
    held_out = contexts_of(splits)["validation"] | contexts_of(splits)["test"]
    assert len(held_out) == 3
    assert not held_out & contexts_of(splits)["train"]
    assert not held_out & contexts_of(splits)["unused"]
    dropped = report["train_overlap_dropped"] + report["unused_overlap_dropped"]
    assert dropped == 6  # the 3 held-out contexts' 2 questions each
    assert len(splits["train"]) + len(splits["unused"]) == 20 - 6
    assert set(report["read"]) == {"data.path", "data.validation_path", "data.test_path"}


def test_a_bad_validation_file_names_its_key(tmp_path: Path) -> None:
    path = corpus(tmp_path / "train.jsonl", 10)
    write_jsonl(tmp_path / "dev.jsonl", [{"question": "", "context": PARIS, "answers": None}])
    with pytest.raises(DataError) as info:
        build_qa_splits(config(path.name, validation_path="dev.jsonl"), tmp_path, seed=0)
    assert str(info.value) == (
        f"{tmp_path / 'dev.jsonl'} (data.validation_path): 1 problem(s):\n"
        "  - line 1: column 'question' (data.question_column): empty question"
    )


def test_an_empty_split_names_the_key_to_change(tmp_path: Path) -> None:
    path = corpus(tmp_path / "one.jsonl", 2, per_context=3)  # two contexts: test takes one
    with pytest.raises(DataError) as info:
        build_qa_splits(config(path.name), tmp_path, seed=0)
    assert str(info.value) == (
        "the validation split is empty; add data (more contexts) or change data.validation_fraction"
    )


# --- distill validate, and the data stage -----------------------------------------------------


def test_data_columns_for_validate(tmp_path: Path) -> None:
    data = config("x", id_column="key")
    assert data_columns(data, tmp_path / "squad.json") is None
    assert data_columns(data, tmp_path / "notes.txt") is None
    assert data_columns(data, tmp_path / "qa.csv") == (
        "csv",
        {
            "data.question_column": "question",
            "data.context_column": "context",
            "data.answer_column": "answers",
            "data.id_column": "key",
        },
    )
    assert data_columns(config("x"), tmp_path / "qa.parquet") == (
        "parquet",
        {
            "data.question_column": "question",
            "data.context_column": "context",
            "data.answer_column": "answers",
        },
    )


def test_the_data_stage_writes_the_splits_and_its_metrics(tmp_path: Path) -> None:
    path = corpus(tmp_path / "c.jsonl", 12, per_context=2, unanswerable=12)
    ctx = RunContext(
        name="t", seed=0, task="question-answering", workdir=tmp_path, recipe_dir=tmp_path
    )
    out = tmp_path / "out"
    out.mkdir()
    metrics = data_stage.run(ctx, {}, out, data=config(path.name, max_examples=20))
    assert sorted(p.name for p in out.iterdir()) == [
        "test.jsonl",
        "train.jsonl",
        "unused.jsonl",
        "validation.jsonl",
    ]
    assert metrics["sizes"] == {"train": 14, "validation": 2, "test": 4}
    assert metrics["contexts"] == {"train": 7, "validation": 1, "test": 2, "unused": 2}
    assert metrics["unanswerable"] == {"train": 7, "validation": 1, "test": 2, "unused": 2}
    assert metrics["no_answer"] is True and metrics["unused_rows"] == 4
    assert metrics["cleaning"]["subsampled_from"] == 24
    assert metrics["cleaning"]["repeats_dropped"] == 0
    train = read_examples(out, "train")
    assert len(train) == 14 and sum(not e.answerable for e in train) == 7
    json.dumps(metrics)  # the manifest stores them


def test_the_data_stage_says_no_answer_is_off_for_squad_v11(tmp_path: Path) -> None:
    path = corpus(tmp_path / "c.jsonl", 10, per_context=2)
    ctx = RunContext(
        name="t", seed=0, task="question-answering", workdir=tmp_path, recipe_dir=tmp_path
    )
    metrics = data_stage.run(ctx, {}, tmp_path, data=config(path.name))
    assert metrics["no_answer"] is False and metrics["unanswerable"]["train"] == 0
