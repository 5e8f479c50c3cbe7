"""The question-answering report: its rows scored from hand-made stage folders against hand
computations, the verdict and headline, the disagreements, the export section, and report.md
/ report.html rendered from report.json. No model is trained or timed: the rows' builders
read the files the stages write, and the ONNX rows' answers are handed in."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import pytest

from distill.report.ratios import add_ratios
from distill.tasks.question_answering import render
from distill.tasks.question_answering.examples import (
    Answer,
    GoldAnswer,
    QAExample,
    write_answers,
    write_examples,
)
from distill.tasks.question_answering.report.disagreements import (
    disagreements,
    snippet,
)
from distill.tasks.question_answering.report.export import export_section
from distill.tasks.question_answering.report.rows import model_rows, window_batch
from distill.tasks.question_answering.report.verdict import (
    headline,
    kd_significance,
    no_answer_floor,
)
from distill.tasks.question_answering.stages.report import RATIOS, summary_metrics

# Four test questions, the last one unanswerable (SQuAD 2.0).
TEST = [
    QAExample(
        "q1", "Where did the cat sit?", "The cat sat on the mat.", (GoldAnswer("the mat", 15),)
    ),
    QAExample(
        "q2", "What is the capital?", "Paris is the capital of France.", (GoldAnswer("Paris", 0),)
    ),
    QAExample(
        "q3",
        "When does water boil?",
        "Water boils at 100 degrees.",
        (GoldAnswer("100 degrees", 14),),
    ),
    QAExample("q4", "Why?", "Nobody knows why.", ()),
]
NONE = Answer("", None, None, 0.9)
# EM 3/4; F1 (1 + 1 + 2/3 + 1) / 4 = 11/12 ("100" vs "100 degrees": P 1, R 1/2, F1 2/3).
TEACHER = [
    Answer("the mat", 15, 22, 0.8),
    Answer("Paris", 0, 5, 0.9),
    Answer("100", 14, 17, 0.7),
    NONE,
]
# EM 1/4 ("mat" is "the mat" once the article goes); F1 (1 + 1/2 + 2/3 + 0) / 4 = 13/24
# ("paris is capital" vs "paris": P 1/3, R 1, F1 1/2); the same span as the teacher's on q3.
STUDENT = [
    Answer("mat", 19, 22, 0.6),
    Answer("Paris is the capital", 0, 20, 0.5),
    Answer("100", 14, 17, 0.7),
    Answer("Nobody", 0, 6, 0.4),
]
TWIN = [NONE, NONE, NONE, NONE]  # EM = F1 = 1/4: right on q4 only


def _stage(folder: Path, metrics: dict[str, Any], answers: list[Answer], weights: int) -> None:
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "model.safetensors").write_bytes(b"\0" * weights)
    write_answers(folder / "predictions" / "test.jsonl", [e.id for e in TEST], answers)
    (folder / "manifest.json").write_text(json.dumps({"files": {}, "metrics": metrics}))


@pytest.fixture
def stages(tmp_path: Path) -> tuple[dict[str, Path], dict[str, dict[str, Any]]]:
    inputs = {name: tmp_path / name for name in ("data", "teacher", "student", "export")}
    inputs["data"].mkdir()
    write_examples(inputs["data"] / "test.jsonl", TEST)
    _stage(inputs["teacher"], {"parameters": {"total": 4000}}, TEACHER, 16000)
    student = {"parameters": {"total": 1000}, "baseline": {"parameters": {"total": 1000}}}
    _stage(inputs["student"], student, STUDENT, 4000)
    _stage(inputs["student"] / "baseline", {}, TWIN, 4000)
    export = {
        "deployed": "int8",
        "chosen": "dynamic",
        "deployed_bytes": 1000,
        "teacher_baseline": {"int8": {"bytes": 4000}},
    }
    manifests = {
        "teacher": {"metrics": {"parameters": {"total": 4000}}},
        "student": {"metrics": student},
        "export": {"metrics": export},
    }
    return inputs, manifests


def _rows(stages: Any) -> list[dict[str, Any]]:
    inputs, manifests = stages
    rows = model_rows(manifests, inputs, TEST, TEACHER, STUDENT, TEACHER)
    for row, p50 in zip(rows, (40.0, 10.0, 10.0, 5.0, 20.0), strict=True):
        row["latency"] = {"p50_ms": p50}
    add_ratios(rows, RATIOS, skip_missing=True)
    return rows


def test_rows_are_scored_against_the_gold_answers_and_the_teacher(stages: Any) -> None:
    rows = _rows(stages)
    assert [r["key"] for r in rows] == [
        "teacher",
        "student",
        "student_no_kd",
        "deployed",
        "teacher_onnx_int8",
    ]
    by_key = {r["key"]: r for r in rows}
    teacher, student, twin = by_key["teacher"], by_key["student"], by_key["student_no_kd"]
    assert teacher["exact_match"] == pytest.approx(3 / 4)
    assert teacher["f1"] == pytest.approx(11 / 12)
    assert teacher["agreement"] == pytest.approx(1.0)
    assert teacher["answered"] == pytest.approx(3 / 4)
    assert teacher["has_answer"]["f1"] == pytest.approx((1 + 1 + 2 / 3) / 3)
    assert teacher["no_answer"]["exact_match"] == pytest.approx(1.0)
    assert student["exact_match"] == pytest.approx(1 / 4)
    assert student["f1"] == pytest.approx(13 / 24)
    assert student["agreement"] == pytest.approx(1 / 4)  # q3 only
    assert student["no_answer"]["f1"] == pytest.approx(0.0)
    assert twin["f1"] == pytest.approx(1 / 4) and twin["answered"] == pytest.approx(0.0)
    # Sizes: the weight files; parameters from the manifests; the ONNX rows' from the export.
    assert (teacher["bytes"], student["bytes"], by_key["deployed"]["bytes"]) == (16000, 4000, 1000)
    assert by_key["teacher_onnx_int8"]["bytes"] == 4000
    assert by_key["deployed"]["parameters"] == 1000 and by_key["deployed"]["deployed"]
    assert by_key["deployed"]["name"] == "Student ONNX int8 (dynamic, deployed)"
    # Ratios against the PyTorch teacher.
    deployed = by_key["deployed"]
    assert deployed["f1_kept"] == pytest.approx((13 / 24) / (11 / 12))
    assert deployed["size_ratio"] == pytest.approx(1000 / 16000)
    assert deployed["speedup"] == pytest.approx(40 / 5)
    assert summary_metrics({"rows": rows})["rows"]["teacher"] == {
        "exact_match": pytest.approx(0.75),
        "f1": pytest.approx(11 / 12),
        "bytes": 16000,
    }


def test_rows_without_a_twin_or_a_teacher_graph(stages: Any) -> None:
    inputs, manifests = stages
    (inputs["student"] / "baseline" / "predictions" / "test.jsonl").unlink()
    rows = model_rows(manifests, inputs, TEST, TEACHER, STUDENT, None)
    assert [r["key"] for r in rows] == ["teacher", "student", "deployed"]


def test_verdict_and_headline(stages: Any) -> None:
    rows = _rows(stages)
    kd = kd_significance(TEST, STUDENT, TWIN)
    assert kd is not None
    assert kd["f1_difference"] == pytest.approx(13 / 24 - 1 / 4)
    assert kd["examples"] == 4
    # Four questions cannot make any gain significant.
    assert not kd["significant"] and kd["p_value"] > 0.05
    assert kd["verdict"].startswith(
        "Distillation gained +29.2 points of F1 over the same student trained without it "
        "(F1 54.2% vs 25.0% on 4 test questions; 95% CI "
    )
    assert kd["verdict"].endswith("not significant at the 5% level.")
    assert kd_significance(TEST, STUDENT, None) is None
    floor = no_answer_floor(TEST)
    assert floor == pytest.approx(1 / 4)
    top = headline(rows, kd, floor)
    assert top["verdict"] == kd["verdict"]
    assert top["kd_gain"] == pytest.approx(13 / 24 - 1 / 4)
    assert top["summary"] == (
        "The deployed student keeps 59.1% of the teacher's F1 at 6.2% of its size, "
        "8.00× faster at batch 1."
    )
    # The teacher in int8 answers better than the deployed student: said, with the price.
    assert top["warnings"] == [
        "Teacher ONNX int8 (91.7% F1, 0.0 MB, 2.00× faster) answers better than the deployed "
        "student (54.2% F1): the student buys its size and speed with 37.5 points of F1"
    ]
    rows[3]["f1"] = 0.25  # the deployed student at the floor
    assert headline(rows, None, floor)["warnings"][0] == (
        "Student ONNX int8 (dynamic, deployed) (25.0% F1) is no better than answering "
        "nothing (25.0% F1: the share of unanswerable test questions)"
    )
    rows[3]["f1"] = rows[4]["f1"] - 0.01  # within the margin: no word of the baseline
    assert headline(rows, None, None)["warnings"] == []
    assert no_answer_floor(TEST[:3]) is None


def test_a_clear_gain_is_significant() -> None:
    test = TEST[:3] * 10
    kd = kd_significance(test, TEACHER[:3] * 10, [NONE] * 30)
    assert kd is not None and kd["significant"] and kd["p_value"] < 0.01
    assert "significant at the 5% level." in kd["verdict"]


def test_disagreements_show_the_question_the_answers_and_the_context() -> None:
    found = disagreements(TEST, TEACHER, STUDENT)
    assert [d["id"] for d in found] == ["q1", "q2", "q4"]  # q3: the same span
    assert found[0] == {
        "id": "q1",
        "question": "Where did the cat sit?",
        "gold": ["the mat"],
        "teacher": "the mat",
        "student": "mat",
        "context": "The cat sat on the mat.",
    }
    assert found[2]["gold"] == ["(no answer)"] and found[2]["teacher"] == "(no answer)"
    assert len(disagreements(TEST, TEACHER, STUDENT, limit=1)) == 1
    long = "x" * 100 + "ANSWER" + "y" * 100
    cut = snippet(long, [Answer("ANSWER", 100, 106, 1.0)], margin=5)
    assert cut == "…xxxxxANSWERyyyyy…"


def test_export_section() -> None:
    export = {
        "gate": "export.max_answer_f1_drop = 0.02",
        "deployed": "int8",
        "chosen": "dynamic",
        "chosen_reason": "the smallest that passes the gate",
        "student": {
            "fp32": {"exact_match": 0.5, "f1": 0.6, "bytes": 4000, "latency_b1": {"p50_ms": 3.0}}
        },
        "candidates": [
            {"name": "dynamic", "f1": 0.59, "f1_drop": 0.01, "bytes": 1000, "qualifies": True},
            {"name": "dynamic-optimized", "error": "failed"},
        ],
    }
    section = export_section(export)
    assert section is not None
    assert section["fp32"] == {"exact_match": 0.5, "f1": 0.6, "bytes": 4000, "p50_ms": 3.0}
    assert [c["deployed"] for c in section["candidates"]] == [True, False]
    assert section["candidates"][1]["qualifies"] is False
    assert export_section({"deployed": "fp32"}) is None


class _Tags(HTMLParser):
    """Checks the page's tags nest properly (void elements excepted)."""

    VOID: ClassVar[set[str]] = {
        "meta",
        "br",
        "img",
        "hr",
        "input",
        "link",
        "path",
        "rect",
        "line",
        "use",
        "circle",
    }

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: Any) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()


