"""The tagging report's "what adaptation bought" section (the classification one is
tests/test_adapt_report.py's, whose fake adapt and plain-twin folders this reuses): the plain
teacher's row and the row of the student distilled from it, the ``adaptation`` section (the
adapted teacher's gain over its plain twin and the distilled student's over the plain
teacher's student, with their paired tests), rendered in Markdown and HTML; and none of it
without the ``adapt`` / ``plain-teacher`` / ``plain-student`` folders."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from task_projects import NAME, Project
from test_adapt_report import check_html, check_masked_lm, plain_copy, write_adapt

from distill.config import ReportConfig
from distill.pipeline.artifacts import RunContext, read_manifest
from distill.report.adaptation import STUDENT_REFERENCE
from distill.report.render import md_escape
from distill.report.significance import paired_f1_comparison


def _word_starts(tokenizer: Any, words: list[str], max_length: int) -> list[int]:
    """Each word's first sub-token position, straight from the tokenizer."""
    word_ids = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    seen: list[int] = []
    starts = []
    for position, word in enumerate(word_ids.word_ids()):
        if word is not None and word not in seen:
            seen.append(word)
            starts.append(position)
    return starts


def _entities(tags: list[str]) -> int:
    return sum(tag.startswith("B-") for tag in tags)


def _tagged(
    logits: np.ndarray, starts: list[int], tags: list[int], names: list[str], right: bool
) -> np.ndarray:
    """Logits shaped like ``logits`` that tag every word ``O``, or (``right``) every word
    its gold tag."""
    values = np.zeros_like(logits)
    values[:, names.index("O")] = 5.0
    if right:
        for position, tag in zip(starts, tags, strict=False):
            values[position] = 0.0
            values[position, tag] = 5.0
    return values


