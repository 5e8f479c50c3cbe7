"""Paired significance of a gain: McNemar's exact test and the bootstrap interval."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from distill.report.significance import (
    bootstrap_difference_interval,
    mcnemar_exact,
    paired_comparison,
    paired_f1_comparison,
    verdict_sentence,
)


def _pairs(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-example correctness of two models with the given concordant/discordant counts."""
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return np.array(a), np.array(b)


def test_mcnemar_b8_c2_is_the_hand_computed_binomial_tail() -> None:
    expected = 2 * sum(comb(10, k) for k in range(3)) / 2**10
    assert expected == 0.109375
    assert mcnemar_exact(8, 2) == expected
    assert mcnemar_exact(2, 8) == expected


def test_mcnemar_is_one_when_discordant_pairs_balance_or_are_absent() -> None:
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 1) == 1.0  # 2 * 1/2 capped at 1


def test_mcnemar_all_discordant_one_way() -> None:
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 2**10)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_mcnemar_matches_scipy_where_it_is_installed() -> None:
    stats = pytest.importorskip("scipy.stats")
    for b, c in ((8, 2), (40, 25), (130, 101), (3, 0)):
        assert mcnemar_exact(b, c) == pytest.approx(stats.binomtest(min(b, c), b + c).pvalue)


def test_bootstrap_interval_contains_the_known_difference_and_is_seeded() -> None:
    a, b = _pairs(both=600, only_a=60, only_b=30, neither=310)  # difference +3.0 points
    low, high = bootstrap_difference_interval(a, b, resamples=10_000, seed=1)
    assert low < 0.03 < high
    # Standard error of the paired difference: sqrt((0.06 + 0.03 - 0.03**2) / 1000) ~ 0.0094.
    assert high - low == pytest.approx(2 * 1.96 * 0.0094, rel=0.1)
    assert bootstrap_difference_interval(a, b, resamples=10_000, seed=1) == (low, high)


def test_bootstrap_interval_without_discordant_pairs_is_zero() -> None:
    a, b = _pairs(both=7, only_a=0, only_b=0, neither=3)
    assert bootstrap_difference_interval(a, b, resamples=500) == (0.0, 0.0)
    with pytest.raises(ValueError):
        bootstrap_difference_interval(np.array([], bool), np.array([], bool))


def test_paired_comparison_fields_and_the_verdict_in_words() -> None:
    a, b = _pairs(both=80, only_a=8, only_b=2, neither=10)
    result = paired_comparison(a, b, resamples=2000, seed=0)
    assert result["examples"] == 100
    assert result["accuracy_difference"] == pytest.approx(0.06)
    assert (result["only_first_correct"], result["only_second_correct"]) == (8, 2)
    assert result["p_value"] == 0.109375
    assert result["significant"] is False
    assert result["ci_low"] < 0.06 < result["ci_high"]
    sentence = verdict_sentence(result)
    assert sentence.startswith("Distillation gained +6.0 points over the same student")
    assert "McNemar exact p = 0.109" in sentence
    assert sentence.endswith("not significant at the 5% level.")


def test_verdict_says_significant_and_lost() -> None:
    gain = paired_comparison(*_pairs(both=50, only_a=30, only_b=5, neither=15), resamples=500)
    assert gain["significant"] is True
    assert verdict_sentence(gain).endswith(": significant at the 5% level.")
    loss = paired_comparison(*_pairs(both=50, only_a=5, only_b=30, neither=15), resamples=500)
    assert loss["accuracy_difference"] == pytest.approx(-0.25)
    assert verdict_sentence(loss).startswith("Distillation lost 25.0 points against")
    assert "CI -" in verdict_sentence(loss)


