"""One real `distill run` through the command line on tiny models, then reruns."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import SHORT_EXPORT_TIMING, run_distill, write_csv

from distill.pipeline.artifacts import read_manifest, sha256_file


def distill(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_distill(list(args), cwd)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:

    from conftest import synthetic_rows

    root = tmp_path_factory.mktemp("project")
    write_csv((root / "reviews.csv"), ["text", "label"], synthetic_rows(160))
    (root / "recipe.toml").write_text(
        f"""
name = "tiny"
seed = 5
[data]
path = "reviews.csv"
max_length = 24
[teacher]
model = "{tiny_model_dir}"
epochs = 5
min_steps = 0
learning_rate = 3e-3
batch_size = 16
[student]
num_layers = 2
epochs = 4
min_steps = 0
learning_rate = 3e-3
batch_size = 16
[export]
quantization = "dynamic"
max_accuracy_drop = 0.5
{SHORT_EXPORT_TIMING}[report]
latency_runs = 3
latency_warmup = 1
""",
        encoding="utf-8",
    )
    result = distill("run", "recipe.toml", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    (root / "first-run.out").write_text(result.stdout, encoding="utf-8")
    return root


def test_run_writes_every_stage_bundle_and_report(project: Path) -> None:
    for stage in ("data", "teacher", "labels", "student", "export", "report"):
        assert read_manifest(project / "runs" / "tiny" / stage) is not None, stage
    report = json.loads((project / "reports" / "tiny" / "report.json").read_text())
    rows = {row["key"]: row for row in report["rows"]}
    assert {
        "teacher",
        "student",
        "student_no_kd",
        "student_onnx_fp32",
        "student_onnx_int8",
        "teacher_onnx_fp32",
        "teacher_onnx_int8",
        "tfidf",
    } <= rows.keys()
    # The quantized-teacher baseline is scored as the export stage measured it.
    exported = read_manifest(project / "runs" / "tiny" / "export")["metrics"]["teacher_baseline"]
    assert rows["teacher_onnx_int8"]["accuracy"] == pytest.approx(exported["int8"]["accuracy"])
    assert rows["teacher_onnx_fp32"]["agreement"] == pytest.approx(
        exported["fp32"]["agreement_with_pytorch"]
    )
    verdict = report["distillation"]["significance"]["verdict"]
    assert verdict.startswith("Distillation ")
    assert verdict in (project / "reports" / "tiny" / "report.md").read_text()
    teacher = read_manifest(project / "runs" / "tiny" / "teacher")
    assert rows["teacher"]["accuracy"] == pytest.approx(teacher["metrics"]["test"]["accuracy"])
    assert rows["teacher"]["accuracy"] >= 0.8
    assert rows["student"]["parameters"] < rows["teacher"]["parameters"]
    assert (project / "reports" / "tiny" / "report.html").read_text().count("<svg") >= 1
    assert "| " in (project / "reports" / "tiny" / "report.md").read_text()
    bundle = json.loads((project / "export" / "tiny" / "manifest.json").read_text())
    files = bundle["files"]
    for rel, entry in files.items():
        assert sha256_file(project / "export" / "tiny" / rel) == entry["sha256"], rel
    roles = {entry["role"] for entry in files.values()}
    assert {"int8", "fp32", "tokenizer", "config"} <= roles


def test_run_ends_with_a_summary_of_the_key_rows(project: Path) -> None:
    summary = (project / "first-run.out").read_text(encoding="utf-8")
    report = json.loads((project / "reports" / "tiny" / "report.json").read_text())
    teacher = next(row for row in report["rows"] if row["key"] == "teacher")
    assert "run tiny: done" in summary
    assert f"{teacher['name']}" in summary and f"{teacher['accuracy']:8.4f}" in summary
    assert report["distillation"]["significance"]["verdict"] in summary
    assert str(project / "reports" / "tiny" / "report.html") in summary
    assert str(project / "export" / "tiny") in summary


def test_rerun_skips_and_a_changed_table_reruns_only_what_it_affects(project: Path) -> None:
    again = distill("run", "recipe.toml", cwd=project)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("skipped (up to date)") == 6
    changed = distill("run", "recipe.toml", "--set", "export.max_accuracy_drop=0.6", cwd=project)
    assert changed.returncode == 0, changed.stderr[-2000:]
    ran = [
        line.split("stage")[1].split()[0]
        for line in changed.stderr.splitlines()
        if "running" in line
    ]
    assert ran == ["export", "report"]


def test_same_recipe_and_seed_give_identical_results(project: Path, tmp_path: Path) -> None:
    """Determinism on CPU: a second run elsewhere gives the same metrics and the same student bytes."""
    import shutil

    for name in ("recipe.toml", "reviews.csv"):
        shutil.copy(project / name, tmp_path / name)
    result = distill("run", "recipe.toml", "--only", "student", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for stage in ("data", "teacher", "student"):
        first = read_manifest(project / "runs" / "tiny" / stage)
        second = read_manifest(tmp_path / "runs" / "tiny" / stage)
        assert first is not None and second is not None
        assert second["fingerprint"] == first["fingerprint"], stage
        assert (
            second["metrics"]["test" if stage != "data" else "sizes"]
            == first["metrics"]["test" if stage != "data" else "sizes"]
        )
    weights = "model/model.safetensors"
    assert sha256_file(tmp_path / "runs/tiny/student" / weights) == sha256_file(
        project / "runs/tiny/student" / weights
    )
    assert sha256_file(tmp_path / "runs/tiny/labels/logits/train.npz") == sha256_file(
        project / "runs/tiny/labels/logits/train.npz"
    )
