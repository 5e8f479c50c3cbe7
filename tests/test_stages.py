"""Teacher and student stages on a tiny BERT: real training, cached logits aligned with ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distill.config import DataConfig, StudentTable, TeacherConfig
from distill.data.files import load_logits
from distill.errors import ModelLoadError
from distill.pipeline.artifacts import RunContext
from distill.tasks.classification.files import read_split
from distill.tasks.classification.metrics import classification_metrics
from distill.tasks.classification.stages import data as data_stage
from distill.tasks.classification.stages import labels as labels_stage
from distill.tasks.classification.stages import student as student_stage
from distill.tasks.classification.stages import teacher as teacher_stage
from distill.train.trainer import NonFiniteLossError


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:

    from conftest import synthetic_rows, write_csv

    root = tmp_path_factory.mktemp("stages")
    csv_path = root / "reviews.csv"
    write_csv(csv_path, ["text", "label"], synthetic_rows(160))
    ctx = RunContext(
        name="t", seed=7, task="sequence-classification", workdir=root, recipe_dir=root
    )
    data = DataConfig(path=str(csv_path), max_length=24)
    folders = {name: root / name for name in ("data", "teacher", "labels", "student")}
    for folder in folders.values():
        folder.mkdir()
    data_stage.run(ctx, {}, folders["data"], data=data)
    teacher = TeacherConfig(
        model=str(tiny_model_dir),
        epochs=6,
        min_steps=0,
        learning_rate=3e-3,
        batch_size=16,
        freeze_layers=1,
    )
    teacher_metrics = teacher_stage.run(
        ctx, {"data": folders["data"]}, folders["teacher"], data=data, teacher=teacher
    )
    labels_metrics = labels_stage.run(
        ctx, {"data": folders["data"], "teacher": folders["teacher"]}, folders["labels"], data=data
    )
    assert labels_metrics["examples"] == {"train": 112, "validation": 16, "test": 32}
    student = StudentTable(
        num_layers=2,
        epochs=4,
        min_steps=0,
        learning_rate=3e-3,
        batch_size=16,
        temperature=2.0,
        alpha=0.7,
    )
    student_metrics = student_stage.run(
        ctx,
        {"data": folders["data"], "teacher": folders["teacher"], "labels": folders["labels"]},
        folders["student"],
        data=data,
        student=student,
    )
    return {**folders, "teacher_metrics": teacher_metrics, "student_metrics": student_metrics}  # type: ignore[dict-item]


def forward(model_dir: Path, texts: list[str], max_length: int = 24) -> np.ndarray:
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        rows = [
            model(
                **tokenizer([t], truncation=True, max_length=max_length, return_tensors="pt")
            ).logits[0]
            for t in texts
        ]
    return torch.stack(rows).numpy()


def test_teacher_learns_and_caches_logits_keyed_by_id(trained: dict) -> None:
    metrics = trained["teacher_metrics"]
    assert metrics["test"]["accuracy"] >= 0.8  # the cue words make the task learnable
    assert metrics["parameters"]["trainable"] < metrics["parameters"]["total"]  # freeze_layers = 1
    for split in ("train", "validation", "test"):
        examples = read_split(trained["data"], split)
        _, logits = load_logits(trained["labels"] / "logits" / f"{split}.npz", examples.ids)
        assert logits.shape == (len(examples), 2)
        if split != "train":  # the teacher's own evaluation and the cache agree
            _, evaluated = load_logits(trained["teacher"] / "logits" / f"{split}.npz", examples.ids)
            assert np.allclose(logits, evaluated, atol=1e-5)
    test = read_split(trained["data"], "test")
    _, logits = load_logits(trained["teacher"] / "logits" / "test.npz", test.ids)
    # The cache is aligned with the ids: row i is example i (Trainer's length grouping must not reorder).
    assert np.allclose(
        logits[:12], forward(trained["teacher"] / "model", test.texts[:12]), atol=1e-4
    )
    assert classification_metrics(logits, test.labels, 2)["accuracy"] == pytest.approx(
        metrics["test"]["accuracy"]
    )
    assert (trained["teacher"] / "log_history.json").is_file()
    assert not (trained["teacher"] / "checkpoints").exists()


def test_student_is_distilled_and_loadable(trained: dict) -> None:
    metrics = trained["student_metrics"]
    assert metrics["built"] == {"init": "teacher-layers", "teacher_layers": [0, 3]}
    assert metrics["alpha"] == 0.7 and metrics["baseline"]["alpha"] == 0.0
    assert metrics["parameters"]["total"] < trained["teacher_metrics"]["parameters"]["total"]
    assert 0.0 <= metrics["test"]["agreement"] <= 1.0
    # Each of the 4 epochs' training seconds (no early stopping on 16 validation examples).
    assert metrics["epochs_run"] == 4.0 and len(metrics["epoch_train_s"]) == 4
    assert 0 < sum(metrics["epoch_train_s"]) <= metrics["train_runtime_s"]
    model = AutoModelForSequenceClassification.from_pretrained(trained["student"] / "model")
    assert model.config.num_hidden_layers == 2
    assert model.config.id2label == {0: "negative", 1: "positive"}
    test = read_split(trained["data"], "test")
    _, logits = load_logits(trained["student"] / "logits" / "test.npz", test.ids)
    assert np.allclose(logits[:8], forward(trained["student"] / "model", test.texts[:8]), atol=1e-4)
    assert (trained["student"] / "baseline" / "model" / "model.safetensors").is_file()


def test_non_finite_loss_stops_the_stage_naming_it(
    trained: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distill.tasks.classification import training

    def nan_loss(student_logits, teacher_logits, labels, temperature, alpha):
        return student_logits.sum() * float("nan"), {}

    monkeypatch.setattr(training, "distillation_loss", nan_loss)
    ctx = RunContext(
        name="t", seed=7, task="sequence-classification", workdir=tmp_path, recipe_dir=tmp_path
    )
    student = StudentTable(num_layers=1, max_steps=30, batch_size=8, baseline=False)
    with pytest.raises(
        NonFiniteLossError,
        match=r"stage student \(distilled\): loss is nan at step 1; stopped, nothing saved. Lower student.learning_rate",
    ):
        student_stage.run(
            ctx,
            {"data": trained["data"], "teacher": trained["teacher"], "labels": trained["labels"]},
            tmp_path,
            data=DataConfig(path="x", max_length=24),
            student=student,
        )


def test_trackers_only_when_asked(trained: dict, tmp_path: Path, tiny_model_dir: Path) -> None:
    # Default: no tracker, even though tensorboard is installed here.
    assert not (trained["teacher"] / "tensorboard").exists()
    from distill.train.budget import resolve_budget
    from distill.train.trainer import training_arguments

    config = TeacherConfig(model="m")
    budget = resolve_budget(config, 100, 100, "teacher", default_min_steps=0)
    default = training_arguments(config, tmp_path, 0, False, "teacher", budget)
    assert default.report_to == []
    ctx = RunContext(
        name="t", seed=7, task="sequence-classification", workdir=tmp_path, recipe_dir=tmp_path
    )
    teacher = TeacherConfig(
        model=str(tiny_model_dir),
        max_steps=3,
        batch_size=16,
        report_to=["tensorboard"],
        early_stopping_patience=0,
    )
    out = tmp_path / "teacher"
    out.mkdir()
    teacher_stage.run(
        ctx,
        {"data": trained["data"]},
        out,
        data=DataConfig(path="x", max_length=24),
        teacher=teacher,
    )
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))


def _labels_with_transfer(trained: dict, tmp_path: Path) -> tuple[RunContext, Any, dict]:
    """A labels stage over the trained teacher with 40 transfer texts (48 read); returns the
    run context, the transfer table and the labels stage's metrics."""
    from conftest import synthetic_rows

    from distill.config import TransferConfig

    raw = tmp_path / "raw.csv"
    raw.write_text(
        "body\n" + "\n".join(text + " extra" for text, _ in synthetic_rows(48, seed=9)) + "\n",
        encoding="utf-8",
    )
    ctx = RunContext(
        name="t", seed=7, task="sequence-classification", workdir=tmp_path, recipe_dir=tmp_path
    )
    transfer = TransferConfig(path="raw.csv", text_column="body", max_examples=40)
    (tmp_path / "labels").mkdir()
    metrics = labels_stage.run(
        ctx,
        {"data": trained["data"], "teacher": trained["teacher"]},
        tmp_path / "labels",
        data=DataConfig(path="x", max_length=24),
        transfer=transfer,
    )
    return ctx, transfer, metrics


