"""The causal-LM task through `distill run`: a tiny Llama teacher fine-tuned on plain text,
top-k logits cached, a layer-dropped student distilled beside its no-KD twin, exported
to ONNX with a KV cache and int8, perplexity re-measured with onnxruntime."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import run_distill, write_csv
from generation_helpers import WORDS, tiny_llama, tiny_tokenizer

from distill.artifacts import read_manifest

SUBJECTS = ["the cat", "the dog", "a bird", "the king", "the queen", "a fish"]
VERBS = ["run", "walk", "swim", "fly", "see", "eat", "sleep"]
PLACES = ["up the tree", "in the river", "to the city", "in the house", "to paris"]


def sentences(n: int, seed: int = 0) -> list[str]:
    """Text with structure a tiny LM can learn (subject verb place), from the tiny vocabulary."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        extra = rng.choice(["", " and " + rng.choice(VERBS), " " + rng.choice(WORDS[40:60])])
        rows.append(
            f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(PLACES)}{extra} w{i % 40}"
        )
    return rows


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("generation")
    teacher = root / "teacher-base"
    tiny_llama(seed=1, layers=4).save_pretrained(teacher)
    tiny_tokenizer().save_pretrained(teacher)
    write_csv(root / "text.csv", ["text"], ([s] for s in sentences(160)))
    (root / "recipe.toml").write_text(
        """
name = "gen"
seed = 3
task = "causal-lm"
[data]
path = "text.csv"
max_length = 24
[teacher]
model = "teacher-base"
epochs = 4
learning_rate = 3e-3
batch_size = 16
[student]
num_layers = 2
epochs = 4
learning_rate = 3e-3
batch_size = 16
alpha = 0.8
temperature = 1.0
top_k = 8
[export]
quantization = "weight-only"
parity_tolerance = 1e-3
max_perplexity_increase = 1.0
[report]
latency_runs = 3
latency_warmup = 1
samples = 2
max_new_tokens = 4
""",
        encoding="utf-8",
    )
    result = run_distill(["run", "recipe.toml"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    (root / "run.out").write_text(result.stdout, encoding="utf-8")
    return root


def test_teacher_learns_the_text(project: Path) -> None:
    teacher = read_manifest(project / "runs" / "gen" / "teacher")["metrics"]
    # A random model over a 124-token vocabulary sits near perplexity 124; the text is learnable.
    assert teacher["test"]["perplexity"] < 30
    assert teacher["test"]["tokens"] > 0


def test_top_k_cache_covers_every_training_token(project: Path) -> None:
    labels = read_manifest(project / "runs" / "gen" / "labels")["metrics"]
    assert labels["mode"] == "top-k" and labels["k"] == 8
    with np.load(project / "runs" / "gen" / "labels" / "topk" / "train.npz") as cache:
        assert cache["values"].shape == (labels["tokens"], 8)
        assert cache["values"].dtype == np.float16 and cache["indices"].dtype == np.int32
        assert int(cache["lengths"].sum()) == labels["tokens"]
        # The full distribution's log-normalizer: at least the largest logit (T = 1 here).
        assert cache["log_normalizer"].shape == (labels["tokens"],)
        assert (cache["log_normalizer"] >= cache["values"][:, 0].astype(np.float32) - 1e-2).all()
        # Sorted descending per token: the top of the teacher's distribution.
        assert (np.diff(cache["values"].astype(np.float32), axis=1) <= 0).all()


def test_student_is_layer_dropped_and_has_its_twin(project: Path) -> None:
    student = read_manifest(project / "runs" / "gen" / "student")["metrics"]
    assert student["built"] == {"init": "teacher-layers", "teacher_layers": [0, 3]}
    assert student["teacher_outputs"] == "top-k" and student["divergence"] == "forward_kl"
    assert student["baseline"]["alpha"] == 0.0 and student["baseline"]["teacher_outputs"] is None
    for metrics in (student, student["baseline"]):
        assert 1.0 < metrics["test"]["perplexity"] < 124
    # Cut from the teacher, before training: worse than after (training recovered it).
    before = student["before_training"]["test"]
    assert before["tokens"] == student["test"]["tokens"]
    assert before["perplexity"] > student["test"]["perplexity"]
    teacher = read_manifest(project / "runs" / "gen" / "teacher")["metrics"]
    assert student["parameters"]["total"] < teacher["parameters"]["total"]


def test_export_bundle_with_kv_cache_and_int8(project: Path) -> None:
    export = read_manifest(project / "runs" / "gen" / "export")["metrics"]
    assert export["parity_max_abs_diff"] <= 1e-3
    assert export["int8_perplexity"] is not None and export["deployed"] == "int8"
    assert export["quantization"] == "weight-only"
    bundle = project / "export" / "gen"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["task"] == "text-generation" and manifest["precision"] == "int8"
    assert manifest["eos_token_ids"] == [2]
    assert {"model.onnx", "fp32/model.onnx", "tokenizer.json"} <= manifest["files"].keys()
    assert manifest["files"]["quantization.json"]["role"] == "quantization-config"
    assert json.loads((bundle / "quantization.json").read_text())["operator"] == "MatMulNBits"
    # The ONNX fp32 perplexity equals PyTorch's on the same test tokens (one pooling).
    student = read_manifest(project / "runs" / "gen" / "student")["metrics"]
    assert export["fp32_perplexity"] == pytest.approx(student["test"]["perplexity"], rel=1e-3)
    assert export["test_tokens"] == student["test"]["tokens"]


def test_report_compares_perplexity_size_and_speed(project: Path) -> None:
    report = json.loads((project / "reports" / "gen" / "report.json").read_text())
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
    export = read_manifest(project / "runs" / "gen" / "export")["metrics"]
    teacher = read_manifest(project / "runs" / "gen" / "teacher")["metrics"]
    # The teacher's fp32 graph scores what the PyTorch teacher scored on the same tokens.
    assert rows["teacher_onnx_fp32"]["perplexity"] == pytest.approx(
        teacher["test"]["perplexity"], rel=1e-3
    )
    assert rows["teacher_onnx_int8"]["speed"]["tokens_per_s"] > 0
    assert "teacher_onnx_int8" in report["headline"]
    assert rows["student_onnx_int8"]["perplexity"] == pytest.approx(export["int8_perplexity"])
    assert (
        rows["student_onnx_int8"]["bytes"]
        == (project / "export" / "gen" / "model.onnx").stat().st_size
    )
    assert rows["teacher"]["speed"]["tokens_per_s"] > 0
    assert len(report["samples"]) == 2
    assert (project / "reports" / "gen" / "report.html").is_file()
    markdown = (project / "reports" / "gen" / "report.md").read_text(encoding="utf-8")
    assert "| int8 pass | weight-only: int8 weight matmuls (MatMulNBits, blocks of 32" in markdown
    # The run's closing summary shows perplexities, not classification columns.
    summary = (project / "run.out").read_text()
    assert "perplexity" in summary and "accuracy" not in summary
