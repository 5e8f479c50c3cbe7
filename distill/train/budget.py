"""Training budgets that fit the data: how many optimizer steps, how often to evaluate, and
whether the validation split is big enough to stop on.

The Trainer's defaults (3 epochs, batch 32) are sized for large data sets: on 140 training
examples they make 15 optimizer steps, far from converged. A floor in steps (``min_steps``)
makes small sets train enough epochs while ``epochs`` still bounds large ones.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

from distill.config import TrainingConfig

log = logging.getLogger("distill")

EVALUATIONS_UNDER_FLOOR = 10  # evaluations over a floor-sized budget (not one per tiny epoch)
STILL_FALLING = 0.005  # relative drop of the last evaluation's loss that counts as "still falling"


@dataclass(frozen=True)
class Budget:
    """What a training stage runs, resolved from its table and the data size."""

    train_examples: int
    validation_examples: int
    steps_per_epoch: int
    steps: int  # planned optimizer steps
    epochs: float  # planned epochs (steps / steps_per_epoch)
    max_steps: int  # passed to the Trainer: -1 trains by epochs
    eval_steps: int | None  # None: evaluate every epoch
    early_stopping: bool
    learning_rate: float
    why: str
    learning_rate_why: str
    # The recipe key that fixed the budget when the recipe set it ("student.epochs = 2"):
    # a deliberate cap, so a still-falling loss at its end is information, not advice.
    set_by: str | None = None

    def as_metrics(self) -> dict[str, Any]:
        return asdict(self)


def resolve_budget(
    config: TrainingConfig,
    train_examples: int,
    validation_examples: int,
    table: str,
    default_min_steps: int,
) -> Budget:
    """Steps, evaluation interval, early stopping and learning rate for one training run.

    Explicit ``max_steps`` wins outright; otherwise ``epochs`` is the budget unless it
    makes fewer than ``min_steps`` steps, in which case ``min_steps`` is.
    """
    per_epoch = max(1, math.ceil(train_examples / config.batch_size))
    floor = config.min_steps if config.min_steps is not None else default_min_steps
    by_epochs = math.ceil(config.epochs * per_epoch)
    eval_steps = config.eval_steps
    if config.max_steps is not None:
        steps, max_steps, why = config.max_steps, config.max_steps, "max_steps"
    elif by_epochs >= floor:
        steps, max_steps = by_epochs, -1
        why = f"{config.epochs:g} epochs x {per_epoch} steps/epoch = {by_epochs} steps"
        if floor:
            why += f" (>= min_steps {floor})"
    else:
        steps, max_steps = floor, floor
        why = (
            f"{config.epochs:g} epochs x {per_epoch} steps/epoch = {by_epochs} steps < "
            f"min_steps {floor}: {floor} steps ({floor / per_epoch:.1f} epochs)"
        )
        if eval_steps is None:  # a few evaluations over the budget, not one per tiny epoch
            eval_steps = max(per_epoch, math.ceil(floor / EVALUATIONS_UNDER_FLOOR))
    learning_rate, lr_why = (
        (config.learning_rate, "set in the recipe")
        if config.learning_rate is not None
        else config.default_learning_rate()
    )
    return Budget(
        train_examples=train_examples,
        validation_examples=validation_examples,
        steps_per_epoch=per_epoch,
        steps=steps,
        epochs=round(steps / per_epoch, 2),
        max_steps=max_steps,
        eval_steps=eval_steps,
        early_stopping=_early_stopping(config, validation_examples, table),
        learning_rate=learning_rate,
        why=why,
        learning_rate_why=lr_why,
        set_by=_set_by(config, table, why, floor),
    )


def _set_by(config: TrainingConfig, table: str, why: str, floor: int) -> str | None:
    """The recipe key that decided the budget, when the recipe set it itself."""
    explicit = config.model_fields_set
    if why == "max_steps":
        return f"{table}.max_steps = {config.max_steps}" if "max_steps" in explicit else None
    if "< min_steps" in why:
        return f"{table}.min_steps = {floor}" if "min_steps" in explicit else None
    return f"{table}.epochs = {config.epochs:g}" if "epochs" in explicit else None


# What a training table stops on, and how a recipe makes it bigger: the validation split
# (teacher, students) or the adapt stage's held-out slice of its own text.
HELD_OUT = {
    "data": ("validation split", "raise data.validation_fraction or give data.validation_path"),
    "adapt": ("held-out slice", "raise adapt.held_out_fraction"),
}


def _early_stopping(config: TrainingConfig, validation_examples: int, table: str) -> bool:
    """Early stopping (and best-checkpoint choice) only on a validation split that can tell
    checkpoints apart: on 20 examples one example moves accuracy by 5 points."""
    if config.early_stopping_patience == 0:
        return False
    if validation_examples < config.min_validation_examples:
        split, remedy = HELD_OUT.get(table, HELD_OUT["data"])
        log.warning(
            "%s: %s has %d examples (< %s.min_validation_examples = %d): early "
            "stopping is off and the last model is kept; %s to stop on it",
            table,
            split,
            validation_examples,
            table,
            config.min_validation_examples,
            remedy,
        )
        return False
    return True


def still_improving(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last two validation losses when the last one is the best and fell by more than
    ``STILL_FALLING`` (relative): training stopped while the model was still learning."""
    losses = [float(h["eval_loss"]) for h in history if isinstance(h.get("eval_loss"), int | float)]
    if len(losses) < 2 or losses[-1] > min(losses) or losses[-2] <= 0:
        return None
    drop = (losses[-2] - losses[-1]) / losses[-2]
    if drop <= STILL_FALLING:
        return None
    return {"previous_eval_loss": losses[-2], "last_eval_loss": losses[-1], "relative_drop": drop}


def warn_if_still_improving(
    history: list[dict[str, Any]], stage: str, budget: Budget | None = None
) -> dict[str, Any] | None:
    """Log a warning when validation loss was still falling at the end; returns the evidence.

    When the recipe set the budget itself (a deliberate cap, like the quick start's
    ``epochs = 2``), it is said as information, and the evidence names the key."""
    found = still_improving(history)
    if found is not None and budget is not None and budget.set_by:
        found["budget_set_by"] = budget.set_by
        log.info(
            "%s: validation loss was still falling at the end (%.4g -> %.4g, -%.1f%% at the "
            "last evaluation) of the budget the recipe sets (%s)",
            stage,
            found["previous_eval_loss"],
            found["last_eval_loss"],
            100 * found["relative_drop"],
            budget.set_by,
        )
    elif found is not None:
        table = stage.split()[0]
        log.warning(
            "%s: validation loss was still falling at the end (%.4g -> %.4g, -%.1f%% at the "
            "last evaluation): the model is probably under-trained; raise %s.min_steps or "
            "%s.epochs",
            stage,
            found["previous_eval_loss"],
            found["last_eval_loss"],
            100 * found["relative_drop"],
            table,
            table,
        )
    return found