def test_report_renders_as_markdown_and_html(stages: Any, tmp_path: Path) -> None:
    rows = _rows(stages)
    kd = kd_significance(TEST, STUDENT, TWIN)
    document = {
        "schema_version": render.SCHEMA_VERSION,
        "task": "question-answering",
        "run": "qa-test",
        "created": "2026-01-01T00:00:00+0000",
        "rows": rows,
        "headline": headline(rows, kd, no_answer_floor(TEST)),
        "distillation": {"kd_significance": kd},
        "adaptation": None,
        "export": None,
        "disagreements": disagreements(TEST, TEACHER, STUDENT),
        "settings": {
            "max_length": 64,
            "doc_stride": 16,
            "max_question_length": 16,
            "max_answer_length": 30,
            "no_answer": True,
        },
    }
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.json").write_text(json.dumps(document), encoding="utf-8")
    paths = render.write_reports(render.load_report(out / "report.json"), out)
    markdown = paths["markdown"].read_text(encoding="utf-8")
    html = paths["html"].read_text(encoding="utf-8")
    for row in rows:
        assert row["name"] in markdown and row["name"] in html
    assert "| Teacher | 75.00% | 91.67% | 88.89% | 100.00% | 75.00% | 100.00% |" in markdown
    assert "HasAns F1" in markdown and kd is not None and kd["verdict"] in markdown
    assert "Where did the cat sit?" in markdown and "Paris is the capital" in html
    parser = _Tags()
    parser.feed(html)
    parser.close()
    assert parser.open == []
    with pytest.raises(Exception, match="not a question-answering report"):
        (out / "other.json").write_text(json.dumps({**document, "task": "x"}))
        render.load_report(out / "other.json")


def test_latency_batch_is_a_real_window_at_a_fixed_shape(tmp_path: Path) -> None:
    from conftest import write_vocab
    from transformers import BertTokenizerFast

    from distill.tasks.question_answering.windows import Windowing

    words = ["cat", "sat", "mat", "paris", "capital", "france", "water", "boils", "degrees"]
    tokenizer = BertTokenizerFast(vocab=str(write_vocab(tmp_path, words)), do_lower_case=True)
    batch = window_batch(TEST, Windowing(24, 4, 8), batch_size=2)(tokenizer)
    assert batch["input_ids"].shape == (2, 24) and batch["attention_mask"].shape == (2, 24)
    first = tokenizer("Where did the cat sit?", "The cat sat on the mat.")["input_ids"]
    assert batch["input_ids"][0, : len(first)].tolist() == first
    assert batch["attention_mask"][0].sum() == len(first)
    assert (batch["input_ids"][0, len(first) :] == tokenizer.pad_token_id).all()
