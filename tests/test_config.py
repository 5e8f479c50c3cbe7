"""Recipe validation: unknown keys, types, ranges, all at once, with dotted paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distill.config import (
    apply_overrides,
    load_recipe,
    parse_override,
    recipe_json_schema,
    validate_recipe,
)
from distill.errors import RecipeError
from distill.tasks import TASKS
from distill.wording import listed

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.toml"))

MINIMAL = {
    "name": "t",
    "data": {"path": "x.csv"},
    "teacher": {"model": "some/model"},
    "student": {"num_layers": 2},
}


def test_minimal_recipe_gets_defaults() -> None:
    recipe = validate_recipe(MINIMAL)
    assert recipe.student.init == "teacher-layers"
    assert recipe.student.temperature == 2.0
    assert recipe.export.quantization == "dynamic"
    assert recipe.report.latency_threads == 2


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path: Path) -> None:
    recipe, recipe_dir = load_recipe(path)
    assert recipe.name
    assert recipe_dir == path.parent.resolve()


def test_all_problems_reported_at_once_with_dotted_paths() -> None:
    raw = apply_overrides(
        MINIMAL,
        [
            "student.temperature=0",
            "student.alpha=1.5",
            "teacher.colour='blue'",
            "export.quantization='fp8'",
            "seed='x'",
        ],
    )
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    problems = info.value.problems
    text = "\n".join(problems)
    assert len(problems) == 5
    assert "student.temperature: Input should be greater than 0" in text
    assert "student.alpha: Input should be less than or equal to 1" in text
    assert "teacher.colour: unknown key" in text
    assert "export.quantization:" in text and "'fp8'" in text
    assert "seed:" in text


def test_missing_tables_and_keys_are_named() -> None:
    with pytest.raises(RecipeError) as info:
        validate_recipe({"name": "t", "data": {}})
    text = "\n".join(info.value.problems)
    assert "data.path: required key is missing" in text
    assert "teacher: required key is missing" in text
    assert "student: required key is missing" in text


@pytest.mark.parametrize(
    ("student", "message"),
    [
        ({"init": "pretrained"}, "needs student.model"),
        ({"init": "teacher-layers"}, "needs student.num_layers or .layers"),
        ({"init": "teacher-layers", "num_layers": 3, "layers": [0, 1]}, "disagrees"),
        ({"init": "config"}, "needs student.config or student.num_layers"),
        ({"init": "config", "num_layers": 2, "model": "x"}, "only used with init = 'pretrained'"),
    ],
)
def test_student_init_needs_its_keys(student: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        validate_recipe({**MINIMAL, "student": student})


@pytest.mark.parametrize("name", ["../escape", "/abs", "a/b", ""])
def test_run_name_cannot_escape_the_project(name: str) -> None:
    with pytest.raises(RecipeError, match="name"):
        validate_recipe({**MINIMAL, "name": name})


def test_fractions_must_leave_training_data() -> None:
    with pytest.raises(RecipeError, match="leaves under 10%"):
        validate_recipe(
            {
                **MINIMAL,
                "data": {"path": "x.csv", "validation_fraction": 0.5, "test_fraction": 0.45},
            }
        )


def test_overrides_parse_toml_values_and_fall_back_to_strings() -> None:
    assert parse_override("student.temperature=4") == (["student", "temperature"], 4)
    assert parse_override("data.deduplicate=false") == (["data", "deduplicate"], False)
    assert parse_override("teacher.model=prajjwal1/bert-tiny") == (
        ["teacher", "model"],
        "prajjwal1/bert-tiny",
    )
    merged = apply_overrides(MINIMAL, ["student.temperature=4", "report.latency_runs=7"])
    assert merged["student"]["temperature"] == 4
    assert merged["report"] == {"latency_runs": 7}
    assert "temperature" not in MINIMAL["student"]  # the original is not mutated


@pytest.mark.parametrize("bad", ["novalue", "=3", "a..b=1"])
def test_malformed_override_is_an_error(bad: str) -> None:
    with pytest.raises(RecipeError, match="KEY.PATH=VALUE"):
        parse_override(bad)


def test_override_into_a_value_is_an_error() -> None:
    with pytest.raises(RecipeError, match="is a value, not a table"):
        apply_overrides(MINIMAL, ["name.x=1"])


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n", encoding="utf-8")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("teacher.epochs=true", "teacher.epochs: expected a number, not the boolean true"),
        ("student.alpha=true", "student.alpha: expected a number, not the boolean true"),
        (
            "export.max_accuracy_drop=false",
            "export.max_accuracy_drop: expected a number, not the boolean false",
        ),
        ("teacher.batch_size=true", "teacher.batch_size: expected an integer, not the boolean"),
        ("teacher.batch_size=2.5", "teacher.batch_size: Input should be a valid integer (got 2.5)"),
        ("student.alpha='0.5'", "student.alpha: expected a number, not the string '0.5'"),
        ("student.layers=[0, true]", "student.layers.1: expected an integer, not the boolean"),
        (
            "student.variants.v.temperature=true",
            "student.variants.v.temperature: expected a number",
        ),
        ("report.latency_runs=false", "report.latency_runs: expected an integer, not the boolean"),
    ],
)
def test_numbers_refuse_booleans_strings_and_fractions_naming_the_key(
    assignment: str, message: str
) -> None:
    """Lax pydantic read `epochs = true` as 1 epoch and `alpha = true` as 1.0."""
    with pytest.raises(RecipeError) as info:
        validate_recipe(apply_overrides(MINIMAL, [assignment]))
    assert message in info.value.problems[0]
    assert len(info.value.problems) == 1


def test_float_keys_take_toml_integers_and_overrides_parse_as_before(tmp_path: Path) -> None:
    recipe_file = tmp_path / "r.toml"
    recipe_file.write_text(
        'name = "t"\n[data]\npath = "x.csv"\n[teacher]\nmodel = "m"\nepochs = 2\n'
        "[student]\nnum_layers = 2\nalpha = 1\nhidden_weight = 1\nlayer_map = [[0, 1]]\n",
        encoding="utf-8",
    )
    recipe, _ = load_recipe(recipe_file, ["student.temperature=4", "export.max_accuracy_drop=0"])
    assert (recipe.teacher.epochs, recipe.student.alpha) == (2.0, 1.0)
    assert isinstance(recipe.student.alpha, float)
    assert (recipe.student.temperature, recipe.export.max_accuracy_drop) == (4.0, 0.0)
    assert recipe.student.layer_map == [(0, 1)]  # a TOML array read as the pair


def test_a_huge_bad_value_is_echoed_cut_to_one_line() -> None:
    raw = apply_overrides(MINIMAL, ["student.layers=[[" + "1, " * 200 + "1]]"])
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    (problem,) = info.value.problems
    assert problem.startswith("student.layers.0: ") and problem.endswith("...)")
    assert len(problem) < 160


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("x = " + "[" * 5000 + "]" * 5000, "nested too deeply"),
        ("x = " + "{a = " * 2000 + "1" + "}" * 2000, "nested too deeply"),
        ("name = \n", "not valid TOML"),
    ],
    ids=["deep-arrays", "deep-inline-tables", "syntax"],
)
def test_an_unreadable_recipe_is_one_line_naming_the_file(
    tmp_path: Path, body: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from distill.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text(body, encoding="utf-8")
    with pytest.raises(RecipeError, match=why):
        load_recipe(bad)
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: ") and why in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_transfer_needs_distillation() -> None:
    raw = {**MINIMAL, "student": {"num_layers": 2, "alpha": 0.0, "transfer": {"path": "unused"}}}
    with pytest.raises(RecipeError, match="student.transfer needs alpha > 0"):
        validate_recipe(raw)
    raw["student"] = {"num_layers": 2, "transfer": {"path": "unused", "colour": 1}}
    with pytest.raises(RecipeError, match=r"student.transfer.colour: unknown key"):
        validate_recipe(raw)


def test_variants_are_students_with_keys_replaced() -> None:
    raw = apply_overrides(
        MINIMAL,
        [
            "student.temperature=3.0",
            "student.variants.L4.num_layers=4",
            "student.variants.mini.init='pretrained'",
            "student.variants.mini.model='org/mini'",
        ],
    )
    student = validate_recipe(raw).student
    assert student.student_names() == ["main", "L4", "mini"]
    assert student.variant("L4").num_layers == 4
    assert student.variant("L4").temperature == 3.0  # inherited from [student]
    mini = student.variant("mini")  # another init: the primary's num_layers is not inherited
    assert (mini.init, mini.model, mini.num_layers) == ("pretrained", "org/mini", None)


def test_variant_errors_are_reported_with_their_names() -> None:
    raw = apply_overrides(
        MINIMAL,
        [
            "student.variants.bad.alpha=2",
            "student.variants.bad.colour='x'",
            "student.variants.odd.init='pretrained'",
            "student.variants.main.num_layers=1",
        ],
    )
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    text = "\n".join(info.value.problems)
    assert "student.variants.bad.colour: unknown key" in text
    raw = apply_overrides(
        MINIMAL,
        [
            "student.variants.bad.alpha=2",
            "student.variants.odd.init='pretrained'",
            "student.variants.main.num_layers=1",
        ],
    )
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    text = "\n".join(info.value.problems)
    assert "variants.bad.alpha: Input should be less than or equal to 1" in text
    assert "variants.odd: init = 'pretrained' needs student.model" in text
    assert "variants.main: 'main' names the [student] table itself" in text
    bad_name = {**MINIMAL, "student": {"num_layers": 2, "variants": {"x y": {"num_layers": 1}}}}
    with pytest.raises(RecipeError, match=r"student\.variants\.x y\.\[key\]: String should match"):
        validate_recipe(bad_name)


@pytest.mark.parametrize(
    ("student", "message"),
    [
        ({"num_layers": 2, "layer_map": [[0, 1]]}, "used only with hidden_weight"),
        ({"num_layers": 2, "hidden_weight": 1.0, "layer_map": []}, "at least one layer"),
        ({"num_layers": 2, "hidden_weight": 1.0, "layer_map": [[0, -1]]}, "count from 0"),
        ({"num_layers": 2, "archive": ["a.zip.001"]}, "archive is only used with init"),
    ],
)
def test_layer_and_archive_keys_are_checked(student: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        validate_recipe({**MINIMAL, "student": student})


@pytest.mark.parametrize(
    ("student", "twins"),
    [
        ({}, ["no-kd"]),
        ({"baseline": True}, ["no-kd"]),
        ({"baseline": False}, []),
        ({"baselines": []}, []),
        ({"baselines": ["no-kd", "pseudo-labels"], "transfer": {"path": "unused"}}, None),
        ({"baselines": ["pseudo-labels"], "transfer": {"path": "unused"}}, None),
    ],
)
def test_baseline_true_false_keep_their_meaning_beside_baselines(
    student: dict, twins: list[str] | None
) -> None:
    table = validate_recipe({**MINIMAL, "student": {"num_layers": 2, **student}}).student
    assert table.twins == (student["baselines"] if twins is None else twins)


def test_pseudo_label_twin_without_transfer_text_is_refused_naming_the_key() -> None:
    raw = apply_overrides(
        MINIMAL,
        ["student.baselines=['no-kd', 'pseudo-labels']", "export.quantization='fp8'"],
    )
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    problems = info.value.problems
    assert len(problems) == 2  # reported with the recipe's other errors
    assert (
        "student: student.baselines = ['pseudo-labels'] needs student.transfer: the twin "
        "learns the teacher's hard labels on the transfer text"
    ) in problems
    for bad, message in (
        (["student.baseline=true", "student.baselines=['no-kd']"], "both set: keep baselines"),
        (["student.baselines=['no-kd', 'no-kd']"], "lists a twin twice"),
        (["student.baselines=['soft']"], "student.baselines.0: Input should be 'no-kd' or"),
    ):
        with pytest.raises(RecipeError, match=message):
            validate_recipe(apply_overrides(MINIMAL, bad))


def test_variants_choose_their_twins_and_inherit_the_transfer_text() -> None:
    raw = apply_overrides(
        MINIMAL,
        [
            "student.transfer.path='unused'",
            "student.variants.L1.num_layers=1",
            "student.variants.L1.baselines=['pseudo-labels']",
            "student.variants.L3.num_layers=3",
            "student.variants.L3.baseline=false",
        ],
    )
    student = validate_recipe(raw).student
    assert [student.variant(n).twins for n in ("main", "L1", "L3")] == [
        ["no-kd"],
        ["pseudo-labels"],
        [],
    ]
    # The primary's baselines do not clash with a variant's older `baseline` spelling.
    raw = apply_overrides(raw, ["student.baselines=['no-kd', 'pseudo-labels']"])
    assert validate_recipe(raw).student.variant("L3").twins == []
    without = apply_overrides(MINIMAL, ["student.variants.L1.baselines=['pseudo-labels']"])
    with pytest.raises(
        RecipeError,
        match=r"variants\.L1: student\.baselines = \['pseudo-labels'\] needs student\.transfer",
    ):
        validate_recipe(without)


def test_teacher_baseline_is_read_by_every_task_that_exports_a_teacher() -> None:
    """Every task exports the teacher beside the student."""
    assert sorted(_owners("export.teacher_baseline")) == [
        "causal-lm",
        "question-answering",
        "seq2seq",
        "sequence-classification",
        "token-classification",
    ]
    for task in ("causal-lm", "sequence-classification"):
        raw = {**MINIMAL, "task": task, "export": {"teacher_baseline": False}}
        assert validate_recipe(raw).export.teacher_baseline is False


def test_the_int8_candidate_keys_are_read_by_classification_and_ner_cls_pruning_not() -> None:
    """A tagger and a QA model weigh the same candidates; CLS pruning would cut every token
    but the first."""
    encoder_tasks = ["question-answering", "sequence-classification", "token-classification"]
    for key in ("export.candidates", "export.optimization_level"):
        assert sorted(_owners(key)) == encoder_tasks, key
    assert _owners("export.cls_pruning") == ["sequence-classification"]
    ner = {**MINIMAL, "task": "token-classification"}
    assert validate_recipe(ner).export.candidate_names() == ["dynamic", "dynamic-optimized"]
    raw = apply_overrides(ner, ["export.optimization_level=0"])
    assert validate_recipe(raw).export.candidate_names() == ["dynamic"]
    names = ["dynamic-optimized-fp32-embeddings", "dynamic-fp32-embeddings"]
    raw = apply_overrides(ner, [f"export.candidates={names}", "export.optimization_level=99"])
    assert validate_recipe(raw).export.candidate_names() == names
    with pytest.raises(RecipeError) as info:
        validate_recipe(apply_overrides(ner, ["export.cls_pruning=false"]))
    assert info.value.problems == [
        "(top level): export.cls_pruning is read by task 'sequence-classification' only, not by "
        "this recipe's task 'token-classification'"
    ]


@pytest.mark.parametrize(
    ("candidates", "problem"),
    [
        (
            "['dynamic', 'static']",
            "(top level): export.candidates = ['dynamic', 'static']: 'static' is not supported "
            "for task 'token-classification' (it builds: 'dynamic', 'dynamic-fp32-embeddings', "
            "'dynamic-optimized', 'dynamic-optimized-fp32-embeddings')",
        ),
        (
            "['int8-table']",
            "export.candidates.0: Input should be 'dynamic', 'dynamic-fp32-embeddings', "
            "'dynamic-optimized', 'dynamic-optimized-fp32-embeddings' or 'static' "
            "(got 'int8-table')",
        ),
    ],
)
def test_ner_refuses_candidates_that_make_no_sense_for_tagging(
    candidates: str, problem: str
) -> None:
    raw = apply_overrides(
        {**MINIMAL, "task": "token-classification"}, [f"export.candidates={candidates}"]
    )
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    assert info.value.problems == [problem]


def _default_of(recipe: Any, dotted: str) -> Any:
    value = recipe
    for part in dotted.split("."):
        value = getattr(value, part)
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def _owners(key: str) -> list[str]:
    return [t.name for t in TASKS.values() if key in t.owned_keys()]


OWN_KEYS = sorted(
    {
        (task.name, key)
        for task in TASKS.values()
        for other in TASKS.values()
        for key in other.owned_keys()
        if task.name not in _owners(key)
    }
)


@pytest.mark.parametrize(("task", "key"), OWN_KEYS, ids=[f"{t}-{k}" for t, k in OWN_KEYS])
def test_a_key_another_task_owns_is_an_error_naming_the_key_and_its_tasks(
    task: str, key: str
) -> None:
    """Set to its own default even, a key only other tasks read would be ignored: refused."""
    owner = _owners(key)[0]
    default = _default_of(validate_recipe({**MINIMAL, "task": owner}), key)
    raw = apply_overrides({**MINIMAL, "task": task}, [])
    *parents, last = key.split(".")
    table = raw
    for part in parents:
        table = table.setdefault(part, {})
    table[last] = default
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    names = listed([repr(name) for name in _owners(key)])
    assert info.value.problems == [
        f"(top level): {key} is read by task {names} only, not by this recipe's task {task!r}"
    ]


def test_every_task_key_is_a_recipe_key() -> None:
    """A task's own keys name real recipe entries (a typo would never be checked)."""
    recipe = validate_recipe(MINIMAL)
    for task in TASKS.values():
        for key in task.owned_keys():
            _default_of(recipe, key)  # AttributeError for a key the recipe does not have


