"""Seq2seq training on the shared Trainer: the objectives and a token-weighted loss.

The Trainer does the loop (early stopping on validation loss, sealed checkpoints, resumption);
this module gives it what is minimized. :class:`WordObjective` mixes the KL to the teacher's
cached top-k with cross-entropy (word-level KD, :mod:`.losses`); with ``alpha = 0`` it is the
plain cross-entropy that the teacher, the no-KD twin and the sequence-level students (gold
targets or the teacher's outputs: the data decides) are trained with. Evaluation always
scores the cross-entropy on the gold validation targets, so early stopping and the reported
validation loss compare every model alike.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from distill.pipeline.progress import track
from distill.tasks.seq2seq.encoding import HARD, TOP_K_COLUMNS, Seq2SeqCollator
from distill.tasks.seq2seq.losses import word_distillation_loss
from distill.tasks.seq2seq.task import Seq2Seq
from distill.train import trainer as shared
from distill.train.topk import IGNORE_INDEX


class WordObjective:
    """``alpha * T^2 * KL(top-k + tail) + (1 - alpha) * CE`` on a batch (its cached top-k
    columns consumed); ``alpha = 0``: cross-entropy alone, no cache needed."""

    def __init__(self, temperature: float = 1.0, alpha: float = 0.0) -> None:
        self.temperature, self.alpha = temperature, alpha

    def prepare(self, device: Any) -> None:
        """Nothing runs beside the student: the teacher is cached."""

    def __call__(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], training: bool
    ) -> tuple[torch.Tensor, Any]:
        cached = tuple(inputs.pop(column, None) for column in TOP_K_COLUMNS)
        hard = inputs.pop(HARD, None)
        labels = inputs["labels"]
        # The model shifts the labels right into its decoder inputs (its own loss is unused).
        outputs = model(**inputs)
        alpha = self.alpha if training else 0.0
        teacher = cached if alpha > 0 else None
        if alpha > 0 and cached[0] is None:
            raise ValueError("word-level KD needs the teacher's top-k columns in every batch")
        loss, _ = word_distillation_loss(
            outputs.logits,
            labels,
            teacher,  # type: ignore[arg-type]
            self.temperature,
            alpha,
            hard if training else None,
        )
        return loss, outputs


def train_seq2seq(
    run: shared.TrainingRun, *, temperature: float = 1.0, alpha: float = 0.0
) -> tuple[Trainer, list[dict[str, Any]]]:
    """Train ``run`` with early stopping on validation loss (gold targets, cross-entropy);
    the best checkpoint is loaded at the end."""
    return shared.train(
        run,
        objective=WordObjective(temperature=temperature, alpha=alpha),
        collator=Seq2SeqCollator(run.tokenizer.pad_token_id),
        default_min_steps=Seq2Seq.default_min_steps,
        has_extra_columns=True,  # the collator builds the masks; cached columns pass through
        metric="eval_loss",
    )


@torch.no_grad()
def token_loss(
    model: nn.Module,
    examples: list[dict[str, Any]],
    pad_id: int,
    batch_size: int = 32,
    desc: str = "loss",
) -> dict[str, Any]:
    """Summed target-token negative log-likelihood (nats) over ``examples`` under teacher
    forcing, the tokens scored, their mean (the loss) and its perplexity."""
    model.eval()
    collate = Seq2SeqCollator(pad_id)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in track(range(0, len(examples), batch_size), desc=desc, unit="batch"):
        batch = {k: v.to(device) for k, v in collate(examples[start : start + batch_size]).items()}
        logits = model(**batch).logits.float()
        labels = batch["labels"]
        total += float(
            torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                labels.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
        )
        count += int((labels != IGNORE_INDEX).sum())
    loss = total / count if count else float("nan")
    return {
        "nll": total,
        "tokens": count,
        "loss": loss,
        "perplexity": math.exp(loss) if count else float("nan"),
    }
