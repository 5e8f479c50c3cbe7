"""Compare two runs' reports: what changed in the recipe and how each model's numbers moved.

``compare_reports(a, b)`` reads two ``report.json`` files (the source of truth; schema 1 or
2) and returns one JSON-able dict; :func:`render_markdown` and :func:`render_html` render
it (Jinja2, autoescaped HTML, inline CSS, no scripts or external resources), and
:func:`run_compare` writes ``compare.json``, ``compare.md`` and ``compare.html``.

Rows are matched by key (``teacher``, ``student``, ``student_onnx_int8``, ...); a first
row, ``deployed``, pairs whichever model each run deployed, so changing
``export.quantization`` still shows what a user gets. Each metric's change is B - A.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from distill.errors import ArtifactError
from distill.report.reports import REPORT_FILE, check_same_task, read_report

COMPARE_SCHEMA_VERSION = 1
READABLE_SCHEMAS = (1, 2)
TEMPLATES = Path(__file__).parent / "templates"

# (key, label, kind, higher_is_better): kind picks the formatting (see distill.report.render).
METRICS: tuple[tuple[str, str, str, bool], ...] = (
    ("accuracy", "Accuracy", "fraction", True),
    ("macro_f1", "Macro-F1", "fraction", True),
    ("agreement", "Agreement with teacher", "fraction", True),
    ("ece", "ECE", "fraction", False),
    ("accuracy_retained", "Accuracy kept vs teacher", "fraction", True),
    ("parameters", "Parameters", "count", False),
    ("bytes", "Size", "bytes", False),
    ("p50_ms", "p50 latency", "ms", False),
    ("p95_ms", "p95 latency", "ms", False),
    ("size_ratio", "Smaller than teacher", "ratio", True),
    ("speedup", "Faster than teacher", "ratio", True),
)


def load_report_json(path: Path) -> tuple[Path, dict[str, Any]]:
    """A run's ``report.json`` (``path`` is the file or the report folder) and its folder."""
    file, report = read_report(path)
    version = report.get("schema_version")
    if version not in READABLE_SCHEMAS:
        raise ArtifactError(
            f"{file}: report schema_version {version!r}; compare reads {list(READABLE_SCHEMAS)}"
        )
    return file.parent, report


def compare_reports(dir_a: Path, dir_b: Path) -> dict[str, Any]:
    """Everything the comparison shows, as one JSON-able dict (changes are B - A)."""
    folder_a, a = load_report_json(dir_a)
    folder_b, b = load_report_json(dir_b)
    check_same_task(folder_a / REPORT_FILE, a, folder_b / REPORT_FILE, b)
    rows_a = {row["key"]: row for row in a.get("rows", [])}
    rows_b = {row["key"]: row for row in b.get("rows", [])}
    keys = list(rows_a) + [key for key in rows_b if key not in rows_a]

    rows = []
    deployed_a = next((row for row in rows_a.values() if row.get("deployed")), None)
    deployed_b = next((row for row in rows_b.values() if row.get("deployed")), None)
    if deployed_a or deployed_b:
        rows.append(_row_change("deployed", "Deployed model", deployed_a, deployed_b))
    for key in keys:
        row_a, row_b = rows_a.get(key), rows_b.get(key)
        name = (row_b or row_a or {}).get("name", key)
        rows.append(_row_change(key, name, row_a, row_b))

    recipe_changes = diff_recipes(a.get("recipe") or {}, b.get("recipe") or {})
    labels_a, labels_b = a.get("labels") or [], b.get("labels") or []
    notes = []
    if labels_a != labels_b:
        notes.append("The two runs have different label sets: metrics are not directly comparable.")
    tests = [((r.get("data") or {}).get("splits") or {}).get("test", {}) for r in (a, b)]
    if tests[0].get("examples") != tests[1].get("examples"):
        notes.append(
            f"The test splits differ in size ({tests[0].get('examples')} vs "
            f"{tests[1].get('examples')} examples)."
        )
    cpus = [(r.get("hardware") or {}).get("cpu") for r in (a, b)]
    setups = [
        {k: v for k, v in (r.get("latency_setup") or {}).items() if k != "inputs"} for r in (a, b)
    ]
    if cpus[0] != cpus[1] or setups[0] != setups[1]:
        notes.append(
            "Latencies were measured on different hardware or with a different setup: "
            "compare them with care."
        )
    return {
        "compare_schema_version": COMPARE_SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "a": _side(folder_a, a),
        "b": _side(folder_b, b),
        "metrics": [
            {"key": key, "label": label, "kind": kind, "higher_is_better": better}
            for key, label, kind, better in METRICS
        ],
        "recipe_changes": recipe_changes,
        "rows": rows,
        "notes": notes,
    }


