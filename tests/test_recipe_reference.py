"""docs/recipe-reference.md: generated from the recipe's schema, every key described, in step."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from distill.cli import main
from distill.config import recipe_json_schema
from distill.config.reference import HEADER, recipe_reference_markdown, undescribed_keys
from distill.tasks import TASKS

ROOT = Path(__file__).parent.parent
REFERENCE = ROOT / "docs" / "recipe-reference.md"
REGENERATE = "run: distill schema --markdown -o docs/recipe-reference.md"


def test_every_recipe_key_is_described() -> None:
    assert undescribed_keys(recipe_json_schema()) == []


def test_committed_reference_matches_the_code() -> None:
    committed = REFERENCE.read_text(encoding="utf-8")
    assert committed == recipe_reference_markdown(recipe_json_schema()), REGENERATE


def test_schema_command_writes_the_reference(tmp_path: Path) -> None:
    out = tmp_path / "reference.md"
    assert main(["schema", "--markdown", "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == REFERENCE.read_text(encoding="utf-8")


def _key(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    """The schema node of a dotted recipe key (every table on the way is a $ref)."""
    node = schema
    *tables, key = dotted.split(".")
    for table in tables:
        node = schema["$defs"][node["properties"][table]["$ref"].rsplit("/", 1)[-1]]
    return node["properties"][key]


def test_shared_keys_some_tasks_own_are_marked() -> None:
    """A shared key only some tasks read says which (the keys tasks add say so already): in
    another task's recipe it is an error, so the reference must not leave it unsaid."""
    schema = recipe_json_schema()
    assert _key(schema, "labels")["description"].startswith("task 'sequence-classification' only: ")
    assert _key(schema, "student.hidden_weight")["description"].startswith(
        "tasks 'sequence-classification', 'token-classification' and 'question-answering' only: "
    )
    variant = schema["$defs"]["StudentVariant"]["properties"]["hidden_weight"]
    assert variant["description"] == _key(schema, "student.hidden_weight")["description"]
    # Read by every task: no mark.
    assert _key(schema, "export.teacher_baseline")["description"].startswith("Also export")
    for task in TASKS.values():
        for dotted in task.own_keys:
            owners = [t.name for t in TASKS.values() if dotted in t.own_keys]
            if len(owners) < len(TASKS):
                assert f"{task.name!r}" in _key(schema, dotted)["description"].split(":")[0]


# A hand-made schema with each shape the renderer reads.
SCHEMA: dict[str, Any] = {
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z]+$", "description": "Run name."},
        "mode": {
            "enum": ["fast", "slow"],
            "type": "string",
            "default": "fast",
            "description": "How fast: fast | slow.",
        },
        "limit": {
            "anyOf": [{"type": "integer", "minimum": 1, "maximum": 9}, {"type": "null"}],
            "default": None,
            "description": "At most this many.",
        },
        "rate": {
            "type": "number",
            "exclusiveMinimum": 0,
            "exclusiveMaximum": 1.5,
            "default": 0.5,
            "description": "A rate.",
        },
        "pairs": {
            "type": "array",
            "items": {
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"type": "integer"}],
                "minItems": 2,
                "maxItems": 2,
            },
            "description": "Pairs.",
        },
        "part": {"$ref": "#/$defs/Part"},
        "extra": {
            "anyOf": [{"$ref": "#/$defs/Extra"}, {"type": "null"}],
            "default": None,
            "description": "task 'b' only: more things.",
        },
    },
    "required": ["name", "part"],
    "$defs": {
        "Part": {
            "description": "[part]: one part.",
            "properties": {
                "size": {"type": "integer", "default": 3, "description": "Its size."},
                "tags": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                    "description": "Its tags.",
                },
                "options": {
                    "anyOf": [
                        {"type": "object", "additionalProperties": {"type": "boolean"}},
                        {"type": "null"},
                    ],
                    "default": None,
                    "description": "Free options.",
                },
                "kinds": {
                    "type": "object",
                    "patternProperties": {"^[a-z]+$": {"$ref": "#/$defs/Kind"}},
                    "description": "Kinds of part, by name.",
                },
            },
        },
        "Extra": {
            "description": "[extra]: more.",
            "properties": {"note": {"type": "string", "description": "A note."}},
            "required": ["note"],
        },
        "Kind": {
            "description": "[part.kinds.NAME]: a kind.",
            "properties": {
                "weight": {"type": "number", "minimum": 0.25, "description": "Its weight."},
            },
        },
    },
}

EXPECTED = """
## Top level

| key | type | default | meaning |
| --- | --- | --- | --- |
| `name` | string (matching `^[a-z]+$`) | (required) | Run name. |
| `mode` | `"fast"` \\| `"slow"` | `"fast"` | How fast: fast \\| slow. |
| `limit` | integer (>= 1, <= 9) or none | none | At most this many. |
| `rate` | number (> 0, < 1.5) | `0.5` | A rate. |
| `pairs` | list of [integer, integer] | (optional) | Pairs. |

## [part]

One part. This table is required.

| key | type | default | meaning |
| --- | --- | --- | --- |
| `size` | integer | `3` | Its size. |
| `tags` | list of string (>= 1 items) | (optional) | Its tags. |
| `options` | table of boolean or none | none | Free options. |
| `kinds` | a table per NAME matching `^[a-z]+$` | (optional) | Kinds of part, by name. |

## [part.kinds.NAME]

Kinds of part, by name.

| key | type | default | meaning |
| --- | --- | --- | --- |
| `weight` | number (>= 0.25) | (optional) | Its weight. |

## [extra]

Task 'b' only: more things.

| key | type | default | meaning |
| --- | --- | --- | --- |
| `note` | string | (required) | A note. |
"""


def test_renderer_rows_on_a_hand_made_schema() -> None:
    assert recipe_reference_markdown(SCHEMA) == HEADER + EXPECTED


def test_a_table_of_its_parents_keys_is_one_sentence() -> None:
    """Like [student.variants.NAME]: the parent's keys (same meanings) are not listed again."""
    schema = copy.deepcopy(SCHEMA)
    schema["$defs"]["Kind"]["properties"] = {
        "size": {"anyOf": [{"type": "integer"}, {"type": "null"}], "description": "Its size."}
    }
    markdown = recipe_reference_markdown(schema)
    section = markdown.split("## [part.kinds.NAME]\n")[1].split("## [extra]")[0]
    assert section == (
        "\nKinds of part, by name.\n\n"
        "Any key of [part] except `tags`, `options` and `kinds`, with the same meaning; "
        "every one is optional.\n\n"
    )


def test_undescribed_keys_reach_optional_and_named_tables() -> None:
    """A key without a description is found in a table behind a union with null and in a
    per-NAME table, not only in tables a key holds directly."""
    assert undescribed_keys(SCHEMA) == []
    schema = copy.deepcopy(SCHEMA)
    del schema["$defs"]["Extra"]["properties"]["note"]["description"]
    del schema["$defs"]["Kind"]["properties"]["weight"]["description"]
    del schema["properties"]["rate"]["description"]
    assert undescribed_keys(schema) == ["rate", "part.kinds.NAME.weight", "extra.note"]