def test_every_task_note_is_on_a_shared_key_and_ends_its_description() -> None:
    """A task's notes on shared keys (Task.key_notes) name real keys, and the schema's
    description of each key ends with them; the shared tables name no task themselves."""
    schema = recipe_json_schema()
    for task in TASKS.values():
        for dotted, note in task.key_notes.items():
            node = schema
            *tables, key = dotted.split(".")
            for table in tables:
                prop = node["properties"][table]
                ref = next(o["$ref"] for o in [prop, *prop.get("anyOf", [])] if "$ref" in o)
                node = schema["$defs"][ref.rsplit("/", 1)[-1]]
            assert f"Task {task.name!r}: {note}." in node["properties"][key]["description"]


def test_a_stages_recorded_settings_hold_only_the_keys_its_task_reads() -> None:
    """Manifests, fingerprints and the report's recipe leave out other tasks' keys."""
    from distill.pipeline.stages import STAGES, stage_settings

    student = next(spec for spec in STAGES if spec.name == "student")
    export = next(spec for spec in STAGES if spec.name == "export")
    classification = validate_recipe(MINIMAL)
    causal = validate_recipe({**MINIMAL, "task": "causal-lm"})
    assert "top_k" not in stage_settings(student, classification)["student"]
    assert "subtokens" not in stage_settings(student, classification)["student"]
    assert "max_f1_drop" not in stage_settings(export, classification)["export"]
    assert stage_settings(student, causal)["student"]["top_k"] == 64
    assert "max_accuracy_drop" in stage_settings(export, classification)["export"]


