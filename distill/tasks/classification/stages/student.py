"""Stage `student`: build small models and train them against the teacher's cached soft targets.

Beside each distilled student it trains the twins `baselines` names (same architecture,
same initialisation, same budget, cross-entropy on hard labels only), so the report can
show what distillation itself gained: ``no-kd`` (the default) learns the labelled examples
alone; ``pseudo-labels`` learns them plus the transfer text labelled with the teacher's
argmax, the same examples the distilled student sees, so that comparing the two isolates
what the soft targets add beyond the extra text. With hidden_weight / attention_weight the
teacher also runs online for the layer losses. With trim_vocabulary the student keeps only
the tokens its training text uses (the twin gets the same trimmed vocabulary).

Outputs, for the primary student (``[student]``): ``model/`` (save_pretrained +
tokenizer), ``logits/<split>.npz`` for validation and test, ``log_history.json``, and the
same under ``baseline/`` (no-KD twin) and ``pseudo/`` (pseudo-label twin) when trained; for
each ``[student.variants.NAME]`` the same files under ``variants/NAME/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from distill.config import DataConfig, StudentConfig, StudentTable
from distill.data.files import SPLITS, load_logits, read_label_names, save_logits
from distill.pipeline.artifacts import RunContext
from distill.tasks.classification.encoding import encode
from distill.tasks.classification.files import Split, read_split
from distill.tasks.classification.metrics import classification_metrics
from distill.tasks.classification.model_card import write_student_card
from distill.tasks.classification.models import load_classifier, load_saved_classifier
from distill.tasks.classification.training import train
from distill.train.layer_losses import LayerDistillation
from distill.train.students import build_student, prepare_student, save_student
from distill.train.trainer import TrainingRun, finish_training, predict_logits

# Each twin: its folder beside the distilled student (also its metrics key), and its name in logs.
TWINS = {
    "no-kd": ("baseline", "no-KD baseline"),
    "pseudo-labels": ("pseudo", "pseudo-label baseline"),
}


def _student_model(
    config: StudentConfig,
    data: DataConfig,
    ctx: RunContext,
    teacher_dir: Path,
    label_names: list[str],
    use_teacher: bool,
    trim_texts: list[str] | None,
    static_tables: Path,
) -> tuple[nn.Module, nn.Module, Any, dict[str, Any], LayerDistillation | None]:
    """The student (the model, what to train, its tokenizer, how it was built, and its
    layer losses), trimmed and frozen as the recipe says."""
    if config.init == "static":
        from distill.tasks.classification.static.build import build_static_student

        model, tokenizer, built = build_static_student(
            config,
            teacher_dir,
            label_names,
            trim_texts=trim_texts,
            max_length=data.max_length,
            cache_dir=static_tables,
            seed=ctx.seed,
        )
        model.embeddings.requires_grad_(not config.freeze_embeddings)
        return model, model, tokenizer, built, None
    model, tokenizer, built = build_student(
        config,
        teacher_dir,
        ctx,
        lambda source, key, revision, trust: load_classifier(
            source, key, label_names, revision=revision, trust_remote_code=trust
        ),
        load_saved_classifier,
    )
    model, trainable, tokenizer, layers = prepare_student(
        config,
        model,
        tokenizer,
        built,
        teacher_dir=teacher_dir,
        load_saved=load_saved_classifier,
        online_teacher=use_teacher,
        trim_texts=trim_texts,
        max_length=data.max_length,
        seed=ctx.seed,
    )
    return model, trainable, tokenizer, built, layers


def _train_variant(
    name: str,
    alpha: float,
    config: StudentConfig,
    data: DataConfig,
    ctx: RunContext,
    teacher_dir: Path,
    splits: dict[str, Split],
    teacher_logits: dict[str, Any],
    label_names: list[str],
    out: Path,
    checkpoint_name: str,
    static_tables: Path,
    pseudo_labels: bool = False,
) -> dict[str, Any]:
    """Train one student (distilled when alpha > 0, else a twin) and save it to ``out``;
    with ``pseudo_labels`` the transfer text is learnt with the teacher's argmax as label."""
    if pseudo_labels:
        splits = {**splits, "transfer": teacher_labelled(splits, teacher_logits)}
    use_teacher = alpha > 0
    trim_texts = (
        splits["train"].texts + (splits["transfer"].texts if "transfer" in splits else [])
        if config.trim_vocabulary
        else None
    )
    model, trainable, tokenizer, built, layers = _student_model(
        config, data, ctx, teacher_dir, label_names, use_teacher, trim_texts, static_tables
    )
    encoded = {
        split_name: encode(
            tokenizer, split, data.max_length, teacher_logits[split_name] if use_teacher else None
        )
        for split_name, split in splits.items()
    }
    train_set, examples = _training_set(encoded, splits, use_teacher or pseudo_labels)
    if pseudo_labels:
        examples["transfer_labels"] = "teacher argmax"
    work_dir = ctx.checkpoint_dir(out, checkpoint_name)
    training_run = TrainingRun(
        stage=f"student ({name})",
        model=trainable,
        tokenizer=tokenizer,
        config=config,
        train_set=train_set,
        eval_set=encoded["validation"],
        work_dir=work_dir,
        log_dir=out / "tensorboard",  # written only when report_to asks for it
        seed=ctx.seed,
    )
    trainer, history = train(
        training_run,
        num_labels=len(label_names),
        temperature=config.temperature,
        alpha=alpha,
        layers=layers,
    )
    metrics = save_student(
        trainer, model, tokenizer, layers, out, built=built, alpha=alpha, examples=examples
    )
    for split_name in ("validation", "test"):
        logits = predict_logits(trainer, encoded[split_name], f"student: {split_name} logits")
        save_logits(out / "logits" / f"{split_name}.npz", splits[split_name].ids, logits)
        metrics[split_name] = classification_metrics(
            logits, splits[split_name].labels, len(label_names), teacher_logits[split_name]
        )
    metrics.update(finish_training(trainer, history, out, work_dir))
    # The model card (README.md) beside the weights: base model, data, test metrics, teacher.
    write_student_card(
        out / "model",
        run_name=ctx.name,
        label_names=label_names,
        stage_metrics=metrics,
        student=config,
        teacher_stage=teacher_dir.parent,
        data_source=data.path,
        variant=name,
        base_dir=ctx.recipe_dir,
    )
    return metrics


