"""The labels stage: ONNX Runtime logits checked against PyTorch, length-sorted batches put
back in example order, the PyTorch fallback, and the [labels] recipe table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import LABELS, NEGATIVE, NEUTRAL, POSITIVE, build_tiny_classifier
from test_config import MINIMAL
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distill.config import DataConfig, Recipe, validate_recipe
from distill.data.files import SPLITS, load_logits, write_label_names
from distill.errors import LabelParityError, ParityError, RecipeError
from distill.export import onnx as onnx_utils
from distill.pipeline.artifacts import RunContext
from distill.pipeline.stages import STAGES, Dependencies, StageSpec, stage_settings
from distill.tasks.classification.files import Split, read_split, write_split
from distill.tasks.classification.keys import LabelsConfig
from distill.tasks.classification.labelling import length_sample
from distill.tasks.classification.stages import labels as labels_stage
from distill.train.length_order import length_order, unsort

DATA = DataConfig(path="unused.csv", max_length=24)
TOLERANCE = 1e-3


def varied_data_stage(folder: Path) -> Path:
    """A data-stage folder whose texts run from 1 to 20 words, in no length order: ids
    ``<split>-<i>``, 64/16/40 examples."""
    rng = np.random.default_rng(0)
    words = POSITIVE + NEGATIVE + NEUTRAL
    folder.mkdir(parents=True)
    for name, size in {"train": 64, "validation": 16, "test": 40}.items():
        texts = [" ".join(rng.choice(words, size=rng.integers(1, 21))) for _ in range(size)]
        split = Split(
            ids=[f"{name}-{i}" for i in range(size)],
            texts=texts,
            labels=rng.integers(0, 2, size=size),
        )
        write_split(folder / f"{name}.jsonl", split)
    write_label_names(folder, LABELS)
    return folder


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("labels")
    teacher = root / "teacher"
    build_tiny_classifier(teacher / "model", layers=2, seed=5)
    return {"data": varied_data_stage(root / "data"), "teacher": teacher}


def run_stage(upstream: dict[str, Path], out: Path, labels: LabelsConfig) -> dict:
    ctx = RunContext(name="t", seed=7, task="sequence-classification", workdir=out, recipe_dir=out)
    out.mkdir()
    return labels_stage.run(ctx, upstream, out, data=DATA, labels=labels)


def one_at_a_time(model_dir: Path, texts: list[str]) -> np.ndarray:
    """PyTorch logits of each text alone: no padding, no batching, no sorting."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with torch.inference_mode():
        rows = [
            model(**tokenizer([t], truncation=True, max_length=24, return_tensors="pt")).logits[0]
            for t in texts
        ]
    return torch.stack(rows).numpy()


