"""The report's "what adaptation bought" section (classification and NER; NER's tests are
tests/test_adapt_report_ner.py's, over the helpers here): the plain twin's
row and its student's in the main table, the ``adaptation`` section (the adapt stage's text
and masked-LM figures, the adapted teacher's gain over its plain twin and the distilled
student's over the plain teacher's student, with their paired tests), rendered in Markdown
and HTML; and none of it without the ``adapt`` / ``plain-teacher`` / ``plain-student``
folders."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_report import _Checker, _noisy_logits, run_report

from distill.data.files import save_logits
from distill.pipeline.artifacts import read_manifest, write_manifest
from distill.report.adaptation import NO_TWIN, STUDENT_REFERENCE
from distill.report.render import md_escape
from distill.report.significance import paired_comparison
from distill.tasks.classification.metrics import classification_metrics

# Would break the HTML or a Markdown table if written unescaped.
TEXT_PATH = "corpora/<b>domain</b>|news.txt"
ADAPT_METRICS = {
    "text": {
        "source": "adapt.path",
        "path": TEXT_PATH,
        "texts": 1234,
        "held_out": 60,
        "dropped_evaluation": 3,
        "dropped_duplicates": 5,
    },
    "masked_lm": {
        "before": {"loss": 3.1, "perplexity": 22.2},
        "after": {"loss": 2.7, "perplexity": 14.9},
    },
    "head": "new (tied to the input embeddings)",
    "mlm_probability": 0.15,
    "whole_word_mask": False,
    "steps": 120,
    "train_runtime_s": 95.0,
    "a_key_the_report_does_not_know": {"nested": [1, 2]},
}


def write_adapt(folder: Path) -> Path:
    """An ``adapt`` stage folder as the stage writes it (model/ left out: the report does
    not read it)."""
    folder.mkdir(parents=True)
    (folder / "log_history.json").write_text("[]", encoding="utf-8")
    write_manifest(folder, {"stage": "adapt", "metrics": ADAPT_METRICS, "wall_time_s": 96.5})
    return folder


def plain_copy(
    original: Path,
    folder: Path,
    write_test_logits: Callable[[Path], None],
    stage: str = "plain-teacher",
) -> Path:
    """A plain twin's folder (``stage``: ``plain-teacher``, or ``plain-student`` copying the
    student's): the original's folder copied, other test logits."""
    shutil.copytree(original, folder)
    (folder / "manifest.json").unlink()
    write_test_logits(folder / "logits" / "test.npz")
    manifest = read_manifest(original) or {}
    payload = {
        k: manifest[k] for k in ("task", "config", "metrics", "wall_time_s") if k in manifest
    }
    write_manifest(folder, {**payload, "stage": stage})
    return folder


def check_masked_lm(section: dict[str, Any]) -> None:
    adapt = section["adapt"]
    assert adapt["masked_lm"]["before"] == {"loss": 3.1, "perplexity": 22.2}
    assert adapt["masked_lm"]["after"] == {"loss": 2.7, "perplexity": 14.9}
    assert adapt["masked_lm"]["loss_change"] == pytest.approx(-0.4)
    assert adapt["masked_lm"]["perplexity_change"] == pytest.approx(-7.3)
    assert adapt["text"] == {k: v for k, v in ADAPT_METRICS["text"].items()}
    assert adapt["head"] == "new (tied to the input embeddings)"
    assert (adapt["steps"], adapt["mlm_probability"], adapt["wall_time_s"]) == (120, 0.15, 96.5)
    assert adapt["summary"] == (
        f"1234 texts (adapt.path: {TEXT_PATH}); 60 held out to measure the masked-LM loss; "
        "dropped: 3 that are validation or test text, 5 duplicates. Head: new (tied to the "
        "input embeddings); 15% of tokens masked; 120 steps in 95.0 s."
    )


def check_html(html: str) -> str:
    """The page is still one well-formed, escaped, self-contained page; returns its text."""
    checker = _Checker()
    checker.feed(html)
    checker.close()
    assert checker.errors == [] and checker.stack == [] and checker.external == []
    assert "b" not in checker.tags and "script" not in checker.tags
    assert "corpora/&lt;b&gt;domain&lt;/b&gt;|news.txt" in html
    assert 'id="adaptation"' in html and "<h2>Domain adaptation</h2>" in html
    return " ".join("".join(checker.text).split())


# --------------------------------------------------------------------------- classification


@pytest.fixture(scope="module")
def adapted(upstream: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The classification report over the shared fake upstream plus an adapt folder, a plain
    twin whose test logits (about 70% right, stored shuffled) differ from the teacher's, and
    its student (a copy of the student's folder, test logits about 60% right, shuffled)."""
    root = tmp_path_factory.mktemp("adapted")
    test = upstream["splits"]["test"]
    plain_logits = _noisy_logits(test.labels, 0.7, seed=21)
    student_logits = _noisy_logits(test.labels, 0.6, seed=23)
    order = np.random.default_rng(22).permutation(len(test))

    def writer(values: np.ndarray) -> Callable[[Path], None]:
        return lambda path: save_logits(path, [test.ids[i] for i in order], values[order])

    original = upstream["folders"]
    folders = {
        **original,
        "adapt": write_adapt(root / "adapt"),
        "plain-teacher": plain_copy(
            original["teacher"], root / "plain-teacher", writer(plain_logits)
        ),
        "plain-student": plain_copy(
            original["student"], root / "plain-student", writer(student_logits), "plain-student"
        ),
    }
    out = root / "report"
    returned = run_report({**upstream, "folders": folders}, out)
    document = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return {
        "out": out,
        "document": document,
        "returned": returned,
        "plain": plain_logits,
        "plain_student": student_logits,
    }


