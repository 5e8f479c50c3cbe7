"""The causal-LM task through `distill run`: a tiny Llama teacher fine-tuned on plain text,
top-k logits cached, a layer-dropped student distilled beside its no-KD twin, exported
to ONNX with a KV cache and int8, perplexity re-measured with onnxruntime."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from task_projects import NAME, Project

from distill.pipeline.artifacts import read_manifest


@pytest.fixture(scope="module")
def project(finished_project: Callable[[str], Project]) -> Path:
    """The causal-LM contract project after `distill run` (shared, read only)."""
    return finished_project("causal-lm").root


def test_teacher_learns_the_text(project: Path) -> None:
    teacher = read_manifest(project / "runs" / NAME / "teacher")["metrics"]
    # A random model over a 124-token vocabulary sits near perplexity 124; the text is learnable.
    assert teacher["test"]["perplexity"] < 30
    assert teacher["test"]["tokens"] > 0


def test_top_k_cache_covers_every_training_token(project: Path) -> None:
    labels = read_manifest(project / "runs" / NAME / "labels")["metrics"]
    assert labels["mode"] == "top-k" and labels["k"] == 8
    with np.load(project / "runs" / NAME / "labels" / "topk" / "train.npz") as cache:
        assert cache["values"].shape == (labels["tokens"], 8)
        assert cache["values"].dtype == np.float16 and cache["indices"].dtype == np.int32
        assert int(cache["lengths"].sum()) == labels["tokens"]
        # The full distribution's log-normalizer: at least the largest logit (T = 1 here).
        assert cache["log_normalizer"].shape == (labels["tokens"],)
        assert (cache["log_normalizer"] >= cache["values"][:, 0].astype(np.float32) - 1e-2).all()
        # Sorted descending per token: the top of the teacher's distribution.
        assert (np.diff(cache["values"].astype(np.float32), axis=1) <= 0).all()


def test_student_is_layer_dropped_and_has_its_twin(project: Path) -> None:
    student = read_manifest(project / "runs" / NAME / "student")["metrics"]
    assert student["built"] == {"init": "teacher-layers", "teacher_layers": [0, 3]}
    assert student["teacher_outputs"] == "top-k" and student["divergence"] == "forward_kl"
    assert student["baseline"]["alpha"] == 0.0 and student["baseline"]["teacher_outputs"] is None
    for metrics in (student, student["baseline"]):
        assert 1.0 < metrics["test"]["perplexity"] < 124
    # Cut from the teacher, before training: worse than after (training recovered it).
    before = student["before_training"]["test"]
    assert before["tokens"] == student["test"]["tokens"]
    assert before["perplexity"] > student["test"]["perplexity"]
    teacher = read_manifest(project / "runs" / NAME / "teacher")["metrics"]
    assert student["parameters"]["total"] < teacher["parameters"]["total"]


def test_export_bundle_with_kv_cache_and_int8(project: Path) -> None:
    export = read_manifest(project / "runs" / NAME / "export")["metrics"]
    assert export["parity_max_abs_diff"] <= 1e-3
    assert export["int8_perplexity"] is not None and export["deployed"] == "int8"
    assert export["quantization"] == "weight-only"
    bundle = project / "export" / NAME
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["task"] == "text-generation" and manifest["precision"] == "int8"
    assert manifest["eos_token_ids"] == [2]
    assert {"model.onnx", "fp32/model.onnx", "tokenizer.json"} <= manifest["files"].keys()
    assert manifest["files"]["quantization.json"]["role"] == "quantization-config"
    assert json.loads((bundle / "quantization.json").read_text())["operator"] == "MatMulNBits"
    # The ONNX fp32 perplexity equals PyTorch's on the same test tokens (one pooling).
    student = read_manifest(project / "runs" / NAME / "student")["metrics"]
    assert export["fp32_perplexity"] == pytest.approx(student["test"]["perplexity"], rel=1e-3)
    assert export["test_tokens"] == student["test"]["tokens"]


def test_report_compares_perplexity_size_and_speed(project: Path) -> None:
    report = json.loads((project / "reports" / NAME / "report.json").read_text())
    assert report["task"] == "causal-lm"
    rows = {row["key"]: row for row in report["rows"]}
    assert set(rows) == {
        "teacher",
        "student",
        "student_no_kd",
        "student_onnx_fp32",
        "student_onnx_int8",
        "teacher_onnx_fp32",  # export.teacher_baseline, on by default
        "teacher_onnx_int8",
    }
    export = read_manifest(project / "runs" / NAME / "export")["metrics"]
    teacher = read_manifest(project / "runs" / NAME / "teacher")["metrics"]
    # The teacher's fp32 graph scores what the PyTorch teacher scored on the same tokens.
    assert rows["teacher_onnx_fp32"]["perplexity"] == pytest.approx(
        teacher["test"]["perplexity"], rel=1e-3
    )
    assert rows["teacher_onnx_int8"]["speed"]["tokens_per_s"] > 0
    assert "teacher_onnx_int8" in report["headline"]
    assert rows["student_onnx_int8"]["perplexity"] == pytest.approx(export["int8_perplexity"])
    assert (
        rows["student_onnx_int8"]["bytes"]
        == (project / "export" / NAME / "model.onnx").stat().st_size
    )
    assert rows["teacher"]["speed"]["tokens_per_s"] > 0
    assert len(report["samples"]) == 2
    assert (project / "reports" / NAME / "report.html").is_file()
    markdown = (project / "reports" / NAME / "report.md").read_text(encoding="utf-8")
    assert "| int8 pass | weight-only: int8 weight matmuls (MatMulNBits, blocks of 32" in markdown
    # The run's closing summary shows perplexities, not classification columns.
    summary = (project / "run.out").read_text()
    assert "perplexity" in summary and "accuracy" not in summary
