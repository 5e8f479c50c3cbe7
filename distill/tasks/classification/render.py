"""Render a report's JSON (the source of truth) as Markdown and as one self-contained HTML page.

The HTML page has inline CSS and inline SVG plots (matplotlib's SVG backend with text kept
as text), no scripts, fonts or other network requests, so it opens offline and can be
mailed as a single file. Jinja2 autoescapes everything in the HTML template; the
Markdown template escapes table-breaking and HTML-like characters with the ``md`` filter.

Plots: accuracy vs size, accuracy vs latency, reliability diagrams (teacher and deployed
student) and training curves; each also written as its own ``.svg`` for the Markdown.
The comparison page of two runs (:mod:`distill.report.compare`) uses the same filters.
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

SCHEMA_VERSION = 2
TEMPLATES = Path(__file__).parents[2] / "report" / "templates"
# Until each task renders its own report, this module renders classification's.
REPORT_TEMPLATES = Path(__file__).parent / "templates"
PLOT_FILE = "accuracy_vs_size.svg"
# Each plot, also written as its own SVG file beside report.md (which links them).
PLOT_FILES = {
    "size": PLOT_FILE,
    "latency": "accuracy_vs_latency.svg",
    "reliability": "reliability.svg",
    "curves": "training_curves.svg",
    "frontier": "students_frontier.svg",
}
_PLOT_COLORS = {
    "teacher": "#4c72b0",
    "student": "#dd8452",
    "student_no_kd": "#8c8c8c",
    "student_pseudo": "#b8b8b8",
    "student_onnx_fp32": "#55a868",
    "student_onnx_int8": "#c44e52",
    "teacher_onnx_fp32": "#8172b3",
    "teacher_onnx_int8": "#64b5cd",
}


_PLOT_MARKERS = {
    "teacher": "o",
    "student": "s",
    "student_no_kd": "v",
    "student_pseudo": "<",
    "student_onnx_fp32": "D",
    "student_onnx_int8": "^",
    "teacher_onnx_fp32": "P",
    "teacher_onnx_int8": "X",
}


class ReportSchemaError(ValueError):
    """A report.json this renderer does not understand."""


def load_report(path: Path) -> dict[str, Any]:
    """Read a report.json and check its schema version."""
    report = json.loads(Path(path).read_text(encoding="utf-8"))
    version = report.get("schema_version") if isinstance(report, dict) else None
    if isinstance(report, dict) and report.get("task") == "causal-lm":
        raise ReportSchemaError(
            f"{path}: a causal-lm report; this renderer (and `distill report --compare`) reads "
            "classification reports"
        )
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
    inline = {name: Markup(_inline_svg(svg, f"{name}-")) for name, svg in svgs.items()}
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


def environment(autoescape: bool, folder: Path | None = None) -> jinja2.Environment:
    """The Jinja2 environment of the report templates, with their filters (``pct``, ``md``, ...);
    templates are looked up in ``folder`` first, then in the shared ones."""
    return _environment(autoescape, folder)


def _environment(autoescape: bool, folder: Path | None = None) -> jinja2.Environment:
    folders = [str(folder or REPORT_TEMPLATES), str(TEMPLATES)]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folders),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        pct=fmt_pct,
        ms=fmt_ms,
        size=fmt_bytes,
        count=fmt_count,
        ratio=fmt_ratio,
        points=fmt_points,
        value=fmt_value,
        md=md_escape,
        prob=fmt_prob,
        pvalue=fmt_pvalue,
        shade=fmt_shade,
        delta=fmt_delta,
        metric=fmt_metric,
    )
    env.globals.update(part=_part)
    return env


# --------------------------------------------------------------------------- formatting

DASH = "–"


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def fmt_pct(x: Any, digits: int = 2) -> str:
    return DASH if _missing(x) else f"{100 * x:.{digits}f}%"


def fmt_points(x: Any) -> str:
    """A difference of two fractions, in percentage points with a sign."""
    return DASH if _missing(x) else f"{100 * x:+.2f} pt"


def fmt_ms(x: Any) -> str:
    if _missing(x):
        return DASH
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def fmt_bytes(n: Any) -> str:
    if _missing(n):
        return DASH
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def fmt_count(n: Any) -> str:
    if _missing(n):
        return DASH
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def fmt_ratio(x: Any) -> str:
    return DASH if _missing(x) else f"{x:.2f}×"


def fmt_value(x: Any) -> str:
    """A recipe value: strings as they are, everything else as JSON."""
    if isinstance(x, str):
        return x
    return json.dumps(x)


def md_escape(text: Any) -> str:
    """Escape what would break a Markdown table cell or be read as HTML, a link or an image.

    Brackets and backticks are escaped too, so an example text such as
    ``![x](http://tracker/img.png)`` shows as text and never makes a viewer load anything.
    """
    text = "" if text is None else str(text)
    for old, new in (
        ("\\", "\\\\"),
        ("&", "&amp;"),
        ("<", "&lt;"),
        (">", "&gt;"),
        ("|", "\\|"),
        ("[", "\\["),
        ("]", "\\]"),
        ("`", "\\`"),
    ):
        text = text.replace(old, new)
    return " ".join(text.split())


def fmt_pvalue(x: Any) -> str:
    """A p-value: 3 significant digits, or "< 0.001"."""
    if _missing(x):
        return DASH
    return "< 0.001" if x < 0.001 else f"{x:.3g}"


def fmt_prob(x: Any) -> str:
    """A probability, as a plain number with 3 decimals."""
    return DASH if _missing(x) else f"{x:.3f}"


def fmt_shade(share: Any) -> str:
    """An inline CSS background for a table cell, darker for a larger share (0..1)."""
    share = 0.0 if _missing(share) else max(0.0, min(1.0, float(share)))
    return f"background-color: rgba(9, 105, 218, {0.08 + 0.6 * share:.3f})" if share else ""


def fmt_metric(x: Any, kind: str = "fraction") -> str:
    """A metric value in its unit: ``fraction`` as a percentage, ``ms``, ``bytes``, ``count``, ``ratio``."""
    if kind == "fraction":
        return fmt_pct(x)
    if kind == "ms":
        return DASH if _missing(x) else f"{fmt_ms(x)} ms"
    if kind == "bytes":
        return fmt_bytes(x)
    if kind == "count":
        return fmt_count(x)
    if kind == "ratio":
        return fmt_ratio(x)
    return DASH if _missing(x) else f"{x:g}"


def fmt_delta(x: Any, kind: str = "fraction") -> str:
    """A signed change: percentage points for fractions, else in the metric's unit."""
    if _missing(x):
        return DASH
    if kind == "fraction":
        return fmt_points(x)
    if kind == "ms":
        return f"{x:+.2f} ms"
    if kind == "bytes":
        sign = "+" if x >= 0 else "-"
        return sign + fmt_bytes(abs(x))
    if kind == "count":
        sign = "+" if x >= 0 else "-"
        return sign + fmt_count(abs(x))
    if kind == "ratio":
        return f"{x:+.2f}×"
    if kind == "number":
        return f"{x:+.4f}"
    return f"{x:+g}"


# --------------------------------------------------------------------------- plots


def _figure(width: float = 6.4, height: float = 4.0) -> Any:
    # A bare Figure (no pyplot): no global backend is selected and no state is shared.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _svg_text(figure: Any) -> str:
    import matplotlib

    buffer = io.StringIO()
    # Text stays text (small, selectable, no embedded glyphs); fixed ids make output stable.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "distill"}):
        # No RDF metadata block: no creation date (stable output) and no third-party namespaces.
        figure.savefig(
            buffer, format="svg", metadata=dict.fromkeys(("Date", "Creator", "Format", "Type"))
        )
    return buffer.getvalue()


def _inline_svg(svg: str, prefix: str) -> str:
    """Ready an SVG document to sit inside HTML: no XML declaration or DOCTYPE, and every
    id (and reference to one) prefixed, since matplotlib numbers ids per figure and two
    figures on one page would otherwise share ``figure_1``, ``axes_1``, ...
    """
    start = svg.find("<svg")
    svg = svg[start:] if start >= 0 else svg
    return re.sub(r'(\bid="|url\(#|href="#)', lambda m: m.group(1) + prefix, svg)


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


def _log_x(axes: Any, low: float, high: float) -> None:
    """A log x axis spanning [low, high] with margin, ticked at 1, 2, 5 x 10^k."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axes.set_xscale("log")
    axes.set_xlim(low / 1.5, high * 1.5)
    axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())


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
    figure = _figure()
    axes = figure.add_subplot()
    points = [
        r for r in report.get("rows", []) if r.get("kind") == "transformer" and r.get("bytes")
    ]
    for row in points:
        size_mb = row["bytes"] / 1e6
        axes.scatter(
            [size_mb],
            [100 * row["accuracy"]],
            s=70,
            marker=_PLOT_MARKERS.get(row["key"], "o"),
            color=_PLOT_COLORS.get(row["key"], "#937860"),
            edgecolors="white",
            linewidths=0.8,
            alpha=0.9,
            zorder=3,
            label=f"{row['name']}: {fmt_bytes(row['bytes'])}, {fmt_pct(row['accuracy'], 1)}",
        )
    baseline = report.get("baseline")
    _floor_line(axes, baseline)
    if points:
        sizes = [r["bytes"] / 1e6 for r in points]
        _log_x(axes, min(sizes), max(sizes))
    _accuracy_ylim(axes, points, baseline)
    axes.set_xlabel("size on disk (MB, log scale)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title("Accuracy vs size")
    axes.grid(True, which="both", alpha=0.3)
    if points or baseline:
        axes.legend(fontsize=8, loc="best", framealpha=0.9)
    return _svg_text(figure)


def frontier_svg(report: dict[str, Any]) -> str | None:
    """The students of a multi-student recipe: deployed accuracy against deployed size, the
    Pareto-optimal ones (no other student beats them on both) filled and joined by a line."""
    students = report.get("students")
    if not students:
        return None
    figure = _figure()
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
    _log_x(axes, min(sizes), max(sizes))
    _accuracy_ylim(axes, students + ([teacher] if teacher else []), baseline)
    axes.set_xlabel("deployed model size (MB, log scale)")
    axes.set_ylabel("test accuracy of the deployed model (%)")
    axes.set_title("Students: accuracy vs size")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="best", framealpha=0.9)
    return _svg_text(figure)


def accuracy_latency_svg(report: dict[str, Any]) -> str | None:
    """Test accuracy against p50 latency (log scale); a bar from each point reaches its p95."""
    points = [
        r
        for r in report.get("rows", [])
        if (r.get("latency") or {}).get("p50_ms") and r.get("accuracy") is not None
    ]
    if not points:
        return None
    figure = _figure()
    axes = figure.add_subplot()
    for row in points:
        p50 = row["latency"]["p50_ms"]
        p95 = row["latency"].get("p95_ms") or p50
        color = _PLOT_COLORS.get(row["key"], "#937860")
        axes.errorbar(
            [p50],
            [100 * row["accuracy"]],
            xerr=[[0.0], [max(0.0, p95 - p50)]],
            fmt=_PLOT_MARKERS.get(row["key"], "o"),
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
    _log_x(axes, low, high)
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
    return _svg_text(figure)


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
    figure = _figure(4.0 * len(chosen), 3.8)
    panels = figure.subplots(1, len(chosen), squeeze=False)[0]
    for axes, row in zip(panels, chosen, strict=True):
        calib = row["calibration"]
        color = _PLOT_COLORS.get(row["key"], "#937860")
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
    return _svg_text(figure)


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
    figure = _figure(8.0, 3.2)
    loss_axes, eval_axes = figure.subplots(1, 2)
    for name, curves in series.items():
        color = _PLOT_COLORS.get(name)
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
    return _svg_text(figure)