def _run_student(trained: dict, ctx: RunContext, student: StudentTable) -> dict:
    out = ctx.workdir / "student"
    out.mkdir()
    return student_stage.run(
        ctx,
        {"data": trained["data"], "teacher": trained["teacher"], "labels": ctx.workdir / "labels"},
        out,
        data=DataConfig(path="x", max_length=24),
        student=student,
    )


def test_student_learns_from_teacher_labelled_transfer_text(trained: dict, tmp_path: Path) -> None:
    ctx, transfer, metrics = _labels_with_transfer(trained, tmp_path)
    assert metrics["transfer"] == {"read": 48, "new_texts": 48, "used": 40}
    assert metrics["examples"]["transfer"] == 40
    ids, logits = load_logits(tmp_path / "labels" / "logits" / "transfer.npz")
    assert logits.shape == (40, 2) and all(i.startswith("transfer:raw.csv:") for i in ids)
    student = StudentTable(
        num_layers=1, max_steps=6, batch_size=16, transfer=transfer, baseline=False
    )
    result = _run_student(trained, ctx, student)
    assert result["training_examples"] == {"labelled": 112, "transfer": 40}


def test_pseudo_label_twin_learns_labelled_and_transfer_text_with_the_teachers_argmax(
    trained: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, transfer, _ = _labels_with_transfer(trained, tmp_path)
    seen: dict[str, Any] = {}
    real_train = student_stage.train

    def recording_train(run: Any, **kwargs: Any) -> Any:
        seen[run.stage] = run.train_set
        return real_train(run, **kwargs)

    monkeypatch.setattr(student_stage, "train", recording_train)
    student = StudentTable(
        num_layers=1, max_steps=4, batch_size=16, transfer=transfer, baselines=["pseudo-labels"]
    )
    result = _run_student(trained, ctx, student)
    assert list(seen) == ["student (distilled)", "student (pseudo-label baseline)"]
    pseudo = seen["student (pseudo-label baseline)"]
    train = read_split(trained["data"], "train")
    moved = read_split(tmp_path / "labels", "transfer")
    _, teacher = load_logits(tmp_path / "labels" / "logits" / "transfer.npz", moved.ids)
    # Exactly the labelled examples, then the transfer texts, labelled with the teacher's argmax.
    assert set(teacher.argmax(-1)) == {0, 1}  # both classes: a real labelling, not a constant
    assert len(pseudo) == 112 + 40 and "teacher_logits" not in pseudo.column_names
    assert pseudo["labels"] == train.labels.tolist() + teacher.argmax(-1).tolist()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "student" / "pseudo" / "model")
    encoded = tokenizer(moved.texts, truncation=True, max_length=24)["input_ids"]
    assert pseudo["input_ids"][112:] == encoded
    # The distilled student sees the same examples, its transfer ones unlabelled (-1).
    assert seen["student (distilled)"]["labels"][112:] == [-1] * 40
    assert result["pseudo"]["alpha"] == 0.0 and "baseline" not in result
    assert result["pseudo"]["training_examples"] == {
        "labelled": 112,
        "transfer": 40,
        "transfer_labels": "teacher argmax",
    }
    test = read_split(trained["data"], "test")
    _, logits = load_logits(tmp_path / "student" / "pseudo" / "logits" / "test.npz", test.ids)
    expected = classification_metrics(logits, test.labels, 2)["accuracy"]
    assert result["pseudo"]["test"]["accuracy"] == pytest.approx(expected)


