"""Render a seq2seq report.json (the source of truth) as Markdown and as one self-contained
HTML page (inline CSS, the BLEU-vs-size plot as inline SVG) through
:func:`distill.report.render.write_task_reports`, with the shared filters plus ``score`` (a
0-100 score, 2 decimals); the plot is also written as its own ``.svg`` for the Markdown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.report import plots as draw
from distill.report import render

SCHEMA_VERSION = 1
TASK = "seq2seq"
TEMPLATES = Path(__file__).parent / "templates"
PLOT_FILE = "bleu_vs_size.svg"


def load_report(path: Path) -> dict[str, Any]:
    """Read a seq2seq report.json and check its task and schema version."""
    return render.load_task_report(path, TASK, SCHEMA_VERSION)


def write_reports(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write report.md, report.html and the plot (its own SVG, for the Markdown) into ``out``."""
    svg = bleu_size_svg(report)
    filters = {"score": fmt_score}
    return render.write_task_reports(
        out, TEMPLATES, _context(report), svg, PLOT_FILE, "bleu-", filters
    )


def fmt_score(x: Any) -> str:
    """A BLEU, chrF or ROUGE score on sacrebleu's 0-100 scale."""
    return render.DASH if render.missing(x) else f"{x:.2f}"


def _context(report: dict[str, Any]) -> dict[str, Any]:
    rows = report.get("rows", [])
    return {
        "report": report,
        "rows": rows,
        "headline": report.get("headline") or {},
        "distillation": report.get("distillation") or {},
        "batch": (report.get("speed_setup") or {}).get("batch_sizes") or [1, 32],
    }


def bleu_size_svg(report: dict[str, Any]) -> str:
    """Test BLEU against size on disk (log scale): every model of the report."""
    figure = draw.figure()
    axes = figure.add_subplot()
    points = [
        r for r in report.get("rows", []) if r.get("bytes") and (r.get("scores") or {}).get("bleu")
    ]
    for row in points:
        label = f"{row['name']}: {render.fmt_bytes(row['bytes'])}, BLEU {row['scores']['bleu']:.2f}"
        draw.point(axes, row["bytes"] / 1e6, row["scores"]["bleu"], row["key"], label)
    if points:
        sizes = [r["bytes"] / 1e6 for r in points]
        draw.log_x(axes, min(sizes), max(sizes))
        axes.legend(fontsize=7, loc="lower right")
    axes.set_xlabel("size on disk (MB, log scale)")
    axes.set_ylabel("BLEU (sacrebleu), test split")
    axes.grid(True, alpha=0.3)
    return draw.svg_text(figure)
