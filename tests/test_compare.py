"""Comparing two runs' reports: recipe diff, per-model changes, rendering, output folder."""

from __future__ import annotations

import copy
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from distill.errors import ArtifactError
from distill.tasks.classification.compare import (
    compare_reports,
    diff_recipes,
    render_html,
    run_compare,
)


def _row(key: str, name: str, accuracy: float, **extra: Any) -> dict[str, Any]:
    return {
        "key": key,
        "name": name,
        "kind": "transformer",
        "deployed": False,
        "accuracy": accuracy,
        "macro_f1": accuracy - 0.01,
        "agreement": 0.9,
        "parameters": 1000,
        "bytes": 4000,
        "latency": {"p50_ms": 2.0, "p95_ms": 3.0},
        "calibration": {"ece": 0.05},
        "size_ratio": 1.0,
        "speedup": 1.0,
        "accuracy_retained": 1.0,
        **extra,
    }


def _report(run: str) -> dict[str, Any]:
    return {
        "schema_version": 2,
        "run": run,
        "created": "2025-01-01T00:00:00+0000",
        "labels": ["neg", "pos"],
        "data": {"splits": {"test": {"examples": 100}}},
        "hardware": {"cpu": "test cpu"},
        "latency_setup": {"threads": 2, "batch_size": 1, "sequence_length": 64},
        "recipe": {
            "data": {"path": "data.csv", "max_length": 64},
            "student": {"alpha": 0.5, "temperature": 2.0, "config": {"hidden_size": 32}},
            "export": {"quantization": "dynamic"},
        },
        "rows": [
            _row("teacher", "Teacher", 0.9),
            _row("student", "Student (distilled)", 0.85),
            _row("student_onnx_int8", "Student ONNX int8", 0.84, deployed=True),
        ],
    }


def _write(folder: Path, report: dict[str, Any]) -> Path:
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps(report), encoding="utf-8")
    return folder


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    a = _report("run-a")
    b = copy.deepcopy(a)
    b["run"] = "run-b"
    b["recipe"]["student"]["alpha"] = 0.9
    b["recipe"]["student"]["config"]["num_layers"] = 2  # added
    del b["recipe"]["data"]["path"]  # removed
    b["recipe"]["export"]["quantization"] = "none"
    # B deploys fp32: the int8 row is gone, an fp32 row is deployed.
    b["rows"] = [
        *b["rows"][:2],
        _row(
            "student_onnx_fp32",
            "Student ONNX fp32",
            0.86,
            deployed=True,
            bytes=6000,
            latency={"p50_ms": 3.0, "p95_ms": 4.5},
        ),
    ]
    b["rows"][1]["accuracy"] = 0.88  # the student got better
    b["rows"][1]["latency"] = {"p50_ms": 1.5, "p95_ms": 2.5}  # and faster
    b["rows"][1]["calibration"] = {"ece": 0.08}  # but less calibrated
    return _write(tmp_path / "reports" / "A", a), _write(tmp_path / "reports" / "B", b)


def test_recipe_diff_flattens_and_classifies() -> None:
    changes = diff_recipes(
        {"student": {"alpha": 0.5, "config": {"h": 1}}, "data": {"path": "x"}},
        {
            "student": {"alpha": 0.7, "config": {"h": 1, "l": 2}},
            "data": {},
            "export": {"q": "none"},
        },
    )
    assert changes == [
        {"section": "student", "key": "alpha", "a": 0.5, "b": 0.7, "change": "changed"},
        {"section": "data", "key": "path", "a": "x", "b": None, "change": "removed"},
        {"section": "student", "key": "config.l", "a": None, "b": 2, "change": "added"},
        {"section": "data", "key": "", "a": None, "b": {}, "change": "added"},
        {"section": "export", "key": "q", "a": None, "b": "none", "change": "added"},
    ]
    assert diff_recipes({"a": {"x": [1, 2]}}, {"a": {"x": [1, 2]}}) == []


