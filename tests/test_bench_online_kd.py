"""The online-KD bench (bench/online_kd.py) on a tiny run: the docs loop's student and loss,
both sides trained and timed, and the two targets of issue #12 judged."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import build_tiny_classifier, make_data_stage, set_label_maps
from torch import nn

from distill.config import DataConfig, StudentTable
from distill.data.files import SPLITS, save_logits
from distill.pipeline.artifacts import write_manifest
from distill.tasks.classification.files import read_split
from distill.tasks.classification.models import load_saved_classifier
from distill.train.models import transformer_layers

SPEC = importlib.util.spec_from_file_location(
    "bench_online_kd", Path(__file__).parent.parent / "bench" / "online_kd.py"
)
bench = importlib.util.module_from_spec(SPEC)  # type: ignore[arg-type]
sys.modules[SPEC.name] = bench  # its dataclass looks its module up  # type: ignore[union-attr]
SPEC.loader.exec_module(bench)  # type: ignore[union-attr]

SEED = 7
REPORT_ACCURACY = 0.875


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run folder by hand: 64/16/40 synthetic rows, a 4-layer tiny teacher, its
    cached logits, a student manifest recording its tables (with a no-KD twin and a variant
    the bench leaves out) and a report with the distilled student's accuracy."""
    run = tmp_path_factory.mktemp("online-kd") / "runs" / "tiny"
    make_data_stage(run / "data")
    write_manifest(run / "data", {"stage": "data"})
    teacher_dir = build_tiny_classifier(run / "teacher" / "model", layers=4, seed=1)
    set_label_maps(teacher_dir)
    write_manifest(run / "teacher", {"stage": "teacher"})
    (run / "labels" / "logits").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in SPLITS:
        split = read_split(run / "data", name)
        logits = rng.normal(size=(len(split), 2)).astype(np.float32)
        save_logits(run / "labels" / "logits" / f"{name}.npz", split.ids, logits)
    write_manifest(run / "labels", {"stage": "labels"})
    # The recorded [student]: 1 epoch of 4 batches, a fixed budget (no step floor, no
    # early stopping), its no-KD twin (the default) and a variant.
    student = StudentTable(
        layers=[0, 3],
        alpha=0.7,
        epochs=1,
        batch_size=16,
        min_steps=0,
        early_stopping_patience=0,
        learning_rate=1e-3,
        variants={"L1": {"layers": [3]}},
    )
    (run / "student").mkdir()
    write_manifest(
        run / "student",
        {
            "stage": "student",
            "run": "tiny",
            "task": "sequence-classification",
            "seed": SEED,
            "config": {
                "data": DataConfig(path="reviews.csv", max_length=24).model_dump(mode="json"),
                "student": student.model_dump(mode="json"),
            },
            "metrics": {},
        },
    )
    (run / "report").mkdir()
    rows = [{"key": "teacher", "accuracy": 0.9}, {"key": "student", "accuracy": REPORT_ACCURACY}]
    (run / "report" / "report.json").write_text(json.dumps({"rows": rows}), encoding="utf-8")
    return run


def test_the_run_is_read_from_its_recorded_tables(tiny_run: Path) -> None:
    run = bench.read_run(tiny_run)
    assert (run.name, run.seed, run.task) == ("tiny", SEED, "sequence-classification")
    assert run.data.max_length == 24 and run.report_accuracy == REPORT_ACCURACY
    assert run.student.twins == ["no-kd"] and list(run.student.variants) == ["L1"]
    alone = bench.distilled_only(run.student)
    assert alone.twins == [] and alone.variants == {}
    assert (alone.layers, alone.alpha, alone.epochs) == ([0, 3], 0.7, 1.0)


def test_docs_student_keeps_the_teachers_embeddings_and_first_two_layers(tiny_run: Path) -> None:
    teacher = load_saved_classifier(tiny_run / "teacher" / "model")
    student = bench.docs_student(teacher, SEED)
    assert student.config.num_hidden_layers == 2 and len(transformer_layers(student)) == 2
    assert type(student) is type(teacher)
    ours, theirs = transformer_layers(student), transformer_layers(teacher)
    for position in (0, 1):
        mine, source = ours[position].state_dict(), theirs[position].state_dict()
        assert mine.keys() == source.keys()
        assert all(torch.equal(mine[k], source[k]) for k in mine)
    # Layer 1 is the teacher's layer 1, not its last (distill's students keep [0, 3]).
    assert not torch.equal(
        ours[1].attention.self.query.weight, theirs[3].attention.self.query.weight
    )
    for key, value in teacher.base_model.embeddings.state_dict().items():
        assert torch.equal(student.base_model.embeddings.state_dict()[key], value)
    # The head is new (seeded), as the docs build it from the config.
    assert not torch.equal(student.classifier.weight, teacher.classifier.weight)
    again = bench.docs_student(teacher, SEED)
    assert torch.equal(again.classifier.weight, student.classifier.weight)


