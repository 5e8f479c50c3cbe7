"""The tagging loss against hand computations, and seqeval's strict entity scores on
hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch

from distill.tasks.token_classification.losses import IGNORE_INDEX, token_distillation_loss
from distill.tasks.token_classification.metrics import (
    entity_counts,
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


def test_entity_counts_per_sentence_sum_to_seqevals_strict_scores() -> None:
    """The paired test's rows: [true positives, predicted, gold] per sentence, strict IOB2."""
    gold = [["B-person", "I-person", "O", "B-geo-loc"], ["O", "B-company"], ["I-person", "O"]]
    predicted = [["B-person", "O", "O", "B-geo-loc"], ["O", "O"], ["B-person", "O"]]
    counts = entity_counts(gold, predicted)
    # Sentence 3's gold I-person continues nothing: no entity in strict mode, so the
    # predicted person there is a false positive.
    assert counts.tolist() == [[1, 2, 2], [0, 0, 1], [0, 1, 0]]
    tp, found, expected = counts.sum(0)
    scores = tagging_metrics(gold, predicted)
    assert scores["entity_precision"] == pytest.approx(tp / found)
    assert scores["entity_recall"] == pytest.approx(tp / expected)
    assert scores["entity_f1"] == pytest.approx(2 * tp / (found + expected))


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


def _tiny_taggers() -> tuple[torch.nn.Module, torch.nn.Module]:
    from transformers import BertConfig, BertForTokenClassification

    def tagger(layers: int, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        config = BertConfig(
            vocab_size=30,
            hidden_size=16,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=3,
            hidden_dropout_prob=0.0,  # train mode, yet the same outputs when recomputed
            attention_probs_dropout_prob=0.0,
        )
        return BertForTokenClassification(config)

    return tagger(1, 0), tagger(3, 1)


def test_layer_losses_add_the_hidden_state_mse_over_real_sub_tokens_in_training_only() -> None:
    """TaggingObjective + hidden_weight: the tagging loss plus weight x the MSE between the
    student's layer and its mapped teacher layer, padding left out; evaluation scores CE."""
    from types import SimpleNamespace

    from distill.tasks.token_classification.training import TaggingObjective
    from distill.train.layer_losses import layer_distillation

    student, teacher = _tiny_taggers()
    vocabulary = SimpleNamespace(get_vocab=lambda: {"a": 0})
    config = SimpleNamespace(layer_map=None, hidden_weight=2.0, attention_weight=0.0)
    built: dict = {"init": "teacher-layers"}
    wrapped, layers = layer_distillation(
        config, student, vocabulary, teacher, vocabulary, "teacher", built, seed=0
    )
    assert built["layer_map"] == [[0, 2]] and built["projection"] is None  # last <- last
    inputs = {
        "input_ids": torch.tensor([[2, 5, 7, 3], [2, 9, 3, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
        "labels": torch.tensor([[-100, 1, 0, -100], [-100, 2, -100, -100]]),
        "kd_mask": torch.tensor([[0, 1, 1, 0], [0, 1, 0, 0]]),
        "teacher_logits": torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0)),
    }
    objective = TaggingObjective(temperature=2.0, alpha=0.5, layers=layers)
    objective.prepare("cpu")
    wrapped.train()
    loss, _ = objective(wrapped, dict(inputs), training=True)

    plain = {k: inputs[k] for k in ("input_ids", "attention_mask")}
    mine = student(**plain, output_hidden_states=True)
    with torch.no_grad():
        theirs = teacher(**plain, output_hidden_states=True)
    expected, _ = token_distillation_loss(
        mine.logits, inputs["teacher_logits"], inputs["labels"], inputs["kd_mask"], 2.0, 0.5
    )
    real = inputs["attention_mask"].bool()
    mse = ((mine.hidden_states[1] - theirs.hidden_states[3]) ** 2)[real].mean().detach()
    assert float(mse) > 0.01  # the two layers differ: the term is not vacuous
    assert float(loss) == pytest.approx(float(expected + 2.0 * mse), rel=1e-5)
    wrapped.eval()  # evaluation: CE alone, no teacher run
    evaluated, _ = objective(wrapped, dict(inputs), training=False)
    with torch.no_grad():
        ce, _ = token_distillation_loss(
            student(**plain).logits, None, inputs["labels"], None, 2.0, 0.0
        )
    assert float(evaluated) == pytest.approx(float(ce), rel=1e-5)


def test_the_attention_loss_runs_eager_and_gives_the_student_its_attention_back() -> None:
    """Attention maps need eager attention during training only; the trained student returns
    to the implementation it was built with. (BERT in transformers 4.57 cannot switch at
    all and returns maps from its SDPA path; a Llama can, so it shows the switch.)"""
    from types import SimpleNamespace

    from transformers import LlamaConfig, LlamaForTokenClassification

    from distill.train.layer_losses import layer_distillation

    def tagger(layers: int) -> torch.nn.Module:
        config = LlamaConfig(
            vocab_size=30,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=layers,
            num_attention_heads=2,
            num_key_value_heads=2,
            num_labels=3,
            attn_implementation="sdpa",
        )
        return LlamaForTokenClassification(config)

    student, teacher = tagger(1), tagger(2)
    vocabulary = SimpleNamespace(get_vocab=lambda: {"a": 0})
    config = SimpleNamespace(layer_map=[(0, 1)], hidden_weight=0.0, attention_weight=1.0)
    _, layers = layer_distillation(
        config, student, vocabulary, teacher, vocabulary, "teacher", {"init": "config"}, seed=0
    )
    assert student.config._attn_implementation == "eager"
    assert teacher.config._attn_implementation == "eager"
    layers.restore_attention(student)
    assert student.config._attn_implementation == "sdpa"