def test_student_with_another_tokenizer_learns_from_the_cached_logits(
    trained: dict, tmp_path: Path
) -> None:
    """Logit distillation needs no shared vocabulary: the cache is keyed by example id."""
    from conftest import POSITIVE, write_vocab
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    other = tmp_path / "other-student"
    vocab = write_vocab(other)
    words = vocab.read_text(encoding="utf-8").split("\n")
    shuffled = words[:5] + list(reversed([w for w in words[5:] if w]))  # same words, other ids
    vocab.write_text("\n".join(shuffled) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab=str(vocab), do_lower_case=True)
    torch.manual_seed(1)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(other)
    tokenizer.save_pretrained(other)
    teacher_ids = AutoTokenizer.from_pretrained(trained["teacher"] / "model")(POSITIVE[0])[
        "input_ids"
    ]
    assert tokenizer(POSITIVE[0])["input_ids"] != teacher_ids  # really another vocabulary

    ctx = RunContext(
        name="t", seed=7, task="sequence-classification", workdir=tmp_path, recipe_dir=tmp_path
    )
    student = StudentTable(
        init="pretrained",
        model=str(other),
        max_steps=20,
        batch_size=16,
        learning_rate=3e-3,
        baseline=False,
    )
    out = tmp_path / "student"
    out.mkdir()
    inputs = {"data": trained["data"], "teacher": trained["teacher"], "labels": trained["labels"]}
    metrics = student_stage.run(
        ctx, inputs, out, data=DataConfig(path="x", max_length=24), student=student
    )
    assert metrics["built"] == {"init": "pretrained", "model": str(other)}
    assert metrics["steps"] == 20 and 0.0 <= metrics["test"]["agreement"] <= 1.0
    saved = AutoTokenizer.from_pretrained(out / "model")
    assert (
        saved(POSITIVE[0])["input_ids"] == tokenizer(POSITIVE[0])["input_ids"]
    )  # its own tokenizer kept
    # Layer losses compare positions: the same pair is refused, naming both sides.
    layered = StudentTable(
        init="pretrained", model=str(other), max_steps=2, hidden_weight=1.0, baseline=False
    )
    refused = tmp_path / "refused"
    refused.mkdir()
    with pytest.raises(ModelLoadError) as err:
        student_stage.run(
            ctx, inputs, refused, data=DataConfig(path="x", max_length=24), student=layered
        )
    assert "teacher model" in str(err.value) and str(other) in str(err.value)
    assert "different vocabularies" in str(err.value)


