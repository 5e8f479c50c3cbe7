"""QA training pieces on a tiny model: windows as a dataset (labels, transfer windows without
a gold span, cached teacher logits), the collator, the start/end objective, and transfer
questions for the labels stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_tiny_classifier

from distill.errors import DataError
from distill.tasks.question_answering.examples import GoldAnswer, QAExample, write_examples
from distill.tasks.question_answering.training import (
    IGNORE,
    SpanObjective,
    WindowCollator,
    example_windows,
    window_dataset,
)
from distill.tasks.question_answering.windows import Windowing

WORDS = ["alice", "bob", "paris", "rome", "lives", "in", "who", "where", "does", "live", "?"]
WINDOWING = Windowing(max_length=16, doc_stride=2, max_question_length=6)
EXAMPLES = [
    QAExample("a", "where does alice live ?", "alice lives in paris", (GoldAnswer("paris", 15),)),
    QAExample("b", "who lives in rome ?", "bob lives in rome and alice lives in paris", ()),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("qa-bert"), layers=1, extra_words=WORDS)


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def test_labelled_windows_carry_their_index_and_gold_tokens(tokenizer) -> None:
    windows, counts = example_windows(tokenizer, EXAMPLES, WINDOWING)
    dataset = window_dataset(windows)
    labels = dataset["labels"]
    assert [row[0] for row in labels] == list(range(len(windows)))
    first = windows[0]
    start, end = labels[0][1], labels[0][2]
    assert EXAMPLES[0].context[first.offsets[start][0] : first.offsets[end][1]] == "paris"
    # The unanswerable question's windows point at the no-answer position.
    assert all(row[1:] == [0, 0] for row, w in zip(labels, windows, strict=True) if w.example == 1)
    assert counts.questions == 2 and counts.windows == len(windows) > 2


def test_transfer_windows_have_no_gold_span_and_indices_after_the_labelled_ones(tokenizer) -> None:
    windows, _ = example_windows(tokenizer, EXAMPLES, WINDOWING, labelled=False)
    teacher = ([np.zeros(len(w)) for w in windows], [np.ones(len(w)) for w in windows])
    dataset = window_dataset(windows, teacher, hard=False, first_index=7)
    assert dataset["labels"] == [[7 + i, IGNORE, IGNORE] for i in range(len(windows))]
    assert dataset["teacher_end"][0] == [1.0] * len(windows[0])
    with pytest.raises(DataError, match="window 0: the cached teacher logits cover 3 tokens"):
        window_dataset(windows, ([np.zeros(3)] * len(windows), teacher[1]))


def test_the_collator_pads_ids_masks_and_teacher_logits(tokenizer) -> None:
    windows, _ = example_windows(tokenizer, EXAMPLES, WINDOWING)
    teacher = ([np.full(len(w), 2.0) for w in windows], [np.full(len(w), 3.0) for w in windows])
    features = list(window_dataset(windows, teacher))
    batch = WindowCollator(tokenizer)(features)
    length = max(len(w) for w in windows)
    assert batch["input_ids"].shape == (len(windows), length)
    for row, window in enumerate(windows):
        assert batch["attention_mask"][row].sum() == len(window)
        assert (batch["input_ids"][row, len(window) :] == tokenizer.pad_token_id).all()
        assert (batch["teacher_start"][row, len(window) :] == 0).all()
        assert (batch["teacher_end"][row, : len(window)] == 3.0).all()
    assert "token_type_ids" in batch and batch["labels"].shape == (len(windows), 3)


def test_transfer_windows_teach_through_the_kd_term_alone(model_dir: Path, tokenizer) -> None:
    from transformers import AutoModelForQuestionAnswering

    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    windows, _ = example_windows(tokenizer, EXAMPLES, WINDOWING, labelled=False)
    rng = np.random.default_rng(0)
    teacher = (
        [rng.normal(size=len(w)) for w in windows],
        [rng.normal(size=len(w)) for w in windows],
    )
    features = list(window_dataset(windows, teacher, hard=False))
    alpha = 0.7
    distilled, _ = SpanObjective(2.0, alpha)(model, WindowCollator(tokenizer)(features), True)
    kd_only, _ = SpanObjective(2.0, 1.0)(model, WindowCollator(tokenizer)(features), True)
    # No window has a gold span: the hard term is 0 and the loss is alpha times the KD term.
    assert float(distilled) == pytest.approx(alpha * float(kd_only), rel=1e-5)
    # In evaluation only the hard loss counts (here: nothing to score).
    evaluated, _ = SpanObjective(2.0, alpha)(model, WindowCollator(tokenizer)(features), False)
    assert float(evaluated) == 0.0


def test_transfer_questions_skip_the_labelled_ones_and_are_sampled(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from distill.config import DataConfig, TransferConfig
    from distill.tasks.question_answering.stages.labels import transfer_questions

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_examples(data_dir / "train.jsonl", EXAMPLES[:1])
    write_examples(data_dir / "validation.jsonl", [])
    write_examples(data_dir / "test.jsonl", [])
    unused = [EXAMPLES[0], *(QAExample(f"u{i}", f"who is {i} ?", f"{i} is bob") for i in range(5))]
    write_examples(data_dir / "unused.jsonl", unused)
    ctx = SimpleNamespace(seed=1, recipe_dir=tmp_path)
    data = DataConfig(path="x.json")
    questions, counts = transfer_questions(
        TransferConfig(path="unused", max_examples=3), data, ctx, {"data": data_dir}
    )
    assert counts == {"read": 6, "used": 3}
    assert len({q.id for q in questions}) == 3 and "a" not in {q.id for q in questions}
    assert all(not q.answers for q in questions)
    (tmp_path / "t.csv").write_text("question,text\nwho?,bob\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"no column 'context' \(data.context_column\)"):
        transfer_questions(TransferConfig(path="t.csv"), data, ctx, {"data": data_dir})
