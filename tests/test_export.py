"""The export stage: ONNX export, parity, int8 quantization, accuracy gate and the bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import numpy as np
import onnx
import pytest
from conftest import (
    LABELS,
    SHORT_TIMING,
    build_tiny_classifier,
    make_data_stage,
    set_label_maps,
    synthetic_rows,
    write_vocab,
)

from distill.config import DataConfig, ExportCandidate, ExportConfig
from distill.data.files import load_logits
from distill.errors import AccuracyDropError, ParityError, RecipeError
from distill.export import candidates
from distill.export import onnx as onnx_utils
from distill.export.bundle import read_bundle
from distill.export.gate import Gate
from distill.pipeline.artifacts import RunContext, read_manifest, sha256_file, verify_files
from distill.serving.session import onnx_session
from distill.tasks.classification.pruning import prune_to_first_token
from distill.tasks.classification.stages import export as export_stage

MAX_LENGTH = 32


def _make_wider_bert_student(folder: Path) -> Path:
    """A 2-layer BERT with hidden size 128: big enough for static QDQ int8 to be smaller than
    fp32 (at hidden size 32 the scales and zero points outweigh the saved weight bytes)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(0)
    tokenizer = BertTokenizerFast(vocab=str(write_vocab(folder)), do_lower_case=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        max_position_embeddings=64,
        num_labels=len(LABELS),
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    set_label_maps(folder)
    return folder


def _make_distilbert_student(folder: Path) -> Path:
    """A tiny DistilBERT (its graph has no token_type_ids) with the conftest tokenizer."""
    import torch
    from transformers import (
        BertTokenizerFast,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    torch.manual_seed(0)
    tokenizer = BertTokenizerFast(vocab=str(write_vocab(folder)), do_lower_case=True)
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size,
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=64,
        num_labels=len(LABELS),
    )
    DistilBertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def stage_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export-inputs")
    model_dir = build_tiny_classifier(root / "student" / "model", num_labels=len(LABELS), layers=2)
    set_label_maps(model_dir)
    return {"data": make_data_stage(root / "data"), "student": root / "student"}


@pytest.fixture(scope="module", autouse=True)
def _shared_student_exported_once(
    stage_inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """Most tests here run the stage on the same student: its fp32 graph is exported (for
    real, ~4 s) the first time and copied after, per opset. Every stage still checks the
    copy against PyTorch; other models are exported each time."""
    import shutil

    real_export = onnx_utils.export_onnx
    shared = (stage_inputs["student"] / "model").resolve()
    done: dict[tuple[str, int | None], Path] = {}  # the first export's graph

    def export_once(model_dir: Path, out_dir: Path, *, model_class: str, opset: int | None = None):
        if Path(model_dir).resolve() != shared:
            return real_export(model_dir, out_dir, model_class=model_class, opset=opset)
        if (model_class, opset) not in done:
            first = tmp_path_factory.mktemp("shared-student-onnx") / "fp32"
            done[model_class, opset] = real_export(
                model_dir, first, model_class=model_class, opset=opset
            )
        graph = done[model_class, opset]
        shutil.copytree(graph.parent, out_dir, dirs_exist_ok=True)
        return Path(out_dir) / graph.name

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnx_utils, "export_onnx", export_once)
        yield


def _run(inputs: dict[str, Path], out: Path, **export_settings: Any) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(
        name="t", seed=13, task="sequence-classification", workdir=out.parent, recipe_dir=out.parent
    )
    data = DataConfig(path="unused.csv", max_length=MAX_LENGTH)
    return export_stage.run(
        ctx, inputs, out, data=data, export=ExportConfig(**{**SHORT_TIMING, **export_settings})
    )


@pytest.fixture(scope="module")
def dynamic_run(stage_inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("export-dynamic") / "stage"
    metrics = _run(stage_inputs, out, quantization="dynamic", max_accuracy_drop=1.0)
    return out, metrics


def _op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


# --------------------------------------------------------------------------- dynamic


def test_dynamic_export_metrics_are_sane(dynamic_run: tuple[Path, dict[str, Any]]) -> None:
    out, metrics = dynamic_run
    assert 0 <= metrics["parity_max_abs_diff"] <= 1e-4
    assert set(metrics["parity_differences"]) == {"logits"}
    for key in ("fp32_accuracy", "fp32_macro_f1", "int8_accuracy", "int8_macro_f1"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["accuracy_drop"] == pytest.approx(
        metrics["fp32_accuracy"] - metrics["int8_accuracy"]
    )
    assert metrics["test_examples"] == 40
    assert 0 < metrics["int8_bytes"] < metrics["fp32_bytes"]
    assert metrics["deployed"] == "int8" and metrics["deployed_bytes"] == metrics["int8_bytes"]
    assert metrics["input_names"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert metrics["output_names"] == ["logits"]
    assert isinstance(metrics["opset"], int) and metrics["opset"] >= 11
    q = metrics["quantization"]
    assert q["mode"] == "dynamic" and q["format"] == "QOperator"
    assert (q["weights_dtype"], q["per_channel"], q["reduce_range"]) == ("QInt8", True, True)
    assert metrics["fp32_latency_ms"] > 0 and metrics["int8_latency_ms"] > 0
    # The timing export.latency_* asked for (SHORT_TIMING here), recorded as it was done.
    assert metrics["latency_check"] == {
        "batch_size": 1,
        "seq_len": MAX_LENGTH,
        "threads": onnx_utils.SESSION_THREADS,
        "runs": 6,
        "warmup": 1,
        "rounds": 2,
    }
    assert (metrics["fp32_latency"]["runs"], metrics["fp32_latency"]["warmup"]) == (6, 1)
    # the fused graph was checked against PyTorch with the same tolerance
    optimization = metrics["optimization"]
    assert optimization["level"] == 2 and optimization["parity_max_abs_diff"] <= 1e-4
    assert set(optimization["parity_differences"]) == {"logits"}
    assert optimization["fused_operators"]["com.microsoft:Attention"] == 2
    assert optimization["nodes"] < optimization["nodes_before"]
    # ... after the last layer was cut to the first token past its attention
    assert optimization["cls_pruning"]["applied"] is True
    assert optimization["cls_pruning"]["first_token_nodes"] >= 4
    # the default dynamic candidates, every one built, scored, weighed and timed
    records = {r["name"]: r for r in metrics["candidates"]}
    assert list(records) == ["dynamic", "dynamic-optimized"]
    for name, r in records.items():
        assert "error" not in r, name
        assert r["bytes"] > 0 and 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["macro_f1"] <= 1.0
        assert 0.0 <= r["agreement_with_fp32"] <= 1.0
        assert r["accuracy_drop"] == pytest.approx(metrics["fp32_accuracy"] - r["accuracy"])
        assert (
            r["latency_b1"]["p50_ms"] > 0 and r["latency_b1"]["p95_ms"] >= r["latency_b1"]["p50_ms"]
        )
        assert r["qualifies"] is True and r["settings"]["candidate"] == name
    assert records["dynamic"]["settings"]["graph"] == "plain"
    assert records["dynamic-optimized"]["settings"]["graph"] == "optimized"
    assert records["dynamic-optimized"]["settings"]["optimization_level"] == 2
    chosen = records[metrics["chosen"]]
    assert metrics["quantization"] == chosen["settings"]
    assert metrics["int8_bytes"] == chosen["bytes"]
    assert metrics["int8_accuracy"] == chosen["accuracy"]
    assert metrics["int8_latency_ms"] == chosen["latency_b1"]["p50_ms"]
    assert metrics["chosen_reason"].startswith("fastest at batch 1")
    # the fastest qualifying p50, up to the documented tie margin
    fastest = min(r["latency_b1"]["p50_ms"] for r in records.values())
    assert chosen["latency_b1"]["p50_ms"] <= fastest * (1 + candidates.LATENCY_TIE)
    json.dumps(metrics)  # the pipeline stores it in the stage manifest
    assert not list(out.glob(".export-work-*")), "the temporary export folder must be removed"


def test_bundle_layout_and_manifest_hashes(dynamic_run: tuple[Path, dict[str, Any]]) -> None:
    out, metrics = dynamic_run
    bundle = out / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    roles = {rel: entry["role"] for rel, entry in manifest["files"].items()}
    assert roles["model.onnx"] == "int8"
    assert roles["fp32/model_fp32.onnx"] == "fp32"
    assert roles["config.json"] == "config"
    assert roles["quantization.json"] == "quantization-config"
    assert roles["tokenizer.json"] == "tokenizer"
    assert "tokenizer_config.json" in roles  # transformers 5 writes no vocab.txt beside it
    # every file is listed, and the hashes and sizes are the files'
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert on_disk == set(manifest["files"]) | {"manifest.json"}
    for rel, entry in manifest["files"].items():
        assert entry["sha256"] == sha256_file(bundle / rel), rel
        assert entry["bytes"] == (bundle / rel).stat().st_size, rel
    assert read_manifest(bundle) is not None and verify_files(bundle, manifest) == []
    # the one bundle reader, as `distill predict` runs it, accepts what the stage wrote
    assert read_bundle(bundle, command="predict").manifest == manifest
    assert (
        len(list(bundle.glob("*.onnx"))) == 1 and len(list((bundle / "fp32").glob("*.onnx"))) == 1
    )
    assert manifest["labels"] == LABELS
    assert manifest["max_length"] == MAX_LENGTH
    assert manifest["input_names"] == metrics["input_names"]
    assert manifest["opset"] == metrics["opset"]
    assert manifest["quantization"] == metrics["quantization"]
    assert manifest["metrics"]["int8_accuracy"] == metrics["int8_accuracy"]
    assert manifest["metrics"]["parity_max_abs_diff"] == metrics["parity_max_abs_diff"]
    assert manifest["files"]["model.onnx"]["bytes"] == metrics["int8_bytes"]
    assert manifest["files"]["fp32/model_fp32.onnx"]["bytes"] == metrics["fp32_bytes"]
    # the deployed model really is int8, the reference fp32
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= _op_types(bundle / "model.onnx")
    assert "MatMulInteger" not in _op_types(bundle / "fp32" / "model_fp32.onnx")
    config = json.loads((bundle / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    # every candidate and the chosen one, with why
    assert manifest["candidates"] == json.loads(json.dumps(metrics["candidates"]))
    assert manifest["chosen"] == metrics["chosen"] and manifest["chosen"] in {
        r["name"] for r in manifest["candidates"]
    }
    assert manifest["chosen_reason"] == metrics["chosen_reason"]
    assert manifest["optimization"]["level"] == 2
    # the quantizer's settings next to the model, plus the quantizer call
    record = json.loads((bundle / "quantization.json").read_text())
    assert record["quantization"]["is_static"] is False
    assert record["quantization"]["per_channel"] is True
    assert record["quantization"]["weights_dtype"] == "QInt8"
    assert record["quantizer"]["function"] == "onnxruntime.quantization.quantize_dynamic"
    assert record["quantizer"]["extra_options"]["DefaultTensorType"] == "FLOAT"
    if manifest["quantization"]["graph"] == "optimized":
        assert record["optimization"]["level"] == 2


def test_bundle_runs_with_plain_onnxruntime_and_tokenizers(
    dynamic_run: tuple[Path, dict[str, Any]],
) -> None:
    """What the model card shows: tokenizer.json, model.onnx and config.json, nothing else."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    out, _ = dynamic_run
    bundle = out / "bundle"
    texts = [text for text, _ in synthetic_rows(6, seed=9)]
    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_LENGTH)
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    rows = []
    for text in texts:
        encoding = tokenizer.encode(text)
        feeds = {
            i.name: np.array([getattr(encoding, fields[i.name])], dtype=np.int64)
            for i in session.get_inputs()
        }
        rows.append(session.run(["logits"], feeds)[0][0])
    direct = onnx_utils.predict_logits(
        bundle / "model.onnx", _tokenizer(bundle), texts, max_length=MAX_LENGTH, batch_size=1
    )
    np.testing.assert_allclose(np.stack(rows), direct, atol=1e-5)
    assert json.loads((bundle / "config.json").read_text())["id2label"]["1"] == "positive"


def test_saved_test_logits_match_the_bundle(
    dynamic_run: tuple[Path, dict[str, Any]], stage_inputs: dict[str, Path]
) -> None:
    from distill.tasks.classification.files import read_split
    from distill.tasks.classification.metrics import classification_metrics

    out, metrics = dynamic_run
    test = read_split(stage_inputs["data"], "test")
    bundle = out / "bundle"
    tokenizer = _tokenizer(bundle)
    for precision, model in (
        ("int8", bundle / "model.onnx"),
        ("fp32", bundle / "fp32" / "model_fp32.onnx"),
    ):
        ids, logits = load_logits(out / "predictions" / f"test_{precision}.npz", test.ids)
        assert ids == test.ids and logits.shape == (len(test), len(LABELS))
        expected = onnx_utils.predict_logits(model, tokenizer, test.texts, max_length=MAX_LENGTH)
        np.testing.assert_allclose(logits, expected, atol=1e-5)
        scores = classification_metrics(logits, test.labels, len(LABELS))
        assert scores["accuracy"] == pytest.approx(metrics[f"{precision}_accuracy"])


# --------------------------------------------------------------------------- static / none


def test_every_candidate_builds_a_model_that_runs(
    stage_inputs: dict[str, Path], tmp_path: Path
) -> None:
    """All five candidates on a 2-layer BERT with hidden size 128, static QDQ included."""
    _make_wider_bert_student(tmp_path / "student" / "model")
    inputs = {"data": stage_inputs["data"], "student": tmp_path / "student"}
    out = tmp_path / "stage"
    names = list(candidates.CANDIDATES)
    metrics = _run(
        inputs,
        out,
        quantization="static",
        candidates=names,
        calibration_samples=24,
        max_accuracy_drop=1.0,
    )
    records = {r["name"]: r for r in metrics["candidates"]}
    assert list(records) == names
    for name, r in records.items():
        assert "error" not in r, (name, r.get("error"))
        # scored on the whole test split and timed: the int8 graph ran
        assert 0.0 <= r["accuracy"] <= 1.0 and r["latency_b1"]["p50_ms"] > 0, name
        assert 0 < r["bytes"] < metrics["fp32_bytes"], name
    # int8 embeddings make the file smaller, on the plain and on the fused graph
    assert records["dynamic"]["bytes"] < records["dynamic-fp32-embeddings"]["bytes"]
    assert (
        records["dynamic-optimized"]["bytes"]
        < records["dynamic-optimized-fp32-embeddings"]["bytes"]
    )
    assert "Gather" in records["dynamic"]["settings"]["operators"]
    assert "Gather" not in records["dynamic-fp32-embeddings"]["settings"]["operators"]
    static = records["static"]["settings"]
    assert (static["mode"], static["format"], static["graph"]) == ("static", "QDQ", "plain")
    assert static["calibration"] == {"method": "minmax", "split": "train", "samples": 24}
    # the deployed file is the chosen candidate, and it runs
    bundle = out / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["chosen"] == metrics["chosen"] in records
    assert manifest["files"]["model.onnx"]["bytes"] == records[metrics["chosen"]]["bytes"]
    record = json.loads((bundle / "quantization.json").read_text())
    assert record["quantization"]["is_static"] is (metrics["chosen"] == "static")
    logits = onnx_utils.predict_logits(
        bundle / "model.onnx", _tokenizer(bundle), ["good fun today"], max_length=8
    )
    assert logits.shape == (1, 2) and np.isfinite(logits).all()


def test_candidates_follow_the_quantization_key() -> None:
    assert set(get_args(ExportCandidate)) == set(candidates.CANDIDATES)
    assert ExportConfig().candidate_names() == ["dynamic", "dynamic-optimized"]
    assert ExportConfig(optimization_level=0).candidate_names() == ["dynamic"]
    assert ExportConfig(quantization="static").candidate_names() == ["static"]
    assert ExportConfig(quantization="none").candidate_names() == []
    assert ExportConfig(candidates=["static", "dynamic"]).candidate_names() == [
        "static",
        "dynamic",
    ]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"quantization": "none", "candidates": ["dynamic"]}, "export.candidates needs"),
        ({"candidates": ["dynamic-optimized"], "optimization_level": 0}, "optimization_level"),
        ({"candidates": []}, "at least one"),
        ({"candidates": ["dynamic", "dynamic"]}, "twice"),
        ({"quantization": "none", "require_int8": True}, "require_int8"),
        ({"candidates": ["fp16"]}, "candidates"),
        ({"optimization_level": 3}, "optimization_level"),
        # the dynamo exporter's LayerNormalization has no version below opset 18
        ({"opset": 14}, "export.opset"),
    ],
)
def test_export_keys_are_validated(settings: dict[str, Any], message: str) -> None:
    from distill.config import validate_recipe

    raw = {
        "name": "t",
        "data": {"path": "x.csv"},
        "teacher": {"model": "m"},
        "student": {"num_layers": 1},
        "export": settings,
    }
    with pytest.raises(RecipeError) as caught:
        validate_recipe(raw)
    assert message in str(caught.value)


def test_none_deploys_fp32_and_feeds_only_declared_inputs(tmp_path: Path) -> None:
    """DistilBERT has no token_type_ids input although its tokenizer produces them."""
    data_dir = make_data_stage(tmp_path / "data")
    _make_distilbert_student(tmp_path / "student" / "model")
    set_label_maps(tmp_path / "student" / "model")
    out = tmp_path / "stage"
    metrics = _run(
        {"data": data_dir, "student": tmp_path / "student"}, out, quantization="none", opset=18
    )
    bundle = out / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["files"]["model.onnx"]["role"] == "fp32"
    assert manifest["precision"] == "fp32" and manifest["fp32_reference"] is None
    assert not (bundle / "fp32").exists() and not (bundle / "quantization.json").exists()
    assert "MatMulInteger" not in _op_types(bundle / "model.onnx")
    assert metrics["input_names"] == ["input_ids", "attention_mask"]
    assert metrics["opset"] == 18 and manifest["opset"] == 18
    assert metrics["quantization"] == {"mode": "none"}
    assert metrics["int8_accuracy"] is None and metrics["accuracy_drop"] is None
    assert metrics["deployed_bytes"] == metrics["fp32_bytes"]
    assert (out / "predictions" / "test_fp32.npz").is_file()
    assert not (out / "predictions" / "test_int8.npz").exists()


# --------------------------------------------------------------------------- gates


def _degrade_int8(monkeypatch: pytest.MonkeyPatch, labels: np.ndarray, wrong: int) -> None:
    """fp32 (model.onnx) predicts every test label; every int8 file gets ``wrong`` of them wrong."""
    right = np.eye(len(LABELS), dtype=np.float32)[labels]
    degraded = right.copy()
    degraded[:wrong] = 1.0 - degraded[:wrong]
    real_predict = onnx_utils.predict_logits

    def fake(model_path: Path, tokenizer: Any, texts: Any, **kwargs: Any) -> np.ndarray:
        if len(texts) != len(labels):  # not the test split
            return real_predict(model_path, tokenizer, texts, **kwargs)
        real_predict(model_path, tokenizer, texts, **kwargs)  # still runs the real session
        return right if model_path.name == "model.onnx" else degraded

    monkeypatch.setattr(onnx_utils, "predict_logits", fake)


def test_accuracy_gate_falls_back_to_fp32(
    stage_inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every candidate loses 2 of 40 test examples (0.05) against a budget of 0.02: fp32 is
    deployed, with the bundle layout of quantization = 'none', and the metrics say why."""
    from distill.tasks.classification.files import read_split

    _degrade_int8(monkeypatch, read_split(stage_inputs["data"], "test").labels, wrong=2)
    out = tmp_path / "stage"
    metrics = _run(
        stage_inputs, out, candidates=["dynamic", "dynamic-optimized"], max_accuracy_drop=0.02
    )
    assert metrics["deployed"] == "fp32" and metrics["chosen"] is None
    assert "no int8 candidate within export.max_accuracy_drop = 0.02" in metrics["chosen_reason"]
    assert "fp32 deployed" in metrics["chosen_reason"]
    assert [r["name"] for r in metrics["candidates"]] == ["dynamic", "dynamic-optimized"]
    for r in metrics["candidates"]:
        assert r["accuracy_drop"] == pytest.approx(0.05) and r["qualifies"] is False
    assert metrics["quantization"] == {"mode": "none"}
    assert metrics["int8_accuracy"] is None and metrics["int8_bytes"] is None
    bundle = out / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["precision"] == "fp32" and manifest["chosen"] is None
    assert manifest["files"]["model.onnx"]["role"] == "fp32"
    assert len(manifest["candidates"]) == 2 and manifest["fp32_reference"] is None
    assert not (bundle / "fp32").exists() and not (bundle / "quantization.json").exists()
    assert "MatMulInteger" not in _op_types(bundle / "model.onnx")
    assert not (out / "predictions" / "test_int8.npz").exists()


def test_accuracy_gate_raises_when_int8_is_required(
    stage_inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distill.tasks.classification.files import read_split

    _degrade_int8(monkeypatch, read_split(stage_inputs["data"], "test").labels, wrong=40)
    out = tmp_path / "stage"
    with pytest.raises(AccuracyDropError) as caught:
        _run(
            stage_inputs,
            out,
            candidates=["dynamic"],
            max_accuracy_drop=0.05,
            require_int8=True,
        )
    message = str(caught.value)
    assert "export.max_accuracy_drop = 0.05" in message and "export.require_int8" in message
    assert "1.0000" in message  # fp32's accuracy
    assert "dynamic accuracy 0.0000 (drop +1.0000)" in message
    assert not (out / "bundle").exists()


def test_accuracy_gate_allows_a_drop_within_the_limit(
    stage_inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One test example (of 40) lost is a 0.025 drop: allowed at 0.05."""
    from distill.tasks.classification.files import read_split

    _degrade_int8(monkeypatch, read_split(stage_inputs["data"], "test").labels, wrong=1)
    metrics = _run(stage_inputs, tmp_path / "stage", candidates=["dynamic"], max_accuracy_drop=0.05)
    assert metrics["fp32_accuracy"] == 1.0 and metrics["chosen"] == "dynamic"
    assert metrics["accuracy_drop"] == pytest.approx(1 / 40)


def _record(name: str, p50: float, size: int, drop: float = 0.0, agree: float = 1.0) -> dict:
    return {
        "name": name,
        "bytes": size,
        "accuracy": 0.9 - drop,
        "accuracy_drop": drop,
        "agreement_with_fp32": agree,
        "latency_b1": {"p50_ms": p50},
    }


GATE = Gate("export.max_accuracy_drop", 0.02)


def test_with_no_optimized_graph_optimized_candidates_go_or_turn_plain() -> None:
    """A student drops them; a teacher baseline (plain_fallback) builds each one's plain twin,
    its embeddings kept as the candidate asked, once."""
    wanted = [
        candidates.CANDIDATES[name]
        for name in ("dynamic-optimized-fp32-embeddings", "dynamic-optimized", "dynamic")
    ]
    dropped = candidates.without_optimized(wanted, plain_fallback=False)
    assert [c.name for c in dropped] == ["dynamic"]
    twins = candidates.without_optimized(wanted, plain_fallback=True)
    assert [c.name for c in twins] == ["dynamic-fp32-embeddings", "dynamic"]


def test_choice_is_the_fastest_within_the_budget() -> None:
    choose = candidates.choose_candidate
    records = [
        _record("a", 2.0, 100),
        _record("b", 1.0, 100, drop=0.03),  # fastest, but loses too much
        _record("c", 1.5, 300),
        {"name": "d", "error": "RuntimeError: boom", "qualifies": False},
    ]
    name, reason = choose(records, GATE)
    assert name == "c" and "1.50 ms" in reason and "b, d" in reason
    # within the tie margin the smaller file wins; sizes within it too: the better agreement
    name, reason = choose([_record("a", 1.02, 100), _record("c", 1.0, 300)], GATE)
    assert name == "a" and "tied within 5% with c, so the smaller file" in reason
    name, reason = choose(
        [_record("a", 1.0, 100, agree=0.98), _record("c", 1.04, 104, agree=0.99)], GATE
    )
    assert name == "c" and "so the closest agreement with fp32" in reason
    name, _ = choose([_record("a", 1.0, 100, agree=0.98), _record("c", 1.0, 200)], GATE)
    assert name == "a"
    # nothing qualifies, or nothing was asked for
    name, reason = choose([_record("b", 1.0, 100, drop=0.03)], GATE)
    assert name is None and "fp32 deployed" in reason
    assert choose([], GATE)[0] is None


def test_a_candidate_that_fails_to_build_is_recorded(
    stage_inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = onnx_utils.quantize_dynamic

    def fail_on_fused(onnx_path: Path, *args: Any, **kwargs: Any) -> Path:
        if "optimized" in onnx_path.name:
            raise RuntimeError("Unable to find data type for weight_name='x'")
        return real(onnx_path, *args, **kwargs)

    monkeypatch.setattr(onnx_utils, "quantize_dynamic", fail_on_fused)
    metrics = _run(
        stage_inputs,
        tmp_path / "stage",
        candidates=["dynamic", "dynamic-optimized"],
        max_accuracy_drop=1.0,
    )
    failed = metrics["candidates"][1]
    assert failed["name"] == "dynamic-optimized" and "Unable to find data type" in failed["error"]
    assert failed["qualifies"] is False and metrics["chosen"] == "dynamic"


def test_parity_error_when_onnx_differs_from_pytorch(
    stage_inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exported graph's classifier bias is changed after export: ONNX != PyTorch."""
    real_export = onnx_utils.export_onnx

    def export_then_perturb(model_dir: Path, out_dir: Path, **kwargs: Any) -> Path:
        path = real_export(model_dir, out_dir, **kwargs)
        _shift_classifier_bias(path, 0.5)
        return path

    monkeypatch.setattr(onnx_utils, "export_onnx", export_then_perturb)
    out = tmp_path / "stage"
    with pytest.raises(ParityError) as caught:
        _run(stage_inputs, out, quantization="dynamic")
    assert "logits" in str(caught.value)
    assert caught.value.differences["logits"] == pytest.approx(0.5, abs=1e-3)
    assert caught.value.tolerance == 1e-4
    assert not (out / "bundle").exists()


def _shift_classifier_bias(path: Path, shift: float) -> None:
    """Add ``shift`` to every logit: an Add node between the head and the graph output."""
    model = onnx.load(str(path))
    producer = next(n for n in model.graph.node if "logits" in n.output)
    producer.output[list(producer.output).index("logits")] = "logits_before_shift"
    model.graph.initializer.append(
        onnx.numpy_helper.from_array(np.asarray([shift], dtype=np.float32), "test_shift")
    )
    model.graph.node.append(
        onnx.helper.make_node("Add", ["logits_before_shift", "test_shift"], ["logits"])
    )
    onnx.save(model, str(path))


def test_parity_error_when_the_optimized_graph_differs(
    stage_inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plain export is exact; the fused graph is broken after optimization."""
    real_optimize = onnx_utils.optimize_graph

    def optimize_then_perturb(*args: Any, **kwargs: Any) -> tuple[Path, dict[str, Any]]:
        path, settings = real_optimize(*args, **kwargs)
        _shift_classifier_bias(path, 0.25)
        return path, settings

    monkeypatch.setattr(onnx_utils, "optimize_graph", optimize_then_perturb)
    out = tmp_path / "stage"
    with pytest.raises(ParityError) as caught:
        _run(stage_inputs, out, candidates=["dynamic", "dynamic-optimized"])
    assert "model_optimized.onnx" in str(caught.value)
    assert caught.value.differences["logits"] == pytest.approx(0.25, abs=1e-3)
    assert caught.value.tolerance == 1e-4
    assert not (out / "bundle").exists()


def test_no_optimization_without_optimized_candidates(
    stage_inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("optimize_graph must not run")

    monkeypatch.setattr(onnx_utils, "optimize_graph", refuse)
    metrics = _run(stage_inputs, tmp_path / "stage", optimization_level=0, max_accuracy_drop=1.0)
    assert metrics["optimization"] == {"level": 0}
    assert [r["name"] for r in metrics["candidates"]] == ["dynamic"]


def test_unsupported_model_type_drops_the_optimized_candidates(
    stage_inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(*args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("ONNX Runtime doesn't support the graph optimization of x")

    monkeypatch.setattr(onnx_utils, "optimize_graph", unsupported)
    metrics = _run(stage_inputs, tmp_path / "stage", max_accuracy_drop=1.0)
    assert metrics["optimization"]["skipped"].startswith("ONNX Runtime doesn't support")
    assert [r["name"] for r in metrics["candidates"]] == ["dynamic"]
    assert metrics["chosen"] == "dynamic"


def test_cls_pruning_is_exact_and_refuses_other_graphs(
    dynamic_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    out, _ = dynamic_run
    bundle = out / "bundle"
    fused, settings = onnx_utils.optimize_graph(
        bundle / "fp32" / "model_fp32.onnx", tmp_path / "fused", level=2
    )
    assert "cls_pruning" not in settings
    pruned = tmp_path / "pruned.onnx"
    pruned.write_bytes(fused.read_bytes())
    done = prune_to_first_token(pruned)
    assert done["applied"] is True and done["readers"]
    slices = [n.name for n in onnx.load(str(pruned)).graph.node if n.op_type == "Slice"]
    assert sum(name.endswith("/first_token") for name in slices) == 2
    # the same logits, padded to max_length and to the longest text
    tokenizer = _tokenizer(bundle)
    texts = [text for text, _ in synthetic_rows(12, seed=21)]
    for padding in ("max_length", "longest"):
        session = onnx_session(fused, onnx_utils.SESSION_THREADS)
        feeds = onnx_utils.session_feeds(
            session, tokenizer, texts, max_length=MAX_LENGTH, padding=padding
        )
        expected = session.run(["logits"], feeds)[0]
        got = onnx_session(pruned, onnx_utils.SESSION_THREADS).run(["logits"], feeds)[0]
        np.testing.assert_allclose(got, expected, atol=1e-5)
    # a graph that also outputs the last hidden state is left alone
    model = onnx.load(str(fused))
    last = [n for n in model.graph.node if n.op_type == "SkipLayerNormalization"][-1]
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(last.output[0]))
    exposed = tmp_path / "exposed.onnx"
    onnx.save(model, str(exposed))
    before = exposed.read_bytes()
    refused = prune_to_first_token(exposed)
    assert refused["applied"] is False and "token 0 only" in refused["reason"]
    assert exposed.read_bytes() == before
    # and so is a graph without fused attention
    plain = bundle / "fp32" / "model_fp32.onnx"
    assert prune_to_first_token(plain) == {
        "applied": False,
        "reason": "no fused Attention node",
    }


def test_check_parity_passes_within_tolerance(
    dynamic_run: tuple[Path, dict[str, Any]], stage_inputs
) -> None:
    from transformers import AutoModelForSequenceClassification

    out, _ = dynamic_run
    model_dir = stage_inputs["student"] / "model"
    torch_model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    texts = [text for text, _ in synthetic_rows(5, seed=4)]
    differences = onnx_utils.check_parity(
        out / "bundle" / "fp32" / "model_fp32.onnx",
        torch_model,
        _tokenizer(model_dir),
        texts,
        max_length=MAX_LENGTH,
        tolerance=1e-4,
    )
    assert set(differences) == {"logits"} and differences["logits"] <= 1e-4


def test_bundle_has_a_model_card_and_a_clean_tokenizer(
    dynamic_run: tuple[Path, dict[str, Any]],
) -> None:
    import json

    from huggingface_hub import ModelCard

    out, metrics = dynamic_run
    bundle = out / "bundle"
    card = ModelCard.load(bundle / "README.md")
    assert "distillation" in card.data.tags
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["files"]["README.md"]["role"] == "model-card"
    assert manifest["metrics"]["int8_latency_ms"] == metrics["int8_latency_ms"]
    # tokenizer.json must not carry the fixed-length padding used while timing the models.
    assert json.loads((bundle / "tokenizer.json").read_text()).get("padding") is None
    onnx.checker.check_model(str(bundle / "model.onnx"), full_check=True)


# --------------------------------------------------------------------------- teacher baseline


def _teacher_stage(folder: Path, data_dir: Path) -> tuple[Path, np.ndarray]:
    """A finished teacher folder: a tiny 4-layer model and its PyTorch test logits."""
    import torch

    from distill.data.files import save_logits
    from distill.tasks.classification.files import read_split

    model_dir = build_tiny_classifier(folder / "model", num_labels=len(LABELS), layers=4, seed=1)
    set_label_maps(model_dir)
    test = read_split(data_dir, "test")
    tokenizer = _tokenizer(model_dir)
    from distill.tasks.classification.models import load_saved_classifier

    model = load_saved_classifier(model_dir).eval()
    encoded = tokenizer(
        test.texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
    )
    with torch.inference_mode():
        logits = model(**encoded).logits.numpy()
    (folder / "logits").mkdir()
    save_logits(folder / "logits" / "test.npz", test.ids, logits)
    return folder, logits


@pytest.fixture(scope="module")
def teacher_run(stage_inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("export-teacher")
    teacher, pytorch_logits = _teacher_stage(root / "teacher", stage_inputs["data"])
    out = root / "stage"
    metrics = _run({**stage_inputs, "teacher": teacher}, out, max_accuracy_drop=1.0)
    return out, metrics, pytorch_logits


def test_teacher_is_exported_with_the_students_candidate_and_scored(
    teacher_run: tuple[Path, dict[str, Any], np.ndarray], stage_inputs: dict[str, Path]
) -> None:
    from distill.tasks.classification.files import read_split

    out, metrics, pytorch_logits = teacher_run
    test = read_split(stage_inputs["data"], "test")
    baseline = metrics["teacher_baseline"]
    assert baseline["int8"]["candidate"] == metrics["chosen"]
    assert baseline["parity_max_abs_diff"] <= 1e-4
    for precision, name in (("fp32", "model_fp32.onnx"), ("int8", "model_int8.onnx")):
        scores = baseline[precision]
        logits = load_logits(out / "teacher" / "predictions" / f"test_{precision}.npz", test.ids)[1]
        predicted = logits.argmax(-1)
        assert scores["accuracy"] == pytest.approx(float((predicted == test.labels).mean()))
        assert scores["agreement_with_pytorch"] == pytest.approx(
            float((predicted == pytorch_logits.argmax(-1)).mean())
        )
        assert scores["bytes"] == (out / "teacher" / name).stat().st_size
        assert scores["file"] == f"teacher/{name}"
    assert baseline["fp32"]["agreement_with_pytorch"] == 1.0  # within the parity tolerance
    assert baseline["int8"]["bytes"] < baseline["fp32"]["bytes"]
    # A baseline, not a deliverable: nothing of the teacher goes into the bundle.
    assert not any("teacher" in p.name for p in (out / "bundle").rglob("*"))


def test_teacher_baseline_can_be_turned_off(stage_inputs: dict[str, Path], tmp_path: Path) -> None:
    from distill.tasks.classification.files import read_split

    skipped = export_stage._teacher_baseline(
        RunContext(
            name="t", seed=1, task="sequence-classification", workdir=tmp_path, recipe_dir=tmp_path
        ),
        {**stage_inputs, "teacher": tmp_path / "unused"},
        read_split(stage_inputs["data"], "test"),
        tmp_path,
        DataConfig(path="unused.csv", max_length=MAX_LENGTH),
        ExportConfig(teacher_baseline=False),
        {"chosen": "dynamic"},
    )
    assert skipped == {"skipped": "export.teacher_baseline = false"}
    assert not (tmp_path / "teacher").exists()


def test_fusion_counts_and_int8_attention(
    dynamic_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """The dynamo export of a 2-layer BERT fuses into 2 Attention, 4 SkipLayerNormalization
    and 2 BiasGelu nodes; the attention takes the padding mask, so dynamic int8 makes it
    QAttention; the fused graph and its int8 give the plain graph's logits."""
    out, metrics = dynamic_run
    assert metrics["optimization"]["fused_operators"] == {
        "com.microsoft:Attention": 2,
        "com.microsoft:BiasGelu": 2,
        "com.microsoft:SkipLayerNormalization": 4,
    }
    assert metrics["optimization"]["mask_index"]["applied"] is True
    assert metrics["optimization"]["cls_pruning"]["applied"] is True
    plain = out / "bundle" / "fp32" / "model_fp32.onnx"
    fused, settings = onnx_utils.optimize_graph(plain, tmp_path / "fused", level=2)
    assert settings["mask_index"] == {
        "applied": True,
        "attention_nodes": 2,
        "max_abs_diff": pytest.approx(0.0, abs=1e-5),
    }
    config = onnx_utils.quantization_config(
        "dynamic", operators=[*onnx_utils.DYNAMIC_MATMUL_OPERATORS, "Gather"]
    )
    int8 = onnx_utils.quantize_dynamic(fused, tmp_path / "int8", config)
    ops = _op_types(int8)
    assert "QAttention" in ops and "Attention" not in ops
    tokenizer = _tokenizer(out / "bundle")
    texts = [text for text, _ in synthetic_rows(8, seed=5)]
    reference = onnx_utils.predict_logits(plain, tokenizer, texts, max_length=MAX_LENGTH)
    got = onnx_utils.predict_logits(fused, tokenizer, texts, max_length=MAX_LENGTH)
    np.testing.assert_allclose(got, reference, atol=1e-5)
    quantized = onnx_utils.predict_logits(int8, tokenizer, texts, max_length=MAX_LENGTH)
    assert np.abs(quantized - reference).max() < 0.05


def test_a_relative_position_bias_is_not_taken_for_a_mask(tmp_path: Path) -> None:
    """MPNet's attention adds a relative-position bias: the fusions leave it unfused (no
    Attention node), and the mask rewrite says so instead of changing the graph."""
    import torch
    from transformers import BertTokenizerFast, MPNetConfig, MPNetForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path / "mpnet"
    tokenizer = BertTokenizerFast(vocab=str(write_vocab(folder)), do_lower_case=True)
    config = MPNetConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
    )
    MPNetForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    plain = onnx_utils.export_onnx(
        folder, tmp_path / "fp32", model_class="AutoModelForSequenceClassification"
    )
    assert onnx_utils.graph_info(plain)["input_names"] == ["input_ids", "attention_mask"]
    fused, settings = onnx_utils.optimize_graph(plain, tmp_path / "fused", level=2)
    assert settings["fused_operators"]["com.microsoft:SkipLayerNormalization"] >= 4
    assert settings["mask_index"] == {"applied": False, "reason": "no fused Attention node"}
    model = MPNetForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = _tokenizer(folder)
    texts = [text for text, _ in synthetic_rows(6, seed=3)]
    differences = onnx_utils.check_parity(
        fused, model, tokenizer, texts, max_length=MAX_LENGTH, tolerance=1e-4
    )
    assert set(differences) == {"logits"}
