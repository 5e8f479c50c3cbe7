"""Stage `teacher` for question answering: fine-tune a pre-trained encoder with a span head
on the training questions (cut into windows), early stopping on validation SQuAD F1.

Outputs: ``model/`` (save_pretrained with its tokenizer), ``predictions/<split>.jsonl`` (its
answers to the validation and test questions), ``log_history.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import set_seed

from distill.config import DataConfig, TeacherConfig
from distill.pipeline.artifacts import RunContext
from distill.tasks.question_answering.examples import SPLITS, read_examples, write_answers
from distill.tasks.question_answering.metrics import qa_metrics
from distill.tasks.question_answering.models import load_qa_model, require_fast
from distill.tasks.question_answering.training import (
    answers_from_logits,
    example_windows,
    train,
    window_dataset,
    window_logits,
    windowing_of,
)
from distill.train.models import freeze, teacher_source
from distill.train.trainer import TrainingRun, finish_training


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig, teacher: TeacherConfig
) -> dict[str, Any]:
    splits = {name: read_examples(inputs["data"], name) for name in SPLITS}
    no_answer = any(not e.answerable for e in splits["train"])
    source, tokenizer = teacher_source(teacher, ctx.recipe_dir, adapted=inputs.get("adapt"))
    require_fast(tokenizer, "teacher.model")
    set_seed(ctx.seed)
    model = load_qa_model(source, "teacher.model", teacher.revision, teacher.trust_remote_code)
    parameters = freeze(model, teacher.freeze_embeddings, teacher.freeze_layers)
    windowing = windowing_of(data)
    windows = {name: example_windows(tokenizer, split, windowing) for name, split in splits.items()}
    sets = {name: window_dataset(cut) for name, (cut, _) in windows.items()}
    work_dir = ctx.checkpoint_dir(out)
    training_run = TrainingRun(
        stage="teacher",
        model=model,
        tokenizer=tokenizer,
        config=teacher,
        train_set=sets["train"],
        eval_set=sets["validation"],
        work_dir=work_dir,
        log_dir=out / "tensorboard",
        seed=ctx.seed,
    )
    trainer, history = train(
        training_run,
        examples=splits["validation"],
        windows=windows["validation"][0],
        data=data,
        no_answer=no_answer,
    )
    trainer.save_model(str(out / "model"))
    metrics: dict[str, Any] = {
        "parameters": parameters,
        "source": teacher.model,
        "adapted": "adapt" in inputs,
        "no_answer": no_answer,
        "windows": {name: vars(counts) for name, (_, counts) in windows.items()},
    }
    for name in ("validation", "test"):
        cut = windows[name][0]
        start, end = window_logits(trainer, sets[name], cut, f"teacher: {name} answers")
        answers = answers_from_logits(splits[name], cut, start, end, data, no_answer)
        write_answers(out / "predictions" / f"{name}.jsonl", [e.id for e in splits[name]], answers)
        metrics[name] = qa_metrics(splits[name], answers)
    metrics.update(finish_training(trainer, history, out, work_dir))
    return metrics
