"""Stage `student` for seq2seq: the distilled student and its twins, all from one
initialisation (:func:`distill.tasks.seq2seq.models.build_student`) and one budget.

- ``model/``: the distilled student, by ``student.distillation``:
  'word': gold targets, KL x T^2 to the teacher's cached top-k mixed with cross-entropy by
  alpha; transfer sources teach through the KD term alone (their targets are the teacher's).
  'word+sequence': the same on the teacher's outputs instead of the gold targets (transfer
  pairs scored by both terms). 'sequence': cross-entropy on the teacher's outputs for the
  training and transfer sources (Kim & Rush's sequence-level KD).
- ``baseline/model/`` (student.baselines has 'no-kd'): cross-entropy on the gold targets.
- ``sequence/model/`` (student.sequence_twin, distillation not 'sequence'): cross-entropy on
  the teacher's outputs (training and transfer sources): what soft targets add beyond them.

Each folder also holds ``log_history.json``. Metrics per model: alpha, parameters, training
examples, validation loss (token cross-entropy on the gold validation targets), seconds and
the trainer's record; with how the student was built and, under ``before_training``, the
initial student's validation loss (every model starts from it).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from torch import nn

from distill.config import DataConfig, StudentTable
from distill.errors import ArtifactError
from distill.pipeline.artifacts import RunContext
from distill.tasks.seq2seq.encoding import as_dataset, encode_pairs
from distill.tasks.seq2seq.files import PairSplit, read_split
from distill.tasks.seq2seq.models import build_student, check_positions, freeze_seq2seq
from distill.tasks.seq2seq.stages.labels import load_top_k
from distill.tasks.seq2seq.task import SEQUENCE_TWIN
from distill.tasks.seq2seq.training import token_loss, train_seq2seq
from distill.train.models import load_tokenizer, parameter_counts
from distill.train.trainer import TrainingRun, finish_training, save_trained_model


class Pairs:
    """The pairs every student may learn from, encoded once: gold splits, the teacher's
    outputs (``sequence/``) and its cached top-k (``topk/``)."""

    def __init__(self, inputs: dict[str, Path], data: DataConfig, tokenizer: Any) -> None:
        self.data, self.tokenizer = data, tokenizer
        self.labels_dir = inputs["labels"]
        self.gold = {name: read_split(inputs["data"], name) for name in ("train", "validation")}

    def teacher_outputs(self, name: str) -> PairSplit:
        """The teacher's outputs for the ``name`` sources (``sequence/<name>.jsonl``)."""
        path = self.labels_dir / "sequence" / f"{name}.jsonl"
        if not path.is_file():
            raise ArtifactError(f"{path}: the teacher's outputs are missing; rerun --from labels")
        return read_split(path.parent, name)

    def encode(self, split: PairSplit) -> list[dict[str, Any]]:
        return encode_pairs(
            self.tokenizer,
            split,
            prefix=self.data.source_prefix,
            max_length=self.data.max_length,
            max_target_length=self.data.max_target_length,
        )

    def part(self, split: PairSplit, topk: str | None, hard: bool | None) -> Any:
        """One split as a dataset, with the top-k cached as ``topk/<topk>.npz``."""
        examples = self.encode(split)
        cache = None
        if topk is not None:
            path = self.labels_dir / "topk" / f"{topk}.npz"
            cache = load_top_k(path, split.ids, [len(e["labels"]) for e in examples])
        return as_dataset(examples, cache, hard)


def training_parts(pairs: Pairs, model: str, distillation: str, transfer: bool) -> list[Any]:
    """What ``model`` ('distilled', 'baseline' or the sequence twin) learns from, as
    dataset parts (training pairs, then transfer pairs)."""
    names = ["train", "transfer"] if transfer else ["train"]
    if model == "baseline":
        return [pairs.part(pairs.gold["train"], None, None)]
    if model == "distilled" and distillation == "word":
        gold = pairs.part(pairs.gold["train"], "train", True)
        return [gold] + [pairs.part(pairs.teacher_outputs(n), n, False) for n in names[1:]]
    if model == "distilled" and distillation == "word+sequence":
        return [pairs.part(pairs.teacher_outputs(n), n, True) for n in names]
    return [pairs.part(pairs.teacher_outputs(n), None, None) for n in names]


def _concatenate(parts: list[Any]) -> Any:
    import datasets

    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def _train_one(
    name: str,
    alpha: float,
    parts: list[Any],
    *,
    initial: nn.Module,
    config: Any,
    ctx: RunContext,
    pairs: Pairs,
    out: Path,
) -> dict[str, Any]:
    started = time.perf_counter()
    model = copy.deepcopy(initial)  # the distilled student and its twins start alike
    freeze_seq2seq(model, config.freeze_embeddings, config.freeze_layers, table="student")
    validation = pairs.encode(pairs.gold["validation"])
    work_dir = ctx.checkpoint_dir(out, name)
    training_run = TrainingRun(
        stage=f"student ({name})",
        model=model,
        tokenizer=pairs.tokenizer,
        config=config,
        train_set=_concatenate(parts),
        eval_set=as_dataset(validation),
        work_dir=work_dir,
        log_dir=out / "tensorboard",
        seed=ctx.seed,
    )
    trainer, history = train_seq2seq(training_run, temperature=config.temperature, alpha=alpha)
    save_trained_model(trainer, pairs.tokenizer, out / "model")
    metrics: dict[str, Any] = {
        "alpha": alpha,
        "parameters": parameter_counts(model),
        "training_examples": sum(len(p) for p in parts),
        "validation": token_loss(
            model, validation, pairs.tokenizer.pad_token_id, desc=f"student ({name}): loss"
        ),
    }
    metrics.update(finish_training(trainer, history, out, work_dir))
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    return metrics


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig, student: StudentTable
) -> dict[str, Any]:
    teacher_dir = inputs["teacher"] / "model"
    tokenizer = load_tokenizer(str(teacher_dir), "teacher model")
    pairs = Pairs(inputs, data, tokenizer)
    initial, built = build_student(teacher_dir, student, ctx.seed, ctx.recipe_dir)
    check_positions(initial.config, data, "the student")  # a pretrained one has its own
    validation = pairs.encode(pairs.gold["validation"])
    before = token_loss(initial, validation, tokenizer.pad_token_id, desc="student before training")
    distillation = student.distillation
    transfer = student.transfer is not None
    common = dict(initial=initial, config=student, ctx=ctx, pairs=pairs)
    alpha = 0.0 if distillation == "sequence" else student.alpha
    parts = training_parts(pairs, "distilled", distillation, transfer)
    metrics = _train_one("distilled", alpha, parts, out=out, **common)
    metrics.update(
        built=built,
        before_training={"validation": before},
        distillation=distillation,
        temperature=None if distillation == "sequence" else student.temperature,
        top_k=None if distillation == "sequence" else student.kd_top_k,
    )
    if "no-kd" in student.twins:
        (out / "baseline").mkdir()
        parts = training_parts(pairs, "baseline", distillation, transfer)
        metrics["baseline"] = _train_one("baseline", 0.0, parts, out=out / "baseline", **common)
    if student.sequence_twin and distillation != "sequence":
        (out / SEQUENCE_TWIN).mkdir()
        parts = training_parts(pairs, SEQUENCE_TWIN, distillation, transfer)
        metrics[SEQUENCE_TWIN] = _train_one(
            SEQUENCE_TWIN, 0.0, parts, out=out / SEQUENCE_TWIN, **common
        )
    return metrics
