"""The one Trainer of every task's teacher and student stages, on the transformers Trainer.

The Trainer gives early stopping, checkpoints and data-parallel training under
`accelerate launch` / `torchrun` without a loop of our own. What is minimized is the task's:
an :class:`Objective` turns a batch into a loss; the Trainer around it seals checkpoints,
resumes, stops on a non-finite loss, resolves the step budget and records it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from transformers import (
    EarlyStoppingCallback,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from distill.config import TrainingConfig
from distill.errors import DistillError
from distill.pipeline.artifacts import list_files, read_manifest, verify_files, write_json_atomic
from distill.pipeline.distributed import current, split_batch, use_cpu
from distill.pipeline.progress import PredictionProgress, TrainingProgress
from distill.train.budget import (
    Budget,
    resolve_budget,
    warn_if_still_improving,
)
from distill.train.layer_losses import unwrap_student
from distill.train.length_order import length_order, unsort

log = logging.getLogger("distill")


class NonFiniteLossError(DistillError):
    """Training produced a NaN or infinite loss."""


COMPLETE_MARKER = "distill-complete.json"


class MarkCompleteCheckpoints(TrainerCallback):
    """Seal each checkpoint once the Trainer has finished writing it.

    The Trainer does not write checkpoints atomically (transformers#35580 was reverted),
    so a kill during a save leaves a folder that looks complete. distill resumes only
    from a checkpoint whose marker lists every file with its sha256.
    """

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            payload = {"step": state.global_step, "files": list_files(folder)}
            write_json_atomic(folder / COMPLETE_MARKER, payload)


def _sealed(folder: Path) -> bool:
    marker = read_manifest(folder, COMPLETE_MARKER)
    return marker is not None and not verify_files(folder, marker)


def last_complete_checkpoint(work_dir: Path) -> Path | None:
    """The newest sealed checkpoint; unsealed (partial) ones are deleted so none is reused."""

    def step(folder: Path) -> int:
        suffix = folder.name.rpartition("-")[2]
        return int(suffix) if suffix.isdigit() else -1

    found = None
    for folder in sorted(work_dir.glob("checkpoint-*"), key=step, reverse=True):
        if _sealed(folder):
            found = found or folder
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return found


class EpochTimes(TrainerCallback):
    """Wall seconds of each epoch's training steps, from ``on_epoch_begin`` to
    ``on_epoch_end``: the evaluation and checkpoint the Trainer runs after an epoch are not in
    them (those every ``eval_steps`` within an epoch are). A resumed run times the epochs it
    runs itself, the first one partly."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._started: float | None = None

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._started is not None:
            self.seconds.append(time.perf_counter() - self._started)
            self._started = None


class Objective(Protocol):
    """What a task's training minimizes: a batch (which it may consume) to a loss."""

    def prepare(self, device: Any) -> None:
        """Move what it runs beside the student (a teacher run online) to ``device``."""

    def __call__(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], training: bool
    ) -> tuple[torch.Tensor, Any]:
        """The loss of ``model`` on ``inputs`` and the model's outputs; ``training`` is False
        in evaluation, which may score less than training does."""
        ...


