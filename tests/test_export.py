"""The export stage: ONNX export, parity, int8 quantization, accuracy gate and the bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from conftest import build_tiny_classifier, synthetic_rows, write_vocab

from distill import onnx_utils
from distill.artifacts import RunContext, read_manifest, sha256_file, verify_files
from distill.config import DataConfig, ExportConfig
from distill.dataset_files import Split, load_logits, write_label_names, write_split
from distill.errors import AccuracyDropError, ParityError
from distill.stages import export as export_stage

MAX_LENGTH = 32
LABELS = ["negative", "positive"]


def _make_data_stage(folder: Path) -> Path:
    """A finished data-stage folder: train/validation/test JSONL plus labels.json."""
    folder.mkdir(parents=True)
    rows = synthetic_rows(120, seed=3)
    parts = {"train": rows[:64], "validation": rows[64:80], "test": rows[80:]}
    for name, part in parts.items():
        split = Split(
            ids=[f"{name}-{i}" for i in range(len(part))],
            texts=[text for text, _ in part],
            labels=np.asarray([LABELS.index(label) for _, label in part], dtype=np.int64),
        )
        write_split(folder / f"{name}.jsonl", split)
    write_label_names(folder, LABELS)
    return folder


def _label_maps(model_dir: Path) -> None:
    """Give the saved student real id2label/label2id, as the student stage does."""
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    config["id2label"] = {str(i): name for i, name in enumerate(LABELS)}
    config["label2id"] = {name: i for i, name in enumerate(LABELS)}
    path.write_text(json.dumps(config, indent=2))


def _make_wider_bert_student(folder: Path) -> Path:
    """A 2-layer BERT with hidden size 128: big enough for static QDQ int8 to be smaller than
    fp32 (at hidden size 32 the scales and zero points outweigh the saved weight bytes)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(0)
    tokenizer = BertTokenizerFast(vocab_file=str(write_vocab(folder)), do_lower_case=True)
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
    _label_maps(folder)
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
    tokenizer = BertTokenizerFast(vocab_file=str(write_vocab(folder)), do_lower_case=True)
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
    _label_maps(model_dir)
    return {"data": _make_data_stage(root / "data"), "student": root / "student"}


def _run(inputs: dict[str, Path], out: Path, **export_settings: Any) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(
        name="t", seed=13, task="sequence-classification", workdir=out.parent, recipe_dir=out.parent
    )
    data = DataConfig(path="unused.csv", max_length=MAX_LENGTH)
    return export_stage.run(ctx, inputs, out, data=data, export=ExportConfig(**export_settings))


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
    assert roles["ort_config.json"] == "config"
    assert roles["tokenizer.json"] == "tokenizer"
    assert {"tokenizer_config.json", "vocab.txt", "special_tokens_map.json"} <= set(roles)
    # every file is listed, and the hashes and sizes are the files'
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert on_disk == set(manifest["files"]) | {"manifest.json"}
    for rel, entry in manifest["files"].items():
        assert entry["sha256"] == sha256_file(bundle / rel), rel
        assert entry["bytes"] == (bundle / rel).stat().st_size, rel
    assert read_manifest(bundle) is not None and verify_files(bundle, manifest) == []
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


def test_bundle_loads_with_ortmodel_like_onnxruntime(
    dynamic_run: tuple[Path, dict[str, Any]],
) -> None:
    import torch
    from optimum.onnxruntime import ORTModelForSequenceClassification

    out, _ = dynamic_run
    bundle = out / "bundle"
    tokenizer = _tokenizer(bundle)
    texts = [text for text, _ in synthetic_rows(6, seed=9)]
    model = ORTModelForSequenceClassification.from_pretrained(bundle)
    assert Path(model.path).resolve() == (bundle / "model.onnx").resolve()
    encoded = tokenizer(
        texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt"
    )
    with torch.inference_mode():
        via_optimum = model(**encoded).logits.numpy()
    direct = onnx_utils.predict_logits(
        bundle / "model.onnx", tokenizer, texts, max_length=MAX_LENGTH
    )
    np.testing.assert_allclose(via_optimum, direct, atol=1e-5)
    assert model.config.id2label[1] == "positive"


def test_saved_test_logits_match_the_bundle(
    dynamic_run: tuple[Path, dict[str, Any]], stage_inputs: dict[str, Path]
) -> None:
    from distill.dataset_files import read_split
    from distill.metrics import classification_metrics

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


def test_static_quantization_builds_a_smaller_model_that_runs(
    stage_inputs: dict[str, Path], tmp_path: Path
) -> None:
    _make_wider_bert_student(tmp_path / "student" / "model")
    inputs = {"data": stage_inputs["data"], "student": tmp_path / "student"}
    out = tmp_path / "stage"
    metrics = _run(
        inputs, out, quantization="static", calibration_samples=24, max_accuracy_drop=1.0
    )
    bundle = out / "bundle"
    assert metrics["quantization"]["mode"] == "static"
    assert metrics["quantization"]["format"] == "QDQ"
    assert metrics["quantization"]["calibration"] == {
        "method": "minmax",
        "split": "train",
        "samples": 24,
    }
    assert 0 < metrics["int8_bytes"] < metrics["fp32_bytes"]
    assert {"QuantizeLinear", "DequantizeLinear"} <= _op_types(bundle / "model.onnx")
    logits = onnx_utils.predict_logits(
        bundle / "model.onnx", _tokenizer(bundle), ["good fun today"], max_length=8
    )
    assert logits.shape == (1, 2) and np.isfinite(logits).all()
    assert 0.0 <= metrics["int8_accuracy"] <= 1.0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["quantization"]["calibration"]["samples"] == 24
    assert json.loads((bundle / "ort_config.json").read_text())["quantization"]["is_static"] is True