def test_compare_reports(pair: tuple[Path, Path]) -> None:
    a, b = pair
    comparison = compare_reports(a, b)
    assert comparison["a"]["run"] == "run-a" and comparison["b"]["run"] == "run-b"
    changes = {(c["section"], c["key"]): c for c in comparison["recipe_changes"]}
    assert changes[("student", "alpha")] == {
        "section": "student",
        "key": "alpha",
        "a": 0.5,
        "b": 0.9,
        "change": "changed",
    }
    assert changes[("student", "config.num_layers")]["change"] == "added"
    assert changes[("data", "path")]["change"] == "removed"
    assert changes[("export", "quantization")]["b"] == "none"
    assert ("data", "max_length") not in changes  # unchanged keys are left out

    rows = {row["key"]: row for row in comparison["rows"]}
    assert [row["key"] for row in comparison["rows"]] == [
        "deployed",
        "teacher",
        "student",
        "student_onnx_int8",
        "student_onnx_fp32",
    ]
    student = rows["student"]["metrics"]
    assert student["accuracy"]["delta"] == pytest.approx(0.03)
    assert student["accuracy"]["verdict"] == "improved"
    assert student["p50_ms"]["delta"] == pytest.approx(-0.5)
    assert student["p50_ms"]["verdict"] == "improved"  # lower latency is better
    assert student["p50_ms"]["relative"] == pytest.approx(-0.25)
    assert student["ece"]["delta"] == pytest.approx(0.03)
    assert student["ece"]["verdict"] == "worse"  # higher ECE is worse
    assert rows["teacher"]["metrics"]["accuracy"]["verdict"] == "same"
    # The deployed model is paired across runs even though its key changed.
    deployed = rows["deployed"]
    assert (deployed["name_a"], deployed["name_b"]) == ("Student ONNX int8", "Student ONNX fp32")
    assert deployed["metrics"]["accuracy"]["delta"] == pytest.approx(0.02)
    assert deployed["metrics"]["bytes"]["delta"] == 2000
    assert deployed["metrics"]["bytes"]["verdict"] == "worse"
    assert rows["student_onnx_int8"]["in"] == "a"
    assert rows["student_onnx_fp32"]["in"] == "b"
    assert rows["student_onnx_int8"]["metrics"]["accuracy"]["delta"] is None
    assert comparison["notes"] == []


