"""The recipe reference in Markdown, generated from the recipe's JSON Schema.

``docs/recipe-reference.md`` is this module's output (``distill schema --markdown``); a test
keeps the committed file in step with the pydantic models, so the reference cannot drift from
what the recipe accepts.
"""

from __future__ import annotations

import json
from typing import Any

from distill.wording import listed

HEADER = """# Recipe reference

Generated from the recipe's pydantic models by `distill schema --markdown -o
docs/recipe-reference.md` (a test fails when this file is out of date): every key, its type
and bounds, its default and what it means. A key (or table) marked "task X only" is an error
in a recipe of another task. [recipe.md](recipe.md) shows a whole recipe and explains the
training budgets.
"""

ROW_HEADER = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    return schema["$defs"][ref.rsplit("/", 1)[-1]]


def _table_of(schema: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any] | None:
    """The table a key holds (directly or as the non-null option of a union), else None."""
    for option in [prop, *prop.get("anyOf", ())]:
        if "$ref" in option:
            return _resolve(schema, option)
    return None


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
        return _array_type(node)
    if kind == "object":
        return _object_type(node)
    return kind + _bounds(node)


def _array_type(node: dict[str, Any]) -> str:
    """``[a, b]`` for a fixed-length tuple, else ``list of X`` with its length bounds."""
    if "prefixItems" in node and node.get("minItems") == node.get("maxItems"):
        return "[" + ", ".join(_type(item) for item in node["prefixItems"]) + "]"
    item = _type(node.get("items", {}))
    return f"list of {item}{_count_bounds(node)}"


def _object_type(node: dict[str, Any]) -> str:
    """A table: free keys with typed values, or one entry per name matching a pattern."""
    if "patternProperties" in node:
        ((pattern, value),) = node["patternProperties"].items()
        return f"a {_type(value)} per NAME matching `{pattern}`"
    values = node.get("additionalProperties")
    return f"table of {_type(values)}" if isinstance(values, dict) else "table"


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
    """The default as TOML would read it; a default computed by a factory (an empty list or
    table) is not in the schema, so such a key only says it is optional."""
    if required:
        return "(required)"
    if "default" not in node:
        return "(optional)"
    value = node["default"]
    return "none" if value is None else f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def _prose(text: str, title: str) -> str:
    """A table's own description without the ``[title]: `` its docstring starts with."""
    text = _cell(text).removeprefix(f"[{title}]: ")
    return text[:1].upper() + text[1:]


def _row(key: str, prop: dict[str, Any], required: bool, meaning: str) -> str:
    return f"| `{key}` | {_type(prop)} | {_default(prop, required)} | {_cell(meaning)} |"


def _rows(node: dict[str, Any]) -> list[str]:
    required = set(node.get("required", ()))
    return [
        _row(key, prop, key in required, prop.get("description", ""))
        for key, prop in node.get("properties", {}).items()
    ]


def _sub_tables(
    schema: dict[str, Any], title: str, node: dict[str, Any]
) -> list[tuple[str, dict[str, Any], str]]:
    """(title, table, what it is) of every table nested in ``node``: a key holding one, or
    one per NAME. What it is: the key's own description (it carries a task mark), else the
    table's."""
    nested = []
    for key, prop in node.get("properties", {}).items():
        tables = [(f"{title}.{key}", _table_of(schema, prop))]
        tables += [
            (f"{title}.{key}.NAME", _resolve(schema, value))
            for value in prop.get("patternProperties", {}).values()
        ]
        nested += [
            (name, table, prop.get("description") or table.get("description", ""))
            for name, table in tables
            if table is not None
        ]
    return nested


def _takes_parent_keys(node: dict[str, Any], parent: dict[str, Any]) -> bool:
    """Whether every key of ``node`` is one of ``parent``'s, with the same meaning."""
    keys, theirs = node.get("properties", {}), parent.get("properties", {})
    return bool(keys) and all(
        key in theirs and prop.get("description") == theirs[key].get("description")
        for key, prop in keys.items()
    )


def _same_keys(node: dict[str, Any], parent_title: str, parent: dict[str, Any]) -> list[str]:
    """A table that takes (some of) its parent's keys: said in a sentence, not row by row."""
    left_out = [f"`{key}`" for key in parent["properties"] if key not in node["properties"]]
    but = f" except {listed(left_out)}" if left_out else ""
    return [
        f"Any key of [{parent_title}]{but}, with the same meaning; every one is optional.",
        "",
    ]


def _table(
    schema: dict[str, Any], title: str, node: dict[str, Any], text: str, parent: dict[str, Any]
) -> list[str]:
    """One recipe table: what it is, a row per key, then its sub-tables' own sections."""
    lines = [f"## [{title}]", "", _prose(text, title), ""]
    if _takes_parent_keys(node, parent):
        parent_title = title.removesuffix(".NAME").rpartition(".")[0]
        return lines + _same_keys(node, parent_title, parent)
    lines += [*ROW_HEADER, *_rows(node), ""]
    for sub_title, sub_node, sub_text in _sub_tables(schema, title, node):
        lines += _table(schema, sub_title, sub_node, sub_text, node)
    return lines


def recipe_reference_markdown(schema: dict[str, Any]) -> str:
    """The reference page: the top-level keys, then each table and sub-table."""
    tables = _sub_tables(schema, "", schema)
    top = {key: prop for key, prop in schema["properties"].items() if not _table_of(schema, prop)}
    required = set(schema.get("required", ()))
    lines = [HEADER, "## Top level", "", *ROW_HEADER, *_rows({**schema, "properties": top}), ""]
    for title, table, text in tables:
        key = title.removeprefix(".")
        needed = " This table is required." if key in required else ""
        lines += _table(schema, key, table, text + needed, {})
    return "\n".join(lines).rstrip("\n") + "\n"


def undescribed_keys(schema: dict[str, Any]) -> list[str]:
    """Keys whose reference row would have no meaning: every key must describe itself."""
    missing: list[str] = []

    def visit(prefix: str, node: dict[str, Any]) -> None:
        for key, prop in node.get("properties", {}).items():
            table = _table_of(schema, prop)
            if not (prop.get("description") or (table or {}).get("description")):
                missing.append(f"{prefix}{key}")
            if table is not None:
                visit(f"{prefix}{key}.", table)
            for value in prop.get("patternProperties", {}).values():
                visit(f"{prefix}{key}.NAME.", _resolve(schema, value))

    visit("", schema)
    return missing
