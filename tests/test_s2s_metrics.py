"""seq2seq metrics: sacrebleu and rouge_score wired on pairs whose scores are worked out by
hand, agreement of two models' outputs, and the paired BLEU bootstrap on a clear win, a tie
and identical outputs."""

from __future__ import annotations

import random

import pytest

from distill.tasks.seq2seq import metrics

HYP = "the cat sat on a mat"
REF = "the cat sat on the mat"


def test_bleu_rouge_by_hand() -> None:
    scores = metrics.score_outputs([HYP], [REF])
    # n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths, so no brevity penalty.
    assert scores["bleu"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    assert scores["bleu"] == pytest.approx(53.7284966, abs=1e-6)
    # ROUGE-1: 5 of 6 unigrams (clipped "the"); ROUGE-2: 3 of 5 bigrams; ROUGE-L: LCS 5 of 6.
    assert scores["rouge1"] == pytest.approx(100 * 5 / 6)
    assert scores["rouge2"] == pytest.approx(60.0)
    assert scores["rougeL"] == pytest.approx(100 * 5 / 6)
    assert scores["exact_match"] == 0.0
    assert scores["sentences"] == 1
    assert scores["signatures"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
    assert "nc:6|nw:0" in scores["signatures"]["chrf"]


def test_chrf_by_hand() -> None:
    # "ab" vs "abc": order 1 P 2/2 R 2/3, order 2 P 1/1 R 1/2, higher orders have no
    # hypothesis n-grams; chrF2 = 5 P R / (4 P + R) over the averages P = 1, R = 7/12.
    assert metrics.score_outputs(["ab"], ["abc"])["chrf"] == pytest.approx(700 / 11)


def test_corpus_scores_and_exact_match() -> None:
    hyps = ["a b c d", "x y", " the cat sat on the mat "]
    refs = ["a b c d", "x z", REF]
    scores = metrics.score_outputs(hyps, refs)
    assert scores["exact_match"] == pytest.approx(2 / 3)
    # ROUGE is the mean of the sentences': 1, 1/2 ("x y" vs "x z"), 1.
    assert scores["rouge1"] == pytest.approx(100 * (1 + 0.5 + 1) / 3)
    assert scores["rouge2"] == pytest.approx(100 * (1 + 0 + 1) / 3)
    # Corpus BLEU (not the mean of sentence BLEUs): n-grams matched over the corpus
    # 11/12, 8/9, 6/6, 4/4 ("x y" has 1 of 2 unigrams, 0 of 1 bigram, no longer n-grams).
    assert scores["bleu"] == pytest.approx(100 * (11 / 12 * 8 / 9) ** 0.25)
    assert metrics.score_outputs(refs, refs)["bleu"] == pytest.approx(100)
    assert metrics.score_outputs(refs, refs)["chrf"] == pytest.approx(100)


def test_mismatched_or_empty_outputs_are_refused() -> None:
    with pytest.raises(ValueError, match="2 outputs for 1 references"):
        metrics.score_outputs(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no outputs"):
        metrics.score_outputs([], [])


def test_agreement() -> None:
    result = metrics.agreement([HYP, "x y"], [REF, "x y"])
    assert result["identical"] == 0.5
    # Matches 7/8, 4/6, 2/4, 1/3 (the second pair is too short for 3- and 4-grams).
    assert result["bleu"] == pytest.approx(100 * (7 / 8 * 4 / 6 * 2 / 4 * 1 / 3) ** 0.25)


def test_sentence_statistics_add_up_to_the_corpus() -> None:
    hyps, refs = [HYP, "a b c", "q"], [REF, "a b c d", "r s"]
    stats = metrics.sentence_statistics(hyps, refs)
    assert stats.shape == (3, 10)
    assert stats[0].tolist() == [6, 6, 5, 3, 2, 1, 6, 5, 4, 3]
    corpus = metrics.bleu_metric().corpus_score(hyps, [refs]).score
    assert metrics.bleu_of_statistics(stats.sum(0)) == pytest.approx(corpus)


def _corpus(seed: int = 0, sentences: int = 40) -> list[str]:
    rng = random.Random(seed)
    words = "a b c d e f g h i j".split()
    return [" ".join(rng.choice(words) for _ in range(8)) for _ in range(sentences)]


def _spoilt(sentence: str) -> str:
    """The sentence's first 4 words, then 4 words no reference has."""
    return " ".join([*sentence.split()[:4], "x", "y", "z", "w"])


def test_bootstrap_clear_win() -> None:
    refs = _corpus()
    worse = [_spoilt(r) for r in refs]
    result = metrics.paired_bleu_bootstrap(refs, worse, refs, resamples=2000, seed=1)
    assert result["bleu_first"] == pytest.approx(100)
    assert result["bleu_difference"] > 50
    assert result["first_wins"] == 1.0
    assert result["p_value"] == pytest.approx(1 / 2001)  # no draw where it does not win
    assert result["significant"] is True
    assert 0 < result["ci_low"] <= result["bleu_difference"] <= result["ci_high"]
    assert result["signature"].startswith("nrefs:1|")


def test_bootstrap_tie_and_identical_outputs() -> None:
    refs = _corpus()
    worse = [_spoilt(r) for r in refs]
    # The same sentences, right and wrong, swapped between the two: equal corpus BLEU.
    first = [r if i % 2 else w for i, (r, w) in enumerate(zip(refs, worse, strict=True))]
    second = [w if i % 2 else r for i, (r, w) in enumerate(zip(refs, worse, strict=True))]
    tie = metrics.paired_bleu_bootstrap(first, second, refs, resamples=2000, seed=1)
    assert tie["bleu_difference"] == pytest.approx(0, abs=1e-9)
    assert 0.3 < tie["p_value"] < 0.7
    assert tie["significant"] is False
    assert tie["ci_low"] < 0 < tie["ci_high"]
    same = metrics.paired_bleu_bootstrap(first, first, refs, resamples=200)
    assert same["p_value"] == 1.0 and same["first_wins"] == 0.0
    assert same["significant"] is False
    # Seeded: the same draws give the same figures.
    again = metrics.paired_bleu_bootstrap(first, second, refs, resamples=2000, seed=1)
    assert (again["p_value"], again["ci_low"]) == (tie["p_value"], tie["ci_low"])