@pytest.fixture(scope="module")
def ner(
    finished_project: Callable[[str], Project], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The NER report over the finished contract run plus an adapt folder, a plain twin that
    tags even test sentences perfectly and finds nothing in odd ones, and its student (a copy
    of the student's folder) that does the opposite, through the student's own tokenizer."""
    from transformers import AutoTokenizer

    from distill.data.ragged import load_ragged, save_ragged
    from distill.tasks.token_classification.files import read_tag_names, read_tagged_split
    from distill.tasks.token_classification.stages import report as report_stage

    project = finished_project("token-classification").root
    run = project / "runs" / NAME
    root = tmp_path_factory.mktemp("ner-adapted")
    names = read_tag_names(run / "data")
    test = read_tagged_split(run / "data", "test")
    max_length = int(read_manifest(run / "export")["config"]["data"]["max_length"])
    tokenizer = AutoTokenizer.from_pretrained(run / "teacher" / "model")
    student_tokenizer = AutoTokenizer.from_pretrained(run / "student" / "model")
    teacher_logits = load_ragged(run / "teacher" / "logits" / "test.npz", test.ids)
    student_logits = load_ragged(run / "student" / "logits" / "test.npz", test.ids)
    gold, teacher_tags, plain_tags, plain_logits = [], [], [], []
    every_word, distilled_tags, student_tags, plain_student_logits = [], [], [], []
    for i, (words, tags, logits, distilled) in enumerate(
        zip(test.tokens, test.tags, teacher_logits, student_logits, strict=True)
    ):
        starts = _word_starts(tokenizer, words, max_length)
        gold.append([names[t] for t in tags[: len(starts)]])
        teacher_tags.append([names[int(logits[p].argmax())] for p in starts])
        plain_logits.append(_tagged(logits, starts, tags, names, right=i % 2 == 0))
        plain_tags.append(gold[-1] if i % 2 == 0 else ["O"] * len(starts))
        # the plain teacher's student: right on odd sentences, nothing on even ones
        starts = _word_starts(student_tokenizer, words, max_length)
        every_word.append([names[t] for t in tags])
        distilled_tags.append([names[int(distilled[p].argmax())] for p in starts])
        plain_student_logits.append(_tagged(distilled, starts, tags, names, right=i % 2 == 1))
        student_tags.append(every_word[-1][: len(starts)] if i % 2 else ["O"] * len(starts))

    def writer(values: list[np.ndarray]) -> Callable[[Path], None]:
        # stored in another order
        return lambda path: save_ragged(path, test.ids[::-1], values[::-1])

    inputs = {name: run / name for name in ("data", "teacher", "student", "export")}
    inputs["adapt"] = write_adapt(root / "adapt")
    inputs["plain-teacher"] = plain_copy(
        run / "teacher", root / "plain-teacher", writer(plain_logits)
    )
    inputs["plain-student"] = plain_copy(
        run / "student", root / "plain-student", writer(plain_student_logits), "plain-student"
    )
    ctx = RunContext(
        name=NAME, seed=13, task="token-classification", workdir=project, recipe_dir=project
    )
    out = root / "report"
    out.mkdir()
    config = ReportConfig(latency_runs=3, latency_warmup=1, latency_threads=1)
    returned = report_stage.run(ctx, inputs, out, report=config)
    return {
        "out": out,
        "document": json.loads((out / "report.json").read_text(encoding="utf-8")),
        "returned": returned,
        "gold": gold,
        "teacher_tags": teacher_tags,
        "plain_tags": plain_tags,
        "every_word": every_word,
        "distilled_tags": distilled_tags,
        "student_tags": student_tags,
        "teacher_manifest": read_manifest(run / "teacher"),
    }


def test_ner_plain_teacher_row_and_adaptation_section(ner: dict[str, Any]) -> None:
    from distill.tasks.token_classification.metrics import entity_counts

    gold, plain_tags = ner["gold"], ner["plain_tags"]
    found = sum(_entities(g) for i, g in enumerate(gold) if i % 2 == 0)
    total = sum(_entities(g) for g in gold)
    f1 = 2 * found / (found + total)  # every entity found is right: precision 1
    assert 0 < found < total
    rows = ner["document"]["rows"]
    keys = ["teacher", "teacher_plain", "student", "student_plain_teacher"]
    assert [r["key"] for r in rows[:4]] == keys
    teacher, plain = rows[0], rows[1]
    assert plain["name"] == "Teacher (no adaptation)"
    assert plain["entity_f1"] == pytest.approx(f1, abs=1e-12)
    assert plain["entity_precision"] == 1.0
    assert plain["entity_recall"] == pytest.approx(found / total, abs=1e-12)
    assert plain["bytes"] == teacher["bytes"] and plain["parameters"] == teacher["parameters"]
    assert plain["latency"]["p50_ms"] > 0 and plain["f1_kept"] == pytest.approx(
        f1 / teacher["entity_f1"]
    )
    section = ner["document"]["adaptation"]
    check_masked_lm(section)
    assert section["metric"] == "entity_f1"
    assert section["plain_teacher"] == pytest.approx(f1, abs=1e-12)
    # the adapted teacher's F1 here is the one its own stage recorded
    recorded = ner["teacher_manifest"]["metrics"]["test"]["entity_f1"]
    assert section["teacher"] == pytest.approx(recorded, abs=1e-12)
    assert section["gain"] == pytest.approx(recorded - f1, abs=1e-12)
    direct = paired_f1_comparison(
        entity_counts(gold, ner["teacher_tags"]), entity_counts(gold, plain_tags)
    )
    significance = section["significance"]
    for key in ("p_value", "ci_low", "ci_high", "f1_first", "f1_second", "examples"):
        assert significance[key] == pytest.approx(direct[key], abs=1e-12), key
    verdict = section["verdict"]
    assert verdict.startswith("Adaptation ") and "the same teacher fine-tuned without it" in verdict
    assert "points of entity micro-F1" in verdict and "approximate randomization p" in verdict
    assert ner["returned"]["adaptation"]["p_value"] == significance["p_value"]
    assert ner["returned"]["adaptation"]["gain"] == section["gain"]
    assert ner["returned"]["rows"]["teacher_plain"]["entity_f1"] == plain["entity_f1"]


def test_ner_plain_teacher_student_row_and_the_students_comparison(ner: dict[str, Any]) -> None:
    from distill.tasks.token_classification.metrics import aligned, entity_counts

    # the row: scored on the words the teacher and this student both kept
    gold = [g[: len(s)] for g, s in zip(ner["gold"], ner["student_tags"], strict=True)]
    found = sum(_entities(g) for i, g in enumerate(gold) if i % 2 == 1)
    total = sum(_entities(g) for g in gold)
    f1 = 2 * found / (found + total)  # every entity found is right: precision 1
    assert 0 < found < total
    rows = {r["key"]: r for r in ner["document"]["rows"]}
    row, student = rows["student_plain_teacher"], rows["student"]
    assert row["name"] == "Student (of the plain teacher)"
    assert row["entity_f1"] == pytest.approx(f1, abs=1e-12)
    assert row["entity_precision"] == 1.0
    assert row["entity_recall"] == pytest.approx(found / total, abs=1e-12)
    assert row["bytes"] == student["bytes"] and row["parameters"] == student["parameters"]
    assert row["latency"]["p50_ms"] > 0
    # the section: the distilled student against it, paired on the words both students kept
    every_word, distilled, plain = aligned(
        ner["every_word"], ner["distilled_tags"], ner["student_tags"]
    )
    direct = paired_f1_comparison(
        entity_counts(every_word, distilled), entity_counts(every_word, plain)
    )
    section = ner["document"]["adaptation"]
    significance = section["student_significance"]
    for key in ("p_value", "ci_low", "ci_high", "f1_first", "f1_second", "examples"):
        assert significance[key] == pytest.approx(direct[key], abs=1e-12), key
    assert section["student"] == pytest.approx(direct["f1_first"], abs=1e-12)
    assert section["plain_student"] == pytest.approx(direct["f1_second"], abs=1e-12)
    assert section["student_gain"] == pytest.approx(direct["f1_difference"], abs=1e-12)
    verdict = section["student_verdict"]
    assert verdict == significance["verdict"] and verdict.startswith("Adaptation ")
    assert STUDENT_REFERENCE in verdict and "points of entity micro-F1" in verdict
    assert "the words both students kept" in verdict and "approximate randomization p" in verdict
    summary = ner["returned"]["adaptation"]
    assert summary["student_gain"] == section["student_gain"]
    assert summary["student_p_value"] == significance["p_value"]
    assert ner["returned"]["rows"]["student_plain_teacher"]["entity_f1"] == row["entity_f1"]


def test_ner_markdown_and_html_show_the_domain_adaptation_section(ner: dict[str, Any]) -> None:
    section = ner["document"]["adaptation"]
    markdown = (ner["out"] / "report.md").read_text(encoding="utf-8")
    assert "## Domain adaptation" in markdown and f"**{section['verdict']}**" in markdown
    assert "| loss | 3.1 | 2.7 | -0.4000 |" in markdown
    assert "| perplexity | 22.2 | 14.9 | -7.3000 |" in markdown
    assert "corpora/&lt;b&gt;domain&lt;/b&gt;\\|news.txt" in markdown
    gain = f"{100 * section['gain']:+.2f} pt"
    assert f"| {100 * section['plain_teacher']:.2f}% | {gain} |" in markdown
    assert "| Teacher (no adaptation) |" in markdown
    assert f"**{md_escape(section['student_verdict'])}**" in markdown
    student_gain = f"{100 * section['student_gain']:+.2f} pt"
    plain_student = f"{100 * section['plain_student']:.2f}%"
    assert f"| students | {100 * section['student']:.2f}% | {plain_student} | {student_gain} |" in (
        markdown
    )
    assert "| Student (of the plain teacher) |" in markdown
    text = check_html((ner["out"] / "report.html").read_text(encoding="utf-8"))
    assert section["verdict"] in text and "Teacher (no adaptation)" in text
    assert section["student_verdict"] in text and "Student (of the plain teacher)" in text


def test_ner_report_without_adaptation_is_as_before(
    finished_project: Callable[[str], Project],
) -> None:
    root = finished_project("token-classification").root
    folder = root / "reports" / NAME
    document = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert document.get("adaptation") is None
    assert {"teacher_plain", "student_plain_teacher"}.isdisjoint(r["key"] for r in document["rows"])
    assert read_manifest(root / "runs" / NAME / "report")["metrics"]["adaptation"] is None
    assert "Domain adaptation" not in (folder / "report.md").read_text(encoding="utf-8")
    assert 'id="adaptation"' not in (folder / "report.html").read_text(encoding="utf-8")
