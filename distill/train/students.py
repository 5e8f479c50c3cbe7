"""Building a student, for every task whose students come from an encoder with a head: a
pre-trained model of its own (``pretrained``), the teacher's own layers (``teacher-layers``,
DistilBERT-style) or the teacher's config with fields overridden (``config``). The task
says how its head is loaded; the three ways are the same for all, and so are the steps
around training (layer losses, a trimmed vocabulary, frozen layers, saving the student)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer, set_seed

from distill.pipeline.artifacts import RunContext
from distill.train.layer_losses import LayerDistillation, layer_distillation
from distill.train.models import (
    evenly_spaced_layers,
    freeze,
    load_tokenizer,
    parameter_counts,
    resolve_model,
    student_from_config,
    student_from_teacher_layers,
    transformer_layers,
)
from distill.train.trainer import save_trained_model
from distill.train.vocabulary import trim_vocabulary

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


def prepare_student(
    config: Any,
    model: nn.Module,
    tokenizer: Any,
    built: dict[str, Any],
    *,
    teacher_dir: Path,
    load_saved: Callable[[Path], nn.Module],
    online_teacher: bool,
    trim_texts: list[str] | None,
    max_length: int,
    seed: int,
) -> tuple[nn.Module, nn.Module, Any, LayerDistillation | None]:
    """A built student made ready to train: the layer losses against the teacher run online
    (when ``online_teacher`` and the recipe asks for them), the vocabulary trimmed to
    ``trim_texts`` (when given; recorded in ``built``), the recipe's layers frozen.

    Returns the model, what to train (the model wrapped with its projections when there are
    layer losses), its tokenizer and the layer losses."""
    layers: LayerDistillation | None = None
    trainable: nn.Module = model
    if online_teacher and config.layer_losses:
        # Checked on the untrimmed tokenizer: trimming keeps the teacher's pieces, and the
        # loss maps trimmed ids back to the teacher's (LayerDistillation.teacher_ids).
        trainable, layers = layer_distillation(
            config,
            model,
            tokenizer,
            load_saved(teacher_dir),
            load_tokenizer(str(teacher_dir), "teacher model"),
            f"teacher model {teacher_dir}",
            built,
            seed,
        )
    if trim_texts is not None:
        model, tokenizer, kept_ids, built["vocabulary"] = trim_vocabulary(
            model, tokenizer, trim_texts, max_length
        )
        if layers is not None:
            layers.teacher_ids = torch.from_numpy(kept_ids)
    freeze(model, config.freeze_embeddings, config.freeze_layers, table="student")
    return model, trainable, tokenizer, layers


def save_student(
    trainer: Trainer,
    model: nn.Module,
    tokenizer: Any,
    layers: LayerDistillation | None,
    out: Path,
    *,
    built: dict[str, Any],
    alpha: float,
    examples: dict[str, Any],
) -> dict[str, Any]:
    """After training: the student (attention kernel restored when layer losses changed it)
    saved to ``out/model``, an empty ``out/logits`` for the task's predictions, and the head
    of its metrics (how it was built, alpha, parameter counts, training examples)."""
    if layers is not None:
        layers.restore_attention(model)
    save_trained_model(trainer, tokenizer, out / "model")
    (out / "logits").mkdir()
    return {
        "built": built,
        "alpha": alpha,
        "parameters": parameter_counts(model),
        "training_examples": examples,
    }