class DistillationTrainer(Trainer):
    """A Trainer whose loss is the task's :class:`Objective`, checked finite on every batch."""

    budget: Budget | None = None  # what training_budget resolved; recorded in the manifest

    def __init__(
        self, *args: Any, stage: str, table: str, objective: Objective, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        show_progress(self, TrainingProgress(stage))
        self.epoch_times = EpochTimes()  # recorded in the manifest by finish_training
        self.add_callback(self.epoch_times)
        self.stage = stage
        self.table = table
        self.objective = objective
        objective.prepare(self.args.device)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        loss, outputs = self.objective(model, inputs, model.training)
        check_finite(loss, self.stage, self.table, self.state.global_step + 1)
        return (loss, outputs) if return_outputs else loss


def show_progress(trainer: Trainer, callback: Any = None) -> None:
    """distill's progress (``callback``) instead of the log dicts the Trainer prints to stdout
    (its PrinterCallback, added because ``disable_tqdm`` keeps its own bars off)."""
    trainer.remove_callback(PrinterCallback)
    if callback is not None:
        trainer.add_callback(callback)


def check_finite(loss: torch.Tensor, stage: str, table: str, step: int) -> None:
    """Checked on every batch: the Trainer's own logging hides NaN (logging_nan_inf_filter)."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(
            f"stage {stage}: loss is {loss.item()} at step {step}; "
            f"stopped, nothing saved. Lower {table}.learning_rate or check the data"
        )


def stopping_callbacks(config: TrainingConfig, budget: Budget) -> list[TrainerCallback]:
    """Checkpoint sealing, and early stopping unless the table or the budget turns it off."""
    callbacks: list[TrainerCallback] = [MarkCompleteCheckpoints()]
    if budget.early_stopping:
        callbacks.append(
            EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience)
        )
    return callbacks


def train_resuming(trainer: Trainer, work_dir: Path, stage: str) -> list[dict[str, Any]]:
    """``trainer.train()``, from the newest sealed checkpoint in ``work_dir`` if there is one."""
    resume = last_complete_checkpoint(work_dir) if work_dir.is_dir() else None
    if resume is not None:
        log.info("%s: resuming from %s", stage, resume)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return list(trainer.state.log_history)


def training_budget(
    config: TrainingConfig,
    train_set: Any,
    eval_set: Any,
    stage: str,
    default_min_steps: int,
) -> Budget:
    """The resolved budget of one training run, logged (the manifest records it too)."""
    budget = resolve_budget(
        config, len(train_set), len(eval_set), stage.split()[0], default_min_steps
    )
    log.info(
        "%s: %d training examples, %s; learning rate %g (%s)",
        stage,
        budget.train_examples,
        budget.why,
        budget.learning_rate,
        budget.learning_rate_why,
    )
    return budget


@contextmanager
def tensorboard_directory(log_dir: Path) -> Iterator[None]:
    """``TENSORBOARD_LOGGING_DIR`` set to ``log_dir`` for a block: transformers 5 dropped
    ``TrainingArguments.logging_dir``; its TensorBoard callback reads this variable when the
    Trainer is built."""
    previous = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(log_dir)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TENSORBOARD_LOGGING_DIR"]
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = previous


def training_arguments(
    config: TrainingConfig,
    output_dir: Path,
    seed: int,
    has_extra_columns: bool,
    table: str,
    budget: Budget,
    metric: str = "accuracy",
) -> TrainingArguments:
    """TrainingArguments from a recipe table and its resolved budget; every tracker choice
    explicit (report_to).

    ``metric`` picks the best checkpoint and drives early stopping (a loss: lower is better).
    """
    strategy = "steps" if budget.eval_steps is not None else "epoch"
    per_device, accumulation = split_batch(config.batch_size, current().world_size, table)
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        max_steps=budget.max_steps,
        learning_rate=budget.learning_rate,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        per_device_eval_batch_size=max(config.batch_size, 64),
        weight_decay=config.weight_decay,
        # transformers 5 reads a float in [0, 1) as a fraction of the steps (warmup_ratio is gone)
        warmup_steps=config.warmup_ratio,
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=budget.eval_steps,
        save_steps=budget.eval_steps,
        logging_steps=10,
        save_total_limit=2,
        # Without early stopping (tiny validation split) the last model is kept: picking
        # the "best" of checkpoints that few examples cannot tell apart is noise.
        load_best_model_at_end=budget.early_stopping,
        metric_for_best_model=metric,
        greater_is_better=not metric.endswith("loss"),
        report_to=list(config.report_to) or "none",
        seed=seed,
        data_seed=seed,
        train_sampling_strategy="group_by_length",  # batches of similar length: less padding
        remove_unused_columns=not has_extra_columns,
        # Said outright: the Trainer infers it from forward()'s signature, which a wrapped
        # student (layer losses) hides, and would then skip the loss in evaluation.
        label_names=["labels"],
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        disable_tqdm=True,
        use_cpu=use_cpu(),
    )


@dataclass(frozen=True)
class TrainingRun:
    """What every training run takes, whatever the task: which stage trains (``stage``
    starts with the recipe table it trains, "student (...)"), the model (a student wrapped
    with its layer-loss projections included) and its tokenizer, the table's training
    settings, the encoded training and evaluation sets, the checkpoint folder, the
    TensorBoard folder (written only when report_to asks for it) and the seed. A task's
    train function takes it with its own objective's settings and hands it on here."""

    stage: str
    model: nn.Module
    tokenizer: Any
    config: TrainingConfig
    train_set: Any
    eval_set: Any
    work_dir: Path
    log_dir: Path
    seed: int


def train(
    run: TrainingRun,
    *,
    objective: Objective,
    collator: Any,
    default_min_steps: int,
    has_extra_columns: bool,
    compute_metrics: Callable[[Any], dict[str, Any]] | None = None,
    metric: str = "accuracy",
    callbacks: Sequence[TrainerCallback] = (),
) -> tuple[Trainer, list[dict[str, Any]]]:
    """Train ``run`` with early stopping on the validation split (by ``metric``); the best
    checkpoint is loaded at the end.

    ``callbacks`` are the task's own; they run before the checkpoint seal, so a file one
    writes into a checkpoint in ``on_save`` is sealed (and checked on resume) with it."""
    table = run.stage.split()[0]
    budget = training_budget(run.config, run.train_set, run.eval_set, run.stage, default_min_steps)
    with tensorboard_directory(run.log_dir):  # read when the Trainer builds its callbacks
        trainer = DistillationTrainer(
            model=run.model,
            args=training_arguments(
                run.config,
                run.work_dir,
                run.seed,
                has_extra_columns=has_extra_columns,
                table=table,
                budget=budget,
                metric=metric,
            ),
            train_dataset=run.train_set,
            eval_dataset=run.eval_set,
            data_collator=collator,
            processing_class=run.tokenizer,
            compute_metrics=compute_metrics,
            callbacks=[*callbacks, *stopping_callbacks(run.config, budget)],
            stage=run.stage,
            table=table,
            objective=objective,
        )
    trainer.budget = budget
    return trainer, train_resuming(trainer, run.work_dir, run.stage)


def save_trained_model(trainer: Trainer, tokenizer: Any, folder: Path) -> None:
    """Save the trained model (the student alone when projections were trained beside it)."""
    if trainer.args.should_save:
        unwrap_student(trainer.model).save_pretrained(folder)
        tokenizer.save_pretrained(folder)


def predict_logits(trainer: Trainer, dataset: Any, desc: str = "predicting") -> np.ndarray:
    """The model's first output (its logits) in dataset order: :func:`predict_outputs`."""
    return predict_outputs(trainer, dataset, desc)[0]


def predict_outputs(
    trainer: Trainer, dataset: Any, desc: str = "predicting"
) -> tuple[np.ndarray, ...]:
    """Every output the model returns besides its loss (``logits``; a QA model's start and
    end logits), each in dataset order, the batches' progress shown as ``desc``.

    The examples are predicted longest first (each batch is padded to its longest one, so
    batches of like lengths pad least) and put back in dataset order. ``group_by_length`` sampling
    also reorders *evaluation* batches (transformers' ``_get_eval_sampler``), which would
    silently misalign logits and example ids: it is switched off for prediction.
    """
    trainer.args.train_sampling_strategy = "random"
    order = length_order([len(ids) for ids in dataset["input_ids"]])
    progress = PredictionProgress(desc)
    trainer.add_callback(progress)
    try:
        output = trainer.predict(dataset.select(order))
    finally:
        trainer.remove_callback(progress)
        progress.close()
    outputs = output.predictions if isinstance(output.predictions, tuple) else (output.predictions,)
    return tuple(unsort(np.asarray(o, dtype=np.float32), order) for o in outputs)


def save_log_history(path: Path, history: list[dict[str, Any]]) -> None:
    path.write_text(json.dumps(history, indent=1, default=float) + "\n", encoding="utf-8")


def drop_checkpoints(work_dir: Path) -> None:
    """Checkpoints are only for resuming; the stage's result is the saved model."""
    shutil.rmtree(work_dir, ignore_errors=True)
    try:
        work_dir.parent.rmdir()  # the stage's checkpoints folder, once its last variant is gone
    except OSError:
        pass


def finish_training(
    trainer: Trainer, history: list[dict[str, Any]], out: Path, work_dir: Path
) -> dict[str, Any]:
    """Save the training curves, drop the checkpoints, warn when validation loss was still
    falling; returns what the manifest records (with the resolved budget)."""
    save_log_history(out / "log_history.json", history)
    drop_checkpoints(work_dir)
    budget: Budget | None = getattr(trainer, "budget", None)
    return {
        "train_runtime_s": next(
            (h["train_runtime"] for h in history if "train_runtime" in h), None
        ),
        "epochs_run": trainer.state.epoch,
        "epoch_train_s": [round(s, 3) for s in epoch_seconds(trainer)],
        "steps": trainer.state.global_step,
        "batch": batch_layout(trainer),
        "budget": budget.as_metrics() if budget else None,
        "still_improving": warn_if_still_improving(
            history, getattr(trainer, "stage", "training"), budget
        ),
    }


def epoch_seconds(trainer: Trainer) -> list[float]:
    """Each epoch's training seconds (:class:`EpochTimes`) of a DistillationTrainer; empty for
    another Trainer."""
    times: EpochTimes | None = getattr(trainer, "epoch_times", None)
    return list(times.seconds) if times is not None else []


def batch_layout(trainer: Trainer) -> dict[str, int]:
    """How the recipe's batch was laid out over processes (recorded in the stage manifest)."""
    args = trainer.args
    per_device = args.per_device_train_batch_size
    return {
        "processes": args.world_size,
        "per_device_batch_size": per_device,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "effective_batch_size": per_device * args.gradient_accumulation_steps * args.world_size,
    }


def predictor(model: nn.Module, collator: Any, work_dir: Path, batch_size: int = 64) -> Trainer:
    """A Trainer used only for inference: under a launcher it shards the examples over the
    processes and gathers the outputs back in dataset order."""
    args = TrainingArguments(
        output_dir=str(work_dir),
        per_device_eval_batch_size=batch_size,
        report_to="none",
        dataloader_pin_memory=False,
        disable_tqdm=True,
        use_cpu=use_cpu(),
    )
    trainer = Trainer(model=model, args=args, data_collator=collator)
    show_progress(trainer)  # predict_logits shows each pass
    return trainer
