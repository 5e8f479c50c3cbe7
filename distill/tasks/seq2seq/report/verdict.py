"""What the seq2seq report concludes: whether the distilled student's BLEU beats its no-KD
twin's (and its sequence-level twin's) by more than test-set luck (the paired bootstrap of
:func:`distill.tasks.seq2seq.metrics.paired_bleu_bootstrap`, in the words of
:func:`distill.report.significance.verdict_sentence`), the headline (BLEU kept, size,
speed) and the warnings a user should read before deploying."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distill.report.ratios import kept_sentence
from distill.report.significance import verdict_sentence
from distill.tasks.seq2seq.metrics import paired_bleu_bootstrap
from distill.tasks.seq2seq.report.rows import bleu

POINTS = "BLEU points"
TEST = "paired bootstrap"
# How far the teacher's int8 graphs may score above the deployed student before the report
# says so (the export gate's default BLEU drop).
BASELINE_MARGIN = 1.0


def compare_bleu(
    first: Sequence[str],
    second: Sequence[str],
    references: Sequence[str],
    subject: str,
    reference: str,
) -> dict[str, Any]:
    """Two models' outputs on the same test sources, paired: the bootstrap's figures and
    its ``verdict`` sentence (``subject`` against ``reference``)."""
    comparison = paired_bleu_bootstrap(first, second, references)
    # verdict_sentence counts a difference in fractions (x 100 = points): BLEU is on 0-100.
    in_fractions = {
        **comparison,
        "difference": comparison["bleu_difference"] / 100,
        "ci_low": comparison["ci_low"] / 100,
        "ci_high": comparison["ci_high"] / 100,
    }
    comparison["verdict"] = verdict_sentence(
        in_fractions,
        subject,
        reference,
        difference="difference",
        points=POINTS,
        detail=(
            f"BLEU {comparison['bleu_first']:.2f} vs {comparison['bleu_second']:.2f} on "
            f"{comparison['examples']} test sources"
        ),
        test=f"{TEST} (one-sided)",
    )
    return comparison


def significance(
    outputs: dict[str, list[str]], references: Sequence[str]
) -> dict[str, dict[str, Any] | None]:
    """The distilled student against its no-KD twin (``kd``) and against its sequence-level
    twin (``soft_targets``: what the teacher's distributions add beyond its outputs); None
    for a twin the run did not train."""
    student = outputs["student"]
    kd = soft = None
    if "student_no_kd" in outputs:
        kd = compare_bleu(
            student,
            outputs["student_no_kd"],
            references,
            "Distillation",
            "the same student trained without it",
        )
    if "student_sequence" in outputs:
        soft = compare_bleu(
            student,
            outputs["student_sequence"],
            references,
            "Word-level distillation",
            "the same student trained on the teacher's beam outputs alone",
        )
    return {"kd": kd, "soft_targets": soft}


def summary_sentence(deployed: dict[str, Any]) -> str:
    """ "The deployed student keeps 93.1% of the teacher's BLEU at 12.0% of its size, 6.20×
    faster per source at batch 1." (``size_ratio`` is times smaller: its inverse is shown)."""
    smaller = deployed.get("size_ratio")
    return kept_sentence(
        deployed.get("bleu_kept"),
        "BLEU",
        None if not smaller else 1 / smaller,
        deployed.get("speedup"),
        "faster per source at batch 1",
    )


def warnings(rows: list[dict[str, Any]], compared: dict[str, Any]) -> list[str]:
    """What to read before deploying: the teacher's int8 graphs scoring better than the
    deployed student, distillation not beating a twin, a deployed student slower than the
    teacher."""
    by_key = {row["key"]: row for row in rows}
    deployed = next(row for row in rows if row.get("deployed"))
    found = []
    baseline = by_key.get("teacher_onnx_int8")
    if baseline is not None and bleu(baseline) - bleu(deployed) > BASELINE_MARGIN:
        found.append(
            f"{baseline['name']} (BLEU {bleu(baseline):.2f}) translates better than the "
            f"deployed student (BLEU {bleu(deployed):.2f}): the student buys its size and "
            f"speed with {bleu(baseline) - bleu(deployed):.2f} BLEU points"
        )
    twins = (("kd", "its no-KD twin"), ("soft_targets", "its sequence-level twin"))
    for key, twin in twins:
        comparison = compared.get(key)
        if comparison is not None and comparison["bleu_difference"] <= 0:
            found.append(
                f"The distilled student (BLEU {comparison['bleu_first']:.2f}) is not better "
                f"than {twin} (BLEU {comparison['bleu_second']:.2f})"
            )
    if deployed.get("speedup") is not None and deployed["speedup"] < 1:
        found.append(
            f"The deployed student is slower per source than the PyTorch teacher at batch 1 "
            f"({deployed['speedup']:.2f}×)"
        )
    return found


def headline(rows: list[dict[str, Any]], compared: dict[str, Any]) -> dict[str, Any]:
    """The verdict in numbers and words: the deployed student's share of the teacher's BLEU,
    times smaller and faster at batch 1, the KD gain and the paired test's sentence when
    there is a no-KD twin, and the warnings."""
    deployed = next(row for row in rows if row.get("deployed"))
    kd = compared.get("kd")
    return {
        "bleu_kept": deployed.get("bleu_kept"),
        "size_ratio": deployed.get("size_ratio"),
        "speedup": deployed.get("speedup"),
        "kd_gain": None if kd is None else kd["bleu_difference"],
        "summary": summary_sentence(deployed),
        "verdict": None if kd is None else kd["verdict"],
        "warnings": warnings(rows, compared),
    }