@pytest.fixture(scope="module")
def upstream(report_upstream: dict[str, Any]) -> dict[str, Any]:
    return report_upstream  # shared for the session (conftest.py): read only


def test_plain_teacher_row_is_scored_from_its_own_test_logits(
    upstream: dict[str, Any], adapted: dict[str, Any]
) -> None:
    labels = upstream["splits"]["test"].labels
    teacher_logits, plain_logits = upstream["logits"]["teacher"], adapted["plain"]
    rows = adapted["document"]["rows"]
    assert [r["key"] for r in rows[:3]] == ["teacher", "teacher_plain", "student"]
    teacher, plain = rows[0], rows[1]
    assert plain["name"] == "Teacher (no adaptation)"
    accuracy = float(np.mean(plain_logits.argmax(-1) == labels))
    assert 0.5 < accuracy < 0.9 and accuracy != teacher["accuracy"]
    assert plain["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    expected = classification_metrics(plain_logits, labels, 2)
    assert plain["macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-12)
    agreement = float(np.mean(plain_logits.argmax(-1) == teacher_logits.argmax(-1)))
    assert plain["agreement"] == pytest.approx(agreement, abs=1e-12)
    # the same architecture and size as the teacher, timed in the same run
    assert (plain["runtime"], plain["precision"]) == ("pytorch", "fp32")
    assert plain["parameters"] == teacher["parameters"] and plain["bytes"] == teacher["bytes"]
    assert plain["size_ratio"] == pytest.approx(1.0)
    assert plain["latency"]["p50_ms"] > 0
    # the adapted teacher stays the reference for the ratios
    assert teacher["accuracy_delta"] == 0.0
    assert plain["accuracy_delta"] == pytest.approx(accuracy - teacher["accuracy"])


def test_adaptation_section_has_the_adapt_figures_and_the_paired_test(
    upstream: dict[str, Any], adapted: dict[str, Any]
) -> None:
    labels = upstream["splits"]["test"].labels
    teacher_logits, plain_logits = upstream["logits"]["teacher"], adapted["plain"]
    section = adapted["document"]["adaptation"]
    check_masked_lm(section)
    teacher_accuracy = float(np.mean(teacher_logits.argmax(-1) == labels))
    plain_accuracy = float(np.mean(plain_logits.argmax(-1) == labels))
    assert section["metric"] == "accuracy" and section["plain_teacher_trained"] is True
    assert section["teacher"] == pytest.approx(teacher_accuracy, abs=1e-12)
    assert section["plain_teacher"] == pytest.approx(plain_accuracy, abs=1e-12)
    assert section["gain"] == pytest.approx(teacher_accuracy - plain_accuracy, abs=1e-12)
    direct = paired_comparison(
        teacher_logits.argmax(-1) == labels, plain_logits.argmax(-1) == labels
    )
    significance = section["significance"]
    for key in ("p_value", "ci_low", "ci_high", "only_first_correct", "only_second_correct"):
        assert significance[key] == direct[key], key
    assert significance["examples"] == len(labels)
    verdict = section["verdict"]
    assert verdict == significance["verdict"]
    assert verdict.startswith(f"Adaptation gained {100 * section['gain']:+.1f} points over ")
    assert "the same teacher fine-tuned without it" in verdict and "McNemar exact p" in verdict
    wall = adapted["document"]["wall_time_s"]
    assert list(wall)[:4] == ["data", "adapt", "teacher", "plain-teacher"]
    assert wall["adapt"] == 96.5
    assert "plain-teacher" in adapted["document"]["training"]


def test_summary_metrics_keep_the_gain_and_the_test(adapted: dict[str, Any]) -> None:
    summary = adapted["returned"]["adaptation"]
    section = adapted["document"]["adaptation"]
    assert summary == {
        "metric": "accuracy",
        "gain": section["gain"],
        "p_value": section["significance"]["p_value"],
        "ci_low": section["significance"]["ci_low"],
        "ci_high": section["significance"]["ci_high"],
        "significant": section["significance"]["significant"],
        "perplexity_before": 22.2,
        "perplexity_after": 14.9,
        "student_gain": section["student_gain"],
        "student_p_value": section["student_significance"]["p_value"],
    }
    rows = {r["key"]: r for r in adapted["document"]["rows"]}
    for key in ("teacher_plain", "student_plain_teacher"):
        assert adapted["returned"]["rows"][key]["accuracy"] == rows[key]["accuracy"]


def test_plain_teacher_student_row_is_scored_from_its_own_test_logits(
    upstream: dict[str, Any], adapted: dict[str, Any]
) -> None:
    labels = upstream["splits"]["test"].labels
    teacher_logits, logits = upstream["logits"]["teacher"], adapted["plain_student"]
    rows = adapted["document"]["rows"]
    keys = ["teacher", "teacher_plain", "student", "student_plain_teacher", "student_no_kd"]
    assert [r["key"] for r in rows[:5]] == keys
    student, row = rows[2], rows[3]
    assert row["name"] == "Student (of the plain teacher)"
    accuracy = float(np.mean(logits.argmax(-1) == labels))
    assert 0.4 < accuracy < 0.8 and accuracy != student["accuracy"]
    assert row["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    expected = classification_metrics(logits, labels, 2)
    assert row["macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-12)
    agreement = float(np.mean(logits.argmax(-1) == teacher_logits.argmax(-1)))
    assert row["agreement"] == pytest.approx(agreement, abs=1e-12)
    # the student's architecture and size, timed in the same run
    assert (row["runtime"], row["precision"]) == ("pytorch", "fp32")
    assert row["parameters"] == student["parameters"] and row["bytes"] == student["bytes"]
    assert row["latency"]["p50_ms"] > 0
    assert "plain-student" in adapted["document"]["training"]
    assert "plain-student" in adapted["document"]["wall_time_s"]


def test_adaptation_section_compares_the_two_students(
    upstream: dict[str, Any], adapted: dict[str, Any]
) -> None:
    labels = upstream["splits"]["test"].labels
    distilled, plain = upstream["logits"]["student"], adapted["plain_student"]
    section = adapted["document"]["adaptation"]
    distilled_accuracy = float(np.mean(distilled.argmax(-1) == labels))
    plain_accuracy = float(np.mean(plain.argmax(-1) == labels))
    assert section["student"] == pytest.approx(distilled_accuracy, abs=1e-12)
    assert section["plain_student"] == pytest.approx(plain_accuracy, abs=1e-12)
    gain = distilled_accuracy - plain_accuracy
    assert gain != 0 and section["student_gain"] == pytest.approx(gain, abs=1e-12)
    direct = paired_comparison(distilled.argmax(-1) == labels, plain.argmax(-1) == labels)
    significance = section["student_significance"]
    for key in ("p_value", "ci_low", "ci_high", "only_first_correct", "only_second_correct"):
        assert significance[key] == direct[key], key
    verdict = section["student_verdict"]
    assert verdict == significance["verdict"] and verdict.startswith("Adaptation ")
    assert f"{100 * abs(gain):.1f} points" in verdict and "McNemar exact p" in verdict
    assert STUDENT_REFERENCE in verdict
    assert STUDENT_REFERENCE == "the same student distilled from the teacher fine-tuned without it"


def test_markdown_and_html_show_the_domain_adaptation_section(adapted: dict[str, Any]) -> None:
    section = adapted["document"]["adaptation"]
    markdown = (adapted["out"] / "report.md").read_text(encoding="utf-8")
    assert "\n## Domain adaptation\n" in markdown
    assert "was fine-tuned the same way (same seed and budget) without it." in markdown
    assert "| loss | 3.1 | 2.7 | -0.4000 |" in markdown
    assert "| perplexity | 22.2 | 14.9 | -7.3000 |" in markdown
    assert "corpora/&lt;b&gt;domain&lt;/b&gt;\\|news.txt" in markdown  # escaped for a table
    assert f"**{section['verdict']}**" in markdown
    assert "| Teacher (no adaptation) | pytorch fp32 |" in markdown
    p = section["significance"]["p_value"]
    assert f"| McNemar exact (two-sided binomial test on the discordant pairs): p | {p:.3g} |" in (
        markdown
    )
    html = (adapted["out"] / "report.html").read_text(encoding="utf-8")
    text = check_html(html)
    assert section["verdict"] in text
    assert "Teacher (no adaptation)" in text
    cells = '<td class="num">{}</td><td class="num">{}</td><td class="num">{}</td>'
    assert "<td>loss</td>" + cells.format("3.1", "2.7", "-0.4000") in html
    assert "<td>perplexity</td>" + cells.format("22.2", "14.9", "-7.3000") in html
    assert 'id="adaptation-significance"' in html
    # the two students: their row and the sentence, with its paired test
    student_p = section["student_significance"]["p_value"]
    assert f"**{md_escape(section['student_verdict'])}**" in markdown
    assert "| Student (of the plain teacher) | pytorch fp32 |" in markdown
    assert "| Paired test of the adapted vs the plain teacher's student (test split) |" in markdown
    assert (
        f"McNemar exact (two-sided binomial test on the discordant pairs): p | {student_p:.3g} |"
        in (markdown)
    )
    assert section["student_verdict"] in text and "Student (of the plain teacher)" in text
    assert 'id="adaptation-student-significance"' in html


def test_adapt_without_a_plain_twin_says_so(upstream: dict[str, Any], tmp_path: Path) -> None:
    folders = {**upstream["folders"], "adapt": write_adapt(tmp_path / "adapt")}
    returned = run_report({**upstream, "folders": folders}, tmp_path / "report")
    document = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    section = document["adaptation"]
    check_masked_lm(section)
    assert section["plain_teacher_trained"] is False and section["verdict"] == NO_TWIN
    assert section["significance"] is None and section["gain"] is None
    assert {"teacher_plain", "student_plain_teacher"}.isdisjoint(r["key"] for r in document["rows"])
    assert "student_gain" not in section and "student_significance" not in section
    assert returned["adaptation"]["gain"] is None and "student_gain" not in returned["adaptation"]
    assert returned["adaptation"]["perplexity_after"] == 14.9
    markdown = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "## Domain adaptation" in markdown and "No plain twin was trained" in markdown
    assert "fine-tuned the same way" not in markdown
    check_html((tmp_path / "report" / "report.html").read_text(encoding="utf-8"))


def test_a_report_without_adaptation_has_neither_section_nor_row(unit_report: Path) -> None:
    document = json.loads((unit_report / "report.json").read_text(encoding="utf-8"))
    assert document.get("adaptation") is None
    assert {"teacher_plain", "student_plain_teacher"}.isdisjoint(r["key"] for r in document["rows"])
    assert "adapt" not in document["wall_time_s"] and "plain-teacher" not in document["training"]
    assert "plain-student" not in document["wall_time_s"]
    returned = json.loads((unit_report / "returned_metrics.json").read_text(encoding="utf-8"))
    assert returned["adaptation"] is None
    assert "Domain adaptation" not in (unit_report / "report.md").read_text(encoding="utf-8")
    assert 'id="adaptation"' not in (unit_report / "report.html").read_text(encoding="utf-8")
