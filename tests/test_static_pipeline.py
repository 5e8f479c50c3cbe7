"""A static student as a recipe variant, end to end on a tiny project: trained beside its
no-KD twin, exported with its int8 table under the gate, served without torch, reported
with its end-to-end throughput beside the transformer student."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import HEAVY_MODULES, run_cli_watching_imports, run_distill
from task_projects import NAME, Project


@pytest.fixture(scope="module")
def project(finished_project: Callable[[str], Project]) -> Path:
    """The classification contract project, static variant included, after `distill run`
    (shared, read only)."""
    return finished_project("sequence-classification").root


def _manifest(project: Path, stage: str) -> dict:
    path = project / "runs" / NAME / stage / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8"))


def test_static_variant_is_trained_beside_its_twin(project: Path) -> None:
    variant = _manifest(project, "student")["metrics"]["variants"]["fast"]
    assert variant["built"]["init"] == "static" and variant["built"]["dimension"] == 8
    assert variant["built"]["pooling"] == "weighted"
    # One row per teacher token (untrimmed): table + per-token weights + linear head (8 -> 2).
    rows = len((project / "teacher-base" / "vocab.txt").read_text(encoding="utf-8").split())
    assert "vocabulary" not in variant["built"]
    assert variant["parameters"]["total"] == rows * 8 + rows + 8 * 2 + 2
    assert 0 <= variant["test"]["accuracy"] <= 1
    assert "accuracy" in variant["baseline"]["test"]  # the no-KD twin
    assert (project / "runs" / NAME / "student" / "static_tables" / "table-8.npy").is_file()


def test_static_variant_exports_its_int8_table_under_the_gate(project: Path) -> None:
    exported = _manifest(project, "export")["metrics"]["variants"]["fast"]
    assert [c["name"] for c in exported["candidates"]] == ["int8-table"]
    assert exported["chosen"] == "int8-table" and exported["deployed"] == "int8"
    assert exported["parity_max_abs_diff"] <= exported["parity_tolerance"]
    assert exported["int8_bytes"] < exported["fp32_bytes"]
    bundle = project / "export" / f"{NAME}.fast"
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["input_names"] == ["input_ids", "attention_mask"]
    assert "ort_config.json" not in manifest["files"]  # not an onnxruntime quantization
    serving = manifest["serving"]  # the thread count measured fastest, which predict follows
    assert serving["threads"] in (1, 2) and set(serving["p50_ms_by_threads"]) == {"1", "2"}
    from distill.tasks.classification.runner import load_bundle

    assert load_bundle(bundle).threads == serving["threads"]
    assert load_bundle(bundle, threads=2).threads == 2
    assert load_bundle(bundle, default_threads=2).threads == serving["threads"]  # hint first


def test_bundles_without_the_fp32_reference_keep_it_in_the_stage(project: Path) -> None:
    for bundle, stage in (
        (project / "export" / NAME, project / "runs" / NAME / "export"),
        (
            project / "export" / f"{NAME}.fast",
            project / "runs" / NAME / "export" / "variants" / "fast",
        ),
    ):
        manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["fp32_reference"] is None and not (bundle / "fp32").exists()
        assert not any(rel.startswith("fp32/") for rel in manifest["files"])
        assert (stage / "fp32" / "model_fp32.onnx").is_file()


def test_bundles_ship_the_domain_words_and_the_runner_starts_warm(project: Path) -> None:
    from distill.tasks.classification.fast_tokens import read_words
    from distill.tasks.classification.files import read_split
    from distill.tasks.classification.runner import load_bundle

    bundle = project / "export" / f"{NAME}.fast"
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["files"]["words.txt"]["role"] == "tokenizer-cache"
    words = read_words(bundle / "words.txt")
    train = read_split(project / "runs" / NAME / "data", "train").texts
    counts = {w: sum(t.split(" ").count(w) for t in train) for w in words}
    assert set(words) == {w for t in train for w in t.split(" ") if w}  # every training word
    assert list(counts.values()) == sorted(counts.values(), reverse=True)  # most frequent first
    fast = load_bundle(bundle)
    assert fast.tokenization == "word-cache" and len(fast.fast_tokens) == len(words)
    test = read_split(project / "runs" / NAME / "data", "test").texts
    reference = load_bundle(bundle, fast_tokenization=False)
    assert (fast.logits(test) == reference.logits(test)).all()


def test_static_bundle_is_served_without_torch(project: Path) -> None:
    bundle = project / "export" / f"{NAME}.fast"
    argv = ["predict", str(bundle), "good fun", "awful day", "--json"]
    result, reported = run_cli_watching_imports(argv, (*HEAVY_MODULES, "model2vec"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert reported == {"rc": 0, "loaded": []}
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["text"] for row in rows] == ["good fun", "awful day"]
    assert all(row["label"] in ("negative", "positive") for row in rows)


def test_report_shows_the_static_student_and_its_throughput(project: Path) -> None:
    report = json.loads((project / "reports" / NAME / "report.json").read_text(encoding="utf-8"))
    students = {s["name"]: s for s in report["students"]}
    assert students["fast"]["settings"]["init"] == "static"
    assert students["fast"]["settings"]["static_dim"] == 8
    assert "static_dim" not in students["main"]["settings"]
    for name in ("main", "fast"):
        for batch in ("b1", "b32"):
            measured = report["throughput"]["bundles"][name][batch]
            assert measured["texts_per_s"] > 0
            assert measured["tokenization_us_per_text"] > 0 and measured["model_us_per_text"] > 0
            assert measured["tokenization"] == "word-cache"  # the tiny BERT tokenizer is supported
            assert measured["threads"] in (1, 2)
    html = (project / "reports" / NAME / "report.html").read_text(encoding="utf-8")
    assert 'id="throughput-table"' in html and "static_pooling=weighted" in html
    fp32_row = next(r for r in report["rows"] if r["key"] == "student_onnx_fp32")
    assert fp32_row["bytes"] > 0  # the main student's fp32 graph, read from the stage folder
    markdown = (project / "reports" / NAME / "report.md").read_text(encoding="utf-8")
    assert "## End-to-end throughput" in markdown


def test_distill_bench_times_the_static_variant_against_its_own_student(project: Path) -> None:
    bundle = project / "export" / f"{NAME}.fast"
    args = ["bench", str(bundle), "--runs", "2", "--warmup", "1", "--rounds", "1"]
    result = run_distill([*args, "--batch-sizes", "1", "--seq-lengths", "8"], project)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Deployed: int8-table (int8)" in result.stdout
    student_weights = project / "runs" / NAME / "student" / "variants" / "fast" / "model"
    size = (student_weights / "model.safetensors").stat().st_size / 1e6
    student_row = next(line for line in result.stdout.splitlines() if "Student (PyTorch" in line)
    assert f"| {size:.2f} |" in student_row  # the variant's weights, not the primary student's
