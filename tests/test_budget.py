"""Training budgets that fit the data: a step floor on small sets, epochs on large ones,
early stopping only on a validation split that means something, and a warning when
validation loss was still falling at the end."""

from __future__ import annotations

import logging

import pytest

from distill.config import DataConfig, StudentConfig, TeacherConfig
from distill.pipeline.artifacts import RunContext
from distill.tasks.classification.stages import data as data_stage
from distill.tasks.classification.stages import teacher as teacher_stage
from distill.tasks.classification.task import SequenceClassification
from distill.train.budget import resolve_budget, still_improving, warn_if_still_improving

CLASSIFICATION_MIN_STEPS = SequenceClassification.default_min_steps


def teacher(**keys: object) -> TeacherConfig:
    return TeacherConfig(model="m", **keys)


def test_small_data_trains_the_step_floor_with_ten_evaluations() -> None:
    # The case: 200 examples -> 140 for training; 3 epochs at batch 32 were 15 steps.
    budget = resolve_budget(teacher(epochs=3), 140, 20, "teacher", CLASSIFICATION_MIN_STEPS)
    assert (budget.steps_per_epoch, budget.steps, budget.max_steps) == (5, 200, 200)
    assert budget.epochs == 40.0 and budget.eval_steps == 20
    assert budget.why == (
        "3 epochs x 5 steps/epoch = 15 steps < min_steps 200: 200 steps (40.0 epochs)"
    )


def test_large_data_is_bounded_by_epochs() -> None:
    budget = resolve_budget(teacher(), 100_000, 10_000, "teacher", CLASSIFICATION_MIN_STEPS)
    assert (budget.steps, budget.max_steps, budget.eval_steps) == (9375, -1, None)
    assert budget.epochs == 3.0 and budget.early_stopping


def test_explicit_values_win_over_the_floor() -> None:
    assert resolve_budget(teacher(max_steps=7), 140, 20, "teacher", 200).steps == 7
    assert resolve_budget(teacher(min_steps=0), 140, 20, "teacher", 200).steps == 15
    assert resolve_budget(teacher(min_steps=50), 140, 20, "teacher", 200).steps == 50
    explicit = resolve_budget(teacher(eval_steps=3), 140, 20, "teacher", 200)
    assert explicit.eval_steps == 3
    # causal-lm passes no default floor: epochs alone.
    assert resolve_budget(teacher(), 140, 20, "teacher", 0).steps == 15


def test_early_stopping_needs_a_validation_split_that_can_tell_checkpoints_apart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="distill"):
        tiny = resolve_budget(teacher(), 1000, 20, "teacher", 200)
    assert not tiny.early_stopping
    assert "validation split has 20 examples (< teacher.min_validation_examples = 50)" in (
        caplog.text
    )
    assert resolve_budget(teacher(), 1000, 50, "teacher", 200).early_stopping
    assert not resolve_budget(teacher(early_stopping_patience=0), 1000, 500, "t", 0).early_stopping
    assert resolve_budget(teacher(min_validation_examples=10), 1000, 20, "t", 0).early_stopping


def test_learning_rate_default_follows_what_is_trained() -> None:
    def rate(config: TeacherConfig | StudentConfig) -> float:
        return resolve_budget(config, 1000, 100, "x", 0).learning_rate

    assert rate(teacher()) == 5e-5
    assert rate(teacher(freeze_embeddings=True)) == 1e-4
    assert rate(teacher(freeze_layers=2)) == 1e-4
    assert rate(StudentConfig(num_layers=2)) == 1e-4
    assert rate(StudentConfig(num_layers=2, freeze_embeddings=True)) == 2e-4
    assert rate(StudentConfig(init="pretrained", model="m")) == 5e-5
    assert rate(StudentConfig(init="config", num_layers=2)) == 3e-4
    assert rate(teacher(learning_rate=3e-3, freeze_embeddings=True)) == 3e-3


def evaluations(*losses: float) -> list[dict[str, float]]:
    return [{"eval_loss": loss, "step": 10 * i} for i, loss in enumerate(losses, 1)]


def test_still_improving_when_the_last_evaluation_is_best_by_more_than_half_a_percent() -> None:
    found = still_improving(evaluations(1.595, 1.582, 1.570))
    assert found is not None
    assert found["previous_eval_loss"] == 1.582 and found["last_eval_loss"] == 1.570
    assert found["relative_drop"] == pytest.approx(0.012 / 1.582)
    assert still_improving(evaluations(1.0, 0.8, 0.9)) is None  # best was earlier
    assert still_improving(evaluations(1.0, 0.999)) is None  # a plateau
    assert still_improving(evaluations(1.0)) is None
    assert still_improving([{"loss": 2.0, "step": 1}]) is None


