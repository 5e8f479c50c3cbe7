"""[teacher] and the training keys every training table shares."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
)

from distill.config.tables import _Table, with_task_keys
from distill.tasks import TASKS


def _min_steps_default() -> str:
    """Each task's floor of optimizer steps, as the min_steps description gives it."""
    floors = ", ".join(f"{task.name} {task.default_min_steps}" for task in TASKS.values())
    return f"Default: the task's ({floors})."


def _kind_rates() -> str:
    """The learning rates of the kinds of student tasks add (Task.student_kinds)."""
    return "".join(
        f"; {init!r} students {kind.learning_rate:.0e}".replace("e-0", "e-")
        for task in TASKS.values()
        for init, kind in task.student_kinds.items()
    )


class TrainingConfig(_Table):
    """Keys shared by every training stage."""

    epochs: float = Field(
        3.0, gt=0, le=1000, description="Passes over the training data (unless min_steps is more)."
    )
    max_steps: int | None = Field(
        None,
        gt=0,
        description="Stop after this many optimizer steps (overrides epochs, min_steps).",
    )
    min_steps: int | None = Field(
        None,
        ge=0,
        le=10_000_000,
        description="Train at least this many optimizer steps when `epochs` would make fewer "
        f"(small data sets); 0 disables. {_min_steps_default()}",
    )
    learning_rate: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Default by what is trained: 5e-5 fine-tuning all pre-trained weights, "
        "1e-4 with embeddings or lower layers frozen; students cut from the teacher 2x that; "
        f"students from a config (random init) 3e-4{_kind_rates()}.",
    )
    batch_size: int = Field(
        32,
        ge=1,
        le=65536,
        description="Examples per optimizer step, over all processes under a launcher (it "
        "must divide evenly among them).",
    )
    weight_decay: float = Field(0.01, ge=0, le=1, description="AdamW weight decay.")
    warmup_ratio: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Fraction of the training steps over which the learning rate warms up "
        "from 0; 0 = no warmup.",
    )
    eval_steps: int | None = Field(
        None, gt=0, description="Evaluate (and checkpoint) every N steps; default every epoch."
    )
    early_stopping_patience: int = Field(
        2,
        ge=0,
        description="Evaluations without a lower validation loss before stopping; 0 disables.",
    )
    min_validation_examples: int = Field(
        50,
        ge=0,
        description="Early stopping and best-checkpoint choice need a validation split this big; "
        "below, the whole budget is trained and the last model kept (with a warning).",
    )
    freeze_embeddings: bool = Field(False, description="Do not train the embedding matrices.")
    freeze_layers: int = Field(
        0, ge=0, description="Freeze the lowest N transformer layers (0 = train them all)."
    )
    report_to: list[Literal["tensorboard"]] = Field(
        default_factory=list,
        description="Training trackers. Default `[]`: none, even if one is installed; "
        '`["tensorboard"]` writes `runs/<name>/<stage>/tensorboard/` (needs `pip install '
        "tensorboard`).",
    )

    def default_learning_rate(self) -> tuple[float, str]:
        """The learning rate when the recipe sets none, and why."""
        if self.freeze_embeddings or self.freeze_layers:
            return 1e-4, "pre-trained weights, embeddings or lower layers frozen"
        return 5e-5, "fine-tuning all pre-trained weights"


# The `archive` key of [teacher] and of pretrained students: one text for both.
ARCHIVE_DESCRIPTION = (
    "Parts of a split zip archive (local paths or 'pkg:DIST/path'), joined in order and "
    "unpacked once, atomically, into $DISTILL_CACHE/archives (default "
    "~/.cache/distill/archives); absolute paths, '..', links, duplicates and bomb-like "
    "ratios are refused. `model` then names the folder inside it."
)


class _TeacherConfig(TrainingConfig):
    """[teacher]: the large model fine-tuned on the domain data."""

    model: str = Field(description="Hub id, local folder, or 'pkg:DIST/path/in/package'.")
    archive: list[str] | None = Field(
        None,
        description=ARCHIVE_DESCRIPTION,
    )
    revision: str | None = Field(
        None, description="Hub revision (branch, tag or commit) of a hub `model`; default: main."
    )
    trust_remote_code: bool = Field(
        False, description="Allow the model's own Python code to run; refused otherwise."
    )


TeacherConfig = with_task_keys(_TeacherConfig, "teacher")
