"""Question answering's windows and spans on hand cases: distill.tasks.question_answering.
windows (questions and contexts cut as transformers' QA examples cut them, offsets into the
original context) and spans (the best answer over a question's windows).

A WordPiece tokenizer is built here from the tokenizers library alone (BERT's normalizer,
pre-tokenizer and pair template, uncased: accents stripped), as BertTokenizerFast builds it.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from conftest import SPECIAL

from distill.tasks.question_answering.spans import best_answer
from distill.tasks.question_answering.windows import (
    NO_ANSWER_POSITION,
    Window,
    Windowing,
    by_example,
    cut_question,
    make_windows,
    padded,
    windowing_tokenizer,
)

WORDS = ["who", "what", "wrote", "was", "born", "in", "the", "book", "emile", "zola", "paris"]
WORDS += ["a", "of", "?", ".", ","]
LETTERS = list("abcdefghijklmnopqrstuvwxyz")
VOCAB = {
    token: i for i, token in enumerate(SPECIAL + WORDS + LETTERS + [f"##{c}" for c in LETTERS])
}
WIDE = Windowing(max_length=64, doc_stride=8, max_question_length=8)


def _tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    tokenizer = Tokenizer(models.WordPiece(VOCAB, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.BertProcessing(
        ("[SEP]", VOCAB["[SEP]"]), ("[CLS]", VOCAB["[CLS]"])
    )
    return tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return _tokenizer()


def _context_tokens(window: Window, context: str) -> list[str]:
    return [context[a:b] for a, b in (o for o in window.offsets if o is not None)]


def _span(window: Window, context: str) -> str:
    first, last = window.offsets[window.start], window.offsets[window.end]
    assert first is not None and last is not None
    return context[first[0] : last[1]]


# --------------------------------------------------------------------------- windows


def test_offsets_point_at_the_original_characters(tokenizer) -> None:
    """Accents stripped by the normalizer, an emoji ([UNK]), whitespace runs: every context
    token's offsets slice the original context."""
    context = "Émile  Zola 😀 wrote\t\ta   book."
    cut = windowing_tokenizer(tokenizer, WIDE)
    (window,), counts = make_windows(cut, ["who wrote?"], [context], WIDE)
    assert counts.questions == counts.windows == 1 and counts.questions_cut == 0
    assert _context_tokens(window, context) == ["Émile", "Zola", "😀", "wrote", "a", "book", "."]
    assert window.ids[window.offsets.index((12, 13))] == VOCAB["[UNK]"]
    # question, [CLS] and [SEP] tokens are no context tokens
    assert window.offsets[:5] == [None] * 5 and window.offsets[-1] is None
    assert window.type_ids == [0] * 5 + [1] * 8
    assert list(window.context_positions) == list(range(5, 12))
    assert (window.start, window.end) == (NO_ANSWER_POSITION, NO_ANSWER_POSITION)


@pytest.mark.parametrize(
    ("answer", "tokens"),
    [
        ("Émile", (5, 5)),  # the very first context token
        ("Émile  Zola", (5, 6)),  # across a whitespace run
        ("Zola 😀 wrote\t\ta", (6, 9)),  # an emoji and a tab run inside
        ("book.", (10, 11)),  # the very end of the context
        (".", (11, 11)),
    ],
)
def test_gold_answer_tokens(tokenizer, answer: str, tokens: tuple[int, int]) -> None:
    context = "Émile  Zola 😀 wrote\t\ta   book."
    start = context.index(answer)
    cut = windowing_tokenizer(tokenizer, WIDE)
    (window,), counts = make_windows(
        cut, ["who wrote?"], [context], WIDE, [(start, start + len(answer))]
    )
    assert (window.start, window.end) == tokens
    assert _span(window, context) == answer
    assert counts.answers_outside == 0


