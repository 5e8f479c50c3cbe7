"""The report's "Domain adaptation" section, as far as it is the same for every task: what
the ``adapt`` stage did (the unlabelled text it continued masked-LM pre-training on, the
masked-LM loss and perplexity on held-out text before and after, the head it trained), read
from its manifest, and the sentence for a run that trained no plain twin.

What adaptation bought (the adapted teacher against the same teacher fine-tuned without
it, the ``plain-teacher`` stage, paired on the test split in the task's primary metric;
and, when the run trained it, the distilled student against the student of that plain
teacher, the ``plain-student`` stage: whether the gain reaches the students) is each task's
own comparison; it hands its results to :func:`adaptation_section`, which puts them
together. Manifests are read defensively: a key the stage did not write is None.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.pipeline.artifacts import finished_manifest

ADAPT = "adapt"
PLAIN_TEACHER = "plain-teacher"
PLAIN_STUDENT = "plain-student"
# The plain-student stage's row in the main table (after the distilled student's).
STUDENT_KEY = "student_plain_teacher"
STUDENT_NAME = "Student (of the plain teacher)"
# How the verdicts name the two teachers, and the two students (verdict_sentence's subject
# and reference).
SUBJECT = "Adaptation"
REFERENCE = "the same teacher fine-tuned without it"
STUDENT_REFERENCE = "the same student distilled from the teacher fine-tuned without it"
NO_TWIN = (
    "No plain twin was trained (the recipe has no plain-teacher stage): what adaptation "
    "bought the teacher on the task is not measured."
)
TEXT_KEYS = ("source", "path", "texts", "held_out", "dropped_evaluation", "dropped_duplicates")
SETTING_KEYS = ("mlm_probability", "whole_word_mask", "steps", "train_runtime_s")


def adapted(inputs: dict[str, Path]) -> bool:
    """Whether the run adapted its teacher (or trained the plain twins): the report then
    has an adaptation section."""
    return any(name in inputs for name in (ADAPT, PLAIN_TEACHER, PLAIN_STUDENT))


def masked_lm_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """Masked-LM loss and perplexity on the held-out text before and after adaptation, and
    the changes (after - before; None where a number is missing)."""
    masked_lm = metrics.get("masked_lm") or {}
    figures: dict[str, Any] = {}
    for moment in ("before", "after"):
        values = masked_lm.get(moment) or {}
        figures[moment] = {
            "loss": _number(values, "loss"),
            "perplexity": _number(values, "perplexity"),
        }
    for measure, digits in DIGITS.items():
        before, after = figures["before"][measure], figures["after"][measure]
        change = None if before is None or after is None else after - before
        figures[f"{measure}_change"] = change
        for value in (figures["before"], figures["after"]):  # shown rounded, as measured
            value[measure] = None if value[measure] is None else round(value[measure], digits)
        if change is not None:
            figures[f"{measure}_change"] = round(change, digits)
    return figures


# The digits a masked-LM figure is shown with: a loss in nats, a perplexity (thousands at
# first with a new head) to one decimal.
DIGITS = {"loss": 3, "perplexity": 1}


def read_adapt(folder: Path) -> dict[str, Any]:
    """The ``adapt`` stage as the report shows it: its text, masked-LM figures, head and
    settings (from ``folder/manifest.json``; a key it lacks is None). An unfinished stage
    folder is an error."""
    manifest = finished_manifest(folder, ADAPT)
    metrics = manifest.get("metrics") or {}
    text = metrics.get("text") or {}
    adapt = {
        "text": {key: text.get(key) for key in TEXT_KEYS},
        "masked_lm": masked_lm_figures(metrics),
        "head": metrics.get("head"),
        **{key: metrics.get(key) for key in SETTING_KEYS},
        "wall_time_s": manifest.get("wall_time_s"),
    }
    adapt["summary"] = describe(adapt)
    return adapt


def describe(adapt: dict[str, Any]) -> str:
    """In words, the text the teacher's encoder was adapted on and how (for the reports to
    show as is), e.g. "1234 texts (adapt.path: domain.txt); 60 held out to measure the
    masked-LM loss; dropped: 3 that are validation or test text, 5 duplicates. Head: new
    (tied to the input embeddings); 15% of tokens masked; 120 steps in 95.0 s."."""
    text = adapt["text"]
    where = text.get("source") or "unknown source"
    if text.get("path"):
        where = f"{where}: {text['path']}"
    parts = [f"{_shown(text.get('texts'))} texts ({where})"]
    if text.get("held_out") is not None:
        parts.append(f"{text['held_out']} held out to measure the masked-LM loss")
    dropped = [
        f"{text[key]} {what}"
        for key, what in (
            ("dropped_evaluation", "that are validation or test text"),
            ("dropped_duplicates", "duplicates"),
        )
        if text.get(key)
    ]
    if dropped:
        parts.append("dropped: " + ", ".join(dropped))
    how = [f"Head: {adapt['head'] or 'not stated'}"]
    if isinstance(adapt.get("mlm_probability"), int | float):
        whole = " (whole words)" if adapt.get("whole_word_mask") else ""
        how.append(f"{adapt['mlm_probability']:.0%} of tokens masked{whole}")
    if adapt.get("steps") is not None:
        runtime = adapt.get("train_runtime_s")
        seconds = f" in {runtime:.1f} s" if isinstance(runtime, int | float) else ""
        how.append(f"{adapt['steps']} steps{seconds}")
    return "; ".join(parts) + ". " + "; ".join(how) + "."


