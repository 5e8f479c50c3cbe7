"""How well generated texts match their references, with the field's own libraries (nothing
here re-implements a metric):

- corpus BLEU and chrF with ``sacrebleu`` (``sacrebleu.metrics.BLEU`` / ``CHRF``, their
  defaults: 13a tokenization, exp smoothing, chrF2 over 6 character orders), each with its
  signature string, so a score can be compared with published ones;
- ROUGE-1, ROUGE-2 and ROUGE-L F-measure with ``rouge_score``
  (``RougeScorer(..., use_stemmer=True)``), the mean over sentences; its default tokenizer
  keeps lower-cased ASCII letters and digits only, as the summarization papers score;
- exact match: the share of outputs equal to their reference (surrounding whitespace aside);
- :func:`agreement`: how alike two models' outputs are (the share of identical outputs, and
  BLEU of one against the other);
- :func:`paired_bleu_bootstrap`: whether one model's BLEU beats another's on the same test
  sources more than test-set luck explains (Koehn 2004's paired bootstrap: test sentences
  resampled with replacement, corpus BLEU recomputed by sacrebleu from each sentence's
  n-gram statistics).

BLEU, chrF and ROUGE are reported on sacrebleu's 0-100 scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from distill.report.significance import ALPHA, RESAMPLES, SEED

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
SCORES = ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match")
BOOTSTRAP_TEST = "paired bootstrap resampling (Koehn 2004), one-sided"
# Resamples drawn at a time: a [BLOCK, sentences] matrix of weights.
BLOCK = 500


def _pairs(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[str]]:
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} outputs for {len(references)} references: each output is "
            "scored against the reference of the same source"
        )
    if not references:
        raise ValueError("no outputs to score")
    return [str(h) for h in hypotheses], [str(r) for r in references]


def bleu_metric() -> Any:
    """sacrebleu's BLEU with its defaults (13a tokenization, exp smoothing, 4-grams)."""
    from sacrebleu.metrics import BLEU

    return BLEU()


def chrf_metric() -> Any:
    """sacrebleu's chrF with its defaults (chrF2: 6 character orders, no word n-grams)."""
    from sacrebleu.metrics import CHRF

    return CHRF()


