"""Several students in one recipe, through the command line: each is trained, exported,
published as its own bundle and measured; the report marks the accuracy/size frontier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SHORT_EXPORT_TIMING, run_distill, synthetic_rows, write_csv

from distill.pipeline.artifacts import read_manifest
from distill.tasks.classification.report.students import pareto_front


def test_pareto_front_marks_students_no_other_beats_on_both() -> None:
    # (accuracy, bytes): B dominates A (more accurate, same size); C is smallest; D ties B.
    points = [(0.70, 10), (0.80, 10), (0.60, 4), (0.80, 10), (0.65, 20)]
    assert pareto_front(points) == [False, True, True, True, False]
    assert pareto_front([(0.5, 1)]) == [True]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("students")
    write_csv((root / "reviews.csv"), ["text", "label"], synthetic_rows(160))
    (root / "recipe.toml").write_text(
        f"""
name = "multi"
seed = 3
[data]
path = "reviews.csv"
max_length = 24
max_examples = 120
[teacher]
model = "{tiny_model_dir}"
epochs = 4
min_steps = 0
learning_rate = 3e-3
batch_size = 16
[student]
num_layers = 2
max_steps = 12
learning_rate = 3e-3
batch_size = 16
hidden_weight = 1.0
trim_vocabulary = true
baseline = false
[student.transfer]
path = "unused"
[student.variants.L1]
num_layers = 1
hidden_weight = 0.0
trim_vocabulary = false
baselines = ["no-kd", "pseudo-labels"]
[export]
candidates = ["dynamic"]
max_accuracy_drop = 0.5
{SHORT_EXPORT_TIMING}[report]
latency_runs = 3
latency_warmup = 1
""",
        encoding="utf-8",
    )
    result = run_distill(["run", "recipe.toml"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def test_every_student_is_exported_and_published(project: Path) -> None:
    export = read_manifest(project / "runs" / "multi" / "export")
    assert set(export["metrics"]["variants"]) == {"L1"}
    main = json.loads((project / "export" / "multi" / "manifest.json").read_text())
    variant = json.loads((project / "export" / "multi.L1" / "manifest.json").read_text())
    assert (main["student"], variant["student"]) == ("main", "L1")
    assert main["files"]["model.onnx"]["sha256"] != variant["files"]["model.onnx"]["sha256"]
    # Each published bundle is the stage's copy, byte for byte (its manifest checks it).
    assert (
        variant["files"]
        == json.loads(
            (
                project
                / "runs"
                / "multi"
                / "export"
                / "variants"
                / "L1"
                / "bundle"
                / "manifest.json"
            ).read_text()
        )["files"]
    )


def test_trimmed_bundle_serves_without_torch(project: Path) -> None:
    result = run_distill(
        ["predict", "export/multi", "good great flight", "awful sad food"], project
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "positive" in result.stdout and "negative" in result.stdout


def test_report_lists_each_student_with_its_frontier_flag(project: Path) -> None:
    report = json.loads((project / "reports" / "multi" / "report.json").read_text())
    students = {s["name"]: s for s in report["students"]}
    assert set(students) == {"main", "L1"}
    main, small = students["main"], students["L1"]
    assert main["settings"]["hidden_weight"] == 1.0 and main["settings"]["trim_vocabulary"]
    assert small["settings"]["num_layers"] == 1 and "hidden_weight" not in small["settings"]
    assert main["parameters"] > small["parameters"]
    assert main["bytes"] == (project / "export" / "multi" / "model.onnx").stat().st_size
    assert small["no_kd_accuracy"] is not None and main["no_kd_accuracy"] is None
    flags = pareto_front([(s["accuracy"], s["bytes"]) for s in report["students"]])
    assert [s["pareto"] for s in report["students"]] == flags and any(flags)
    # The primary student's entry agrees with its int8 row of the main table.
    int8 = next(r for r in report["rows"] if r["key"] == "student_onnx_int8")
    assert main["accuracy"] == pytest.approx(int8["accuracy"])
    assert main["latency"] == int8["latency"]  # the same file, timed once
    markdown = (project / "reports" / "multi" / "report.md").read_text()
    assert "## Students" in markdown and "students_frontier.svg" in markdown
    assert (project / "reports" / "multi" / "students_frontier.svg").is_file()
    assert 'id="students-frontier"' in (project / "reports" / "multi" / "report.html").read_text()


def test_student_settings_follow_the_variant_inheritance_rules() -> None:
    from distill.config import StudentTable
    from distill.tasks.classification.report.students import student_settings

    table = StudentTable(
        init="pretrained",
        model="org/mini",
        trim_vocabulary=True,
        variants={"cut": {"init": "teacher-layers", "layers": [0, 5]}},
    )
    manifest = {"config": {"student": table.model_dump(mode="json")}}
    assert manifest["config"]["student"]["variants"] == {
        "cut": {"init": "teacher-layers", "layers": [0, 5]}
    }  # only the keys the variant sets are stored
    assert student_settings(manifest, "main")["model"] == "org/mini"
    cut = student_settings(manifest, "cut")
    assert cut["init"] == "teacher-layers" and cut["layers"] == [0, 5]
    assert "model" not in cut and cut["trim_vocabulary"] is True  # inherited, not the model


def test_each_student_with_a_twin_has_its_paired_kd_test(project: Path) -> None:
    import numpy as np

    from distill.data.files import load_logits
    from distill.report.significance import mcnemar_exact
    from distill.tasks.classification.files import read_split

    report = json.loads((project / "reports" / "multi" / "report.json").read_text())
    students = {s["name"]: s for s in report["students"]}
    assert students["main"]["kd_significance"] is None  # baseline = false: no twin to test
    test = read_split(project / "runs" / "multi" / "data", "test")
    folder = project / "runs" / "multi" / "student" / "variants" / "L1"
    distilled = load_logits(folder / "logits" / "test.npz", test.ids)[1].argmax(-1) == test.labels
    no_kd = (
        load_logits(folder / "baseline" / "logits" / "test.npz", test.ids)[1].argmax(-1)
        == test.labels
    )
    b, c = int((distilled & ~no_kd).sum()), int((~distilled & no_kd).sum())
    small = students["L1"]["kd_significance"]
    assert (small["only_first_correct"], small["only_second_correct"]) == (b, c)
    assert small["p_value"] == mcnemar_exact(b, c)
    assert small["accuracy_difference"] == pytest.approx(students["L1"]["gain_over_no_kd"])
    assert small["ci_low"] <= small["accuracy_difference"] <= small["ci_high"]
    assert np.isfinite([small["ci_low"], small["ci_high"]]).all()
    markdown = (project / "reports" / "multi" / "report.md").read_text()
    assert "| KD gain 95% CI | McNemar p |" in markdown


def test_students_table_has_the_pseudo_label_twin_of_each_student_that_has_one(
    project: Path,
) -> None:
    from distill.data.files import load_logits
    from distill.report.significance import mcnemar_exact
    from distill.tasks.classification.files import read_split

    run = project / "runs" / "multi"
    trained = read_manifest(run / "student")["metrics"]
    small = trained["variants"]["L1"]
    assert "pseudo" not in trained  # [student] sets baseline = false
    transfer = small["training_examples"]["transfer"]
    assert transfer == len(read_split(run / "labels", "transfer")) > 0
    assert small["pseudo"]["training_examples"] == {
        "labelled": small["training_examples"]["labelled"],
        "transfer": transfer,
        "transfer_labels": "teacher argmax",
    }
    report = json.loads((project / "reports" / "multi" / "report.json").read_text())
    students = {s["name"]: s for s in report["students"]}
    assert students["main"]["pseudo_accuracy"] is None
    assert students["main"]["soft_target_significance"] is None
    assert students["L1"]["pseudo_accuracy"] == small["pseudo"]["test"]["accuracy"]
    test = read_split(run / "data", "test")
    folder = run / "student" / "variants" / "L1"
    right = {
        twin: load_logits(folder / twin / "logits" / "test.npz", test.ids)[1].argmax(-1)
        == test.labels
        for twin in ("", "pseudo")
    }
    b = int((right[""] & ~right["pseudo"]).sum())
    c = int((~right[""] & right["pseudo"]).sum())
    soft = students["L1"]["soft_target_significance"]
    assert (soft["only_first_correct"], soft["only_second_correct"]) == (b, c)
    assert soft["p_value"] == mcnemar_exact(b, c)
    assert soft["verdict"].startswith("Soft targets ")
    markdown = (project / "reports" / "multi" / "report.md").read_text()
    assert "| No-KD accuracy | Pseudo-label accuracy | KD gain |" in markdown

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip().strip("|").split("|")]

    lines = markdown.splitlines()
    header = cells(next(line for line in lines if line.startswith("| Student | Settings |")))
    row = cells(next(line for line in lines if line.startswith("| L1 |")))
    expected = f"{100 * small['pseudo']['test']['accuracy']:.2f}%"
    assert row[header.index("Pseudo-label accuracy")] == expected
