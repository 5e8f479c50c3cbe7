"""The token-classification export stage on a tiny BERT tagger: the int8 candidates (plain
and ORT-optimized), their parity, scores and timing, the gate on the entity-F1 drop, the
choice, the fallback to fp32, and what the stage and bundle manifests record.

The test split's gold tags are the PyTorch tagger's own predictions, so fp32 scores a high
entity F1 and an int8 graph that tags otherwise shows a drop the gate can fail.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from conftest import SHORT_TIMING, write_vocab
from task_projects import PEOPLE, PLACES, ner_sentences

from distill.config import DataConfig, ExportConfig
from distill.errors import AccuracyDropError, ParityError
from distill.export import candidates as shared
from distill.export import onnx as onnx_utils
from distill.export.bundle import read_bundle
from distill.pipeline.artifacts import RunContext
from distill.tasks.token_classification.files import (
    TaggedSplit,
    read_tagged_split,
    tag_names_for,
    write_tag_names,
    write_tagged_split,
)
from distill.tasks.token_classification.runner import load_bundle
from distill.tasks.token_classification.stages import export as export_stage
from distill.tasks.token_classification.stages.report import export_section
from distill.tasks.token_classification.training import encode_words, word_starts

MAX_LENGTH = 16
TAGS = tag_names_for({"person", "geo-loc"})  # O, B-geo-loc, I-geo-loc, B-person, I-person


def _tiny_tagger(folder: Path) -> Any:
    """A seeded 2-layer BertForTokenClassification (hidden size 32) with the conftest
    vocabulary plus the data's words; wide head weights so it tags some words as entities."""
    import torch
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    torch.manual_seed(0)
    vocab = write_vocab(folder, PEOPLE + PLACES + ["new", "york"])
    tokenizer = BertTokenizerFast(vocab=str(vocab), do_lower_case=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=len(TAGS),
        id2label=dict(enumerate(TAGS)),
        label2id={name: i for i, name in enumerate(TAGS)},
    )
    model = BertForTokenClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 1.0)
        model.classifier.bias.copy_(torch.tensor([1.0, 0.8, -1.0, 0.8, 0.5]))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def _as_entities(tags: list[int]) -> list[int]:
    """Word tags as the entities grouped from them read (what a bundle serves): an I- tag
    that continues no entity of its type starts one (B-)."""
    fixed: list[int] = []
    for tag in tags:
        name, previous = TAGS[tag], TAGS[fixed[-1]] if fixed else "O"
        if name.startswith("I-") and previous[2:] != name[2:]:
            name = "B-" + name[2:]
        fixed.append(TAGS.index(name))
    return fixed


def _own_tags(model: Any, tokenizer: Any, sentences: list[list[str]]) -> list[list[int]]:
    """The model's tag for every word (its first sub-token's argmax), as its entities read."""
    import torch

    encoding = encode_words(tokenizer, sentences, MAX_LENGTH)
    starts = word_starts(encoding, len(sentences))
    padded = tokenizer.pad({k: encoding[k] for k in encoding.keys()}, return_tensors="pt")
    with torch.no_grad():
        logits = model(**padded).logits.numpy()
    tags = []
    for row, words, positions in zip(logits, sentences, starts, strict=True):
        kept = [int(row[p].argmax()) for p in positions]
        tags.append(_as_entities(kept) + [0] * (len(words) - len(kept)))  # cut words: O
    return tags


@pytest.fixture(scope="module")
def stage_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A data stage (labels.json, test.jsonl) and a student stage whose model tagged the test
    split; the teacher stage is the same model (the baseline path needs one)."""
    root = tmp_path_factory.mktemp("ner-export-inputs")
    model, tokenizer = _tiny_tagger(root / "student" / "model")
    sentences = [[word for word, _ in s] for s in ner_sentences(40, seed=3)]
    data = root / "data"
    data.mkdir()
    write_tag_names(data, TAGS)
    test = TaggedSplit(
        ids=[f"ner.txt:{i}" for i in range(len(sentences))],
        tokens=sentences,
        tags=_own_tags(model, tokenizer, sentences),
    )
    write_tagged_split(data / "test.jsonl", test)
    return {"data": data, "student": root / "student", "teacher": root / "student"}


def _run(inputs: dict[str, Path], out: Path, **export_settings: Any) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(
        name="t", seed=13, task="token-classification", workdir=out.parent, recipe_dir=out.parent
    )
    data = DataConfig(path="ner.txt", max_length=MAX_LENGTH)
    settings = {"teacher_baseline": False, **export_settings}
    return export_stage.run(
        ctx, inputs, out, data=data, export=ExportConfig(**{**SHORT_TIMING, **settings})
    )


@pytest.fixture(scope="module")
def default_run(
    stage_inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """The recipe's default candidates, dynamic and dynamic-optimized, and the teacher
    baseline; a budget every candidate passes (how far int8 moves a tiny random tagger
    depends on the CPU's int8 kernels; the gate is tested on a broken candidate below)."""
    out = tmp_path_factory.mktemp("ner-export") / "stage"
    return out, _run(stage_inputs, out, teacher_baseline=True, max_f1_drop=0.5)


def _manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "bundle" / "manifest.json").read_text(encoding="utf-8"))