def test_a_long_context_is_read_in_overlapping_windows(tokenizer) -> None:
    """20 windows: each one's context part starts doc_stride tokens before the previous one
    ended; every gold answer lies in exactly the windows that hold it whole."""
    windowing = Windowing(max_length=32, doc_stride=8, max_question_length=8)
    cut = windowing_tokenizer(tokenizer, windowing)
    words = ["paris", "zola", "book", "the", "emile", "a", "of", "was"]
    context = " ".join(words[i % len(words)] for i in range(320))  # one token per word
    starts = [0] + [i + 1 for i, c in enumerate(context) if c == " "]
    spans = [(starts[i], starts[i + 2] - 1) for i in (0, 5, 23, 24, 40, 150, 317)]
    spans.append((starts[318], len(context)))  # the last two words
    question = "who wrote the book?"  # 5 tokens: 32 - 5 - 3 = 24 context tokens a window
    windows, counts = make_windows(
        cut, [question] * len(spans), [context] * len(spans), windowing, spans
    )
    assert counts.windows == 20 * len(spans) and counts.answers_outside == 0
    grouped = by_example(windows, len(spans))
    mine = [windows[i] for i in grouped[0]]
    assert [len(w) for w in mine] == [32] * 19 + [5 + 3 + 16]
    read = [[o for o in w.offsets if o is not None] for w in mine]
    assert read[0][0] == (0, len("paris"))
    assert read[-1][-1][1] == len(context)
    for before, after in pairwise(read):
        assert before[-8:] == after[:8]  # doc_stride tokens shared, no more
        assert before[-9] != after[0]
    for example, (start, end) in enumerate(spans):
        held = 0
        for position in grouped[example]:
            window = windows[position]
            offsets = [o for o in window.offsets if o is not None]
            whole = offsets[0][0] <= start and end <= offsets[-1][1]
            assert (window.start != NO_ANSWER_POSITION) == whole
            if whole:
                held += 1
                assert _span(window, context) == context[start:end]
                assert window.start <= window.end
        assert held >= 1
    # answer 3 (tokens 23-24) straddles windows 0 and 1's edge: only window 1 holds it whole
    assert [windows[i].start != 0 for i in grouped[3]][:2] == [False, True]


def test_an_answer_no_window_holds_whole_is_counted(tokenizer) -> None:
    windowing = Windowing(max_length=16, doc_stride=2, max_question_length=4)
    cut = windowing_tokenizer(tokenizer, windowing)
    context = " ".join(["paris"] * 40)
    windows, counts = make_windows(cut, ["who?"], [context], windowing, [(0, len(context))])
    assert counts.answers_outside == 1 and len(windows) > 1
    assert all(w.start == w.end == NO_ANSWER_POSITION for w in windows)


def test_a_long_question_is_cut_and_counted(tokenizer) -> None:
    windowing = Windowing(max_length=32, doc_stride=4, max_question_length=5)
    cut = windowing_tokenizer(tokenizer, windowing)
    long_question = "who   wrote the book of émile zola in paris?"
    text, was_cut = cut_question(cut, long_question, 5)
    assert (text, was_cut) == ("who   wrote the book of", True)
    assert cut_question(cut, "who wrote?", 5) == ("who wrote?", False)
    # a cut inside a word: after its 3rd word piece (x ##y p ##q ##r)
    assert cut_question(cut, "xy pqr", 3) == ("xy p", True)
    windows, counts = make_windows(
        cut, [long_question, "who?"], ["the book", "the book"], windowing
    )
    assert counts.questions_cut == 1 and counts.windows == 2
    assert windows[0].type_ids.count(0) == 5 + 2  # [CLS], 5 question tokens, [SEP]
    assert windows[0].ids[1:6] == [VOCAB[w] for w in ["who", "wrote", "the", "book", "of"]]


def test_padded_batches(tokenizer) -> None:
    cut = windowing_tokenizer(tokenizer, WIDE)
    windows, _ = make_windows(cut, ["who?", "who wrote the book?"], ["paris", "zola"], WIDE)
    arrays = padded(windows, pad_id=VOCAB["[PAD]"])
    assert arrays["input_ids"].shape == (2, 9) and arrays["input_ids"].dtype == np.int64
    assert arrays["attention_mask"].tolist() == [[1] * 6 + [0] * 3, [1] * 9]
    assert arrays["input_ids"][0, 6:].tolist() == [VOCAB["[PAD]"]] * 3
    assert arrays["token_type_ids"][1].tolist() == [0] * 7 + [1] * 2


# --------------------------------------------------------------------------- spans

# Two hand windows of one context "the book was born in paris": tokens
# [CLS] q [SEP] then context tokens with their offsets, [SEP].
CONTEXT = "the book was born in paris"
_OFFSETS = [(0, 3), (4, 8), (9, 12), (13, 17), (18, 20), (21, 26)]


def _window(parts: list[tuple[int, int]]) -> Window:
    offsets: list[tuple[int, int] | None] = [None, None, None, *parts, None]
    return Window(0, [0] * len(offsets), [0] * 3 + [1] * (len(offsets) - 3), offsets)


def _logits(size: int, high: dict[int, float]) -> np.ndarray:
    logits = np.zeros(size)
    for position, value in high.items():
        logits[position] = value
    return logits


def _answer(windows, starts, ends, **kwargs):
    kwargs.setdefault("max_answer_length", 30)
    kwargs.setdefault("no_answer", False)
    answer = best_answer(windows, starts, ends, CONTEXT, **kwargs)
    if answer.is_answer:
        assert CONTEXT[answer.start : answer.end] == answer.text
    return answer