VARIANT_KEYS = [
    (task, key)
    for task, key in OWN_KEYS
    if key.startswith("student.")
    and key.count(".") == 1
    and key not in ("student.variants", "student.transfer")
]


@pytest.mark.parametrize(("task", "key"), VARIANT_KEYS, ids=[f"{t}-{k}" for t, k in VARIANT_KEYS])
def test_a_key_another_task_owns_is_refused_in_a_student_variant_too(task: str, key: str) -> None:
    owner = _owners(key)[0]
    default = _default_of(validate_recipe({**MINIMAL, "task": owner}), key)
    raw = apply_overrides({**MINIMAL, "task": task}, [])
    raw["student"] = {**raw["student"], "variants": {"v": {key.split(".")[1]: default}}}
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    names = listed([repr(name) for name in _owners(key)])
    field = key.split(".")[1]
    # (for tasks without variants, "student.variants" itself is refused in the same message)
    assert (
        f"student.variants.v.{field} is read by task {names} only, not by this "
        f"recipe's task {task!r}"
    ) in " ".join(info.value.problems)


@pytest.mark.parametrize("task", ["sequence-classification", "token-classification"])
def test_weight_only_int8_is_causal_lm_only(task: str) -> None:
    recipe = {
        "name": "r",
        "task": task,
        "data": {"path": "d.csv"},
        "teacher": {"model": "t"},
        "student": {"num_layers": 1},
        "export": {"quantization": "weight-only"},
    }
    with pytest.raises(RecipeError) as caught:
        validate_recipe(recipe)
    assert f"export.quantization = 'weight-only' is not supported for task {task!r}" in str(
        caught.value
    )


