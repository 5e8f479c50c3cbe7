"""Paired significance of one model's gain over another on the same test examples.

Both models are scored on the very same examples, so the comparison is paired. Accuracy
(:func:`paired_comparison`):

- McNemar's exact test: of the ``b + c`` discordant examples (``b`` only the first model
  gets right, ``c`` only the second), under "no difference" each is the first model's with
  probability 1/2, so ``p = min(1, 2 * P(X <= min(b, c)))`` for ``X ~ Binomial(b + c, 1/2)``
  (two-sided), summed exactly in integers;
- a bootstrap percentile interval of the accuracy difference: test examples resampled with
  replacement, pairs kept together, a fixed seed.

A micro-F1 over counted items (spans, say: :func:`paired_f1_comparison`) does not split into
one score per example, so both of its statistics recompute the F1 from each example's
counts (true positives, predicted, gold):

- approximate randomization (Noreen 1989; Yeh 2000): each example's two outputs are swapped
  between the models with probability 1/2, ``p = (r + 1) / (R + 1)`` where ``r`` of ``R``
  shuffles give an F1 difference at least as large in size as the observed one;
- a bootstrap percentile interval of the F1 difference, examples resampled with
  replacement, pairs kept together, a fixed seed.

Scores already split per item in [0, 1] (each question's SQuAD F1, say:
:func:`paired_score_comparison`) compare by their mean: the same two statistics, where
swapping an item's two scores flips the sign of its difference.

Pure numpy (and the standard library), so the report needs nothing more.
"""

from __future__ import annotations

from math import comb
from typing import Any

import numpy as np

ALPHA = 0.05
RESAMPLES = 10_000
SEED = 0
TEST_NAME = "McNemar exact (two-sided binomial test on the discordant pairs)"


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (1.0 when none)."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0 (got b={b}, c={c})")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(b, c) + 1))
    # Integer true division rounds once, so the p-value is exact to float precision.
    return min(1.0, 2 * tail / 2**n)


