"""What the task's stages hand each other: questions with their contexts and gold answers
(``<split>.jsonl`` of the data stage), and the answers a model gives (``predictions/
<split>.jsonl`` of the teacher and student stages).

Standard library only: the bundle runner imports :class:`Answer` too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPLITS = ("train", "validation", "test")
ALL_SPLITS = (*SPLITS, "unused")


@dataclass(frozen=True)
class GoldAnswer:
    """One gold answer: its text and its first character in the context
    (``context[start:start + len(text)] == text``, checked when the data is read)."""

    text: str
    start: int

    @property
    def end(self) -> int:
        return self.start + len(self.text)


@dataclass(frozen=True)
class QAExample:
    """One question about one context; no ``answers``: the context does not answer it
    (SQuAD 2.0). Several answers are the annotators' (evaluation takes the best match)."""

    id: str
    question: str
    context: str
    answers: tuple[GoldAnswer, ...] = ()
    title: str | None = None

    @property
    def answerable(self) -> bool:
        return bool(self.answers)

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"id": self.id, "question": self.question, "context": self.context}
        row["answers"] = [{"text": a.text, "start": a.start} for a in self.answers]
        if self.title is not None:
            row["title"] = self.title
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> QAExample:
        answers = tuple(GoldAnswer(str(a["text"]), int(a["start"])) for a in row["answers"])
        return cls(row["id"], row["question"], row["context"], answers, row.get("title"))


@dataclass(frozen=True)
class Answer:
    """A model's answer to one question: ``context[start:end] == text``; no answer (the model
    says the context does not answer it): ``text == ""`` and ``start == end == None``.
    ``score``: the span's probability (start's times end's, in its window), or the no-answer
    probability."""

    text: str
    start: int | None
    end: int | None
    score: float
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def is_answer(self) -> bool:
        return self.start is not None

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.text, "start": self.start, "end": self.end, "score": self.score}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Answer:
        return cls(str(row["answer"]), row["start"], row["end"], float(row["score"]))


def write_examples(path: Path, examples: list[QAExample]) -> None:
    """One JSON object per question, in order."""
    with path.open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example.to_dict(), ensure_ascii=False) + "\n")


def read_examples(data_dir: Path, name: str) -> list[QAExample]:
    """The split ``name`` (``train``, ``validation``, ``test`` or ``unused``) of a data stage,
    or ``transfer`` of a labels stage."""
    with (data_dir / f"{name}.jsonl").open(encoding="utf-8") as handle:
        return [QAExample.from_dict(json.loads(line)) for line in handle if line.strip()]


def write_answers(path: Path, ids: list[str], answers: list[Answer]) -> None:
    """A model's answers, one JSON object per question (``id`` first), in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for example_id, answer in zip(ids, answers, strict=True):
            handle.write(json.dumps({"id": example_id, **answer.to_dict()}, ensure_ascii=False))
            handle.write("\n")


def read_answers(path: Path, ids: list[str]) -> list[Answer]:
    """The answers in ``path`` in the order of ``ids`` (a KeyError names a missing one)."""
    with path.open(encoding="utf-8") as handle:
        by_id = {row["id"]: Answer.from_dict(row) for row in map(json.loads, handle)}
    return [by_id[example_id] for example_id in ids]