def test_weight_only_int8_is_accepted_for_causal_lm() -> None:
    recipe = {
        "name": "r",
        "task": "causal-lm",
        "data": {"path": "d.csv", "text_column": "text"},
        "teacher": {"model": "t"},
        "student": {"num_layers": 1},
        "export": {"quantization": "weight-only"},
    }
    assert validate_recipe(recipe).export.quantization == "weight-only"


@pytest.mark.parametrize("task", [[1], {"a": 1}])
def test_a_task_that_is_not_a_string_is_a_recipe_error_not_a_type_error(task: Any) -> None:
    raw = {**MINIMAL, "task": task, "student": {"init": "static"}}
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    assert info.value.problems[0].startswith("task: Input should be 'sequence-classification'")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("latency_runs", 0, "greater than or equal to 1"),
        ("latency_rounds", 0, "greater than or equal to 1"),
        ("latency_warmup", -1, "greater than or equal to 0"),
        ("latency_runs", True, "expected an integer, not the boolean true"),
    ],
)
def test_export_timing_keys_are_bounded_integers(key: str, value: Any, message: str) -> None:
    with pytest.raises(RecipeError) as info:
        validate_recipe({**MINIMAL, "export": {key: value}})
    (problem,) = info.value.problems
    assert problem.startswith(f"export.{key}: ") and message in problem


def test_export_timing_keys_reach_the_stage_as_set() -> None:
    export = validate_recipe(
        {**MINIMAL, "export": {"latency_runs": 7, "latency_rounds": 3, "latency_warmup": 2}}
    ).export
    assert export.timing() == {"runs": 7, "warmup": 2, "rounds": 3}
    assert validate_recipe(MINIMAL).export.timing() == {"runs": 60, "warmup": 5, "rounds": 12}