def bootstrap_difference_interval(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of ``accuracy(a) - accuracy(b)`` under the paired bootstrap.

    Each example's difference is +1, 0 or -1, so how often each value appears in a resample
    of ``n`` examples is Multinomial(n, observed shares): drawing those counts is the very
    same bootstrap as drawing ``n`` indices, in memory independent of ``n``.
    """
    a, b = _as_correct(correct_a, correct_b)
    n = a.size
    if n == 0:
        raise ValueError("no examples to resample")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1 (got {resamples})")
    a_only = int(np.sum(a & ~b))
    b_only = int(np.sum(~a & b))
    shares = np.array([a_only, b_only, n - a_only - b_only], dtype=np.float64) / n
    counts = np.random.default_rng(seed).multinomial(n, shares, size=resamples)
    differences = (counts[:, 0] - counts[:, 1]) / n
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return float(low), float(high)


def paired_comparison(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """Everything the report states about model a against model b on the same examples."""
    a, b = _as_correct(correct_a, correct_b)
    a_only = int(np.sum(a & ~b))
    b_only = int(np.sum(~a & b))
    p_value = mcnemar_exact(a_only, b_only)
    low, high = bootstrap_difference_interval(a, b, resamples=resamples, seed=seed)
    return {
        "examples": int(a.size),
        "accuracy_difference": float(a.mean() - b.mean()),
        "only_first_correct": a_only,
        "only_second_correct": b_only,
        **_evidence(TEST_NAME, p_value, (low, high), resamples, seed, alpha),
    }


def _evidence(
    test: str,
    p_value: float,
    interval: tuple[float, float],
    resamples: int,
    seed: int,
    alpha: float,
) -> dict[str, Any]:
    """The keys every comparison shares, from its test's name on."""
    return {
        "test": test,
        "p_value": float(p_value),
        "ci_low": float(interval[0]),
        "ci_high": float(interval[1]),
        "ci_level": 0.95,
        "ci_method": "paired bootstrap, percentile interval",
        "resamples": resamples,
        "seed": seed,
        "alpha": alpha,
        "significant": bool(p_value < alpha),
    }


F1_TEST_NAME = "approximate randomization (outputs swapped per example, two-sided)"
# Resamples drawn per block: a [block, examples] matrix at a time, whatever the test size.
BLOCK = 500


def paired_f1_comparison(
    counts_a: np.ndarray,
    counts_b: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """Model a's micro-F1 against model b's on the same examples. ``counts_*`` [examples, 3]:
    each example's true positives, predicted items and gold items (gold equal on both
    sides)."""
    a, b = _as_counts(counts_a, counts_b)
    f1_a, f1_b = _micro_f1(a.sum(0)), _micro_f1(b.sum(0))
    p_value, interval = _randomization_and_bootstrap(a, b, _micro_f1, resamples, seed)
    return {
        "examples": int(a.shape[0]),
        "f1_first": f1_a,
        "f1_second": f1_b,
        "f1_difference": float(f1_a - f1_b),
        **_evidence(F1_TEST_NAME, p_value, interval, resamples, seed, alpha),
    }


SCORE_TEST_NAME = "approximate randomization (sign of each item's difference flipped, two-sided)"


def paired_score_comparison(
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """Model a's mean score against model b's on the same items; ``scores_*`` [items]: each
    item's score in [0, 1] (a question's F1, say). ``mean_difference`` is the gain."""
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired scores must both be [items] (got {a.shape} and {b.shape})")
    if a.size == 0:
        raise ValueError("no examples to resample")
    if not (np.all((a >= 0) & (a <= 1)) and np.all((b >= 0) & (b <= 1))):
        raise ValueError("paired scores must lie in [0, 1]")
    n = a.size

    def mean(sums: np.ndarray) -> Any:
        return sums[..., 0] / n

    p_value, interval = _randomization_and_bootstrap(a[:, None], b[:, None], mean, resamples, seed)
    return {
        "examples": int(n),
        "mean_first": float(a.mean()),
        "mean_second": float(b.mean()),
        "mean_difference": float(a.mean() - b.mean()),
        **_evidence(SCORE_TEST_NAME, p_value, interval, resamples, seed, alpha),
    }


def _randomization_and_bootstrap(
    a: np.ndarray, b: np.ndarray, score: Any, resamples: int, seed: int
) -> tuple[float, tuple[float, float]]:
    """The approximate-randomization p-value and the 95% paired bootstrap interval of
    ``score(a sums) - score(b sums)``; ``a``, ``b`` [items, k]: what each item adds to a
    model's sums, ``score`` maps sums [..., k] to the statistic. Resamples are drawn in
    blocks of :data:`BLOCK`, so memory stays [BLOCK, items] whatever their number."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1 (got {resamples})")
    n = a.shape[0]
    total_a, total_b = a.sum(0), b.sum(0)
    observed = score(total_a) - score(total_b)
    rng = np.random.default_rng(seed)
    uniform = np.full(n, 1 / n)
    swapped, boot = [], []
    for size in _blocks(resamples):
        swap = rng.integers(0, 2, size=(size, n)).astype(np.float64)
        moved = swap @ (b - a)  # what a gains (and b loses) from the swapped items
        swapped.append(score(total_a + moved) - score(total_b - moved))
        weights = rng.multinomial(n, uniform, size=size)
        boot.append(score(weights @ a) - score(weights @ b))
    differences = np.concatenate(swapped)
    extreme = int(np.sum(np.abs(differences) >= abs(observed) - 1e-12))
    low, high = np.percentile(np.concatenate(boot), [2.5, 97.5])
    return (extreme + 1) / (resamples + 1), (float(low), float(high))


def _micro_f1(sums: np.ndarray) -> Any:
    """``2 tp / (predicted + gold)`` over the last axis (tp, predicted, gold); 0 when empty."""
    sums = np.asarray(sums, dtype=np.float64)
    denominator = sums[..., 1] + sums[..., 2]
    f1 = np.divide(
        2 * sums[..., 0], denominator, out=np.zeros_like(denominator), where=denominator > 0
    )
    return float(f1) if f1.ndim == 0 else f1


def _blocks(total: int) -> list[int]:
    return [min(BLOCK, total - start) for start in range(0, total, BLOCK)]


def _as_counts(counts_a: np.ndarray, counts_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(counts_a, dtype=np.float64)
    b = np.asarray(counts_b, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3 or a.shape != b.shape:
        raise ValueError(f"paired counts must both be [examples, 3] (got {a.shape} and {b.shape})")
    if a.shape[0] == 0:
        raise ValueError("no examples to resample")
    if not np.array_equal(a[:, 2], b[:, 2]):
        raise ValueError("paired counts disagree on the gold items of an example")
    return a, b


def format_p(p: float) -> str:
    """``p = 0.109``, or ``p < 0.001`` for tiny values."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}"


def verdict_sentence(
    comparison: dict[str, Any],
    subject: str = "Distillation",
    reference: str = "the same student trained without it",
    *,
    difference: str = "accuracy_difference",
    points: str = "points",
    detail: str = "",
    test: str = "McNemar exact",
) -> str:
    """The Distillation section's verdict, e.g. "Distillation gained +1.6 points over the
    same student trained without it (95% CI +0.4 to +2.8; McNemar exact p = 0.0107):
    significant at the 5% level."; ``subject`` and ``reference`` name the two models,
    ``difference`` the comparison's key of the gain, ``points`` what it is counted in,
    ``detail`` what the parentheses say first and ``test`` the test, as the sentence names
    them."""
    gain = 100 * comparison[difference]
    if gain > 0:
        change = f"gained {gain:+.1f} {points} over"
    elif gain < 0:
        change = f"lost {-gain:.1f} {points} against"
    else:
        change = "changed nothing against"
    level = f"{comparison['alpha']:.0%}"
    verdict = (
        f"significant at the {level} level"
        if comparison["significant"]
        else f"not significant at the {level} level"
    )
    evidence = (
        f"{comparison['ci_level']:.0%} CI {100 * comparison['ci_low']:+.1f} to "
        f"{100 * comparison['ci_high']:+.1f}; {test} {format_p(comparison['p_value'])}"
    )
    if detail:
        evidence = f"{detail}; {evidence}"
    return f"{subject} {change} {reference} ({evidence}): {verdict}."


def _as_correct(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(correct_a, dtype=bool).ravel()
    b = np.asarray(correct_b, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired predictions differ in length ({a.size} vs {b.size})")
    return a, b
