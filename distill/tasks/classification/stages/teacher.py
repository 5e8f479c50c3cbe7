"""Stage `teacher`: fine-tune the pre-trained model on the domain data and evaluate it.

Outputs: ``model/`` (save_pretrained + tokenizer), ``logits/validation.npz`` and
``logits/test.npz`` (its evaluation, keyed by example id; the `labels` stage caches the
soft targets the student trains on), and ``log_history.json`` (the training curves).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import set_seed

from distill.config import DataConfig, TeacherConfig
from distill.data.files import SPLITS, read_label_names, save_logits
from distill.pipeline.artifacts import RunContext
from distill.tasks.classification.encoding import encode
from distill.tasks.classification.files import read_split
from distill.tasks.classification.metrics import classification_metrics
from distill.tasks.classification.models import load_classifier
from distill.tasks.classification.training import train
from distill.train.models import freeze, teacher_source
from distill.train.trainer import TrainingRun, finish_training, predict_logits


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig, teacher: TeacherConfig
) -> dict[str, Any]:
    label_names = read_label_names(inputs["data"])
    splits = {name: read_split(inputs["data"], name) for name in SPLITS}

    source, tokenizer = teacher_source(teacher, ctx.recipe_dir, adapted=inputs.get("adapt"))
    set_seed(ctx.seed)
    model = load_classifier(
        source,
        "teacher.model",
        label_names,
        revision=teacher.revision,
        trust_remote_code=teacher.trust_remote_code,
    )
    parameters = freeze(model, teacher.freeze_embeddings, teacher.freeze_layers)

    encoded = {name: encode(tokenizer, split, data.max_length) for name, split in splits.items()}
    work_dir = ctx.checkpoint_dir(out)
    training_run = TrainingRun(
        stage="teacher",
        model=model,
        tokenizer=tokenizer,
        config=teacher,
        train_set=encoded["train"],
        eval_set=encoded["validation"],
        work_dir=work_dir,
        log_dir=out / "tensorboard",  # written only when report_to asks for it
        seed=ctx.seed,
    )
    trainer, history = train(training_run, num_labels=len(label_names))
    trainer.save_model(str(out / "model"))  # weights, config (with label names) and tokenizer

    (out / "logits").mkdir()
    metrics: dict[str, Any] = {
        "parameters": parameters,
        "source": teacher.model,
        "adapted": "adapt" in inputs,  # fine-tuned from the adapt stage's encoder
    }
    for name in ("validation", "test"):  # the labels stage caches every split for the student
        logits = predict_logits(trainer, encoded[name], f"teacher: {name} logits")
        save_logits(out / "logits" / f"{name}.npz", splits[name].ids, logits)
        metrics[name] = classification_metrics(logits, splits[name].labels, len(label_names))
    metrics.update(finish_training(trainer, history, out, work_dir))
    return metrics