def test_notes_on_incomparable_runs(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = pair
    other = _report("run-c")
    other["labels"] = ["x", "y", "z"]
    other["data"]["splits"]["test"]["examples"] = 50
    other["hardware"]["cpu"] = "another cpu"
    c = _write(tmp_path / "reports" / "C", other)
    notes = " ".join(compare_reports(a, c)["notes"])
    assert "different label sets" in notes
    assert "(100 vs 50 examples)" in notes
    assert "different hardware" in notes


def test_run_compare_writes_next_to_the_reports(pair: tuple[Path, Path]) -> None:
    a, b = pair
    out = run_compare(a, b, None)
    assert out == a.parent.resolve() / "compare-A-vs-B"
    for name in ("compare.md", "compare.html", "compare.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "compare.json").read_text(encoding="utf-8"))["a"]["run"] == "run-a"
    markdown = (out / "compare.md").read_text(encoding="utf-8")
    assert "| student | alpha | 0.5 | 0.9 |" in markdown
    assert "| student | config.num\\_layers" not in markdown  # md escapes only what breaks
    assert "| student | config.num_layers | (not set) | 2 |" in markdown
    assert "| data | path | data.csv | (not set) |" in markdown
    assert "| Accuracy | 85.00% | 88.00% | +3.00 pt (better) |" in markdown
    assert "| p50 latency | 2.00 ms | 1.50 ms | -0.50 ms (better) |" in markdown
    assert "| ECE | 5.00% | 8.00% | +3.00 pt (worse) |" in markdown
    assert "### Deployed model: Student ONNX int8 → Student ONNX fp32" in markdown
    assert "### Student ONNX int8 (only in A)" in markdown
    # Every table line of the Markdown has the same number of cells as its header.
    tables: list[list[str]] = []
    previous = ""
    for line in markdown.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append(line)
        previous = line
    for table in tables:
        assert len({len(re.findall(r"(?<!\\)\|", line)) for line in table}) == 1, table
    # An explicit output folder is used as given.
    custom = run_compare(a / "report.json", b, a.parent / "elsewhere")
    assert (custom / "compare.html").is_file()


def test_html_is_escaped_and_self_contained(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = pair
    evil = _report("<script>alert(1)</script>")
    evil["recipe"]["data"]["path"] = "<img src=x onerror=alert(2)>"
    evil["rows"][0]["name"] = "Teacher <b>bold</b>"
    b = _write(tmp_path / "evil", evil)
    html = render_html(compare_reports(a, b))
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html and "<img" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    tags: list[str] = []
    attributes: list[str] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags.append(tag)
            attributes.extend(name for name, _ in attrs)

    Collect().feed(html)
    assert {"script", "img", "link", "iframe", "object"}.isdisjoint(tags)
    assert {"src", "href", "srcset", "onerror", "onload"}.isdisjoint(attributes)
    assert "http://" not in html and "https://" not in html
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))
    for key in ("deployed", "teacher", "student", "student_onnx_int8"):
        assert f'id="compare-{key}"' in html
    coloured = render_html(compare_reports(*pair))
    assert 'class="num improved">+3.00 pt' in coloured
    assert 'class="num worse">+3.00 pt' in coloured  # the student's ECE


def test_errors_and_old_schema(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = pair
    with pytest.raises(ArtifactError, match="no report.json here"):
        compare_reports(a, tmp_path / "nothing")
    bad = _report("future")
    bad["schema_version"] = 99
    with pytest.raises(ArtifactError, match="schema_version 99"):
        compare_reports(a, _write(tmp_path / "future", bad))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "report.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ArtifactError, match="cannot read the report"):
        compare_reports(a, broken)
    # Schema 1 reports (before calibration) still compare; ECE is simply missing.
    old = _report("old")
    old["schema_version"] = 1
    for row in old["rows"]:
        del row["calibration"]
    comparison = compare_reports(_write(tmp_path / "old", old), a)
    teacher = next(row for row in comparison["rows"] if row["key"] == "teacher")
    assert teacher["metrics"]["ece"] == {
        "a": None,
        "b": 0.05,
        "delta": None,
        "relative": None,
        "verdict": None,
    }


def test_cli_report_compare(
    pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from distill.cli import main

    out = tmp_path / "cmp"
    assert main(["report", "--compare", str(pair[0]), str(pair[1]), "-o", str(out)]) == 0
    assert f"comparison written to {out}" in capsys.readouterr().out
    written = json.loads((out / "compare.json").read_text())
    assert written["a"]["folder"] == str(pair[0]) and written["b"]["folder"] == str(pair[1])
    assert {p.name for p in out.iterdir()} == {"compare.json", "compare.md", "compare.html"}
    assert main(["report", "--compare", str(tmp_path / "nope"), str(pair[1])]) == 2


@pytest.mark.parametrize("target", ["/proc/distill-compare", "a-file"], ids=["proc", "file"])
def test_cli_report_compare_unwritable_output_names_the_path(
    pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    from distill.cli import main

    out = Path(target) if target.startswith("/") else tmp_path / target
    if not target.startswith("/"):
        out.write_text("not a folder", encoding="utf-8")
    code = main(["report", "--compare", str(pair[0]), str(pair[1]), "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith(f"error: {out}") and "Traceback" not in captured.err
    assert ("is a file" if out.is_file() else "cannot write the comparison there") in captured.err


def test_cli_report_compare_of_a_classification_and_a_causal_lm_report_is_refused(
    pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from distill.cli import main

    lm = {"schema_version": 2, "task": "causal-lm", "run": "lm", "rows": [{"key": "teacher"}]}
    lm["rows"][0]["perplexity"] = 12.5
    lm_folder = _write(tmp_path / "reports" / "LM", lm)
    out = tmp_path / "cmp"
    code = main(["report", "--compare", str(pair[0]), str(lm_folder), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "'sequence-classification'" in err and "'causal-lm'" in err
    assert str(pair[0] / "report.json") in err and str(lm_folder / "report.json") in err


def test_cli_report_compare_of_a_task_without_a_compare_module_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from distill.cli import main

    lm = {"schema_version": 1, "task": "causal-lm", "run": "lm", "rows": []}
    a, b = _write(tmp_path / "A", lm), _write(tmp_path / "B", {**lm, "run": "lm-b"})
    out = tmp_path / "cmp"
    assert main(["report", "--compare", str(a), str(b), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "reports of task 'causal-lm' cannot be compared yet" in err and not out.exists()


def test_the_registry_says_which_task_compares_its_reports() -> None:
    from distill.tasks import TASK_NAMES, get_task

    modules = {name: get_task(name).compare for name in TASK_NAMES}
    assert modules == {
        "sequence-classification": "compare",
        "causal-lm": None,
        "token-classification": None,
        "question-answering": None,
        "seq2seq": None,
    }
    task = get_task("sequence-classification")
    assert task.module(task.compare).run_compare is run_compare


def test_reports_of_an_unknown_task_or_not_an_object_are_refused(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    from distill.report.reports import compare

    unknown = _write(tmp_path / "unknown", {**_report("u"), "task": "translation"})
    with pytest.raises(ArtifactError, match="report task 'translation' is not one of"):
        compare(unknown, _write(tmp_path / "unknown-b", {**_report("v"), "task": "translation"}))
    listed = tmp_path / "listed"
    listed.mkdir()
    (listed / "report.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ArtifactError, match="not a JSON object"):
        compare(pair[0], listed)