def teacher_labelled(splits: dict[str, Split], teacher_logits: dict[str, Any]) -> Split:
    """The transfer text with the teacher's argmax as its label (the pseudo-label twin's)."""
    transfer = splits["transfer"]
    labels = np.asarray(teacher_logits["transfer"]).argmax(axis=-1).astype(np.int64)
    return Split(ids=transfer.ids, texts=transfer.texts, labels=labels)


def _training_set(
    encoded: dict[str, Any], splits: dict[str, Split], with_transfer: bool
) -> tuple[Any, dict[str, Any]]:
    """The labelled training split, followed by the transfer text when this model learns
    from it (the distilled student through the KD term, the pseudo-label twin through its
    hard labels); and how many of each."""
    examples: dict[str, Any] = {"labelled": len(splits["train"]), "transfer": 0}
    if not with_transfer or "transfer" not in encoded:
        return encoded["train"], examples
    import datasets

    examples["transfer"] = len(splits["transfer"])
    return datasets.concatenate_datasets([encoded["train"], encoded["transfer"]]), examples


def _train_student(
    config: StudentConfig, out: Path, name: str, common: dict[str, Any]
) -> dict[str, Any]:
    """One student of the recipe: distilled, then each twin its `baselines` name."""
    label = "distilled" if name == "main" else f"{name}, distilled"
    metrics = _train_variant(
        label, config.alpha, config=config, out=out, checkpoint_name=f"{name}-distilled", **common
    )
    for twin in config.twins:
        folder, what = TWINS[twin]
        (out / folder).mkdir()
        metrics[folder] = _train_variant(
            what if name == "main" else f"{name}, {what}",
            0.0,
            config=config,
            out=out / folder,
            checkpoint_name=f"{name}-{folder}",
            pseudo_labels=twin == "pseudo-labels",
            **common,
        )
    return metrics


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig, student: StudentTable
) -> dict[str, Any]:
    label_names = read_label_names(inputs["data"])
    splits = {name: read_split(inputs["data"], name) for name in SPLITS}
    teacher_logits = {
        name: load_logits(inputs["labels"] / "logits" / f"{name}.npz", split.ids)[1]
        for name, split in splits.items()
    }
    if student.transfer is not None:
        splits["transfer"] = read_split(inputs["labels"], "transfer")
        teacher_logits["transfer"] = load_logits(
            inputs["labels"] / "logits" / "transfer.npz", splits["transfer"].ids
        )[1]
    teacher_dir = inputs["teacher"] / "model"
    common = dict(
        data=data,
        ctx=ctx,
        teacher_dir=teacher_dir,
        splits=splits,
        teacher_logits=teacher_logits,
        label_names=label_names,
        # model2vec tables of static students, computed once for all of them.
        static_tables=out / "static_tables",
    )
    metrics = _train_student(student.variant("main"), out, "main", common)
    if student.variants:
        metrics["variants"] = {}
    for name in student.variants:
        folder = out / "variants" / name
        folder.mkdir(parents=True)
        metrics["variants"][name] = _train_student(student.variant(name), folder, name, common)
    return metrics
