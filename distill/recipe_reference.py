"""The recipe reference in Markdown, generated from the recipe's JSON Schema.

``docs/recipe-reference.md`` is this module's output (``distill schema --markdown``); a test
keeps the committed file in step with the pydantic models, so the reference cannot drift from
what the recipe accepts.
"""

from __future__ import annotations

import json
from typing import Any

HEADER = """# Recipe reference

Generated from the recipe's pydantic models by `distill schema --markdown -o
docs/recipe-reference.md` (a test fails when this file is out of date): every key, its type
and bounds, its default and what it means. Keys marked "task X only" are errors in a recipe of
another task. [recipe.md](recipe.md) shows a whole recipe and explains the training budgets.
"""


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    return schema["$defs"][ref.rsplit("/", 1)[-1]]


def _type(node: dict[str, Any]) -> str:
    """A short type for a schema node: enum values, unions, arrays and bounds."""
    if "enum" in node:
        return " \\| ".join(f"`{json.dumps(value)}`" for value in node["enum"])
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "anyOf" in node:
        kinds = [_type(option) for option in node["anyOf"] if option.get("type") != "null"]
        return " \\| ".join(kinds) + (" or none" if len(kinds) < len(node["anyOf"]) else "")
    if "$ref" in node:
        return "table"
    kind = node.get("type", "any")
    if kind == "array":
        item = _type(node.get("items", {}))
        bounds = _count_bounds(node)
        return f"list of {item}{bounds}"
    if kind == "object":
        return "table"
    return kind + _bounds(node)


def _bounds(node: dict[str, Any]) -> str:
    parts = []
    for key, sign in (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
    ):
        if key in node:
            parts.append(
                f"{sign} {node[key]:g}" if isinstance(node[key], float) else f"{sign} {node[key]}"
            )
    if "minLength" in node:
        parts.append(f"length >= {node['minLength']}")
    if "pattern" in node:
        parts.append(f"matching `{node['pattern']}`")
    return f" ({', '.join(parts)})" if parts else ""


def _count_bounds(node: dict[str, Any]) -> str:
    parts = []
    if "minItems" in node:
        parts.append(f">= {node['minItems']} items")
    if "maxItems" in node:
        parts.append(f"<= {node['maxItems']} items")
    return f" ({', '.join(parts)})" if parts else ""


def _default(node: dict[str, Any], required: bool) -> str:
    if required:
        return "(required)"
    if "default" not in node:
        return ""
    value = node["default"]
    return "none" if value is None else f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def _table(schema: dict[str, Any], title: str, node: dict[str, Any]) -> list[str]:
    """One recipe table: its description and a row per key (sub-tables get sections of
    their own)."""
    lines = [f"## [{title}]", "", _cell(node.get("description", "")), ""]
    lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    required = set(node.get("required", ()))
    nested: list[tuple[str, dict[str, Any]]] = []
    for key, prop in node.get("properties", {}).items():
        target = _resolve(schema, prop)
        if target is not prop and target.get("type") == "object":
            nested.append((f"{title}.{key}", target))
        if "patternProperties" in prop:
            (value,) = prop["patternProperties"].values()
            nested.append((f"{title}.{key}.NAME", _resolve(schema, value)))
        described = _cell(prop.get("description", target.get("description", "")))
        lines.append(
            f"| `{key}` | {_type(prop)} | {_default(prop, key in required)} | {described} |"
        )
    lines.append("")
    for sub_title, sub_node in nested:
        lines += _table(schema, sub_title, sub_node)
    return lines


def recipe_reference_markdown(schema: dict[str, Any]) -> str:
    """The reference page: the top-level keys, then each table and sub-table."""
    top = {
        key: prop for key, prop in schema["properties"].items() if _resolve(schema, prop) is prop
    }
    lines = [HEADER, "## Top level", "", "| key | type | default | meaning |"]
    lines.append("| --- | --- | --- | --- |")
    required = set(schema.get("required", ()))
    for key, prop in top.items():
        lines.append(
            f"| `{key}` | {_type(prop)} | {_default(prop, key in required)} | "
            f"{_cell(prop.get('description', ''))} |"
        )
    lines.append("")
    for key, prop in schema["properties"].items():
        if key not in top:
            lines += _table(schema, key, _resolve(schema, prop))
    return "\n".join(lines).rstrip("\n") + "\n"


def undescribed_keys(schema: dict[str, Any]) -> list[str]:
    """Keys whose reference row would have no meaning: every key must describe itself."""
    missing: list[str] = []

    def visit(prefix: str, node: dict[str, Any]) -> None:
        for key, prop in node.get("properties", {}).items():
            target = _resolve(schema, prop)
            if not (prop.get("description") or target.get("description")):
                missing.append(f"{prefix}{key}")
            if target is not prop:
                visit(f"{prefix}{key}.", target)
            for value in prop.get("patternProperties", {}).values():
                visit(f"{prefix}{key}.NAME.", _resolve(schema, value))

    visit("", schema)
    return missing