@pytest.fixture(scope="module")
def onnx_run(upstream: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("onnx") / "labels"
    # batch 8: several length-sorted batches per split, so the unsorting is exercised
    metrics = run_stage(upstream, out, LabelsConfig(backend="onnxruntime", batch_size=8))
    return {"out": out, "metrics": metrics}


def test_onnxruntime_logits_equal_pytorch_and_are_stored_in_example_order(
    upstream: dict[str, Path], onnx_run: dict
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(upstream["teacher"] / "model")
    for name in SPLITS:
        split = read_split(upstream["data"], name)
        ids, logits = load_logits(onnx_run["out"] / "logits" / f"{name}.npz")
        assert ids == split.ids
        expected = one_at_a_time(upstream["teacher"] / "model", split.texts)
        assert np.max(np.abs(logits - expected)) <= TOLERANCE
        lengths = onnx_utils.token_lengths(tokenizer, split.texts, max_length=24)
        # the batches really ran in another order than the split's
        assert not np.array_equal(length_order(lengths), np.arange(len(split)))
    metrics = onnx_run["metrics"]
    assert metrics["backend"] == "onnxruntime"
    assert metrics["examples"] == {"train": 64, "validation": 16, "test": 40}
    assert metrics["examples_per_s"] > 0
    assert metrics["onnx"]["precision"] == "fp32"
    assert metrics["onnx"]["optimization"]["level"] == 2
    assert metrics["parity"]["examples"] == 64
    assert metrics["parity"]["tolerance"] == TOLERANCE
    assert 0 <= metrics["parity_max_abs_diff"] <= TOLERANCE


def test_pytorch_fallback_caches_the_same_logits_without_onnx(
    upstream: dict[str, Path], onnx_run: dict, tmp_path: Path
) -> None:
    metrics = run_stage(
        upstream, tmp_path / "labels", LabelsConfig(backend="pytorch", batch_size=8)
    )
    assert metrics["backend"] == "pytorch"
    assert "onnx" not in metrics and "parity" not in metrics
    for name in SPLITS:
        split = read_split(upstream["data"], name)
        ids, logits = load_logits(tmp_path / "labels" / "logits" / f"{name}.npz")
        assert ids == split.ids
        expected = one_at_a_time(upstream["teacher"] / "model", split.texts)
        assert np.max(np.abs(logits - expected)) <= 1e-5
        _, from_onnx = load_logits(onnx_run["out"] / "logits" / f"{name}.npz")
        assert np.max(np.abs(logits - from_onnx)) <= TOLERANCE
    assert metrics["test_accuracy"] == onnx_run["metrics"]["test_accuracy"]


def test_onnxruntime_logits_beyond_the_tolerance_raise_a_parity_error_naming_the_diff(
    upstream: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exact = onnx_utils.session_logits

    def off_by_a_little(*args: object, **kwargs: object) -> np.ndarray:
        logits = exact(*args, **kwargs)
        logits[:, 0] += 0.0125
        return logits

    monkeypatch.setattr(onnx_utils, "session_logits", off_by_a_little)
    out = tmp_path / "labels"
    with pytest.raises(LabelParityError) as info:
        run_stage(upstream, out, LabelsConfig(backend="onnxruntime"))
    assert isinstance(info.value, ParityError)
    assert info.value.max_diff == pytest.approx(0.0125, abs=1e-5)
    message = str(info.value)
    assert "max |diff| 0.0125" in message
    assert "labels.parity_tolerance = 0.001" in message
    assert not list((out / "logits").iterdir())  # nothing cached


def test_length_order_is_longest_first_and_unsort_restores_input_order() -> None:
    lengths = np.array([3, 9, 3, 5, 9, 1])
    order = length_order(lengths)
    assert order.tolist() == [1, 4, 3, 0, 2, 5]  # ties keep their order
    computed = lengths[order] * 10  # a result computed in sorted order
    assert unsort(computed, order).tolist() == [30, 90, 30, 50, 90, 10]


def test_shared_predict_logits_batches_longest_first_and_returns_dataset_order(
    upstream: dict[str, Path], tmp_path: Path
) -> None:
    from distill.tasks.classification.encoding import encode
    from distill.tasks.classification.training import predictor
    from distill.train.trainer import predict_logits

    model_dir = upstream["teacher"] / "model"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    split = read_split(upstream["data"], "test")
    encoded = encode(tokenizer, split, 24, with_labels=False)
    widths: list[int] = []
    model.register_forward_pre_hook(
        lambda _m, _a, kwargs: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    logits = predict_logits(predictor(model, tokenizer, tmp_path, batch_size=8), encoded)
    assert len(widths) == 5 and widths == sorted(widths, reverse=True)  # 40 texts, longest first
    assert widths[0] > widths[-1]
    assert np.max(np.abs(logits - one_at_a_time(model_dir, split.texts))) <= 1e-5


def test_length_sample_is_seeded_and_spans_the_lengths() -> None:
    lengths = np.arange(1000) % 50 + 3  # 3..52, twenty texts of each length
    sample = length_sample(lengths, 10, seed=7)
    assert sample.tolist() == length_sample(lengths, 10, seed=7).tolist()
    assert sample.tolist() != length_sample(lengths, 10, seed=8).tolist()
    assert len(set(sample.tolist())) == 10 and sample.tolist() == sorted(sample.tolist())
    chosen = np.sort(lengths[sample])
    assert chosen[0] <= 7 and chosen[-1] >= 48  # the shortest and longest strata are drawn
    assert length_sample(lengths[:5], 10, seed=7).tolist() == [0, 1, 2, 3, 4]


def test_labels_table_defaults_validates_and_rejects_unknown_values() -> None:
    default = validate_recipe(MINIMAL).labels
    assert (default.backend, default.parity_tolerance, default.parity_samples) == (
        "auto",
        1e-3,
        64,
    )
    chosen = validate_recipe({**MINIMAL, "labels": {"backend": "pytorch", "batch_size": 16}})
    assert (chosen.labels.backend, chosen.labels.batch_size) == ("pytorch", 16)
    with pytest.raises(RecipeError) as info:
        validate_recipe(
            {**MINIMAL, "labels": {"backend": "tensorrt", "parity_tolerance": -1, "colour": 1}}
        )
    text = "\n".join(info.value.problems)
    assert "labels.backend:" in text and "'tensorrt'" in text
    assert "labels.parity_tolerance: Input should be greater than or equal to 0" in text
    assert "labels.colour: unknown key" in text
    with pytest.raises(RecipeError, match=r"labels is read by task 'sequence-classification' only"):
        validate_recipe({**MINIMAL, "task": "causal-lm", "labels": {"backend": "pytorch"}})


def test_labels_backend_is_part_of_the_labels_fingerprint_only() -> None:
    specs = {spec.name: spec for spec in STAGES}
    default = validate_recipe(MINIMAL)
    fallback = validate_recipe({**MINIMAL, "labels": {"backend": "pytorch"}})

    def fingerprint(spec: StageSpec, recipe: Recipe, upstream: dict[str, str]) -> str:
        return Dependencies(stage_settings(spec, recipe), {}, upstream).fingerprint(spec, recipe)

    upstream = {"data": "d", "teacher": "t"}
    assert fingerprint(specs["labels"], default, upstream) != fingerprint(
        specs["labels"], fallback, upstream
    )
    assert fingerprint(specs["teacher"], default, {"data": "d"}) == fingerprint(
        specs["teacher"], fallback, {"data": "d"}
    )
