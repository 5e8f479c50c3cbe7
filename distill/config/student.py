"""[student]: the student, its kind's defaults, and the variants trained beside it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    create_model,
    field_serializer,
    model_validator,
)

from distill.config.data import TransferConfig
from distill.config.tables import TwinName, _Table, noted, with_task_keys
from distill.config.training import ARCHIVE_DESCRIPTION, TrainingConfig
from distill.tasks import TASKS

# Every way of building a student, in registry order (the first task's ways first), and
# those a task adds that build no transformer layers (Task.student_kinds), each with the
# budget measured for it and the keys only it reads.
STUDENT_INITS = tuple(dict.fromkeys(init for task in TASKS.values() for init in task.student_inits))
KINDS = {init: kind for task in TASKS.values() for init, kind in task.student_kinds.items()}
_KIND_OWNERS = {
    init: " and ".join(repr(t.name) for t in TASKS.values() if init in t.student_kinds)
    for init in KINDS
}
# The training budget keys measured per kind of student (transformers, or one of KINDS).
_KIND_KEYS = {"learning_rate", "epochs"}


def student_kind(init: str) -> str:
    """``init`` itself for a kind of KINDS, else 'transformer': each kind has its own
    defaults."""
    return init if init in KINDS else "transformer"


def _epochs_description() -> str:
    defaults = "".join(
        f"; a {init!r} student {kind.defaults['epochs']:g}"
        for init, kind in KINDS.items()
        if "epochs" in kind.defaults
    )
    return f"Passes over the training data (unless min_steps is more). Default 3{defaults}."


def _init_description() -> str:
    kinds = "".join(
        f", or {init!r}: {kind.description} (task {_KIND_OWNERS[init]} only)"
        for init, kind in KINDS.items()
    )
    return (
        "How the student is built: the teacher's own layers, a smaller pre-trained model, "
        f"the teacher's config with overrides (random init){kinds}."
    )


class _StudentConfig(TrainingConfig):
    """[student]: the small model trained against the teacher's soft targets."""

    epochs: float = Field(3.0, gt=0, le=1000, description=_epochs_description())

    init: Literal[STUDENT_INITS] = Field(  # type: ignore[valid-type]
        "teacher-layers", description=_init_description()
    )
    num_layers: int | None = Field(
        None,
        ge=1,
        description=noted(
            "student.num_layers",
            "teacher-layers/config: keep this many layers (teacher-layers: evenly spaced, "
            "always the last).",
        ),
    )
    layers: list[int] | None = Field(
        None,
        description=noted(
            "student.layers", "teacher-layers: explicit teacher layer indices to keep, in order."
        ),
    )
    model: str | None = Field(
        None,
        description="pretrained: hub id, folder or pkg: path (its own tokenizer is fine); with "
        "`archive`, the folder inside the archive.",
    )
    archive: list[str] | None = Field(
        None,
        description=ARCHIVE_DESCRIPTION,
    )
    revision: str | None = Field(
        None, description="pretrained: hub revision (branch, tag or commit) of `model`."
    )
    config: dict[str, int | float | str | bool] | None = Field(
        None,
        description="config: fields overriding the teacher's config (e.g. hidden_size); the "
        "student starts from random weights.",
    )
    temperature: float = Field(
        2.0,
        gt=0,
        le=100,
        description="Softmax temperature T of the distillation term: teacher and student "
        "logits are divided by T (higher: softer targets), the term scaled by T^2.",
    )
    alpha: float = Field(
        0.5,
        ge=0,
        le=1,
        description=noted(
            "student.alpha",
            "Weight of the distillation term; 1 - alpha weights cross-entropy on the hard "
            "labels. 0 = no distillation.",
        ),
    )
    baseline: bool | None = Field(
        None,
        description="Older spelling of `baselines`: true = ['no-kd'] (the default), "
        "false = [] (no twin).",
    )
    baselines: list[TwinName] | None = Field(
        None,
        description="Twins trained beside each student (same architecture, initialisation "
        "and budget, alpha = 0), for the report: 'no-kd' on the labelled examples alone "
        "(folder baseline/); 'pseudo-labels' on them plus the transfer text labelled with the "
        "teacher's argmax (folder pseudo/; needs student.transfer), so distilled vs this twin "
        "measures what soft targets add. Default: ['no-kd']; [] trains none.",
    )
    transfer: TransferConfig | None = Field(
        None,
        description="Extra unlabelled domain text the teacher labels with soft targets, for "
        "every student to learn from.",
    )
    hidden_weight: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="Weight of the hidden-state loss (MSE between mapped layers' outputs, "
        "through a learned projection, thrown away after training, when widths differ). The "
        "teacher runs online and must tokenize like the student. 0 = off.",
    )
    attention_weight: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="Weight of the attention-map loss (KL between mapped layers' attention "
        "distributions, averaged over heads when head counts differ); needs the teacher's "
        "tokenizer. 0 = off.",
    )
    # A TOML array is a list: the pair is read from one (its numbers stay strict).
    layer_map: list[Annotated[tuple[int, int], Strict(False)]] | None = Field(
        None,
        description="[[student_layer, teacher_layer], ...] for the layer losses, counted from 0. "
        "Default: uniform (student layer i <- teacher layer round((i+1)*n/m)-1).",
    )
    trim_vocabulary: bool = Field(
        False,
        description="Keep only the tokens that occur in the training (and transfer) text plus "
        "special tokens: the embedding matrix shrinks and the renumbered tokenizer ships in "
        "the bundle; unseen tokens fall back to shorter pieces or [UNK]. WordPiece only.",
    )
    trust_remote_code: bool = Field(
        False, description="pretrained: allow the model's own Python code to run."
    )

    @model_validator(mode="after")
    def _kind_defaults(self) -> _StudentConfig:
        """A student of one of KINDS left without a budget gets the one measured for it;
        filled in after validation so that ``model_fields_set`` still says what the recipe
        set (the budget tells a cap the recipe chose from a default by it)."""
        kind = KINDS.get(self.init)
        for key, value in (kind.defaults if kind else {}).items():
            if key not in self.model_fields_set:
                self.__dict__[key] = value  # frozen: the model's own fill-in of a default
        return self

    @model_validator(mode="after")
    def _init_has_what_it_needs(self) -> _StudentConfig:
        problems = self._init_key_problems()
        if problems:
            raise ValueError("; ".join(problems))
        if self.init == "pretrained" and not self.model:
            raise ValueError("init = 'pretrained' needs student.model")
        if self.init == "teacher-layers":
            if self.num_layers is None and self.layers is None:
                raise ValueError("init = 'teacher-layers' needs student.num_layers or .layers")
            if self.layers is not None:
                if not self.layers or min(self.layers) < 0:
                    raise ValueError("student.layers must be non-empty, indices >= 0")
                if self.num_layers is not None and self.num_layers != len(self.layers):
                    raise ValueError("student.num_layers disagrees with len(student.layers)")
        if self.init == "config" and not self.config and self.num_layers is None:
            raise ValueError("init = 'config' needs student.config or student.num_layers")
        problems = self._twin_problems()
        if problems:
            raise ValueError("; ".join(problems))
        if self.transfer is not None and self.alpha == 0:
            raise ValueError(
                "student.transfer needs alpha > 0: unlabelled text teaches only through the teacher"
            )
        if self.init != "pretrained" and self.archive:
            raise ValueError("student.archive is only used with init = 'pretrained'")
        if self.init != "pretrained" and self.model:
            raise ValueError(
                f"student.model is only used with init = 'pretrained' (not {self.init!r})"
            )
        if self.layer_map is not None:
            if not self.layer_map:
                raise ValueError("student.layer_map must map at least one layer")
            if self.hidden_weight == 0 and self.attention_weight == 0:
                raise ValueError(
                    "student.layer_map is used only with hidden_weight or attention_weight > 0"
                )
            if min(min(pair) for pair in self.layer_map) < 0:
                raise ValueError("student.layer_map: layers count from 0")
        return self

    def _init_key_problems(self) -> list[str]:
        """Keys the chosen way of building the student would ignore (each named)."""
        kind = KINDS.get(self.init)
        if kind is not None:
            ignored = self._changed(_LAYER_KEYS)
            if ignored:
                return [
                    f"init = {self.init!r} builds {kind.builds}, not transformer layers: "
                    f"{', '.join('student.' + key for key in ignored)} would be ignored; "
                    "remove them"
                ]
            return []
        for init, other in KINDS.items():
            ignored = self._changed(other.keys)
            if ignored:
                return [
                    f"{', '.join('student.' + key for key in ignored)} "
                    f"{'is' if len(ignored) == 1 else 'are'} only used with init = {init!r} "
                    f"(not {self.init!r})"
                ]
        return []

    def _changed(self, keys: tuple[str, ...]) -> list[str]:
        """Those of ``keys`` this table has (a task may not add them) set off their default."""
        fields = type(self).model_fields
        return [key for key in keys if key in fields and getattr(self, key) != fields[key].default]

    def default_learning_rate(self) -> tuple[float, str]:
        """Random weights move further than pre-trained ones; layers cut from the teacher
        re-adapt to new neighbours, so both start higher than fine-tuning. A kind of
        student of KINDS has its own."""
        kind = KINDS.get(self.init)
        if kind is not None:
            return kind.learning_rate, kind.learning_rate_why
        if self.init == "config":
            return 3e-4, "student from a config (random initialisation)"
        rate, why = super().default_learning_rate()
        if self.init == "teacher-layers":
            return 2 * rate, f"student cut from the teacher's layers; {why}"
        return rate, why

    def _twin_problems(self) -> list[str]:
        """What is wrong with baseline / baselines (both keys name the same twins)."""
        problems = []
        if self.baseline is not None and self.baselines is not None:
            problems.append(
                "student.baseline and student.baselines both set: keep baselines "
                "(baseline = true/false is the older spelling of ['no-kd'] / [])"
            )
        if self.baselines is not None and len(set(self.baselines)) != len(self.baselines):
            problems.append("student.baselines lists a twin twice")
        if "pseudo-labels" in self.twins and self.transfer is None:
            problems.append(
                "student.baselines = ['pseudo-labels'] needs student.transfer: the twin "
                "learns the teacher's hard labels on the transfer text"
            )
        return problems

    @property
    def twins(self) -> list[str]:
        """The twins to train beside the distilled student, in training order."""
        if self.baselines is not None:
            return list(self.baselines)
        return [] if self.baseline is False else ["no-kd"]

    @property
    def layer_losses(self) -> bool:
        return self.hidden_weight > 0 or self.attention_weight > 0


