"""Building a student, for every task whose students come from an encoder with a head: a
pre-trained model of its own (``pretrained``), the teacher's own layers (``teacher-layers``,
DistilBERT-style) or the teacher's config with fields overridden (``config``). The task
says how its head is loaded; the three ways are the same for all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn
from transformers import set_seed

from distill.pipeline.artifacts import RunContext
from distill.train.models import (
    evenly_spaced_layers,
    load_tokenizer,
    resolve_model,
    student_from_config,
    student_from_teacher_layers,
    transformer_layers,
)

# (source, recipe key, revision, trust_remote_code) -> the model with the task's head
LoadPretrained = Callable[[str, str, str | None, bool], nn.Module]


def build_student(
    config: Any,
    teacher_dir: Path,
    ctx: RunContext,
    load_pretrained: LoadPretrained,
    load_saved: Callable[[Path], nn.Module],
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """The student model, its tokenizer, and a description of how it was built."""
    set_seed(ctx.seed)
    if config.init == "pretrained":
        assert config.model is not None  # checked by the recipe
        source = resolve_model(
            config.model,
            ctx.recipe_dir,
            "student.model",
            config.trust_remote_code,
            archive=config.archive,
        )
        tokenizer = load_tokenizer(
            source, "student.model", config.revision, config.trust_remote_code
        )
        model = load_pretrained(source, "student.model", config.revision, config.trust_remote_code)
        return model, tokenizer, {"init": "pretrained", "model": config.model}

    teacher = load_saved(teacher_dir)
    tokenizer = load_tokenizer(str(teacher_dir), "teacher model")
    if config.init == "teacher-layers":
        total = len(transformer_layers(teacher))
        layers = (
            list(config.layers)
            if config.layers
            else evenly_spaced_layers(total, config.num_layers or total)
        )
        model = student_from_teacher_layers(teacher, layers)
        return model, tokenizer, {"init": "teacher-layers", "teacher_layers": layers}
    overrides = dict(config.config or {})
    if config.num_layers is not None:
        overrides.setdefault("num_hidden_layers", config.num_layers)
    model = student_from_config(teacher, overrides, ctx.seed)
    return model, tokenizer, {"init": "config", "overrides": overrides}
