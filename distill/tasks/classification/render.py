"""Render a report's JSON (the source of truth) as Markdown and as one self-contained HTML page.

The HTML page has inline CSS and inline SVG plots (matplotlib's SVG backend with text kept
as text), no scripts, fonts or other network requests, so it opens offline and can be
mailed as a single file. Jinja2 autoescapes everything in the HTML template; the
Markdown template escapes table-breaking and HTML-like characters with the ``md`` filter.

Plots: accuracy vs size, accuracy vs latency, reliability diagrams (teacher and deployed
student) and training curves; each also written as its own ``.svg`` for the Markdown.
The filters are the shared ones (:mod:`distill.report.render`), the figures are drawn with
:mod:`distill.report.plots`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from distill.report import plots as draw
from distill.report.render import environment, fmt_bytes, fmt_ms, fmt_pct
from distill.tasks.classification.task import SequenceClassification

SCHEMA_VERSION = 2
TASK = SequenceClassification.name
TEMPLATES = Path(__file__).parent / "templates"
PLOT_FILE = "accuracy_vs_size.svg"
# Each plot, also written as its own SVG file beside report.md (which links them).
PLOT_FILES = {
    "size": PLOT_FILE,
    "latency": "accuracy_vs_latency.svg",
    "reliability": "reliability.svg",
    "curves": "training_curves.svg",
    "frontier": "students_frontier.svg",
}


class ReportSchemaError(ValueError):
    """A report.json this renderer does not understand."""


def load_report(path: Path) -> dict[str, Any]:
    """Read a report.json and check its schema version."""
    report = json.loads(Path(path).read_text(encoding="utf-8"))
    version = report.get("schema_version") if isinstance(report, dict) else None
    task = report.get("task") if isinstance(report, dict) else None
    if task not in (None, TASK):
        raise ReportSchemaError(f"{path}: a {task} report; this renderer reads {TASK} reports")
    if version != SCHEMA_VERSION:
        raise ReportSchemaError(
            f"{path}: schema_version {version!r}; this renderer reads {SCHEMA_VERSION}"
        )
    return report


def write_reports(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write report.md, report.html and each plot (as its own SVG, for the Markdown) into ``out``.

    Returns the paths: ``markdown``, ``html``, and one per plot drawn (``plot`` is the
    accuracy-vs-size plot; ``latency``, ``reliability``, ``curves`` the others).
    """
    out.mkdir(parents=True, exist_ok=True)
    svgs = plots(report)
    paths = {"markdown": out / "report.md", "html": out / "report.html"}
    for name, svg in svgs.items():
        path = out / PLOT_FILES[name]
        path.write_text(svg, encoding="utf-8")
        paths["plot" if name == "size" else name] = path
    files = {name: PLOT_FILES[name] for name in svgs}
    paths["markdown"].write_text(render_markdown(report, plot_files=files), encoding="utf-8")
    paths["html"].write_text(render_html(report, svgs=svgs), encoding="utf-8")
    return paths


def plots(report: dict[str, Any]) -> dict[str, str]:
    """Every plot the report has data for, as SVG documents keyed like ``PLOT_FILES``."""
    drawn = {
        "size": accuracy_size_svg(report),
        "latency": accuracy_latency_svg(report),
        "reliability": reliability_svg(report),
        "curves": training_curves_svg(report),
        "frontier": frontier_svg(report),
    }
    return {name: svg for name, svg in drawn.items() if svg is not None}


def render_markdown(report: dict[str, Any], plot_files: dict[str, str] | None = None) -> str:
    """The report as GitHub-flavoured Markdown; ``plot_files`` maps plot names (``PLOT_FILES``
    keys) to image paths to link; plots left out are not linked."""
    template = _environment(autoescape=False).get_template("report.md.j2")
    return template.render(**_context(report), plot_files=plot_files or {})


def render_html(report: dict[str, Any], svgs: dict[str, str] | None = None) -> str:
    """The report as one HTML page with inline CSS and inline SVG (``svgs``: from :func:`plots`)."""
    template = _environment(autoescape=True).get_template("report.html.j2")
    svgs = plots(report) if svgs is None else svgs
    # The SVGs are drawn here by matplotlib, which escapes their text itself; each gets its own
    # id prefix so that several on one page never share an id.
    inline = {name: Markup(draw.inline_svg(svg, f"{name}-")) for name, svg in svgs.items()}
    return template.render(**_context(report), svgs=inline)


