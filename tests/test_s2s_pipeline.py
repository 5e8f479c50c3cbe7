"""The seq2seq pipeline end to end on tiny models (issue #29's tiny targets): a BART teacher
(the task's contract project) and a T5 teacher learn a toy word-for-word translation through
`distill run`; the distilled student beats its no-KD twin on test BLEU at the shipped seed,
the int8 bundle generates the same greedy tokens as the PyTorch student on most test sources,
and `distill generate --file` serves it without torch."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_command, run_distill, write_csv
from seq2seq_models import WORDS, build_tiny_t5, toy_pairs
from task_projects import NAME, ONE_THREAD, Project, seq2seq_recipe

from distill.tasks.seq2seq.files import read_split

T5_STEPS = {"learning_rate": 3e-3}


@pytest.fixture(scope="module")
def t5_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A 2-layer T5 teacher (relative positions: it needs more pairs and steps than BART to
    align words) and a 1-layer T5 student from a config, after `distill run`."""
    root = tmp_path_factory.mktemp("s2s-t5")
    build_tiny_t5(root / "teacher-base", WORDS, layers=2, seed=0)
    write_csv(root / "pairs.csv", ["source", "target"], toy_pairs(900, seed=1))
    recipe = seq2seq_recipe(
        {"max_steps": 600, "eval_steps": 600, **T5_STEPS},
        {"max_steps": 300, "eval_steps": 300, **T5_STEPS},
        labelled=450,
    )
    (root / "recipe.toml").write_text(recipe, encoding="utf-8")
    result = run_command(
        [sys.executable, "-m", "distill", "run", "recipe.toml"], root, **ONE_THREAD
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return Project(root, [], ONE_THREAD)


@pytest.fixture(scope="module", params=["bart", "t5"])
def finished(
    request: pytest.FixtureRequest,
    finished_project: Callable[[str], Project],
    t5_project: Project,
) -> Project:
    return finished_project("seq2seq") if request.param == "bart" else t5_project


def _report(project: Project) -> dict[str, Any]:
    path = project.root / "reports" / NAME / "report.json"
    return json.loads(path.read_text(encoding="utf-8"))


def _bleu(report: dict[str, Any]) -> dict[str, float]:
    return {row["key"]: row["scores"]["bleu"] for row in report["rows"]}


def test_the_distilled_student_beats_its_no_kd_twin(finished: Project) -> None:
    report = _report(finished)
    bleu = _bleu(report)
    assert set(bleu) == {
        "teacher",
        "student",
        "student_no_kd",
        "student_sequence",
        "deployed",
        "teacher_onnx_int8",
    }
    assert bleu["teacher"] > 30  # it learned the mapping (BART: all of it)
    assert bleu["student"] > bleu["student_no_kd"]  # the tiny target, at this seed
    kd = report["distillation"]["kd"]
    assert kd["bleu_first"] == pytest.approx(bleu["student"])
    assert "Distillation gained" in kd["verdict"]
    if bleu["teacher"] == pytest.approx(100.0):
        # BART's teacher translates perfectly: its soft targets on the transfer sources lift
        # the student far past its twin. T5's (34.5 BLEU) gain 3 points, not significant.
        assert bleu["student"] > bleu["student_no_kd"] + 30
        assert kd["significant"] and kd["p_value"] < 0.01


def test_the_int8_bundle_generates_the_pytorch_students_greedy_tokens(
    finished: Project,
) -> None:
    """Greedy outputs of the deployed int8 graphs (the bundle runner, torch-free code) against
    the PyTorch student's `generate` on every test source."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from distill.tasks.seq2seq.generation import generate_texts
    from distill.tasks.seq2seq.runner import load_bundle, translate

    bundle = load_bundle(finished.root / "export" / NAME)
    assert (
        json.loads((finished.root / "export" / NAME / "manifest.json").read_text())["precision"]
        == "int8"
    )
    test = read_split(finished.root / "runs" / NAME / "data", "test")
    served = translate(bundle, test.sources, num_beams=1)
    folder = finished.root / "runs" / NAME / "student" / "model"
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    expected = generate_texts(
        model,
        AutoTokenizer.from_pretrained(folder),
        test.sources,
        prefix="",
        max_length=12,
        max_new_tokens=12,
        num_beams=1,
    )
    same = sum(a == b for a, b in zip(served, expected, strict=True)) / len(test)
    assert same >= 0.8, (same, list(zip(served, expected, strict=True))[:5])


def test_generate_serves_a_file_of_sources_in_order_with_beams(
    finished_project: Callable[[str], Project], tmp_path: Path
) -> None:
    project = finished_project("seq2seq")
    sources = ["red cat", "dog sun moon", "tree"]
    (tmp_path / "sources.txt").write_text("\n".join(sources) + "\n", encoding="utf-8")
    bundle = str(project.root / "export" / NAME)
    result = run_distill(
        ["generate", bundle, "--file", "sources.txt", "--num-beams", "3"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == len(sources)
    # The BART teacher translates perfectly, so the distilled student is scored against it:
    # each output line is at most the source's length in words, in input order.
    for source, line in zip(sources, lines, strict=True):
        assert len(line.split()) <= len(source.split()) + 2, (source, line)
    sampled = run_distill(["generate", bundle, "red cat", "--sample"], tmp_path)
    assert sampled.returncode == 2
    assert "--sample" in sampled.stderr


def test_the_export_gate_records_the_bleu_drop_and_the_teacher_baseline(
    finished_project: Callable[[str], Project],
) -> None:
    project = finished_project("seq2seq")
    manifest = json.loads((project.root / "runs" / NAME / "export" / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert metrics["deployed"] == "int8"
    assert metrics["int8"]["bleu_drop"] == pytest.approx(
        metrics["fp32"]["bleu"] - metrics["int8"]["bleu"]
    )
    assert metrics["parity"]["greedy_token_agreement"] == 1.0
    assert max(v for k, v in metrics["parity"].items() if ":" in k) < 1e-3
    baseline = metrics["teacher_baseline"]
    assert baseline["int8"]["folder"] == "teacher/int8" and baseline["int8"]["bytes"] > 0
    bundle = json.loads((project.root / "export" / NAME / "manifest.json").read_text())
    assert {"encoder.onnx", "decoder.onnx", "fp32/encoder.onnx", "fp32/decoder.onnx"} <= set(
        bundle["files"]
    )
    assert (bundle["source_prefix"], bundle["max_length"], bundle["num_beams"]) == ("", 12, 1)
