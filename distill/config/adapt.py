"""[adapt]: continued masked-LM pre-training of the teacher's encoder on unlabelled domain
text before it is fine-tuned (DAPT with a path, TAPT without one; Gururangan et al. 2020)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from distill.config.tables import readers
from distill.config.training import TrainingConfig


def _refusers() -> str:
    """The tasks that refuse [adapt], as its description names them."""
    return readers(lambda task: "adapt" in task.refused_keys)


class AdaptConfig(TrainingConfig):
    """[adapt]: the teacher's encoder trained on unlabelled domain text with the masked-LM
    objective, then fine-tuned by the teacher stage; the training keys are its budget."""

    path: str | None = Field(
        None,
        description="Unlabelled domain text (DAPT): a .csv/.tsv/.json/.jsonl/.parquet file, "
        "'pkg:DIST/path', a hub dataset id, or 'unused' (the rows of data.path that "
        "data.max_examples left out). Unset: the run's own training text and "
        "[student.transfer] text (TAPT). Texts of the validation and test splits are always "
        "left out.",
    )
    text_column: str = Field("text", description="Its text column.")
    encoding: str | None = Field(None, description="Its text encoding; default: data.encoding.")
    max_examples: int | None = Field(
        None, gt=0, description="Use at most this many texts (a seeded sample); default: all."
    )
    held_out_fraction: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="Share of the texts held out to measure the masked-LM loss (before and "
        "after adapting, and for early stopping), masked once with the run's seed.",
    )
    max_length: int | None = Field(
        None, ge=8, le=8192, description="Tokens per text (truncation); default: data.max_length."
    )
    mlm_probability: float = Field(
        0.15,
        gt=0,
        lt=1,
        description="Share of the tokens masked; of those 80% become the mask token, 10% a "
        "random token, 10% stay (BERT's recipe).",
    )
    whole_word_mask: bool = Field(
        False,
        description="Mask every sub-token of a chosen word together (needs a fast tokenizer); "
        "transformers then turns every chosen token into the mask token (no random or kept ones).",
    )
    head_epochs: float = Field(
        1.0,
        ge=0,
        le=1000,
        description="Passes that train a NEW masked-LM head alone (the encoder frozen, about "
        "a third of a full step's cost) before the encoder trains: a random head's gradients "
        "would only disturb the encoder. Skipped when the checkpoint has a head; 0 disables.",
    )
    head_learning_rate: float = Field(
        1e-3, gt=0, le=1, description="Learning rate of the head-only passes."
    )
    baseline: Literal["teacher", "teacher-and-student", "none"] = Field(
        "teacher",
        description="'teacher': also fine-tune the teacher without adaptation (same seed and "
        "budget; stage `plain-teacher`), the report's evidence of what adaptation bought; "
        "'teacher-and-student': and label for and distil the students from that plain "
        "teacher too (stages `plain-labels`, `plain-student`), to show whether the gain "
        "reaches them; 'none': neither.",
    )
    epochs: float = Field(1.0, gt=0, le=1000, description="Passes over the adaptation text.")
    min_steps: int | None = Field(
        0, ge=0, le=10_000_000, description="Train at least this many optimizer steps."
    )
    early_stopping_patience: int = Field(
        1,
        ge=0,
        description="Evaluations without a lower held-out masked-LM loss before stopping; "
        "0 disables.",
    )


ADAPT_DESCRIPTION = (
    "Continued masked-LM pre-training of the teacher's encoder on unlabelled domain text, "
    "before the teacher stage fine-tunes it (stage `adapt`); absent: no adaptation."
)


def adapt_description() -> str:
    """[adapt]'s description in the recipe, naming the tasks that refuse it."""
    return f"{ADAPT_DESCRIPTION} Refused by {_refusers()}."