# --------------------------------------------------------------------------- template context


def _context(report: dict[str, Any]) -> dict[str, Any]:
    rows = report.get("rows", [])
    by_key = {row["key"]: row for row in rows}
    deployed = next((row for row in rows if row.get("deployed")), None)
    baseline = report.get("baseline") or {}
    below = [by_key[key] for key in baseline.get("below_baseline", []) if key in by_key]
    headline = report.get("headline") or {}  # absent from reports written before it
    quantized = headline.get("vs_quantized_teacher")
    labels = report.get("labels", [])
    teacher = by_key.get("teacher")
    confusion = [
        _confusion_view(row, labels)
        for row in (teacher, deployed)
        if row and "confusion_matrix" in row
    ]
    breakdowns = [
        (row, row["size_breakdown"])
        for row in (teacher, by_key.get("student"))
        if row and row.get("size_breakdown")
    ]
    return {
        "report": report,
        "rows": rows,
        "teacher": teacher,
        "deployed": deployed,
        "below_baseline": below,
        # The teacher and the deployed student have their own sentence; the others are listed.
        "floor_warnings": [
            w.removeprefix("Warning: ") for w in headline.get("floor_warnings") or []
        ],
        "other_below_baseline": [
            row
            for row in below
            if "floor_warnings" not in headline
            or (row["key"] != "teacher" and not row.get("deployed"))
        ],
        "vs_quantized_teacher": quantized,
        "quantized_teacher": by_key.get(quantized["reference"]) if quantized else None,
        "splits": (report.get("data") or {}).get("splits", {}),
        "labels": labels,
        "confusion": confusion,
        "calibrated_rows": [
            row for row in rows if (row.get("calibration") or {}).get("ece") is not None
        ],
        "per_class_rows": [row for row in rows if row.get("per_class_f1")],
        "breakdowns": breakdowns,
        "breakdown_parts": [part["part"] for part in breakdowns[-1][1]["parts"]]
        if breakdowns
        else [],
        "disagreements": report.get("disagreements"),
        "rows_by_key": by_key,
        # The Students table has a pseudo-label column only when a student has that twin.
        "students_pseudo": any(
            s.get("pseudo_accuracy") is not None for s in report.get("students") or []
        ),
    }


