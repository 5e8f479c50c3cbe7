"""SQuAD's EM and F1 on hand cases, the per-question scores and their summary, and the paired
test of one model's per-question scores against another's."""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest

from distill.report.significance import paired_score_comparison, verdict_sentence
from distill.tasks.question_answering.examples import Answer, GoldAnswer, QAExample
from distill.tasks.question_answering.metrics import (
    exact_match,
    f1,
    gold_texts,
    normalize_answer,
    qa_metrics,
    question_scores,
)

CONTEXT = "The big red barn stood near Paris, by the Denver Broncos' old stadium."


def _example(example_id: str, *golds: str) -> QAExample:
    answers = tuple(GoldAnswer(text, CONTEXT.index(text)) for text in golds)
    return QAExample(example_id, f"question {example_id}?", CONTEXT, answers)


def _answer(text: str) -> Answer:
    if not text:
        return Answer("", None, None, 0.9)
    start = CONTEXT.index(text)
    return Answer(text, start, start + len(text), 0.5)


def test_normalization_drops_case_punctuation_articles_and_extra_spaces() -> None:
    assert normalize_answer("  The  Quick, brown-fox!\n") == "quick brownfox"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("the theatre, THEN anthem") == "theatre then anthem"  # words only
    assert normalize_answer("A.") == ""
    assert exact_match("the Eiffel Tower.", ["Eiffel   tower"]) == 1.0
    assert exact_match("Eiffel Towers", ["Eiffel tower"]) == 0.0


def test_f1_of_a_partial_overlap_by_hand() -> None:
    # "the big red barn" -> [big, red, barn]; "a red barn door" -> [red, barn, door]:
    # 2 shared words, precision 2/3, recall 2/3, F1 = 2/3.
    assert f1("the big red barn", ["a red barn door"]) == pytest.approx(2 / 3)
    # [new, new, york] vs [new, york]: "new" counts once (as often as both hold it), so
    # 2 shared, precision 2/3, recall 2/2, F1 = 2 * (2/3) * 1 / (2/3 + 1) = 4/5.
    assert f1("New new York", ["new york"]) == pytest.approx(0.8)
    assert f1("Paris", ["London"]) == 0.0
    assert exact_match("the big red barn", ["a red barn door"]) == 0.0


def test_the_best_gold_answer_counts() -> None:
    golds = ["Denver Broncos", "Broncos", "the Broncos"]
    assert exact_match("broncos", golds) == 1.0 and f1("broncos", golds) == 1.0
    # "Broncos team" vs [denver, broncos]: 1 shared, P 1/2, R 1/2, F1 1/2; vs [broncos]:
    # P 1/2, R 1, F1 2/3: the best is 2/3.
    assert f1("Broncos team", ["Denver Broncos", "Broncos"]) == pytest.approx(2 / 3)
    assert exact_match("Broncos team", ["Denver Broncos", "Broncos"]) == 0.0


def test_unanswerable_questions_and_empty_answers() -> None:
    assert exact_match("", [""]) == 1.0 and f1("", [""]) == 1.0  # "no answer", right
    assert exact_match("Paris", [""]) == 0.0 and f1("Paris", [""]) == 0.0
    assert exact_match("", ["Paris"]) == 0.0 and f1("", ["Paris"]) == 0.0
    assert f1("the", ["Paris"]) == 0.0  # normalizes to nothing: as empty as ""
    with pytest.raises(ValueError, match=r"\[''\]"):
        f1("Paris", [])
    with pytest.raises(ValueError, match="non-empty sequence"):
        exact_match("Paris", "Paris")


def test_gold_texts_drop_answers_that_normalize_to_nothing() -> None:
    assert gold_texts(_example("q", "Paris", "The")) == ["Paris"]
    assert gold_texts(_example("q", "The")) == [""]
    assert gold_texts(_example("q")) == [""]


EXAMPLES = [
    _example("q1", "Paris", "near Paris"),
    _example("q2", "big red barn"),
    _example("q3"),  # unanswerable
    _example("q4"),  # unanswerable
]
ANSWERS = [_answer("Paris"), _answer("red barn stood"), _answer(""), _answer("stadium")]


def test_question_scores_one_per_question() -> None:
    em, f1s = question_scores(EXAMPLES, ANSWERS)
    # q2: [red, barn, stood] vs [big, red, barn]: 2 shared, P 2/3, R 2/3, F1 2/3.
    np.testing.assert_allclose(em, [1, 0, 1, 0])
    np.testing.assert_allclose(f1s, [1, 2 / 3, 1, 0])
    assert em.dtype == np.float64 and f1s.dtype == np.float64
    with pytest.raises(ValueError, match="3 answers for 4 questions"):
        question_scores(EXAMPLES, ANSWERS[:3])


def test_qa_metrics_with_the_has_answer_and_no_answer_split() -> None:
    metrics = qa_metrics(EXAMPLES, ANSWERS)
    assert metrics["exact_match"] == pytest.approx(2 / 4)
    assert metrics["f1"] == pytest.approx((1 + 2 / 3 + 1 + 0) / 4)
    assert metrics["examples"] == 4
    assert metrics["answered"] == pytest.approx(3 / 4)  # q3 has no answer
    assert metrics["has_answer"] == pytest.approx(
        {"exact_match": 0.5, "f1": (1 + 2 / 3) / 2, "examples": 2}
    )
    assert metrics["no_answer"] == {"exact_match": 0.5, "f1": 0.5, "examples": 2}
    assert "agreement" not in metrics