def test_none_deploys_fp32_and_feeds_only_declared_inputs(tmp_path: Path) -> None:
    """DistilBERT has no token_type_ids input although its tokenizer produces them."""
    data_dir = _make_data_stage(tmp_path / "data")
    _make_distilbert_student(tmp_path / "student" / "model")
    _label_maps(tmp_path / "student" / "model")
    out = tmp_path / "stage"
    metrics = _run(
        {"data": data_dir, "student": tmp_path / "student"}, out, quantization="none", opset=14
    )
    bundle = out / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["files"]["model.onnx"]["role"] == "fp32"
    assert manifest["precision"] == "fp32" and manifest["fp32_reference"] is None
    assert not (bundle / "fp32").exists() and not (bundle / "ort_config.json").exists()
    assert "MatMulInteger" not in _op_types(bundle / "model.onnx")
    assert metrics["input_names"] == ["input_ids", "attention_mask"]
    assert metrics["opset"] == 14 and manifest["opset"] == 14
    assert metrics["quantization"] == {"mode": "none"}
    assert metrics["int8_accuracy"] is None and metrics["accuracy_drop"] is None
    assert metrics["deployed_bytes"] == metrics["fp32_bytes"]
    assert (out / "predictions" / "test_fp32.npz").is_file()
    assert not (out / "predictions" / "test_int8.npz").exists()


# --------------------------------------------------------------------------- gates


def test_accuracy_gate_raises_when_int8_loses_accuracy(
    stage_inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fp32 predicts every test label, the int8 model every other label: drop = 1.0."""
    from distill.dataset_files import read_split

    labels = read_split(stage_inputs["data"], "test").labels
    real_predict = onnx_utils.predict_logits

    def degraded(model_path: Path, tokenizer: Any, texts: Any, **kwargs: Any) -> np.ndarray:
        real_predict(model_path, tokenizer, texts, **kwargs)  # still runs the real session
        right = np.eye(len(LABELS), dtype=np.float32)[labels]
        return right if model_path.name == "model.onnx" else 1.0 - right

    monkeypatch.setattr(onnx_utils, "predict_logits", degraded)
    out = tmp_path / "stage"
    with pytest.raises(AccuracyDropError) as caught:
        _run(stage_inputs, out, quantization="dynamic", max_accuracy_drop=0.05)
    message = str(caught.value)
    assert "export.max_accuracy_drop" in message
    assert "1.0000" in message and "0.0000" in message  # both accuracies (and the drop)
    assert "0.05" in message
    assert not (out / "bundle").exists()


def test_accuracy_gate_allows_a_drop_within_the_limit(
    stage_inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One test example (of 40) lost is a 0.025 drop: allowed at 0.05."""
    from distill.dataset_files import read_split

    labels = read_split(stage_inputs["data"], "test").labels
    right = np.eye(len(LABELS), dtype=np.float32)[labels]
    one_wrong = right.copy()
    one_wrong[0] = 1.0 - one_wrong[0]

    def fake(model_path: Path, *args: Any, **kwargs: Any) -> np.ndarray:
        return right if model_path.name == "model.onnx" else one_wrong

    monkeypatch.setattr(onnx_utils, "predict_logits", fake)
    metrics = _run(stage_inputs, tmp_path / "stage", quantization="dynamic", max_accuracy_drop=0.05)
    assert metrics["fp32_accuracy"] == 1.0
    assert metrics["accuracy_drop"] == pytest.approx(1 / 40)


def test_parity_error_when_onnx_differs_from_pytorch(
    stage_inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exported graph's classifier bias is changed after export: ONNX != PyTorch."""
    real_export = onnx_utils.export_onnx

    def export_then_perturb(model_dir: Path, out_dir: Path, **kwargs: Any) -> Path:
        path = real_export(model_dir, out_dir, **kwargs)
        model = onnx.load(str(path))
        biases = [i for i in model.graph.initializer if i.name == "classifier.bias"]
        assert biases, "expected the classifier bias as a named initializer"
        bias = onnx.numpy_helper.to_array(biases[0]) + 0.5
        biases[0].CopyFrom(onnx.numpy_helper.from_array(bias, name="classifier.bias"))
        onnx.save(model, str(path))
        return path

    monkeypatch.setattr(onnx_utils, "export_onnx", export_then_perturb)
    out = tmp_path / "stage"
    with pytest.raises(ParityError) as caught:
        _run(stage_inputs, out, quantization="dynamic")
    assert "logits" in str(caught.value)
    assert caught.value.differences["logits"] == pytest.approx(0.5, abs=1e-3)
    assert caught.value.tolerance == 1e-4
    assert not (out / "bundle").exists()


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