# Keys that only mean something for transformer students (those only a kind of KINDS reads
# are its `keys`): set off their defaults on another kind, each is an error.
_LAYER_KEYS = (
    "num_layers",
    "layers",
    "config",
    "hidden_weight",
    "attention_weight",
    "layer_map",
    "freeze_layers",
)

StudentConfig = with_task_keys(_StudentConfig, "student")

# [student.variants.NAME]: any [student] key except `variants` and `transfer` (the
# transfer text is labelled once for all students), every one optional: a variant is
# [student] with those keys replaced.
_VARIANT_EXCLUDED = {"variants", "transfer"}
StudentVariant = create_model(  # type: ignore[call-overload]
    "StudentVariant",
    __base__=_Table,
    __doc__="[student.variants.NAME]: keys that differ from [student] for this student.",
    **{
        name: (field.annotation | None, Field(None, description=field.description))
        for name, field in StudentConfig.model_fields.items()
        if name not in _VARIANT_EXCLUDED
    },
)
# Keys that say how the primary student is built; a variant with another `init` drops them.
_INIT_KEYS = {
    "model",
    "archive",
    "revision",
    "layers",
    "num_layers",
    "config",
    "trust_remote_code",
    *(key for kind in KINDS.values() for key in kind.keys),
}
# Two spellings of one setting: a variant setting either replaces both of the primary's.
_TWIN_KEYS = {"baseline", "baselines"}
VariantName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")]