def _confusion_view(row: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    """A confusion matrix with each cell's share of its gold row (for shading)."""
    matrix = row["confusion_matrix"]
    lines = []
    for gold, counts in zip(labels, matrix, strict=True):
        total = sum(counts)
        lines.append(
            {
                "gold": gold,
                "total": total,
                "cells": [
                    {"count": count, "share": count / total if total else 0.0} for count in counts
                ],
            }
        )
    correct = sum(matrix[i][i] for i in range(len(matrix)))
    return {"row": row, "lines": lines, "correct": correct, "total": sum(map(sum, matrix))}


def _part(breakdown: dict[str, Any], name: str) -> dict[str, Any]:
    return next((part for part in breakdown["parts"] if part["part"] == name), {})


def _environment(autoescape: bool) -> jinja2.Environment:
    """The shared environment on this task's templates, plus ``part`` (of a size breakdown)."""
    env = environment(autoescape, TEMPLATES)
    env.globals.update(part=_part)
    return env


# --------------------------------------------------------------------------- plots


def _floor_line(axes: Any, baseline: dict[str, Any] | None) -> None:
    """The TF-IDF floor as a dashed horizontal line (when the report has one)."""
    if baseline:
        axes.axhline(
            100 * baseline["accuracy"],
            color="#555555",
            linestyle="--",
            linewidth=1,
            label=f"TF-IDF floor: {fmt_pct(baseline['accuracy'], 1)}",
        )


def _accuracy_ylim(
    axes: Any, points: list[dict[str, Any]], baseline: dict[str, Any] | None
) -> None:
    """Accuracy axis (%) fitted to the points and the floor, padded, within [0, 100]."""
    values = [100 * r["accuracy"] for r in points] + (
        [100 * baseline["accuracy"]] if baseline else []
    )
    if values:
        low, high = min(values), max(values)
        pad = max(1.0, 0.15 * (high - low))
        axes.set_ylim(max(0.0, low - pad), min(100.0, high + pad) + 0.5)


def accuracy_size_svg(report: dict[str, Any]) -> str:
    """Test accuracy against size on disk (log scale), with the TF-IDF floor as a line.

    Models are told apart by colour, marker and a legend rather than text next to each
    point: the PyTorch student and its fp32 ONNX export usually sit on top of each other.
    """
    figure = draw.figure()
    axes = figure.add_subplot()
    points = [
        r for r in report.get("rows", []) if r.get("kind") == "transformer" and r.get("bytes")
    ]
    for row in points:
        size_mb = row["bytes"] / 1e6
        label = f"{row['name']}: {fmt_bytes(row['bytes'])}, {fmt_pct(row['accuracy'], 1)}"
        draw.point(axes, size_mb, 100 * row["accuracy"], row["key"], label)
    baseline = report.get("baseline")
    _floor_line(axes, baseline)
    if points:
        sizes = [r["bytes"] / 1e6 for r in points]
        draw.log_x(axes, min(sizes), max(sizes))
    _accuracy_ylim(axes, points, baseline)
    axes.set_xlabel("size on disk (MB, log scale)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title("Accuracy vs size")
    axes.grid(True, which="both", alpha=0.3)
    if points or baseline:
        axes.legend(fontsize=8, loc="best", framealpha=0.9)
    return draw.svg_text(figure)


def frontier_svg(report: dict[str, Any]) -> str | None:
    """The students of a multi-student recipe: deployed accuracy against deployed size, the
    Pareto-optimal ones (no other student beats them on both) filled and joined by a line."""
    students = report.get("students")
    if not students:
        return None
    figure = draw.figure()
    axes = figure.add_subplot()
    front = sorted((s for s in students if s["pareto"]), key=lambda s: s["bytes"])
    axes.plot(
        [s["bytes"] / 1e6 for s in front],
        [100 * s["accuracy"] for s in front],
        color="#c44e52",
        linewidth=1,
        zorder=2,
        label="Pareto front (accuracy vs size)",
    )
    for student in students:
        axes.scatter(
            [student["bytes"] / 1e6],
            [100 * student["accuracy"]],
            s=70,
            marker="o",
            color="#c44e52" if student["pareto"] else "white",
            edgecolors="#c44e52",
            linewidths=1.5,
            zorder=3,
        )
        axes.annotate(
            student["name"],
            (student["bytes"] / 1e6, 100 * student["accuracy"]),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=8,
        )
    teacher = next((r for r in report.get("rows", []) if r.get("key") == "teacher"), None)
    if teacher:
        axes.axhline(
            100 * teacher["accuracy"],
            color="#4c72b0",
            linestyle=":",
            linewidth=1,
            label=f"teacher: {fmt_pct(teacher['accuracy'], 1)}",
        )
    baseline = report.get("baseline")
    _floor_line(axes, baseline)
    sizes = [s["bytes"] / 1e6 for s in students]
    draw.log_x(axes, min(sizes), max(sizes))
    _accuracy_ylim(axes, students + ([teacher] if teacher else []), baseline)
    axes.set_xlabel("deployed model size (MB, log scale)")
    axes.set_ylabel("test accuracy of the deployed model (%)")
    axes.set_title("Students: accuracy vs size")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="best", framealpha=0.9)
    return draw.svg_text(figure)


def accuracy_latency_svg(report: dict[str, Any]) -> str | None:
    """Test accuracy against p50 latency (log scale); a bar from each point reaches its p95."""
    points = [
        r
        for r in report.get("rows", [])
        if (r.get("latency") or {}).get("p50_ms") and r.get("accuracy") is not None
    ]
    if not points:
        return None
    figure = draw.figure()
    axes = figure.add_subplot()
    for row in points:
        p50 = row["latency"]["p50_ms"]
        p95 = row["latency"].get("p95_ms") or p50
        color = draw.color(row["key"])
        axes.errorbar(
            [p50],
            [100 * row["accuracy"]],
            xerr=[[0.0], [max(0.0, p95 - p50)]],
            fmt=draw.marker(row["key"]),
            markersize=8,
            color=color,
            ecolor=color,
            elinewidth=1,
            capsize=3,
            alpha=0.9,
            zorder=3,
            label=f"{row['name']}: {fmt_ms(p50)} ms, {fmt_pct(row['accuracy'], 1)}",
        )
    baseline = report.get("baseline")
    _floor_line(axes, baseline)
    low = min(r["latency"]["p50_ms"] for r in points)
    high = max((r["latency"].get("p95_ms") or r["latency"]["p50_ms"]) for r in points)
    draw.log_x(axes, low, high)
    _accuracy_ylim(axes, points, baseline)
    setup = report.get("latency_setup") or {}
    axes.set_xlabel(
        f"p50 latency (ms, log scale; bar to p95), batch {setup.get('batch_size', '?')}, "
        f"{setup.get('threads', '?')} thread(s)"
    )
    axes.set_ylabel("test accuracy (%)")
    axes.set_title("Accuracy vs latency")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="best", framealpha=0.9)
    return draw.svg_text(figure)