def test_the_optimized_candidate_is_built_parity_checked_and_scored(
    default_run: tuple[Path, dict[str, Any]],
) -> None:
    _, metrics = default_run
    fp32 = metrics["student"]["fp32"]
    assert fp32["entity_f1"] > 0.9  # the gold tags are the PyTorch tagger's own
    optimization = metrics["student"]["optimization"]
    assert optimization["level"] == 2 and optimization["parity_max_abs_diff"] <= 1e-4
    assert optimization["fused_operators"]["com.microsoft:Attention"] == 2
    assert "cls_pruning" not in optimization  # a tagger reads every token
    records = {r["name"]: r for r in metrics["candidates"]}
    assert list(records) == ["dynamic", "dynamic-optimized"]
    for name, r in records.items():
        assert "error" not in r, name
        assert r["settings"]["candidate"] == name and r["bytes"] > 0
        assert 0 <= r["entity_f1"] <= 1 and 0 <= r["agreement_with_fp32"] <= 1
        assert r["entity_f1_drop"] == pytest.approx(fp32["entity_f1"] - r["entity_f1"])
        assert set(r["per_type"]) == {"geo-loc", "person"}
        assert r["latency_b1"]["p50_ms"] > 0 and r["qualifies"] is True
    assert records["dynamic"]["settings"]["graph"] == "plain"
    optimized = records["dynamic-optimized"]["settings"]
    assert (optimized["graph"], optimized["optimization_level"]) == ("optimized", 2)
    assert fp32["latency_b1"]["p50_ms"] > 0  # timed with the candidates
    assert metrics["chosen"] in records and metrics["deployed"] == "int8"
    assert metrics["chosen_reason"].startswith("fastest at batch 1 within the entity F1 budget")
    assert metrics["quantization"] == records[metrics["chosen"]]["settings"]
    json.dumps(metrics)  # the pipeline stores it in the stage manifest


def test_the_bundle_manifest_records_every_candidate_and_serves_the_chosen_one(
    default_run: tuple[Path, dict[str, Any]],
) -> None:
    out, metrics = default_run
    manifest = _manifest(out)
    assert [r["name"] for r in manifest["candidates"]] == ["dynamic", "dynamic-optimized"]
    assert manifest["chosen"] == metrics["chosen"]
    assert manifest["chosen_reason"] == metrics["chosen_reason"]
    assert manifest["optimization"]["level"] == 2 and manifest["precision"] == "int8"
    chosen = next(r for r in manifest["candidates"] if r["name"] == manifest["chosen"])
    assert manifest["files"]["model.onnx"]["bytes"] == chosen["bytes"]
    assert manifest["metrics"]["test"]["entity_f1"] == chosen["entity_f1"]
    bundle = read_bundle(out / "bundle")  # hashes verified
    (prediction,) = load_bundle(bundle).predict(["alice flew to paris today"])
    assert all(entity.type in {"geo-loc", "person"} for entity in prediction.entities)


def test_the_teacher_baseline_uses_the_candidate_the_student_deployed(
    default_run: tuple[Path, dict[str, Any]],
) -> None:
    out, metrics = default_run
    baseline = metrics["teacher_baseline"]
    assert baseline["int8"]["candidate"] == metrics["chosen"]
    assert 0 <= baseline["int8"]["entity_f1"] <= 1 and baseline["int8"]["bytes"] > 0
    assert (out / "teacher_baseline" / "model.onnx").stat().st_size == baseline["int8"]["bytes"]


def test_the_report_section_lists_the_candidates_and_the_deployed_one(
    default_run: tuple[Path, dict[str, Any]],
) -> None:
    _, metrics = default_run
    section = export_section(metrics)
    assert section is not None and section["gate"] == "export.max_f1_drop = 0.5"
    assert [c["name"] for c in section["candidates"]] == ["dynamic", "dynamic-optimized"]
    assert [c["deployed"] for c in section["candidates"]].count(True) == 1
    assert all(c["p50_ms"] > 0 and c["qualifies"] for c in section["candidates"])
    assert section["fp32"]["p50_ms"] > 0 and section["reason"] == metrics["chosen_reason"]
    assert export_section({"deployed": "int8"}) is None  # an export from before candidates