def _shown(value: Any) -> str:
    return "?" if value is None else str(value)


def adaptation_section(
    inputs: dict[str, Path],
    metric: str,
    comparison: dict[str, Any] | None,
    student_comparison: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The report's ``adaptation`` section: the adapt stage's figures (None without an
    ``adapt`` folder) and the task's comparison of the adapted teacher with its plain twin
    (``comparison``: ``adapted`` and ``plain`` in ``metric``, their ``gain``, and the paired
    test ``significance`` with its ``verdict``; None when no twin was trained). With
    ``student_comparison`` (the same for the distilled student against the student of the
    plain teacher), also ``student``, ``plain_student``, ``student_gain``,
    ``student_significance`` and ``student_verdict``; without it, none of these keys. None
    when the run did not adapt."""
    if not adapted(inputs):
        return None
    twin = comparison is not None
    significance = (comparison or {}).get("significance")
    section = {
        "adapt": read_adapt(inputs[ADAPT]) if ADAPT in inputs else None,
        "metric": metric,
        "plain_teacher_trained": twin,
        "teacher": (comparison or {}).get("adapted"),
        "plain_teacher": (comparison or {}).get("plain"),
        "gain": (comparison or {}).get("gain"),
        "significance": significance,
        "verdict": (significance or {}).get("verdict") if twin else NO_TWIN,
    }
    if student_comparison is not None:
        section.update(
            student=student_comparison["adapted"],
            plain_student=student_comparison["plain"],
            student_gain=student_comparison["gain"],
            student_significance=student_comparison["significance"],
            student_verdict=student_comparison["significance"]["verdict"],
        )
    return section


def adaptation_summary(section: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the report stage's manifest keeps of the section: the gain, the paired test's
    numbers, the held-out perplexity before and after, and, when the run trained the
    student of the plain teacher, the students' gain and its p-value."""
    if not section:
        return None
    significance = section.get("significance") or {}
    masked_lm = (section.get("adapt") or {}).get("masked_lm") or {}
    summary = {
        "metric": section.get("metric"),
        "gain": section.get("gain"),
        "p_value": significance.get("p_value"),
        "ci_low": significance.get("ci_low"),
        "ci_high": significance.get("ci_high"),
        "significant": significance.get("significant"),
        "perplexity_before": (masked_lm.get("before") or {}).get("perplexity"),
        "perplexity_after": (masked_lm.get("after") or {}).get("perplexity"),
    }
    if "student_gain" in section:
        summary["student_gain"] = section["student_gain"]
        summary["student_p_value"] = (section.get("student_significance") or {}).get("p_value")
    return summary


def _number(values: dict[str, Any], key: str) -> float | None:
    value = values.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
