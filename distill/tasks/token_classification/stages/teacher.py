"""Stage `teacher` for tagging: fine-tune a pre-trained encoder with a token-classification
head on the training split, early stopping on validation entity micro-F1.

Outputs: ``model/`` (save_pretrained with real tag names, tokenizer), ``logits/<split>.npz``
(ragged, per sub-token) for validation and test, ``log_history.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import set_seed

from distill.config import DataConfig, TeacherConfig
from distill.data.files import SPLITS
from distill.data.ragged import save_ragged
from distill.pipeline.artifacts import RunContext
from distill.tasks.token_classification.files import read_tag_names, read_tagged_split
from distill.tasks.token_classification.metrics import tagging_metrics, word_tags
from distill.tasks.token_classification.models import load_tagger, require_fast
from distill.tasks.token_classification.training import encode, sentence_logits, train
from distill.train.models import freeze, teacher_source
from distill.train.trainer import TrainingRun, finish_training


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig, teacher: TeacherConfig
) -> dict[str, Any]:
    tag_names = read_tag_names(inputs["data"])
    splits = {name: read_tagged_split(inputs["data"], name) for name in SPLITS}
    source, tokenizer = teacher_source(teacher, ctx.recipe_dir, adapted=inputs.get("adapt"))
    require_fast(tokenizer, "teacher.model")
    set_seed(ctx.seed)
    model = load_tagger(
        source, "teacher.model", tag_names, teacher.revision, teacher.trust_remote_code
    )
    parameters = freeze(model, teacher.freeze_embeddings, teacher.freeze_layers)
    encoded = {
        name: encode(tokenizer, split.tokens, split.tags, data.max_length)
        for name, split in splits.items()
    }
    work_dir = ctx.checkpoint_dir(out)
    training_run = TrainingRun(
        stage="teacher",
        model=model,
        tokenizer=tokenizer,
        config=teacher,
        train_set=encoded["train"][0],
        eval_set=encoded["validation"][0],
        work_dir=work_dir,
        log_dir=out / "tensorboard",  # written only when report_to asks for it
        seed=ctx.seed,
    )
    trainer, history = train(training_run, tag_names=tag_names)
    trainer.save_model(str(out / "model"))  # weights, config (with tag names) and tokenizer
    (out / "logits").mkdir()
    metrics: dict[str, Any] = {
        "parameters": parameters,
        "source": teacher.model,
        "adapted": "adapt" in inputs,  # fine-tuned from the adapt stage's encoder
    }
    for name in ("validation", "test"):
        dataset, starts = encoded[name]
        logits = sentence_logits(trainer, dataset, f"teacher: {name} logits")
        save_ragged(out / "logits" / f"{name}.npz", splits[name].ids, logits)
        gold = [[tag_names[t] for t in tags] for tags in splits[name].tags]
        metrics[name] = tagging_metrics(_cut(gold, starts), word_tags(logits, starts, tag_names))
    metrics.update(finish_training(trainer, history, out, work_dir))
    return metrics


def _cut(gold: list[list[str]], starts: list[list[int]]) -> list[list[str]]:
    """Gold tags of the words that survived truncation (scored like the predictions)."""
    return [tags[: len(positions)] for tags, positions in zip(gold, starts, strict=True)]
