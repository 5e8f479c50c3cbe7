"""The seq2seq recipe keys: defaults, and every key the task would ignore or cannot use
refused before any compute, all problems at once."""

from __future__ import annotations

from typing import Any

import pytest

from distill.config import validate_recipe
from distill.errors import RecipeError


def _recipe(**tables: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "t",
        "task": "seq2seq",
        "data": {"path": "pairs.csv"},
        "teacher": {"model": "t5-small"},
        "student": {"num_layers": 1},
    }
    for table, keys in tables.items():
        raw[table] = {**raw.get(table, {}), **keys}
    return raw


def _problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    return info.value.problems


def test_the_defaults_of_the_task_keys() -> None:
    recipe = validate_recipe(_recipe())
    data, student = recipe.data, recipe.student
    assert (data.source_column, data.target_column, data.source_prefix) == ("source", "target", "")
    assert data.max_target_length == 64
    assert (student.distillation, student.kd_top_k, student.sequence_beams) == ("word", 32, 4)
    assert student.sequence_twin is True and student.encoder_layers is None
    assert recipe.export.max_bleu_drop == 1.0 and recipe.report.num_beams == 1
    assert recipe.teacher.warm_start is False


def test_keys_of_other_tasks_and_refused_shared_keys_are_errors_all_at_once() -> None:
    raw = _recipe(
        data={"text_column": "text", "label_column": "label"},
        student={"top_k": 8, "hidden_weight": 1.0},
        export={"max_perplexity_increase": 0.1, "quantization": "static"},
        report={"latency_batch_size": 8},
        adapt={"epochs": 1},
    )
    text = "\n".join(_problems(raw))
    for expected in (
        "data.text_column: task 'seq2seq' reads data.source_column and data.target_column",
        "data.label_column",
        "student.top_k",
        "student.hidden_weight",
        "export.max_perplexity_increase",
        "export.quantization = 'static' is not supported for task 'seq2seq'",
        "report.latency_batch_size: task 'seq2seq' times every model per source at batch 1",
        "adapt: task 'seq2seq' does not adapt its teacher",
    ):
        assert expected in text, expected


def test_keys_the_chosen_distillation_or_student_would_ignore() -> None:
    raw = _recipe(
        student={
            "distillation": "sequence",
            "alpha": 0.3,
            "kd_top_k": 8,
            "init": "config",
            "encoder_layers": [0],
            "baselines": ["no-kd", "pseudo-labels"],
            "transfer": {"path": "unused"},
        }
    )
    text = "\n".join(_problems(raw))
    assert "student.alpha is not used with student.distillation = 'sequence'" in text
    assert "student.kd_top_k is not used with student.distillation = 'sequence'" in text
    assert "student.encoder_layers is used only with student.init = 'teacher-layers'" in text
    assert "['pseudo-labels'] is not a seq2seq twin" in text


def test_seq2seq_keys_are_refused_in_other_tasks() -> None:
    raw = _recipe(data={"source_prefix": "x: "}, export={"max_bleu_drop": 2.0})
    raw["task"] = "sequence-classification"
    text = "\n".join(_problems(raw))
    assert "data.source_prefix" in text and "export.max_bleu_drop" in text


def test_the_labels_stage_reads_only_what_the_teacher_makes() -> None:
    """Its fingerprint: a change of the students' budget does not label again, a change of
    what the teacher makes does; and the stage takes exactly those keys."""
    from distill.pipeline.stages import STAGES
    from distill.tasks.seq2seq.stages.labels import LABELLING_FIELDS

    labels = next(spec for spec in STAGES if spec.name == "labels")
    read = labels.table_keywords("seq2seq")
    assert sorted(read) == sorted(("data", *LABELLING_FIELDS))
    assert "student.max_steps" not in labels.sections_for("seq2seq")
