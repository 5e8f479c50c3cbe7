"""The tagging loss against hand computations, and seqeval's strict entity scores on
hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch

from distill.tasks.token_classification.losses import IGNORE_INDEX, token_distillation_loss
from distill.tasks.token_classification.metrics import (
    memorization_tags,
    tagging_metrics,
    word_tags,
)


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def _softmax(z: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def test_kd_term_is_zero_for_equal_logits_and_ce_scores_first_subtokens_only() -> None:
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]]])
    labels = torch.tensor([[0, IGNORE_INDEX, IGNORE_INDEX]])
    mask = torch.tensor([[1, 1, 0]])
    loss, parts = token_distillation_loss(logits, logits.clone(), labels, mask, 2.0, 0.5)
    ce = -math.log(math.exp(2.0) / (math.exp(2.0) + 1.0))
    assert parts["kd"] == pytest.approx(0.0, abs=1e-7)
    assert parts["ce"] == pytest.approx(ce, rel=1e-6)
    assert float(loss) == pytest.approx(0.5 * ce, rel=1e-6)


def test_kd_term_averages_t_squared_kl_over_masked_subtokens_only() -> None:
    student = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [9.0, -9.0]]])
    teacher = torch.tensor([[[0.0, 1.0], [2.0, 0.0], [-9.0, 9.0]]])
    labels = torch.full((1, 3), IGNORE_INDEX)
    mask = torch.tensor([[1, 1, 0]])  # the third (padding-like) position is never scored
    t = 2.0
    expected = (
        (
            _kl(_softmax([0.0, 1.0], t), _softmax([1.0, 0.0], t))
            + _kl(_softmax([2.0, 0.0], t), _softmax([0.0, 0.0], t))
        )
        / 2
        * t**2
    )
    loss, parts = token_distillation_loss(student, teacher, labels, mask, t, 1.0)
    assert parts["kd"] == pytest.approx(expected, rel=1e-5)
    assert parts["ce"] == 0.0  # an unlabelled (transfer) sentence teaches through KD alone
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_no_kd_twin_needs_no_teacher() -> None:
    logits = torch.zeros((1, 2, 3))
    loss, parts = token_distillation_loss(logits, None, torch.tensor([[1, 2]]), None, 2.0, 0.0)
    assert float(loss) == pytest.approx(math.log(3)) and "kd" not in parts
    with pytest.raises(ValueError, match="needs teacher logits"):
        token_distillation_loss(logits, None, torch.tensor([[1, 2]]), None, 2.0, 0.5)


def test_strict_entity_f1_on_hand_made_cases() -> None:
    gold = [["B-person", "I-person", "O", "B-geo-loc"], ["O", "B-company"]]
    exact = tagging_metrics(gold, gold)
    assert exact["entity_f1"] == 1.0 and exact["token_accuracy"] == 1.0
    # Boundary wrong on the person (strict: no credit), geo-loc right, company missed:
    # 3 gold entities, 2 predicted, 1 correct -> P 1/2, R 1/3, F1 0.4.
    predicted = [["B-person", "O", "O", "B-geo-loc"], ["O", "O"]]
    scores = tagging_metrics(gold, predicted)
    assert scores["entity_precision"] == pytest.approx(0.5)
    assert scores["entity_recall"] == pytest.approx(1 / 3)
    assert scores["entity_f1"] == pytest.approx(0.4)
    assert scores["token_accuracy"] == pytest.approx(4 / 6)
    assert scores["per_type"]["geo-loc"] == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "support": 1,
    }
    assert scores["per_type"]["person"]["f1"] == 0.0


def test_an_i_tag_continuing_nothing_is_no_entity_in_strict_mode() -> None:
    gold = [["B-person", "O"]]
    scores = tagging_metrics(gold, [["I-person", "O"]])  # lenient IOB would count it
    assert scores["entity_f1"] == 0.0 and scores["entity_precision"] == 0.0


def test_agreement_is_entity_f1_against_the_teacher() -> None:
    gold = [["B-person", "O"]]
    teacher = [["O", "B-company"]]
    scores = tagging_metrics(gold, teacher, reference=teacher)
    assert scores["entity_f1"] == 0.0 and scores["agreement"] == 1.0


def test_word_tags_read_each_words_first_subtoken() -> None:
    import numpy as np

    logits = [np.array([[0, 9, 0], [9, 0, 0], [0, 0, 9], [9, 0, 0]], dtype=np.float32)]
    assert word_tags(logits, [[1, 2]], ["A", "B", "C"]) == [["A", "C"]]


def test_memorization_floor_takes_each_tokens_most_frequent_tag_well_formed() -> None:
    train_tokens = [["Paris", "is", "big"], ["paris", "again"], ["York"]]
    train_tags = [["B-geo-loc", "O", "O"], ["B-geo-loc", "O"], ["I-geo-loc"]]
    assert memorization_tags(train_tokens, train_tags, [["PARIS", "York", "unseen"]]) == [
        ["B-geo-loc", "I-geo-loc", "O"]
    ]
    # An I- tag alone becomes B- so strict scoring counts it as the entity it predicts.
    assert memorization_tags(train_tokens, train_tags, [["is", "York"]]) == [["O", "B-geo-loc"]]