def _exact_randomization_p(a: np.ndarray, b: np.ndarray) -> float:
    """Every one of the 2^n swaps of the paired outputs, enumerated: the exact p-value the
    approximate randomization test estimates (F1 from summed tp / predicted / gold)."""
    from itertools import product

    def f1(sums: np.ndarray) -> float:
        return 2 * sums[0] / (sums[1] + sums[2]) if sums[1] + sums[2] else 0.0

    observed = abs(f1(a.sum(0)) - f1(b.sum(0)))
    extreme = 0
    for swaps in product((0, 1), repeat=len(a)):
        mask = np.array(swaps, dtype=bool)[:, None]
        first, second = np.where(mask, b, a), np.where(mask, a, b)
        extreme += abs(f1(first.sum(0)) - f1(second.sum(0))) >= observed - 1e-12
    return extreme / 2 ** len(a)


# Per sentence: true positives, predicted entities, gold entities (gold shared by both models).
GOLD = [2, 1, 0, 3, 1, 2, 1, 2]
BETTER = np.array(
    [[2, 2, 2], [1, 1, 1], [0, 0, 0], [3, 3, 3], [1, 1, 1], [1, 2, 2], [1, 1, 1], [2, 2, 2]]
)
WORSE = np.array(
    [[1, 2, 2], [0, 1, 1], [0, 1, 0], [1, 3, 3], [1, 1, 1], [0, 2, 2], [0, 0, 1], [1, 2, 2]]
)


def test_paired_f1_randomization_p_matches_exhaustive_enumeration() -> None:
    assert BETTER[:, 2].tolist() == GOLD == WORSE[:, 2].tolist()
    result = paired_f1_comparison(BETTER, WORSE, resamples=20_000, seed=3)
    assert result["f1_first"] == pytest.approx(2 * 11 / (12 + 12))
    assert result["f1_second"] == pytest.approx(2 * 4 / (12 + 12))
    assert result["f1_difference"] == pytest.approx(22 / 24 - 8 / 24)
    exact = _exact_randomization_p(BETTER, WORSE)
    assert 0 < exact < 0.05  # the better model is ahead on 7 of 8 sentences, tied on 1
    # (r + 1) / (R + 1) estimates it: binomial standard error sqrt(p(1-p)/R) < 0.0016.
    assert result["p_value"] == pytest.approx(exact, abs=0.006)
    assert result["significant"] is True
    assert 0 < result["ci_low"] < result["f1_difference"] < result["ci_high"] <= 1
    assert result["test"].startswith("approximate randomization")
    assert paired_f1_comparison(BETTER, WORSE, resamples=20_000, seed=3) == result  # seeded


def test_paired_f1_of_a_model_against_itself_is_nothing() -> None:
    result = paired_f1_comparison(BETTER, BETTER, resamples=2_000)
    assert result["f1_difference"] == 0 and result["p_value"] == 1.0
    assert (result["ci_low"], result["ci_high"]) == (0.0, 0.0)
    assert result["significant"] is False


def test_paired_f1_refuses_unpaired_counts() -> None:
    with pytest.raises(ValueError, match=r"\[examples, 3\]"):
        paired_f1_comparison(BETTER, WORSE[:4])
    with pytest.raises(ValueError, match="gold items"):
        paired_f1_comparison(BETTER, WORSE + np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="no examples"):
        paired_f1_comparison(np.zeros((0, 3)), np.zeros((0, 3)))


def test_verdict_in_f1_points_names_the_test_and_the_scores() -> None:
    result = paired_f1_comparison(BETTER, WORSE, resamples=2_000, seed=0)
    sentence = verdict_sentence(
        result,
        difference="f1_difference",
        points="points of entity micro-F1",
        detail="91.7% vs 33.3% on 8 test sentences",
        test="approximate randomization",
    )
    assert sentence.startswith(
        "Distillation gained +58.3 points of entity micro-F1 over the same student trained "
        "without it (91.7% vs 33.3% on 8 test sentences; 95% CI +"
    )
    assert "; approximate randomization p = " in sentence
    assert sentence.endswith("): significant at the 5% level.")
