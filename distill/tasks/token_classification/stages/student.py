"""Stage `student` for tagging: a small tagger trained against the teacher's cached per-sub-
token soft targets (the KD term over every real sub-token, or each word's first), with CE on
first sub-tokens, beside its no-KD twin (same model, same budget, labelled sentences only).

Students: the teacher's own layers (``teacher-layers``), a smaller pre-trained encoder
(``pretrained``, which must segment text as the teacher does), or a config. With
hidden_weight / attention_weight the teacher also runs online for the layer losses (every
real sub-token of the labelled and transfer sentences). With trim_vocabulary the student
keeps only the tokens its training text uses (the twin too).
Outputs: ``model/`` and ``logits/{validation,test}.npz``, ``log_history.json``, and the
same under ``baseline/`` for the twin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import Trainer

from distill.config import DataConfig, StudentConfig, StudentTable
from distill.data.files import SPLITS
from distill.data.ragged import load_ragged, save_ragged
from distill.pipeline.artifacts import RunContext
from distill.tasks.token_classification.files import TaggedSplit, read_tag_names, read_tagged_split
from distill.tasks.token_classification.metrics import aligned, tagging_metrics, word_tags
from distill.tasks.token_classification.models import load_saved_tagger, load_tagger, require_fast
from distill.tasks.token_classification.training import (
    encode,
    logits_word_tags,
    sentence_logits,
    train,
)
from distill.train.models import load_tokenizer
from distill.train.students import build_student, prepare_student, save_student
from distill.train.trainer import TrainingRun, finish_training


def _train_one(
    name: str,
    alpha: float,
    config: StudentConfig,
    data: DataConfig,
    ctx: RunContext,
    teacher_dir: Path,
    splits: dict[str, TaggedSplit],
    teacher_logits: dict[str, list[Any]],
    teacher_words: dict[str, list[list[str]]],
    tag_names: list[str],
    out: Path,
) -> dict[str, Any]:
    """Train one student (distilled when alpha > 0, else the twin) and save it to ``out``."""
    model, tokenizer, built = build_student(
        config,
        teacher_dir,
        ctx,
        lambda source, key, revision, trust: load_tagger(source, key, tag_names, revision, trust),
        load_saved_tagger,
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
        load_saved=load_saved_tagger,
        online_teacher=distilled,
        trim_texts=(
            [" ".join(words) for split in training for words in splits[split].tokens]
            if config.trim_vocabulary
            else None
        ),
        max_length=data.max_length,
        seed=ctx.seed,
    )
    train_set = _training_set(
        tokenizer, splits, training, teacher_logits if distilled else None, data, config
    )
    validation, _ = encode(
        tokenizer, splits["validation"].tokens, splits["validation"].tags, data.max_length
    )
    work_dir = ctx.checkpoint_dir(out, "distilled" if distilled else "baseline")
    training_run = TrainingRun(
        stage=f"student ({name})",
        model=trainable,
        tokenizer=tokenizer,
        config=config,
        train_set=train_set,
        eval_set=validation,
        work_dir=work_dir,
        log_dir=out / "tensorboard",
        seed=ctx.seed,
    )
    trainer, history = train(
        training_run,
        tag_names=tag_names,
        temperature=config.temperature,
        alpha=alpha,
        layers=layers,
    )
    examples = {s: len(splits[s]) for s in training}
    metrics = save_student(
        trainer, model, tokenizer, layers, out, built=built, alpha=alpha, examples=examples
    )
    for split_name in ("validation", "test"):
        metrics[split_name] = _score(
            trainer, tokenizer, splits[split_name], split_name, tag_names, teacher_words, data, out
        )
    metrics.update(finish_training(trainer, history, out, work_dir))
    return metrics


def _score(
    trainer: Trainer,
    tokenizer: Any,
    split: TaggedSplit,
    split_name: str,
    tag_names: list[str],
    teacher_words: dict[str, list[list[str]]],
    data: DataConfig,
    out: Path,
) -> dict[str, Any]:
    """The student's logits on one evaluation split, saved to ``out/logits``, and its
    tagging metrics (against the gold tags and the teacher's)."""
    dataset, starts = encode(tokenizer, split.tokens, split.tags, data.max_length)
    logits = sentence_logits(trainer, dataset, f"student: {split_name} logits")
    save_ragged(out / "logits" / f"{split_name}.npz", split.ids, logits)
    gold = [[tag_names[t] for t in tags] for tags in split.tags]
    predicted = word_tags(logits, starts, tag_names)
    gold, predicted, reference = aligned(gold, predicted, teacher_words[split_name])
    return tagging_metrics(gold, predicted, reference)


def _training_set(
    tokenizer: Any,
    splits: dict[str, TaggedSplit],
    names: list[str],
    teacher_logits: dict[str, list[Any]] | None,
    data: DataConfig,
    config: StudentConfig,
) -> Any:
    """The labelled sentences, then (distilled student) the transfer sentences, unlabelled."""
    import datasets

    parts = []
    for name in names:
        split = splits[name]
        tags = None if name == "transfer" else split.tags
        cached = teacher_logits[name] if teacher_logits is not None else None
        dataset, _ = encode(
            tokenizer, split.tokens, tags, data.max_length, cached, config.subtokens
        )
        parts.append(dataset)
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def _teacher_words(
    teacher_dir: Path,
    splits: dict[str, TaggedSplit],
    teacher_logits: dict[str, list[Any]],
    tag_names: list[str],
    max_length: int,
) -> dict[str, list[list[str]]]:
    """The teacher's word tags on validation and test, read through the teacher's own
    segmentation (a trimmed student vocabulary splits unseen words otherwise)."""
    tokenizer = load_tokenizer(str(teacher_dir), "teacher model")
    words = {}
    for name in ("validation", "test"):
        words[name] = logits_word_tags(
            tokenizer, splits[name].tokens, teacher_logits[name], tag_names, max_length
        )
    return words


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig, student: StudentTable
) -> dict[str, Any]:
    tag_names = read_tag_names(inputs["data"])
    splits = {name: read_tagged_split(inputs["data"], name) for name in SPLITS}
    if student.transfer is not None:
        splits["transfer"] = read_tagged_split(inputs["labels"], "transfer")
    teacher_logits = {
        name: load_ragged(inputs["labels"] / "logits" / f"{name}.npz", split.ids)
        for name, split in splits.items()
    }
    teacher_words = _teacher_words(
        inputs["teacher"] / "model", splits, teacher_logits, tag_names, data.max_length
    )
    common = dict(
        teacher_words=teacher_words,
        config=student,
        data=data,
        ctx=ctx,
        teacher_dir=inputs["teacher"] / "model",
        splits=splits,
        teacher_logits=teacher_logits,
        tag_names=tag_names,
    )
    metrics = _train_one("distilled", student.alpha, out=out, **common)
    if "no-kd" in student.twins:
        (out / "baseline").mkdir()
        metrics["baseline"] = _train_one("no-KD baseline", 0.0, out=out / "baseline", **common)
    return metrics
