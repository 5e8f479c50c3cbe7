"""Stage `teacher` for seq2seq: fine-tune a pre-trained encoder-decoder (T5, mT5, BART,
Marian) on the source-target pairs by cross-entropy, early stopping on validation loss.

With ``teacher.warm_start``, ``teacher.model`` is an encoder-only checkpoint (BERT): the
stage first builds a BERT2BERT encoder-decoder from it (:mod:`..warm_start`, Rothe et al.
2020) in its checkpoints folder and fine-tunes that.

``teacher.freeze_embeddings`` freezes the shared token embeddings (and an output head tied
to them); ``teacher.freeze_layers`` the lowest encoder layers. ``data.max_length`` and
``data.max_target_length`` must fit the model's learned positions.

Outputs: ``model/`` (save_pretrained + tokenizer), ``log_history.json`` and
``predictions/test.jsonl`` (its greedy output per test source). Metrics: parameters, the
validation and test loss (token cross-entropy on the gold targets) and the test BLEU of its
greedy outputs (sacrebleu).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from transformers import set_seed

from distill.config import DataConfig, TeacherConfig
from distill.pipeline.artifacts import RunContext
from distill.tasks.seq2seq.encoding import as_dataset, encode_pairs
from distill.tasks.seq2seq.files import PairSplit, read_split, write_split
from distill.tasks.seq2seq.generation import generate_texts
from distill.tasks.seq2seq.models import (
    check_positions,
    freeze_seq2seq,
    load_seq2seq,
    require_fast_tokenizer,
)
from distill.tasks.seq2seq.training import token_loss, train_seq2seq
from distill.tasks.seq2seq.warm_start import warm_start
from distill.train.models import teacher_source
from distill.train.trainer import TrainingRun, finish_training, save_trained_model

SPLITS = ("train", "validation", "test")


def corpus_bleu(outputs: list[str], references: list[str]) -> float:
    """sacrebleu's corpus BLEU (its default 13a tokenization) of ``outputs`` against one
    reference each."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(outputs, [references]).score)


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig, teacher: TeacherConfig
) -> dict[str, Any]:
    source, tokenizer = teacher_source(teacher, ctx.recipe_dir)
    require_fast_tokenizer(tokenizer, "teacher.model", teacher.model)
    set_seed(ctx.seed)
    warm_dir = ctx.checkpoint_dir(out, "warm-start")
    if teacher.warm_start:  # the encoder-decoder built from the encoder, loaded below
        source = str(warm_start(source, warm_dir, tokenizer))
    model = load_seq2seq(source, "teacher.model", teacher.revision, teacher.trust_remote_code)
    shutil.rmtree(warm_dir, ignore_errors=True)  # in memory now; the stage saves the trained one
    check_positions(model.config, data)
    parameters = freeze_seq2seq(model, teacher.freeze_embeddings, teacher.freeze_layers)
    splits = {name: read_split(inputs["data"], name) for name in SPLITS}
    encoded = {
        name: encode_pairs(
            tokenizer,
            split,
            prefix=data.source_prefix,
            max_length=data.max_length,
            max_target_length=data.max_target_length,
        )
        for name, split in splits.items()
    }
    work_dir = ctx.checkpoint_dir(out)
    training_run = TrainingRun(
        stage="teacher",
        model=model,
        tokenizer=tokenizer,
        config=teacher,
        train_set=as_dataset(encoded["train"]),
        eval_set=as_dataset(encoded["validation"]),
        work_dir=work_dir,
        log_dir=out / "tensorboard",
        seed=ctx.seed,
    )
    trainer, history = train_seq2seq(training_run)
    save_trained_model(trainer, tokenizer, out / "model")
    metrics: dict[str, Any] = {"parameters": parameters, "source": teacher.model}
    for name in ("validation", "test"):
        metrics[name] = token_loss(
            model, encoded[name], tokenizer.pad_token_id, desc=f"teacher: {name} loss"
        )
    test = splits["test"]
    outputs = generate_texts(
        model,
        tokenizer,
        test.sources,
        prefix=data.source_prefix,
        max_length=data.max_length,
        max_new_tokens=data.max_target_length,
        num_beams=1,
        desc="teacher: test outputs",
    )
    write_split(out / "predictions" / "test.jsonl", PairSplit(test.ids, test.sources, outputs))
    metrics["test"]["bleu_greedy"] = corpus_bleu(outputs, test.targets)
    metrics.update(finish_training(trainer, history, out, work_dir))
    return metrics