def test_the_budget_records_the_recipe_key_that_set_it() -> None:
    # 1000 examples at batch 32 = 32 steps per epoch.
    assert resolve_budget(teacher(epochs=2), 1000, 100, "teacher", 0).set_by == "teacher.epochs = 2"
    assert resolve_budget(teacher(), 1000, 100, "teacher", 0).set_by is None  # the default
    assert resolve_budget(teacher(max_steps=9), 1000, 100, "t", 0).set_by == "t.max_steps = 9"
    floor = resolve_budget(teacher(epochs=1, min_steps=100), 1000, 100, "t", 0)
    assert floor.steps == 100 and floor.set_by == "t.min_steps = 100"
    # epochs set, but the default floor decided: the recipe did not set this budget
    assert resolve_budget(teacher(epochs=1), 1000, 100, "t", 200).set_by is None


def test_a_still_falling_loss_under_a_recipe_cap_is_information_not_advice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    history = evaluations(1.595, 1.582, 1.570)
    capped = resolve_budget(StudentConfig(num_layers=2, epochs=2), 1000, 100, "student", 0)
    with caplog.at_level(logging.INFO, logger="distill"):
        found = warn_if_still_improving(history, "student", capped)
    assert found is not None and found["budget_set_by"] == "student.epochs = 2"
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert "of the budget the recipe sets (student.epochs = 2)" in record.getMessage()
    assert "raise" not in record.getMessage()
    caplog.clear()
    default = resolve_budget(StudentConfig(num_layers=2), 1000, 100, "student", 0)
    with caplog.at_level(logging.INFO, logger="distill"):
        found = warn_if_still_improving(history, "student", default)
    assert found is not None and "budget_set_by" not in found
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "raise student.min_steps or student.epochs" in record.getMessage()


@pytest.fixture(scope="module")
def topic_teacher(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The teacher stage on a 200-example, 5-class topic set, 3 epochs (15 steps) under a
    floor of 30 steps (the default floor's 200 take too long for a unit test)."""
    from conftest import TOPIC_WORDS, build_tiny_classifier, topic_rows, write_csv

    root = tmp_path_factory.mktemp("budget")
    model = build_tiny_classifier(root / "tiny", num_labels=5, layers=1, extra_words=TOPIC_WORDS)
    csv_path = write_csv(root / "topics.csv", ["text", "label"], topic_rows(200))
    ctx = RunContext(
        name="t", seed=13, task="sequence-classification", workdir=root, recipe_dir=root
    )
    data = DataConfig(path=str(csv_path), max_length=12)
    for folder in ("data", "teacher"):
        (root / folder).mkdir()
    data_stage.run(ctx, {}, root / "data", data=data)
    # A random tiny BERT is not pre-trained: it needs a higher rate than the default.
    config = TeacherConfig(model=str(model), learning_rate=3e-3, min_steps=30)
    return teacher_stage.run(
        ctx, {"data": root / "data"}, root / "teacher", data=data, teacher=config
    )


def test_teacher_stage_on_a_small_topic_set_trains_the_floor_and_records_its_budget(
    topic_teacher: dict,
) -> None:
    budget = topic_teacher["budget"]
    assert (budget["train_examples"], budget["validation_examples"]) == (140, 20)
    assert topic_teacher["steps"] == budget["steps"] == 30
    assert budget["early_stopping"] is False and budget["eval_steps"] == 5
    assert budget["learning_rate_why"] == "set in the recipe"
    assert "still_improving" in topic_teacher


def test_a_resolved_student_counts_as_set_only_what_its_recipe_tables_set() -> None:
    from distill.config import StudentTable

    table = StudentTable.model_validate(
        {
            "num_layers": 2,
            "epochs": 2,
            "variants": {"s": {"init": "static"}, "L3": {"num_layers": 3}},
        }
    )

    def set_by(name: str) -> str | None:
        return resolve_budget(table.variant(name), 1000, 100, "student", 0).set_by

    assert set_by("main") == "student.epochs = 2"
    assert set_by("L3") == "student.epochs = 2"  # inherited from [student], which set it
    static = table.variant("s")
    assert static.epochs == 6.0 and set_by("s") is None  # the static default, not the recipe's
    default = StudentTable.model_validate({"num_layers": 2})
    assert resolve_budget(default.variant("main"), 1000, 100, "student", 0).set_by is None