def test_the_candidates_table_renders_and_a_report_from_before_it_still_does(
    default_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    from distill.tasks.token_classification.render import write_reports

    _, metrics = default_run
    headline = {"verdict": None, "warnings": [], "f1_kept": None, "size_ratio": None}
    report = {
        "schema_version": 1,
        "task": "token-classification",
        "run": "t",
        "created": "now",
        "rows": [],
        "per_type": [],
        "headline": {**headline, "speedup": None},
        "disagreements": [],
    }
    write_reports(report, tmp_path / "old")  # no "export" key: no candidates section
    assert "int8 candidates" not in (tmp_path / "old" / "report.md").read_text()
    write_reports({**report, "export": export_section(metrics)}, tmp_path / "new")
    markdown = (tmp_path / "new" / "report.md").read_text()
    assert f"Deployed: **{metrics['chosen']}**, fastest at batch 1" in markdown
    table = markdown[markdown.index("| graph |") :].splitlines()
    assert [line.split(" | ")[0] for line in table[2:5]] == [
        "| fp32",
        "| dynamic",
        "| dynamic-optimized",
    ]
    assert sum(line.endswith("| yes |") for line in table[2:5]) == 1  # the deployed one
    html = (tmp_path / "new" / "report.html").read_text()
    assert "<h2>Export: the int8 candidates</h2>" in html


def _timed(p50: dict[str, float]) -> Any:
    def fake(paths: dict[str, Path], *args: Any, **kwargs: Any) -> dict[str, dict[str, Any]]:
        return {name: {"p50_ms": p50[name], "p95_ms": p50[name]} for name in paths}

    return fake


@pytest.mark.parametrize("fastest", ["dynamic", "dynamic-optimized"])
def test_the_fastest_candidate_that_passes_the_gate_is_deployed(
    stage_inputs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fastest: str,
) -> None:
    slower = "dynamic" if fastest == "dynamic-optimized" else "dynamic-optimized"
    monkeypatch.setattr(shared, "time_models", _timed({"fp32": 4.0, fastest: 1.0, slower: 2.0}))
    metrics = _run(stage_inputs, tmp_path / "stage", max_f1_drop=1.0)
    assert metrics["chosen"] == fastest and "1.00 ms p50" in metrics["chosen_reason"]
    speedups = {r["name"]: r["speedup_vs_fp32"] for r in metrics["candidates"]}
    assert speedups == {fastest: 4.0, slower: 2.0}
    assert _manifest(tmp_path / "stage")["chosen"] == fastest


def _shift_classifier_bias(path: Path, shift: np.ndarray) -> None:
    model = onnx.load(str(path))
    (bias,) = [i for i in model.graph.initializer if i.name == "classifier.bias"]
    bias.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bias) + shift, bias.name))
    onnx.save(model, str(path))


def _int8_tags_everything_outside(monkeypatch: pytest.MonkeyPatch, only: str | None) -> None:
    """Every int8 build (or only candidate ``only``) tags every word O: its entity F1 drops
    to 0, far beyond any budget."""
    real = shared.dynamic_int8

    def build(candidate: Any, *args: Any, **kwargs: Any) -> tuple[Path, dict[str, Any]]:
        path, settings = real(candidate, *args, **kwargs)
        if only in (None, candidate.name):
            _shift_classifier_bias(path, np.array([100.0, 0, 0, 0, 0], dtype=np.float32))
        return path, settings

    monkeypatch.setattr(shared, "dynamic_int8", build)


