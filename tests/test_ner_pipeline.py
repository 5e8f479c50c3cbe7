"""The token-classification task through `distill run` on a tiny tagger: what each stage
leaves for the next, and what users open the results with (transformers' pipeline, the
bundle's graph in plain onnxruntime)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from task_projects import NAME, Project

from distill.data.ragged import load_ragged
from distill.pipeline.artifacts import read_manifest
from distill.tasks.token_classification.files import read_tag_names, read_tagged_split


@pytest.fixture(scope="module")
def project(finished_project: Callable[[str], Project]) -> Path:
    """The token-classification contract project after `distill run` (shared, read only)."""
    return finished_project("token-classification").root


def test_labels_stage_caches_one_logit_row_per_sub_token_of_every_sentence(project: Path) -> None:
    from transformers import AutoTokenizer

    run = project / "runs" / NAME
    tags = read_tag_names(run / "data")
    assert tags == ["O", "B-geo-loc", "I-geo-loc", "B-person", "I-person"]
    tokenizer = AutoTokenizer.from_pretrained(run / "teacher" / "model")
    for split in ("train", "validation", "test"):
        sentences = read_tagged_split(run / "data", split)
        logits = load_ragged(run / "labels" / "logits" / f"{split}.npz", sentences.ids)
        lengths = [
            len(tokenizer(words, is_split_into_words=True)["input_ids"])
            for words in sentences.tokens
        ]
        assert [len(row) for row in logits] == lengths, split
        assert all(row.shape[1] == len(tags) and np.isfinite(row).all() for row in logits)


def test_student_and_twin_are_trained_and_scored_at_entity_level(project: Path) -> None:
    metrics = read_manifest(project / "runs" / NAME / "student")["metrics"]
    assert metrics["alpha"] > 0 and metrics["baseline"]["alpha"] == 0
    # hidden_weight: the 1-layer student learnt the 2-layer teacher's last layer (online,
    # through the trimmed vocabulary's map back to the teacher's ids); the twin did not.
    assert metrics["built"]["layer_map"] == [[0, 1]] and metrics["built"]["projection"] is None
    assert "layer_map" not in metrics["baseline"]["built"]
    for entry in (metrics, metrics["baseline"]):
        test = entry["test"]
        assert 0 <= test["entity_f1"] <= 1 and set(test["per_type"]) == {"geo-loc", "person"}
        assert test["agreement"] is not None  # entity F1 against the teacher's tags
    assert (
        metrics["parameters"]["total"]
        < read_manifest(project / "runs" / NAME / "teacher")["metrics"]["parameters"]["total"]
    )


def test_student_folder_opens_with_the_transformers_pipeline_and_real_entity_names(
    project: Path,
) -> None:
    from transformers import pipeline

    tagger = pipeline(
        "token-classification",
        model=str(project / "runs" / NAME / "student" / "model"),
        aggregation_strategy="simple",
    )
    assert set(tagger.model.config.id2label.values()) == {
        "O",
        "B-geo-loc",
        "I-geo-loc",
        "B-person",
        "I-person",
    }
    found = tagger("alice flew to paris")
    assert all(entity["entity_group"] in {"geo-loc", "person"} for entity in found)


def test_bundle_opens_with_plain_onnxruntime(project: Path) -> None:
    import onnxruntime as ort

    bundle = project / "export" / NAME
    config = json.loads((bundle / "config.json").read_text())
    assert config["id2label"]["3"] == "B-person"
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits"]
    assert session.get_outputs()[0].shape[-1] == len(config["id2label"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["task"] == "token-classification" and manifest["aggregation"] == "first"
    assert manifest["labels"] == [
        config["id2label"][str(i)] for i in range(len(manifest["labels"]))
    ]


def test_report_has_the_floor_per_type_scores_and_disagreements(project: Path) -> None:
    report = json.loads((project / "reports" / NAME / "report.json").read_text())
    rows = {row["key"]: row for row in report["rows"]}
    assert {
        "teacher",
        "student",
        "student_no_kd",
        "deployed",
        "teacher_onnx_int8",
        "memorization",
    } <= rows.keys()
    assert rows["memorization"]["floor"] is True and rows["deployed"]["deployed"] is True
    assert {entry["type"] for entry in report["per_type"]} == {"geo-loc", "person"}
    assert rows["deployed"]["latency"]["p50_ms"] > 0 and rows["teacher"]["latency"]["p50_ms"] > 0
    # The verdict is the paired test of the distilled student against its twin, whose
    # scores are those the student stage measured on the same test sentences.
    significance = report["distillation"]["kd_significance"]
    assert significance["examples"] == len(
        read_tagged_split(project / "runs" / NAME / "data", "test")
    )
    assert significance["f1_first"] == pytest.approx(rows["student"]["entity_f1"])
    assert significance["f1_second"] == pytest.approx(rows["student_no_kd"]["entity_f1"])
    assert 0 < significance["p_value"] <= 1 and significance["ci_low"] <= significance["ci_high"]
    assert report["headline"]["verdict"] == significance["verdict"]
    assert report["headline"]["verdict"].startswith("Distillation ")
    assert "approximate randomization p" in report["headline"]["verdict"]
    markdown = (project / "reports" / NAME / "report.md").read_text(encoding="utf-8")
    assert significance["verdict"] in markdown
    for item in report["disagreements"]:
        assert item["teacher"] != item["student"]


def _served_tags(words: list[str], row: dict) -> list[str]:
    """A user's reading of `distill predict --json` on the words joined by spaces: an entity
    tags the words whose first character it covers (B- the first, I- the rest)."""
    starts = [sum(len(w) + 1 for w in words[:i]) for i in range(len(words))]
    ends = [start + len(word) for start, word in zip(starts, words, strict=True)]
    tags = ["O"] * len(words)
    for entity in row["entities"]:
        assert row["text"][entity["start"] : entity["end"]] == entity["text"]
        assert entity["start"] in starts and entity["end"] in ends, entity  # whole words
        covered = [i for i, start in enumerate(starts) if entity["start"] <= start < entity["end"]]
        for n, i in enumerate(covered):
            tags[i] = f"{'I' if n else 'B'}-{entity['type']}"
    return tags


def test_the_reports_deployed_f1_is_the_f1_of_what_predict_serves(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The deployed row's entity F1 (and the export's record of the deployed candidate) is
    seqeval's on the entities `distill predict` serves for the test sentences."""
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2

    from distill.cli import main
    from distill.tasks.token_classification.runner import load_bundle

    run, bundle = project / "runs" / NAME, project / "export" / NAME
    test, names = read_tagged_split(run / "data", "test"), read_tag_names(run / "data")
    texts = [" ".join(words) for words in test.tokens]
    tokenizer = load_bundle(bundle).tokenizer
    assert all(len(tokenizer.encode(text).ids) < 16 for text in texts)  # nothing truncated
    (tmp_path / "test.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["predict", str(bundle), "--json", "-f", str(tmp_path / "test.txt")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["text"] for row in rows] == texts
    served = [_served_tags(words, row) for words, row in zip(test.tokens, rows, strict=True)]
    gold = [[names[t] for t in tags] for tags in test.tags]
    f1 = f1_score(gold, served, mode="strict", scheme=IOB2, zero_division=0)
    assert f1 > 0 and any(row["entities"] for row in rows)
    report = json.loads((project / "reports" / NAME / "report.json").read_text())
    deployed = next(row for row in report["rows"] if row["key"] == "deployed")
    assert deployed["entity_f1"] == pytest.approx(f1, abs=1e-12)
    assert report["aggregation"] == "first"
    markdown = (project / "reports" / NAME / "report.md").read_text(encoding="utf-8")
    assert "scored on what their bundle serves: `distill predict`" in markdown
    assert "(aggregation `first`)" in markdown
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["metrics"]["test"]["entity_f1"] == pytest.approx(f1, abs=1e-12)


def test_export_weighs_the_default_candidates_and_the_report_shows_the_choice(
    project: Path,
) -> None:
    export = read_manifest(project / "runs" / NAME / "export")["metrics"]
    names = [r["name"] for r in export["candidates"]]
    assert names == ["dynamic", "dynamic-optimized"]
    assert export["chosen"] in names  # export.max_f1_drop = 1.0: every candidate passes
    manifest = json.loads((project / "export" / NAME / "manifest.json").read_text())
    assert manifest["chosen"] == export["chosen"] and len(manifest["candidates"]) == 2
    folder = project / "reports" / NAME
    report = json.loads((folder / "report.json").read_text())
    section = report["export"]
    assert [c["name"] for c in section["candidates"]] == names
    assert [c["name"] for c in section["candidates"] if c["deployed"]] == [export["chosen"]]
    rows = {row["key"]: row for row in report["rows"]}
    assert rows["deployed"]["name"] == f"Student ONNX int8 ({export['chosen']}, deployed)"
    assert rows["teacher_onnx_int8"]["name"] == f"Teacher ONNX int8 ({export['chosen']})"
    markdown = (folder / "report.md").read_text()
    assert "## Export: the int8 candidates" in markdown
    assert f"Deployed: **{export['chosen']}**, fastest at batch 1" in markdown
    html = (folder / "report.html").read_text()
    assert "<h2>Export: the int8 candidates</h2>" in html and "dynamic-optimized" in html


def test_distill_bench_times_the_tagging_run_side_by_side(project: Path, tmp_path: Path) -> None:
    """`distill bench` on an NER bundle: the teacher and student loaded as taggers, the ONNX
    files beside them, inputs cut from the test sentences."""
    from distill.timing import bench

    out = tmp_path / "bench.json"
    options = ["--runs", "2", "--warmup", "0", "--rounds", "1", "--threads", "1"]
    options += ["--batch-sizes", "1", "--seq-lengths", "8", "--json", str(out)]
    code = bench.main([str(project / "export" / NAME), *options])
    assert code == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    keys = [model["key"] for model in result["models"]]
    assert (
        keys[:3] == [bench.TEACHER, bench.STUDENT, bench.ONNX_FP32] and keys[-1] == bench.DEPLOYED
    )
    # The fp32 rows are the bundle's fp32 reference, not the deployed int8 graph again.
    models = {model["key"]: model for model in result["models"]}
    assert models[bench.ONNX_FP32]["path"].endswith("fp32/model_fp32.onnx")
    assert models[bench.ONNX_FP32]["bytes"] > models[bench.DEPLOYED]["bytes"]
    (cell,) = result["cells"]
    assert (cell["batch_size"], cell["sequence_length"]) == (1, 8)
    assert all(stats["p50_ms"] > 0 for stats in cell["latency"].values())
    teacher = bench.locate(project / "export" / NAME).task.load_model(
        project / "runs" / NAME / "teacher" / "model"
    )
    assert type(teacher).__name__.endswith("ForTokenClassification")
    assert result["ratios"]["deployed_vs_teacher_b1"] == pytest.approx(
        cell["latency"][bench.TEACHER]["p50_ms"] / cell["latency"][bench.DEPLOYED]["p50_ms"]
    )