def reliability_svg(report: dict[str, Any]) -> str | None:
    """Reliability diagrams of the teacher and the deployed student, side by side.

    Bars are the accuracy in each confidence bin, the diagonal is perfect calibration, and
    the red part of a bar is the gap to the bin's mean confidence.
    """
    rows = report.get("rows", [])
    teacher = next((r for r in rows if r["key"] == "teacher"), None)
    deployed = next((r for r in rows if r.get("deployed")), None)
    chosen = [
        r for r in (teacher, deployed) if r and (r.get("calibration") or {}).get("reliability")
    ]
    if not chosen:
        return None
    figure = draw.figure(4.0 * len(chosen), 3.8)
    panels = figure.subplots(1, len(chosen), squeeze=False)[0]
    for axes, row in zip(panels, chosen, strict=True):
        calib = row["calibration"]
        color = draw.color(row["key"])
        width = 1.0 / calib["bins"]
        filled = [b for b in calib["reliability"] if b["count"]]
        centers = [(b["lower"] + b["upper"]) / 2 for b in filled]
        accuracy = [b["accuracy"] for b in filled]
        confidence = [b["confidence"] for b in filled]
        axes.bar(
            centers,
            accuracy,
            width=width,
            color=color,
            edgecolor="white",
            linewidth=0.6,
            label="accuracy in bin",
        )
        axes.bar(
            centers,
            [c - a for a, c in zip(accuracy, confidence, strict=True)],
            bottom=accuracy,
            width=width,
            color="#c44e52",
            alpha=0.25,
            edgecolor="#c44e52",
            linewidth=0.6,
            label="gap to confidence",
        )
        axes.plot([0, 1], [0, 1], color="#555555", linestyle="--", linewidth=1, label="perfect")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1)
        axes.set_aspect("equal")
        axes.set_xlabel("confidence (top class probability)")
        axes.set_ylabel("accuracy")
        axes.set_title(
            f"{row['name']}\nECE {fmt_pct(calib['ece'])} ({calib['bins']} bins)", fontsize=10
        )
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7, loc="upper left")
    return draw.svg_text(figure)


def training_curves_svg(report: dict[str, Any]) -> str | None:
    """Training loss and evaluation accuracy of teacher and student, when logged."""
    training = report.get("training") or {}
    series = {
        name: (entry or {}).get("curves") or {}
        for name, entry in training.items()
        if isinstance(entry, dict)
    }
    if not any(curves.get("loss") or curves.get("eval_accuracy") for curves in series.values()):
        return None
    figure = draw.figure(8.0, 3.2)
    loss_axes, eval_axes = figure.subplots(1, 2)
    for name, curves in series.items():
        color = draw.COLORS.get(name)
        for axes, key in ((loss_axes, "loss"), (eval_axes, "eval_accuracy")):
            points = curves.get(key) or []
            if points:
                steps, values = zip(*points, strict=True)
                if key == "eval_accuracy":
                    values = tuple(100 * v for v in values)
                axes.plot(steps, values, marker="o", markersize=3, label=name, color=color)
    loss_axes.set_title("training loss (student: distillation objective)")
    eval_axes.set_title("validation accuracy (%)")
    for axes in (loss_axes, eval_axes):
        axes.set_xlabel("step")
        axes.grid(True, alpha=0.3)
        if axes.has_data():
            axes.legend(fontsize=8)
    return draw.svg_text(figure)