def diff_recipes(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Every recipe key whose value differs, as ``{section, key, a, b, change}``.

    Nested tables are flattened to dotted keys (``config.hidden_size``); ``change`` is
    ``changed``, ``added`` (only in B) or ``removed`` (only in A).
    """
    flat_a, flat_b = _flatten(a), _flatten(b)
    changes = []
    for path in list(flat_a) + [p for p in flat_b if p not in flat_a]:
        in_a, in_b = path in flat_a, path in flat_b
        value_a, value_b = flat_a.get(path), flat_b.get(path)
        if in_a and in_b and value_a == value_b:
            continue
        section, _, key = path.partition(".")
        changes.append(
            {
                "section": section,
                "key": key,
                "a": value_a,
                "b": value_b,
                "change": "changed" if in_a and in_b else ("added" if in_b else "removed"),
            }
        )
    return changes


def render_markdown(comparison: dict[str, Any]) -> str:
    from distill.report.render import environment

    template = environment(autoescape=False, folder=TEMPLATES).get_template("compare.md.j2")
    return template.render(**_context(comparison))


def render_html(comparison: dict[str, Any]) -> str:
    from distill.report.render import environment

    template = environment(autoescape=True, folder=TEMPLATES).get_template("compare.html.j2")
    return template.render(**_context(comparison))


def default_out(dir_a: Path, dir_b: Path) -> Path:
    """``reports/compare-<a>-vs-<b>/``: beside the first report folder."""
    folder_a = Path(dir_a) if Path(dir_a).is_dir() else Path(dir_a).parent
    folder_b = Path(dir_b) if Path(dir_b).is_dir() else Path(dir_b).parent
    return (
        folder_a.resolve().parent
        / f"compare-{folder_a.resolve().name}-vs-{folder_b.resolve().name}"
    )


def run_compare(dir_a: Path, dir_b: Path, out: Path | None = None) -> Path:
    """Write ``compare.json``, ``compare.md`` and ``compare.html`` into ``out`` and return it."""
    from distill.pipeline.artifacts import write_json_atomic

    comparison = compare_reports(dir_a, dir_b)
    out = Path(out) if out is not None else default_out(dir_a, dir_b)
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"{out}: is a file; -o names the folder to write the comparison into")
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "compare.json", comparison)
        (out / "compare.md").write_text(render_markdown(comparison), encoding="utf-8")
        (out / "compare.html").write_text(render_html(comparison), encoding="utf-8")
    except OSError as exc:  # a read-only place, a file in the way, /proc, a full disk
        where = exc.filename or out
        raise ArtifactError(
            f"{where}: cannot write the comparison there ({exc.strerror or exc}); "
            "pass -o a folder you can write to"
        ) from None
    return out


# --------------------------------------------------------------------------- helpers


def _side(folder: Path, report: dict[str, Any]) -> dict[str, Any]:
    return {
        "run": report.get("run"),
        "folder": str(folder),
        "created": report.get("created"),
        "schema_version": report.get("schema_version"),
        "test_examples": (((report.get("data") or {}).get("splits") or {}).get("test") or {}).get(
            "examples"
        ),
        "cpu": (report.get("hardware") or {}).get("cpu"),
    }


def _values(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return {}
    latency = row.get("latency") or {}
    return {
        **{key: row.get(key) for key, *_ in METRICS},
        "ece": (row.get("calibration") or {}).get("ece"),
        "p50_ms": latency.get("p50_ms"),
        "p95_ms": latency.get("p95_ms"),
    }


def _row_change(
    key: str, name: str, row_a: dict[str, Any] | None, row_b: dict[str, Any] | None
) -> dict[str, Any]:
    values_a, values_b = _values(row_a), _values(row_b)
    metrics = {}
    for metric, _, _, better in METRICS:
        value_a, value_b = values_a.get(metric), values_b.get(metric)
        numeric = all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in (value_a, value_b)
        )
        delta = value_b - value_a if numeric else None  # type: ignore[operator]
        metrics[metric] = {
            "a": value_a,
            "b": value_b,
            "delta": delta,
            "relative": delta / value_a if numeric and value_a else None,
            # improved / worse / same, or None when a side is missing.
            "verdict": None
            if delta is None
            else ("same" if delta == 0 else ("improved" if (delta > 0) == better else "worse")),
        }
    return {
        "key": key,
        "name": name,
        "in": "both" if row_a and row_b else ("a" if row_a else "b"),
        "name_a": (row_a or {}).get("name"),
        "name_b": (row_b or {}).get("name"),
        "metrics": metrics,
    }


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


OVERVIEW = ("accuracy", "macro_f1", "bytes", "p50_ms")


def _context(comparison: dict[str, Any]) -> dict[str, Any]:
    return {
        "c": comparison,
        "metrics": comparison["metrics"],
        "rows": comparison["rows"],
        "overview": OVERVIEW,
    }