def test_a_candidate_beyond_the_budget_is_passed_over(
    stage_inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The faster candidate loses all its entities: the slower one that keeps them is chosen."""
    _int8_tags_everything_outside(monkeypatch, "dynamic-optimized")
    timing = {"fp32": 4.0, "dynamic-optimized": 1.0, "dynamic": 2.0}
    monkeypatch.setattr(shared, "time_models", _timed(timing))
    metrics = _run(stage_inputs, tmp_path / "stage", max_f1_drop=0.5)
    records = {r["name"]: r for r in metrics["candidates"]}
    assert records["dynamic-optimized"]["entity_f1"] == 0.0
    assert records["dynamic-optimized"]["qualifies"] is False
    assert metrics["chosen"] == "dynamic"
    assert "over the entity F1 budget or failed: dynamic-optimized" in metrics["chosen_reason"]


def test_a_failing_gate_deploys_fp32_or_with_require_int8_refuses(
    stage_inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _int8_tags_everything_outside(monkeypatch, None)
    metrics = _run(stage_inputs, tmp_path / "fallback")
    assert metrics["chosen"] is None and metrics["deployed"] == "fp32"
    assert all(r["qualifies"] is False for r in metrics["candidates"])
    assert "no int8 candidate within export.max_f1_drop = 0.02" in metrics["chosen_reason"]
    manifest = _manifest(tmp_path / "fallback")
    assert manifest["precision"] == "fp32" and manifest["quantization"] == {"mode": "none"}
    assert manifest["metrics"]["test"]["entity_f1"] == metrics["student"]["fp32"]["entity_f1"]
    assert manifest["files"]["model.onnx"]["role"] == "fp32"
    assert [r["name"] for r in manifest["candidates"]] == ["dynamic", "dynamic-optimized"]
    out = tmp_path / "strict"
    with pytest.raises(AccuracyDropError, match=r"export\.max_f1_drop = 0\.02"):
        _run(stage_inputs, out, require_int8=True)
    assert not (out / "bundle" / "manifest.json").exists()


def test_a_model_type_without_an_optimizer_skips_the_optimized_candidate(
    stage_inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reason is recorded in the stage metrics and the bundle manifest; the teacher's
    baseline falls back to the plain candidate."""

    def unsupported(*args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("ONNX Runtime doesn't support the graph optimization of x")

    monkeypatch.setattr(onnx_utils, "optimize_graph", unsupported)
    out = tmp_path / "stage"
    metrics = _run(stage_inputs, out, candidates=["dynamic-optimized"], teacher_baseline=True)
    skipped = metrics["student"]["optimization"]["skipped"]
    assert skipped.startswith("ONNX Runtime doesn't support")
    assert metrics["candidates"] == [] and metrics["deployed"] == "fp32"
    assert _manifest(out)["optimization"]["skipped"] == skipped
    assert metrics["teacher_baseline"]["int8"]["candidate"] == "dynamic"


def test_the_optimized_graph_is_checked_against_pytorch(
    stage_inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = onnx_utils.optimize_graph

    def optimize_then_perturb(*args: Any, **kwargs: Any) -> tuple[Path, dict[str, Any]]:
        assert not kwargs.get("rewrites")  # never CLS-pruned
        path, settings = real(*args, **kwargs)
        _shift_classifier_bias(path, np.full(len(TAGS), 0.25, dtype=np.float32))
        return path, settings

    monkeypatch.setattr(onnx_utils, "optimize_graph", optimize_then_perturb)
    out = tmp_path / "stage"
    with pytest.raises(ParityError) as caught:
        _run(stage_inputs, out)
    assert "model_optimized.onnx" in str(caught.value)
    assert caught.value.differences["logits"] == pytest.approx(0.25, abs=1e-3)
    assert not (out / "bundle").exists()


def test_the_fp32_embedding_candidates_build_and_no_optimizer_runs_at_level_0(
    stage_inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["dynamic", "dynamic-fp32-embeddings"]
    metrics = _run(stage_inputs, tmp_path / "all", candidates=names, max_f1_drop=1.0)
    records = {r["name"]: r for r in metrics["candidates"]}
    assert list(records) == names and all("error" not in r for r in records.values())
    assert records["dynamic"]["bytes"] < records["dynamic-fp32-embeddings"]["bytes"]
    assert "Gather" not in records["dynamic-fp32-embeddings"]["settings"]["operators"]

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("optimize_graph must not run")

    monkeypatch.setattr(onnx_utils, "optimize_graph", refuse)
    metrics = _run(stage_inputs, tmp_path / "level0", optimization_level=0)
    assert [r["name"] for r in metrics["candidates"]] == ["dynamic"]
    assert metrics["student"]["optimization"]["level"] == 0


def test_quantization_none_deploys_fp32_with_no_candidates(
    stage_inputs: dict[str, Path], tmp_path: Path
) -> None:
    metrics = _run(stage_inputs, tmp_path / "stage", quantization="none")
    assert metrics["candidates"] == [] and metrics["chosen"] is None
    assert metrics["deployed"] == "fp32"
    assert (
        metrics["student"]["optimization"]["skipped"] == "no '-optimized' int8 candidate to build"
    )
    test = read_tagged_split(stage_inputs["data"], "test")
    assert metrics["test"]["examples"] == len(test)
