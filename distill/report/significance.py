"""Paired significance of one model's accuracy gain over another on the same test examples.

Both models are scored on the very same examples, so the comparison is paired:

- McNemar's exact test: of the ``b + c`` discordant examples (``b`` only the first model
  gets right, ``c`` only the second), under "no difference" each is the first model's with
  probability 1/2, so ``p = min(1, 2 * P(X <= min(b, c)))`` for ``X ~ Binomial(b + c, 1/2)``
  (two-sided), summed exactly in integers;
- a bootstrap percentile interval of the accuracy difference: test examples resampled with
  replacement, pairs kept together, a fixed seed.

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
        "test": TEST_NAME,
        "p_value": p_value,
        "ci_low": low,
        "ci_high": high,
        "ci_level": 0.95,
        "ci_method": "paired bootstrap, percentile interval",
        "resamples": resamples,
        "seed": seed,
        "alpha": alpha,
        "significant": bool(p_value < alpha),
    }


def format_p(p: float) -> str:
    """``p = 0.109``, or ``p < 0.001`` for tiny values."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}"


def verdict_sentence(
    comparison: dict[str, Any],
    subject: str = "Distillation",
    reference: str = "the same student trained without it",
) -> str:
    """The Distillation section's verdict, e.g. "Distillation gained +1.6 points over the
    same student trained without it (95% CI +0.4 to +2.8; McNemar exact p = 0.0107):
    significant at the 5% level."; ``subject`` and ``reference`` name the two models."""
    points = 100 * comparison["accuracy_difference"]
    if points > 0:
        change = f"gained {points:+.1f} points over"
    elif points < 0:
        change = f"lost {-points:.1f} points against"
    else:
        change = "changed nothing against"
    level = f"{comparison['alpha']:.0%}"
    verdict = (
        f"significant at the {level} level"
        if comparison["significant"]
        else f"not significant at the {level} level"
    )
    return (
        f"{subject} {change} {reference} "
        f"({comparison['ci_level']:.0%} CI {100 * comparison['ci_low']:+.1f} to "
        f"{100 * comparison['ci_high']:+.1f}; McNemar exact {format_p(comparison['p_value'])}): "
        f"{verdict}."
    )


def _as_correct(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(correct_a, dtype=bool).ravel()
    b = np.asarray(correct_b, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired predictions differ in length ({a.size} vs {b.size})")
    return a, b
