"""Stage `student` for question answering: a small QA model trained against the teacher's
cached start and end logits per window (KL x T^2 on both distributions) mixed with the hard
span loss by alpha, beside its no-KD twin (same model, same budget, labelled questions only).

Students: the teacher's own layers (``teacher-layers``), a smaller pre-trained encoder
(``pretrained``, which must tokenize text as the teacher does: the cached logits are per
token), or a config. With hidden_weight / attention_weight the teacher also runs online for
the layer losses. Outputs: ``model/``, ``predictions/{validation,test}.jsonl``,
``log_history.json``, and the same under ``baseline/`` for the twin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.config import DataConfig, StudentConfig, StudentTable
from distill.data.ragged import load_ragged
from distill.pipeline.artifacts import RunContext
from distill.tasks.question_answering.examples import (
    SPLITS,
    Answer,
    QAExample,
    read_answers,
    read_examples,
    write_answers,
)
from distill.tasks.question_answering.metrics import qa_metrics
from distill.tasks.question_answering.models import (
    load_qa_model,
    load_saved_qa_model,
    require_fast,
)
from distill.tasks.question_answering.stages.labels import window_ids
from distill.tasks.question_answering.training import (
    answers_from_logits,
    example_windows,
    train,
    window_dataset,
    window_logits,
    windowing_of,
)
from distill.train.students import build_student, prepare_student, save_student
from distill.train.trainer import TrainingRun, finish_training


def _training_set(
    tokenizer: Any,
    splits: dict[str, list[QAExample]],
    names: list[str],
    labels_dir: Path | None,
    data: DataConfig,
) -> Any:
    """The labelled questions' windows, then (distilled student) the transfer questions'
    (without a gold span: the KD term alone scores them), each with the teacher's cached
    logits."""
    import datasets

    parts, count = [], 0
    for name in names:
        windows, _ = example_windows(
            tokenizer, splits[name], windowing_of(data), name != "transfer"
        )
        teacher = None
        if labels_dir is not None:
            cached = load_ragged(
                labels_dir / "logits" / f"{name}.npz", window_ids(splits[name], windows)
            )
            teacher = ([c[:, 0] for c in cached], [c[:, 1] for c in cached])
        parts.append(window_dataset(windows, teacher, name != "transfer", first_index=count))
        count += len(windows)
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def _train_one(
    name: str,
    alpha: float,
    config: StudentConfig,
    data: DataConfig,
    ctx: RunContext,
    inputs: dict[str, Path],
    splits: dict[str, list[QAExample]],
    teacher_answers: dict[str, list[Answer]],
    no_answer: bool,
    out: Path,
) -> dict[str, Any]:
    """Train one student (distilled when alpha > 0, else the twin) and save it to ``out``."""
    teacher_dir = inputs["teacher"] / "model"
    model, tokenizer, built = build_student(
        config, teacher_dir, ctx, load_qa_model, load_saved_qa_model
    )
    require_fast(tokenizer, "student.model")
    distilled = alpha > 0
    training = ["train", "transfer"] if distilled and "transfer" in splits else ["train"]
    model, trainable, tokenizer, layers = prepare_student(
        config,
        model,
        tokenizer,
        built,
        teacher_dir=teacher_dir,
        load_saved=load_saved_qa_model,
        online_teacher=distilled,
        trim_texts=None,  # refused by the recipe: the cached logits are per teacher token
        max_length=data.max_length,
        seed=ctx.seed,
    )
    train_set = _training_set(
        tokenizer, splits, training, inputs["labels"] if distilled else None, data
    )
    validation, _ = example_windows(tokenizer, splits["validation"], windowing_of(data))
    work_dir = ctx.checkpoint_dir(out, "distilled" if distilled else "baseline")
    training_run = TrainingRun(
        stage=f"student ({name})",
        model=trainable,
        tokenizer=tokenizer,
        config=config,
        train_set=train_set,
        eval_set=window_dataset(validation),
        work_dir=work_dir,
        log_dir=out / "tensorboard",
        seed=ctx.seed,
    )
    trainer, history = train(
        training_run,
        examples=splits["validation"],
        windows=validation,
        data=data,
        no_answer=no_answer,
        temperature=config.temperature,
        alpha=alpha,
        layers=layers,
    )
    examples = {s: len(splits[s]) for s in training}
    metrics = save_student(
        trainer, model, tokenizer, layers, out, built=built, alpha=alpha, examples=examples
    )
    (out / "logits").rmdir()  # save_student's folder for logits: QA keeps answers instead
    for split in ("validation", "test"):
        windows, _ = example_windows(tokenizer, splits[split], windowing_of(data))
        start, end = window_logits(trainer, window_dataset(windows), windows, f"student: {split}")
        answers = answers_from_logits(splits[split], windows, start, end, data, no_answer)
        ids = [e.id for e in splits[split]]
        write_answers(out / "predictions" / f"{split}.jsonl", ids, answers)
        metrics[split] = qa_metrics(splits[split], answers, teacher_answers[split])
    metrics.update(finish_training(trainer, history, out, work_dir))
    return metrics


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig, student: StudentTable
) -> dict[str, Any]:
    splits = {name: read_examples(inputs["data"], name) for name in SPLITS}
    if student.transfer is not None:
        splits["transfer"] = read_examples(inputs["labels"], "transfer")
    predictions = inputs["teacher"] / "predictions"
    teacher_answers = {
        split: read_answers(predictions / f"{split}.jsonl", [e.id for e in splits[split]])
        for split in ("validation", "test")
    }
    common = dict(
        config=student,
        data=data,
        ctx=ctx,
        inputs=inputs,
        splits=splits,
        teacher_answers=teacher_answers,
        no_answer=any(not e.answerable for e in splits["train"]),
    )
    metrics = _train_one("distilled", student.alpha, out=out, **common)
    if "no-kd" in student.twins:
        (out / "baseline").mkdir()
        metrics["baseline"] = _train_one("no-KD baseline", 0.0, out=out / "baseline", **common)
    return metrics
