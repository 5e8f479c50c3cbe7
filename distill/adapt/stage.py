"""The adapt stage's body, shared by the encoder tasks: the task's stage module reads its own
text (:class:`distill.adapt.text.OwnText`) and hands it here.

Outputs: ``model/`` (the adapted encoder in the teacher's own layout, with the tokenizer:
what the teacher stage fine-tunes), ``log_history.json``; the manifest records the texts
read and dropped, the held-out masked-LM loss and perplexity before and after, and whether
the masked-LM head was new.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import set_seed

from distill.adapt.masked_lm import (
    IGNORED,
    MaskedLMObjective,
    MaskingCollator,
    held_out_loss,
    load_masked_lm,
    mask_once,
    save_encoder,
)
from distill.adapt.text import DomainText, OwnText, domain_text
from distill.config import AdaptConfig, DataConfig, TeacherConfig
from distill.errors import ModelLoadError
from distill.pipeline.artifacts import RunContext
from distill.train import trainer as shared
from distill.train.models import freeze, teacher_source


def encode(tokenizer: Any, texts: list[str], max_length: int, offsets: bool) -> list[dict]:
    """Token ids with the special-token mask the masking needs (and character offsets for
    whole-word masking)."""
    encoded = tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        return_special_tokens_mask=True,
        return_offsets_mapping=offsets,
    )
    keys = [key for key in encoded if key != "offset_mapping" or offsets]
    return [{key: encoded[key][i] for key in keys} for i in range(len(texts))]


def _check_tokenizer(tokenizer: Any, adapt: AdaptConfig) -> None:
    if tokenizer.mask_token is None:
        raise ModelLoadError(
            "teacher.model: its tokenizer has no mask token, so [adapt] cannot mask its text"
        )
    if adapt.whole_word_mask and not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            "adapt.whole_word_mask = true needs a fast tokenizer (word offsets); "
            "teacher.model's tokenizer is not one"
        )


def _perplexity(loss: float) -> float | None:
    return round(math.exp(loss), 4) if math.isfinite(loss) and loss < 50 else None


def teacher_reference(
    model: str, archive: list[str] | None, revision: str | None, trust_remote_code: bool
) -> TeacherConfig:
    """The [teacher] keys naming the model, as the adapt stage receives them (it does not
    read the teacher's fine-tuning budget, so tuning that does not redo the adaptation)."""
    return TeacherConfig.model_construct(
        model=model, archive=archive, revision=revision, trust_remote_code=trust_remote_code
    )


def adapt_encoder(
    ctx: RunContext,
    out: Path,
    *,
    data: DataConfig,
    adapt: AdaptConfig,
    teacher: TeacherConfig,
    own: OwnText,
) -> dict[str, Any]:
    """Continue the teacher's pre-training with the masked-LM objective on the domain text
    (a new head first trained alone), early stopping on the held-out loss; save the encoder
    for the teacher stage."""
    text = domain_text(adapt, data, ctx.recipe_dir, own, ctx.seed)
    source, tokenizer = teacher_source(teacher, ctx.recipe_dir)
    _check_tokenizer(tokenizer, adapt)
    set_seed(ctx.seed)
    model, new_head = load_masked_lm(
        source, "teacher.model", teacher.revision, teacher.trust_remote_code
    )
    parameters = freeze(model, adapt.freeze_embeddings, adapt.freeze_layers, table="adapt")
    train_set, held_out = _datasets(tokenizer, text, adapt, data, ctx.seed)
    phase = Phase(ctx, out, tokenizer, adapt, train_set, held_out)
    losses = {"before": held_out_loss(model, held_out, tokenizer)}
    head = None
    if new_head and adapt.head_epochs > 0:
        head = phase.train_head(model)
        losses["after head"] = held_out_loss(model, held_out, tokenizer)
    trainer, history = phase.train(model, "adapt", adapt, "model")
    losses["after"] = held_out_loss(trainer.model, held_out, tokenizer)
    if trainer.args.should_save:
        save_encoder(
            trainer.model, source, out / "model", teacher.revision, teacher.trust_remote_code
        )
        tokenizer.save_pretrained(out / "model")
    return {
        "text": text.record,
        "masked_lm": {
            **{name: _scored(loss) for name, loss in losses.items()},
            "masked_tokens": sum(label != IGNORED for row in held_out for label in row["labels"]),
        },
        "head": "new (tied to the input embeddings)" if new_head else "pre-trained",
        "head_training": head,
        "mlm_probability": adapt.mlm_probability,
        "whole_word_mask": adapt.whole_word_mask,
        "max_length": adapt.max_length or data.max_length,
        "parameters": parameters,
        "source": teacher.model,
        **shared.finish_training(trainer, history, out, ctx.checkpoint_dir(out)),
    }


def _scored(loss: float) -> dict[str, float | None]:
    return {"loss": round(loss, 6), "perplexity": _perplexity(loss)}


class Phase:
    """One training run of the adapt stage on its texts (the head alone, then everything),
    each with its own checkpoints so an interrupted stage resumes where it stopped."""

    def __init__(
        self,
        ctx: RunContext,
        out: Path,
        tokenizer: Any,
        adapt: AdaptConfig,
        train_set: list[dict],
        held_out: list[dict],
    ) -> None:
        self.ctx, self.out, self.tokenizer, self.adapt = ctx, out, tokenizer, adapt
        self.train_set, self.held_out = Dataset.from_list(train_set), Dataset.from_list(held_out)

    def train(
        self, model: Any, stage: str, config: AdaptConfig, variant: str
    ) -> tuple[Any, list[dict[str, Any]]]:
        run = shared.TrainingRun(
            stage=stage,
            model=model,
            tokenizer=self.tokenizer,
            config=config,
            train_set=self.train_set,
            eval_set=self.held_out,
            work_dir=self.ctx.checkpoint_dir(self.out, variant),
            log_dir=self.out / "tensorboard",
            seed=self.ctx.seed,
        )
        collator = MaskingCollator(
            self.tokenizer, self.adapt.mlm_probability, self.adapt.whole_word_mask
        )
        return shared.train(
            run,
            objective=MaskedLMObjective(),
            collator=collator,
            default_min_steps=0,
            has_extra_columns=True,  # special_tokens_mask / offset_mapping feed the masking
            metric="eval_loss",
        )

    def train_head(self, model: Any) -> dict[str, Any]:
        """Train the new head alone (the encoder frozen: no gradient flows into it), so the
        encoder's first updates follow a head that predicts something."""
        encoder = [p for p in model.base_model.parameters() if p.requires_grad]
        for parameter in encoder:
            parameter.requires_grad_(False)
        config = self.adapt.model_copy(
            update={
                "epochs": self.adapt.head_epochs,
                "learning_rate": self.adapt.head_learning_rate,
                "max_steps": None,
                "min_steps": 0,
                "early_stopping_patience": 0,
            }
        )
        try:
            trainer, history = self.train(model, "adapt (head)", config, "head")
        finally:
            for parameter in encoder:
                parameter.requires_grad_(True)
        return {
            "steps": trainer.state.global_step,
            "learning_rate": self.adapt.head_learning_rate,
            "train_runtime_s": next(
                (h["train_runtime"] for h in history if "train_runtime" in h), None
            ),
        }


def _datasets(
    tokenizer: Any, text: DomainText, adapt: AdaptConfig, data: DataConfig, seed: int
) -> tuple[list[dict], list[dict]]:
    """The training examples (masked afresh in every batch) and the held-out slice (masked
    once, seeded)."""
    max_length = adapt.max_length or data.max_length
    train = encode(tokenizer, text.train, max_length, adapt.whole_word_mask)
    held = encode(tokenizer, text.held_out, max_length, adapt.whole_word_mask)
    masker = MaskingCollator(tokenizer, adapt.mlm_probability, adapt.whole_word_mask, seed=seed)
    return train, mask_once(held, masker)