def test_the_best_span_and_its_score() -> None:
    window = _window(_OFFSETS)  # context tokens at 3..8
    start, end = _logits(10, {4: 3.0}), _logits(10, {5: 2.0})
    answer = _answer([window], [start], [end])
    assert (answer.text, answer.start, answer.end) == ("book was", 4, 12)
    # softmax over the 6 context tokens and position 0: e^3 / (e^3 + 6), e^2 / (e^2 + 6)
    expected = np.exp(3) / (np.exp(3) + 6) * np.exp(2) / (np.exp(2) + 6)
    assert answer.score == pytest.approx(expected)
    # padding past the window (logits longer than it) is ignored
    padded_start = np.concatenate([start, [50.0, 50.0]])
    assert _answer([window], [padded_start], [np.concatenate([end, [50.0, 50.0]])]) == answer


def test_start_before_end_and_max_answer_length() -> None:
    window = _window(_OFFSETS)
    # the best start (7: "in") lies after the best end (4: "book"): never a span
    start, end = _logits(10, {7: 5.0, 3: 1.0}), _logits(10, {4: 5.0, 8: 1.5})
    answer = _answer([window], [start], [end])
    assert answer.text == "in paris"  # 7..8: 6.5 beats 3..4: 6.0
    start, end = _logits(10, {3: 5.0, 6: 0.5}), _logits(10, {8: 4.8, 6: 0.7})
    assert _answer([window], [start], [end]).text == CONTEXT  # 3..8, 6 tokens: 9.8
    # at most 5 tokens: 3..6 (5.7) beats 6..8 (5.3) and 3..7 (5.0)
    assert _answer([window], [start], [end], max_answer_length=5).text == "the book was born"
    # one token: 3..3 (5.0) beats 8..8 (4.8) and 6..6 (1.2)
    assert _answer([window], [start], [end], max_answer_length=1).text == "the"
    # question and special tokens never start or end an answer
    start, end = _logits(10, {1: 9.0, 5: 1.0}), _logits(10, {9: 9.0, 5: 1.0})
    assert _answer([window], [start], [end]).text == "was"


def test_n_best_limits_the_candidates() -> None:
    window = _window(_OFFSETS)
    # starts ranked 8, 3; ends ranked 4, 5: only 3..4 and 3..5 are spans
    start, end = _logits(10, {8: 4.0, 3: 3.0}), _logits(10, {4: 4.0, 5: 3.5})
    assert _answer([window], [start], [end]).text == "the book"
    assert _answer([window], [start], [end], n_best=2).text == "the book"
    # with one start (8: "paris") and one end (4), no span is possible: no answer at all
    assert not _answer([window], [start], [end], n_best=1).is_answer


def test_no_answer_against_a_span() -> None:
    window = _window(_OFFSETS)
    start, end = _logits(10, {0: 4.0, 5: 3.0}), _logits(10, {0: 4.0, 6: 3.0})
    with_null = _answer([window], [start], [end], no_answer=True)
    assert (with_null.text, with_null.start, with_null.end) == ("", None, None)
    expected = (np.exp(4) / (np.exp(4) + np.exp(3) + 5)) ** 2
    assert with_null.score == pytest.approx(expected)
    assert _answer([window], [start], [end], no_answer=False).text == "was born"
    # the span beats the null score: answered either way
    start[5], end[6] = 4.5, 4.5
    assert _answer([window], [start], [end], no_answer=True).text == "was born"


def test_the_span_is_chosen_across_windows() -> None:
    """Windows over tokens 0-3 and 2-5 of the context: the best span is the second's; the
    null score is the lowest over the windows."""
    first, second = _window(_OFFSETS[:4]), _window(_OFFSETS[2:])
    starts = [_logits(8, {3: 2.0, 0: 1.0}), _logits(8, {5: 3.0, 0: 9.0})]
    ends = [_logits(8, {4: 2.0, 0: 1.0}), _logits(8, {6: 3.0, 0: 9.0})]
    answer = _answer([first, second], starts, ends, no_answer=True)
    assert (answer.text, answer.start, answer.end) == ("in paris", 18, 26)  # 6.0 > null 2.0
    assert answer.score == pytest.approx((np.exp(3) / (np.exp(3) + np.exp(9) + 3)) ** 2)
    starts[1][5] = ends[1][6] = 0.5
    answer = _answer([first, second], starts, ends, no_answer=True)
    assert answer.text == "the book"  # 4.0 in the first window beats 1.0 in the second
    starts[0][0] = ends[0][0] = 2.5  # the first window's null score: 5.0 > 4.0
    assert not _answer([first, second], starts, ends, no_answer=True).is_answer
    assert _answer([first, second], starts, ends, no_answer=False).text == "the book"