def test_layer_losses_trimming_and_variants_in_one_student_stage(
    trained: dict, tmp_path: Path
) -> None:
    ctx = RunContext(
        name="t", seed=7, task="sequence-classification", workdir=tmp_path, recipe_dir=tmp_path
    )
    student = StudentTable(
        num_layers=2,
        max_steps=8,
        batch_size=16,
        learning_rate=3e-3,
        hidden_weight=1.0,
        attention_weight=0.5,
        layer_map=[(0, 1), (1, 3)],
        trim_vocabulary=True,
        baseline=False,
        variants={
            "one": {
                "num_layers": 1,
                "hidden_weight": 0.0,
                "attention_weight": 0.0,
                "layer_map": None,
                "baseline": True,
                "trim_vocabulary": False,
            }
        },
    )
    out = tmp_path / "student"
    out.mkdir()
    inputs = {"data": trained["data"], "teacher": trained["teacher"], "labels": trained["labels"]}
    metrics = student_stage.run(
        ctx, inputs, out, data=DataConfig(path="x", max_length=24), student=student
    )
    built = metrics["built"]
    assert built["layer_map"] == [[0, 1], [1, 3]] and built["projection"] is None  # same width
    vocabulary = built["vocabulary"]
    # The synthetic text uses nearly every token of the tiny vocabulary (test_vocabulary.py
    # shows the shrinking); here: the saved tokenizer and model agree on the trimmed size.
    assert vocabulary["vocabulary_after"] <= vocabulary["vocabulary_before"] == 52
    assert len(AutoTokenizer.from_pretrained(out / "model")) == vocabulary["vocabulary_after"]
    saved = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert saved.config.vocab_size == vocabulary["vocabulary_after"]
    assert saved.config._attn_implementation != "eager"  # eager was for training only
    assert not any("projection" in name for name, _ in saved.named_parameters())
    # The saved student and its trimmed tokenizer reproduce its cached test logits.
    test = read_split(trained["data"], "test")
    _, logits = load_logits(out / "logits" / "test.npz", test.ids)
    assert np.allclose(logits[:6], forward(out / "model", test.texts[:6]), atol=1e-4)
    # The variant: its own folder, its own baseline, the variant's settings.
    variant = metrics["variants"]["one"]
    assert variant["built"] == {"init": "teacher-layers", "teacher_layers": [3]}
    assert "baseline" in variant and "baseline" not in metrics
    assert (out / "variants" / "one" / "baseline" / "model" / "model.safetensors").is_file()
    assert (
        AutoModelForSequenceClassification.from_pretrained(
            out / "variants" / "one" / "model"
        ).config.num_hidden_layers
        == 1
    )