def test_the_loss_is_the_docs_formula_with_the_teacher_run_on_the_batch(
    tiny_run: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer, TrainingArguments

    teacher = load_saved_classifier(tiny_run / "teacher" / "model")
    student = bench.docs_student(teacher, SEED).eval()  # no dropout: one forward pass each
    trainer = bench.online_kd_trainer(
        model=student,
        args=TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True),
        teacher=teacher,
        temperature=3.0,
        alpha=0.25,
    )
    assert not trainer.teacher.training
    tokenizer = AutoTokenizer.from_pretrained(tiny_run / "teacher" / "model")
    batch = dict(
        tokenizer(
            ["good great movie", "awful flight today", "the food was sad and boring"],
            padding="max_length",
            max_length=12,
            return_tensors="pt",
        )
    )
    labels = torch.tensor([1, 0, 1])
    loss = trainer.compute_loss(student, {**batch, "labels": labels})
    with torch.no_grad():
        s, t = student(**batch).logits, teacher(**batch).logits
    kl = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s / 3.0, -1), F.softmax(t / 3.0, -1))
    by_hand = 0.25 * kl * 3.0**2 + 0.75 * F.cross_entropy(s, labels)
    # ... and once more from the definitions, in float64.
    p = torch.softmax(t.double() / 3, -1)
    log_q = torch.log_softmax(s.double() / 3, -1)
    ce = -torch.log_softmax(s.double(), -1)[torch.arange(3), labels].mean()
    from_definitions = 0.25 * 9 * (p * (p.log() - log_q)).sum() / 3 + 0.75 * ce
    assert float(loss.detach()) == pytest.approx(float(by_hand), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(float(from_definitions), rel=1e-5)
    assert loss.requires_grad  # the student's half trains


def test_bench_trains_and_times_both_sides_on_a_tiny_run(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "online_kd.json"
    assert bench.main([str(tiny_run), "--epochs=1", "--learning-rate=1e-3", f"--json={out}"]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["settings"] == {
        "epochs": 1.0,
        "temperature": 2.0,
        "alpha": 0.7,
        "learning_rate": 1e-3,
        "batch_size": 32,
        "loop_layers": [0, 1],
    }
    (row,) = result["runs"]
    assert (row["run"], row["seed"], row["max_length"]) == ("tiny", SEED, 24)
    loop, distill = row["loop"], row["distill"]
    for side in (loop, distill):
        assert side["epochs"] == 1.0 and side["examples_per_epoch"] == 64  # the train split
        assert len(side["epoch_s"]) == 1 and 0 < side["epoch_s"][0] < 60
        assert side["s_per_epoch"] == pytest.approx(side["epoch_s"][0], abs=0.01)
        assert side["examples_per_s"] == pytest.approx(64 / side["s_per_epoch"], rel=1e-9)
    # 40 test examples: accuracies are multiples of 1/40.
    assert 0 <= loop["test_accuracy"] <= 1 and (40 * loop["test_accuracy"]) % 1 == 0
    assert distill["test_accuracy"] == REPORT_ACCURACY  # the report's, not the rerun's
    assert 0 <= distill["rerun_test_accuracy"] <= 1
    assert row["difference"] == pytest.approx(REPORT_ACCURACY - loop["test_accuracy"])
    assert row["ratio"] == pytest.approx(loop["s_per_epoch"] / distill["s_per_epoch"])
    summary = result["summary"]
    assert summary["ratio"] == [pytest.approx(row["ratio"]), 0.0]  # one run: no spread
    assert [t["target"] for t in result["targets"]] == ["accuracy", "speed"]
    assert result["targets"][0]["met"] is (row["difference"] > 0)
    assert result["targets"][1]["met"] is (row["ratio"] >= 2.0)
    printed = capsys.readouterr().out
    assert "| tiny | 7 |" in printed and "loop / distill" in printed
    assert printed.count("met: ") + printed.count("MISSED: ") == 2


def _summary(loop: list[float], distill: list[float], loop_s: list[float], distill_s: list[float]):
    rows = [
        {
            "loop": {"test_accuracy": a, "s_per_epoch": ls, "examples_per_s": 3899 / ls},
            "distill": {"test_accuracy": b, "s_per_epoch": ds, "examples_per_s": 7899 / ds},
            "difference": b - a,
            "ratio": ls / ds,
        }
        for a, b, ls, ds in zip(loop, distill, loop_s, distill_s, strict=True)
    ]
    return bench.summarise(rows), len(rows)


def test_targets_are_judged_on_the_means_over_the_runs() -> None:
    # distill +0.60 and +0.20 points; 150 / 60 = 2.5x and 140 / 70 = 2.0x: both met.
    summary, runs = _summary([0.7587, 0.75], [0.7647, 0.752], [150.0, 140.0], [60.0, 70.0])
    assert summary["difference"][0] == pytest.approx(0.004)
    assert summary["ratio"] == pytest.approx((2.25, 0.3535534))
    accuracy, speed = bench.check_targets(summary, runs)
    assert accuracy["met"] and speed["met"]
    assert accuracy["text"].startswith("met: distill's distilled student beats the online-KD")
    assert "75.84% vs 75.44%" in accuracy["text"]
    assert "+0.40 points, mean over 2 runs" in accuracy["text"]
    assert speed["text"].startswith("met: distill's student stage is 2.25x faster per epoch")
    # Exactly 2x is met; a tie in accuracy is not a win.
    summary, runs = _summary([0.75], [0.75], [120.0], [60.0])
    accuracy, speed = bench.check_targets(summary, runs)
    assert not accuracy["met"] and speed["met"]
    # distill 1 point below and only 1.5x faster: both missed.
    summary, runs = _summary([0.76], [0.75], [90.0], [60.0])
    accuracy, speed = bench.check_targets(summary, runs)
    assert (accuracy["met"], speed["met"]) == (False, False)
    assert accuracy["text"].startswith("MISSED: distill's distilled student does not beat")
    assert "-1.00 points, mean over 1 run)" in accuracy["text"]
    assert speed["text"].startswith("MISSED: distill's student stage is 1.50x faster")
    assert "(90.0 vs 60.0 s/epoch" in speed["text"] and "target >= 2x" in speed["text"]