def _with_fields_set(config: Any, keys: set[str]) -> Any:
    """``config`` marked as setting ``keys`` only: a student resolved from a full dump of
    [student] would count every key as set by the recipe."""
    config.__pydantic_fields_set__.intersection_update(keys)
    return config


class StudentTable(StudentConfig):
    """[student]: the primary student, plus optional variants trained, exported and compared
    beside it (e.g. 2, 3 and 4 layers, or several temperatures)."""

    variants: dict[VariantName, StudentVariant] = Field(  # type: ignore[valid-type]
        default_factory=dict,
        description="Further students, each [student] with the keys its table names replaced "
        "(one with another init drops the primary's model, layers and config keys, and one of "
        "another kind of student, transformer or not, its epochs and learning_rate). Each is "
        "trained, exported as export/<name>.NAME/ and compared in the report.",
    )

    @field_serializer("variants")
    def _only_the_keys_each_variant_sets(self, variants: dict[str, Any]) -> dict[str, Any]:
        # What a variant leaves unset it inherits: a full dump (with None) would lose that.
        return {name: v.model_dump(mode="json", exclude_unset=True) for name, v in variants.items()}

    @model_validator(mode="after")
    def _variants_are_valid_students(self) -> StudentTable:
        problems = []
        for name in self.variants:
            try:
                self.variant(name)
            except ValidationError as exc:
                for error in exc.errors():
                    where = ".".join(str(p) for p in error["loc"])
                    message = error["msg"].removeprefix("Value error, ")
                    problems.append(f"variants.{name}{'.' + where if where else ''}: {message}")
        if "main" in self.variants:
            problems.append("variants.main: 'main' names the [student] table itself")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def variant(self, name: str) -> StudentConfig:
        """The full student table of one variant ('main' is [student] itself)."""
        base = self.model_dump(exclude={"variants"})
        if name == "main":
            return _with_fields_set(
                StudentConfig.model_validate(base), self.model_fields_set - {"variants"}
            )
        changes = self.variants[name].model_dump(exclude_unset=True)
        init = changes.get("init", base["init"])
        dropped = set()
        if init != base["init"]:
            # Another way of building the student: the primary's building keys do not apply.
            dropped |= _INIT_KEYS
        if student_kind(init) != student_kind(base["init"]):
            # The primary's budget was chosen for another kind of student (a token table
            # learns nothing in 2 epochs at a transformer's 3e-4): this one gets its own.
            dropped |= _KIND_KEYS
        if changes.keys() & _TWIN_KEYS:
            dropped |= _TWIN_KEYS
        dropped -= changes.keys()
        for key in dropped:
            base.pop(key, None)
        return _with_fields_set(
            StudentConfig.model_validate({**base, **changes}),
            (self.model_fields_set - {"variants"} - dropped) | changes.keys(),
        )

    def student_names(self) -> list[str]:
        return ["main", *self.variants]

    def by_table(self) -> list[tuple[str, StudentConfig]]:
        """Every student, resolved, with its recipe table (``student``, ``student.variants.X``),
        the name its recipe errors use."""
        return [
            ("student" if name == "main" else f"student.variants.{name}", self.variant(name))
            for name in self.student_names()
        ]