def test_qa_metrics_of_answerable_questions_alone_has_no_split() -> None:
    metrics = qa_metrics(EXAMPLES[:2], ANSWERS[:2])
    assert metrics == pytest.approx(
        {"exact_match": 0.5, "f1": (1 + 2 / 3) / 2, "examples": 2, "answered": 1.0}
    )
    only_unanswerable = qa_metrics(EXAMPLES[2:], ANSWERS[2:])
    assert "has_answer" not in only_unanswerable  # as v2.0: no HasAns without such questions
    assert only_unanswerable["no_answer"]["examples"] == 2
    with pytest.raises(ValueError, match="no questions"):
        qa_metrics([], [])


def test_agreement_and_f1_against_a_reference_model() -> None:
    reference = [
        _answer("Paris"),  # the same span
        _answer("big red barn"),  # another span: [big, red, barn] vs [red, barn, stood]
        _answer(""),  # both say no answer
        _answer(""),  # the reference says none, the model answers
    ]
    metrics = qa_metrics(EXAMPLES, ANSWERS, reference)
    assert metrics["agreement"] == pytest.approx(2 / 4)
    assert metrics["f1_vs_reference"] == pytest.approx((1 + 2 / 3 + 1 + 0) / 4)
    # A span of the same text elsewhere is another span: no agreement, but F1 1.
    elsewhere = Answer("Paris", 0, 5, 0.5)
    moved = qa_metrics(EXAMPLES[:1], ANSWERS[:1], [elsewhere])
    assert moved["agreement"] == 0.0 and moved["f1_vs_reference"] == 1.0
    with pytest.raises(ValueError, match="1 reference answers for 4 questions"):
        qa_metrics(EXAMPLES, ANSWERS, reference[:1])


# Per-question F1 of two models on 10 questions: the first is ahead on 8, tied on 2.
FIRST = np.array([1.0, 1.0, 0.8, 1.0, 0.5, 1.0, 2 / 3, 1.0, 0.0, 1.0])
SECOND = np.array([0.0, 0.5, 0.4, 1.0, 0.0, 0.25, 0.0, 0.2, 0.0, 0.6])


def _exact_sign_flip_p(a: np.ndarray, b: np.ndarray) -> float:
    """The randomization p-value over all 2^n sign patterns of the differences."""
    d = a - b
    observed = abs(d.mean())
    flips = [abs((np.array(signs) * d).mean()) for signs in product([1, -1], repeat=d.size)]
    return float(np.mean(np.array(flips) >= observed - 1e-12))


def test_paired_scores_of_a_clearly_better_model() -> None:
    result = paired_score_comparison(FIRST, SECOND, resamples=20_000, seed=3)
    assert result["mean_first"] == pytest.approx(FIRST.mean())
    assert result["mean_difference"] == pytest.approx((FIRST - SECOND).mean())
    exact = _exact_sign_flip_p(FIRST, SECOND)
    # Flipping any of the 8 non-zero differences alone shrinks the mean: of the 2^10
    # patterns, all-plus and all-minus on those 8, times 4 on the 2 ties, are as extreme.
    assert exact == pytest.approx(8 / 1024)
    # (r + 1) / (R + 1) estimates it: standard error sqrt(p(1-p)/R) < 0.0005.
    assert result["p_value"] == pytest.approx(exact, abs=0.002)
    assert result["significant"] is True
    assert 0 < result["ci_low"] < result["mean_difference"] < result["ci_high"] <= 1
    assert result["test"].startswith("approximate randomization")
    assert paired_score_comparison(FIRST, SECOND, resamples=20_000, seed=3) == result
    assert paired_score_comparison(FIRST, SECOND, resamples=20_000, seed=4) != result


def test_paired_scores_of_a_model_against_itself() -> None:
    result = paired_score_comparison(FIRST, FIRST, resamples=2_000)
    assert result["mean_difference"] == 0 and result["p_value"] == 1.0
    assert (result["ci_low"], result["ci_high"]) == (0.0, 0.0)
    assert result["significant"] is False


def test_paired_scores_refuse_unpaired_or_out_of_range_scores() -> None:
    with pytest.raises(ValueError, match=r"\[items\]"):
        paired_score_comparison(FIRST, SECOND[:4])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        paired_score_comparison(FIRST * 2, SECOND)
    with pytest.raises(ValueError, match="no examples"):
        paired_score_comparison(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="resamples"):
        paired_score_comparison(FIRST, SECOND, resamples=0)


def test_verdict_in_points_of_f1() -> None:
    result = paired_score_comparison(FIRST, SECOND, resamples=2_000)
    test = "approximate randomization"
    sentence = verdict_sentence(
        result, difference="mean_difference", points="points of F1", test=test
    )
    # The differences sum to 1 + .5 + .4 + .5 + .75 + 2/3 + .8 + .4 = 5.0167 over 10 questions.
    assert sentence.startswith(
        "Distillation gained +50.2 points of F1 over the same student trained without it (95% CI +"
    )
    assert sentence.endswith("): significant at the 5% level.")