def rouge_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """ROUGE-1/2/L F-measure (0-100), the mean over sentences (``rouge_score``, stemmed)."""
    from rouge_score import rouge_scorer

    hyps, refs = _pairs(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hypothesis, reference in zip(hyps, refs, strict=True):
        scores = scorer.score(reference, hypothesis)  # (target, prediction)
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    return {name: 100 * total / len(refs) for name, total in totals.items()}


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """The share of outputs equal to their reference (surrounding whitespace aside)."""
    hyps, refs = _pairs(hypotheses, references)
    return sum(h.strip() == r.strip() for h, r in zip(hyps, refs, strict=True)) / len(refs)


def score_outputs(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Every score of one model's outputs against the references (one per source):
    ``bleu``, ``chrf``, ``rouge1``, ``rouge2``, ``rougeL`` (0-100), ``exact_match`` (a
    share), ``sentences``, and sacrebleu's ``signatures`` of BLEU and chrF."""
    hyps, refs = _pairs(hypotheses, references)
    bleu, chrf = bleu_metric(), chrf_metric()
    bleu_score = bleu.corpus_score(hyps, [refs])
    chrf_score = chrf.corpus_score(hyps, [refs])
    return {
        "bleu": float(bleu_score.score),
        "chrf": float(chrf_score.score),
        **rouge_scores(hyps, refs),
        "exact_match": exact_match(hyps, refs),
        "sentences": len(refs),
        "signatures": {
            "bleu": str(bleu.get_signature()),
            "chrf": str(chrf.get_signature()),
            "rouge": f"rouge_score {'/'.join(ROUGE_TYPES)} F-measure, use_stemmer=True, "
            "mean over sentences",
        },
    }


def agreement(outputs: Sequence[str], reference_outputs: Sequence[str]) -> dict[str, float]:
    """How alike two models' outputs on the same sources are: ``identical`` (the share of
    sources with the same output) and ``bleu`` (corpus BLEU of ``outputs`` taking
    ``reference_outputs``, another model's, as the references)."""
    hyps, refs = _pairs(outputs, reference_outputs)
    return {
        "identical": exact_match(hyps, refs),
        "bleu": float(bleu_metric().corpus_score(hyps, [refs]).score),
    }


# --------------------------------------------------------------------------- significance


def sentence_statistics(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Each sentence's BLEU sufficient statistics [sentences, 2 + 2 * 4]: hypothesis and
    reference lengths, matched and total n-grams of each order, as sacrebleu counts them
    (its public ``corpus_score`` on the one pair); they add up to the corpus's."""
    hyps, refs = _pairs(hypotheses, references)
    bleu = bleu_metric()
    rows = []
    for hypothesis, reference in zip(hyps, refs, strict=True):
        score = bleu.corpus_score([hypothesis], [[reference]])
        rows.append([score.sys_len, score.ref_len, *score.counts, *score.totals])
    return np.asarray(rows, dtype=np.int64)


def bleu_of_statistics(sums: np.ndarray, bleu: Any = None) -> float:
    """Corpus BLEU from summed sufficient statistics: sacrebleu's ``BLEU.compute_bleu`` with
    the settings of ``bleu`` (default :func:`bleu_metric`'s)."""
    from sacrebleu.metrics import BLEU

    bleu = bleu_metric() if bleu is None else bleu
    order = bleu.max_ngram_order
    return float(
        BLEU.compute_bleu(
            correct=[int(x) for x in sums[2 : 2 + order]],
            total=[int(x) for x in sums[2 + order : 2 + 2 * order]],
            sys_len=int(sums[0]),
            ref_len=int(sums[1]),
            smooth_method=bleu.smooth_method,
            smooth_value=bleu.smooth_value,
            effective_order=bleu.effective_order,
            max_ngram_order=order,
        ).score
    )


def _bootstrap_differences(
    stats_first: np.ndarray, stats_second: np.ndarray, resamples: int, seed: int
) -> np.ndarray:
    """BLEU(first) - BLEU(second) on ``resamples`` draws of the test sentences with
    replacement (the same draw for both), drawn in blocks so memory stays small."""
    bleu = bleu_metric()
    n = stats_first.shape[0]
    rng = np.random.default_rng(seed)
    uniform = np.full(n, 1 / n)
    differences = []
    for start in range(0, resamples, BLOCK):
        weights = rng.multinomial(n, uniform, size=min(BLOCK, resamples - start))
        for sums_first, sums_second in zip(
            weights @ stats_first, weights @ stats_second, strict=True
        ):
            differences.append(
                bleu_of_statistics(sums_first, bleu) - bleu_of_statistics(sums_second, bleu)
            )
    return np.asarray(differences)


def paired_bleu_bootstrap(
    first: Sequence[str],
    second: Sequence[str],
    references: Sequence[str],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """Whether ``first`` beats ``second`` on corpus BLEU (same sources, same references) by
    more than test-set luck: Koehn 2004's paired bootstrap. ``resamples`` times, the test
    sentences are drawn with replacement (the same draw for both models) and both corpus
    BLEUs recomputed from the drawn sentences' statistics; ``p_value`` is the share of
    draws in which ``first`` does not score higher (one-sided, +1 smoothed:
    ``(ties or losses + 1) / (resamples + 1)``), the interval the 2.5th and 97.5th
    percentiles of the drawn differences. The keys follow
    :mod:`distill.report.significance` (``p_value``, ``ci_low``, ``ci_high``,
    ``significant`` ...), the differences in BLEU points."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1 (got {resamples})")
    stats_first = sentence_statistics(first, references)
    stats_second = sentence_statistics(second, references)
    n = stats_first.shape[0]
    bleu = bleu_metric()
    bleu_first = float(bleu.corpus_score(list(first), [list(references)]).score)
    bleu_second = float(bleu.corpus_score(list(second), [list(references)]).score)
    differences = _bootstrap_differences(stats_first, stats_second, resamples, seed)
    not_better = int(np.sum(differences <= 0))
    p_value = (not_better + 1) / (resamples + 1)
    low, high = np.percentile(differences, [2.5, 97.5])
    return {
        "examples": int(n),
        "bleu_first": bleu_first,
        "bleu_second": bleu_second,
        "bleu_difference": bleu_first - bleu_second,
        "first_wins": float(np.mean(differences > 0)),
        "test": BOOTSTRAP_TEST,
        "p_value": float(p_value),
        "ci_low": float(low),
        "ci_high": float(high),
        "ci_level": 0.95,
        "ci_method": "paired bootstrap, percentile interval",
        "resamples": resamples,
        "seed": seed,
        "alpha": alpha,
        "significant": bool(p_value < alpha and bleu_first > bleu_second),
        "signature": str(bleu.get_signature()),
    }
