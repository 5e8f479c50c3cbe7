"""Question-context pairs cut into the windows a QA model reads, the way transformers' QA
examples cut them: the question (cut to ``max_question_length`` tokens), then as much of the
context as ``max_length`` leaves, then the next window ``doc_stride`` context tokens back
from where the last one ended, until the context is read.

Each window keeps every token's character offsets into the context (None for question,
special and padding tokens), so a span of tokens maps back to ``context[start:end]``; and,
for training, the gold answer's first and last token (both 0, the first token, where the
answer is not wholly inside the window or the question has none: the "no answer" position).

One implementation for training, labelling, export scoring and serving: it reads only a
``tokenizers.Tokenizer`` (a transformers fast tokenizer's ``backend_tokenizer``, or a
bundle's tokenizer.json), so the windows a bundle serves are the windows its model learnt
from. Standard library, numpy and tokenizers only: the bundle runner imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from distill.errors import DataError

NO_ANSWER_POSITION = 0  # where start and end point when the window holds no answer


@dataclass(frozen=True)
class Window:
    """One window of one question (``example``: its index in the list windowed)."""

    example: int
    ids: list[int]
    type_ids: list[int]
    offsets: list[tuple[int, int] | None]  # into the context; None: not a context token
    start: int = NO_ANSWER_POSITION  # gold answer's first token (training)
    end: int = NO_ANSWER_POSITION  # and its last

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def context_positions(self) -> np.ndarray:
        """The positions of context tokens (those a span may start or end at)."""
        return np.asarray([i for i, o in enumerate(self.offsets) if o is not None], dtype=int)


@dataclass(frozen=True)
class Windowing:
    """How questions and contexts are cut (the bundle manifest records these)."""

    max_length: int
    doc_stride: int
    max_question_length: int

    def to_dict(self) -> dict[str, int]:
        return {
            "max_length": self.max_length,
            "doc_stride": self.doc_stride,
            "max_question_length": self.max_question_length,
        }


@dataclass
class WindowCounts:
    """What windowing did to a list of questions."""

    questions: int = 0
    windows: int = 0
    questions_cut: int = 0  # questions longer than max_question_length tokens
    answers_outside: int = 0  # answerable questions whose answer no window holds whole


def windowing_tokenizer(tokenizer: Any, windowing: Windowing) -> Any:
    """A copy of ``tokenizer`` (a ``tokenizers.Tokenizer``, or a transformers fast tokenizer)
    that cuts pairs into windows: truncation of the context only, with the stride; no
    padding (batches are padded when fed)."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    copy = Tokenizer.from_str(backend.to_str())
    copy.no_padding()
    copy.enable_truncation(
        max_length=windowing.max_length,
        stride=windowing.doc_stride,
        strategy="only_second",
        direction="right",
    )
    return copy


def cut_question(tokenizer: Any, question: str, max_tokens: int) -> tuple[str, bool]:
    """``question`` cut after its ``max_tokens``-th token (and whether it was), measured by
    the windowing ``tokenizer`` without special tokens."""
    encoding = tokenizer.encode(question, add_special_tokens=False)
    if len(encoding.ids) <= max_tokens:
        return question, False
    return question[: encoding.offsets[max_tokens - 1][1]].rstrip(), True


def _answer_tokens(offsets: list[tuple[int, int] | None], start: int, end: int) -> tuple[int, int]:
    """The first and last token of the characters [start, end) when the window holds them
    all; else the no-answer position twice."""
    context = [(i, o) for i, o in enumerate(offsets) if o is not None]
    if not context or context[0][1][0] > start or context[-1][1][1] < end:
        return NO_ANSWER_POSITION, NO_ANSWER_POSITION
    first = max(i for i, (a, _) in context if a <= start)
    last = min(i for i, (_, b) in context if b >= end)
    return first, last


def _windows_of(
    index: int, encoding: Any, answer: tuple[int, int] | None, counts: WindowCounts
) -> list[Window]:
    windows = []
    for part in [encoding, *encoding.overflowing]:
        offsets = [
            tuple(offset) if sequence == 1 else None
            for offset, sequence in zip(part.offsets, part.sequence_ids, strict=True)
        ]
        start = end = NO_ANSWER_POSITION
        if answer is not None:
            start, end = _answer_tokens(offsets, *answer)
        windows.append(Window(index, list(part.ids), list(part.type_ids), offsets, start, end))
    if answer is not None and all(w.start == NO_ANSWER_POSITION for w in windows):
        counts.answers_outside += 1
    return windows


def make_windows(
    tokenizer: Any,
    questions: Sequence[str],
    contexts: Sequence[str],
    windowing: Windowing,
    answers: Sequence[tuple[int, int] | None] | None = None,
) -> tuple[list[Window], WindowCounts]:
    """Every question's windows, in order (a question's windows together, its context read
    left to right). ``tokenizer``: one :func:`windowing_tokenizer` made; ``answers``: each
    question's gold answer as characters [start, end) of its context, or None (no answer, or
    not labelled)."""
    counts = WindowCounts(questions=len(questions))
    cut = []
    for question in questions:
        text, was_cut = cut_question(tokenizer, question, windowing.max_question_length)
        counts.questions_cut += was_cut
        cut.append(text)
    try:
        encodings = tokenizer.encode_batch(list(zip(cut, contexts, strict=True)))
    except Exception as exc:  # tokenizers raises a bare Exception when a window cannot fit
        raise DataError(
            f"cannot cut questions and contexts into windows of {windowing.max_length} tokens "
            f"with a stride of {windowing.doc_stride} (data.max_length, data.doc_stride, "
            f"data.max_question_length): {exc}"
        ) from None
    windows: list[Window] = []
    for index, encoding in enumerate(encodings):
        answer = answers[index] if answers is not None else None
        windows += _windows_of(index, encoding, answer, counts)
    counts.windows = len(windows)
    return windows, counts


def by_example(windows: Sequence[Window], count: int) -> list[list[int]]:
    """For each of ``count`` questions, the indices of its windows in ``windows``."""
    grouped: list[list[int]] = [[] for _ in range(count)]
    for position, window in enumerate(windows):
        grouped[window.example].append(position)
    return grouped


def padded(
    windows: Sequence[Window], pad_id: int, length: int | None = None
) -> dict[str, np.ndarray]:
    """A batch of windows as int64 arrays (``input_ids``, ``token_type_ids``,
    ``attention_mask``), padded on the right to ``length`` (default: the longest)."""
    length = length or max(len(w) for w in windows)
    arrays = {
        "input_ids": np.full((len(windows), length), pad_id, dtype=np.int64),
        "token_type_ids": np.zeros((len(windows), length), dtype=np.int64),
        "attention_mask": np.zeros((len(windows), length), dtype=np.int64),
    }
    for row, window in enumerate(windows):
        arrays["input_ids"][row, : len(window)] = window.ids
        arrays["token_type_ids"][row, : len(window)] = window.type_ids
        arrays["attention_mask"][row, : len(window)] = 1
    return arrays
