"""Render a token-classification report.json (the source of truth) as Markdown and as one
self-contained HTML page (inline CSS, the F1-vs-size plot as inline SVG), with the shared
filters of :mod:`distill.report.render`; the plot is also written as its own ``.svg``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.report import plots as draw
from distill.report import render

SCHEMA_VERSION = 1
TASK = "token-classification"
TEMPLATES = Path(__file__).parent / "templates"
PLOT_FILE = "entity_f1_vs_size.svg"


def load_report(path: Path) -> dict[str, Any]:
    """Read a token-classification report.json and check its task and schema version."""
    return render.load_task_report(path, TASK, SCHEMA_VERSION)


def write_reports(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write report.md, report.html and the plot (its own SVG, for the Markdown) into ``out``."""
    svg = f1_size_svg(report)
    return render.write_task_reports(out, TEMPLATES, _context(report), svg, PLOT_FILE, "f1-")


def _context(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "report": report,
        "rows": report.get("rows", []),
        "headline": report.get("headline") or {},
    }


def f1_size_svg(report: dict[str, Any]) -> str:
    """Entity micro-F1 against size on disk (log scale)."""
    figure = draw.figure()
    axes = figure.add_subplot()
    points = [
        r for r in report.get("rows", []) if r.get("bytes") and r.get("entity_f1") is not None
    ]
    for row in points:
        label = f"{row['name']}: {render.fmt_bytes(row['bytes'])}, F1 {row['entity_f1']:.3f}"
        draw.point(axes, row["bytes"] / 1e6, 100 * row["entity_f1"], row["key"], label)
    floor = next((r for r in report.get("rows", []) if r.get("floor")), None)
    if floor is not None:
        axes.axhline(
            100 * floor["entity_f1"],
            color="#888888",
            linestyle="--",
            linewidth=1,
            label=floor["name"],
        )
    if points:
        sizes = [r["bytes"] / 1e6 for r in points]
        draw.log_x(axes, min(sizes), max(sizes))
    axes.set_xlabel("size on disk (MB, log scale)")
    axes.set_ylabel("entity micro-F1 (%), test split")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7, loc="lower right")
    return draw.svg_text(figure)
