"""Render a seq2seq report.json (the source of truth) as Markdown and as one self-contained
HTML page (inline CSS, the BLEU-vs-size plot as inline SVG), with the shared filters of
:mod:`distill.report.render` plus ``score`` (a 0-100 score, 2 decimals) and ``rate``
(tokens/s); the plot is also
written as its own ``.svg`` for the Markdown (as :func:`distill.report.render.write_task_reports`
writes them, with the ``score`` filter added).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

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
    out.mkdir(parents=True, exist_ok=True)
    svg = bleu_size_svg(report)
    paths = {"markdown": out / "report.md", "html": out / "report.html", "plot": out / PLOT_FILE}
    paths["plot"].write_text(svg, encoding="utf-8")
    context = _context(report)
    markdown = environment(autoescape=False).get_template("report.md.j2")
    paths["markdown"].write_text(markdown.render(**context, plot_file=PLOT_FILE), encoding="utf-8")
    html = environment(autoescape=True).get_template("report.html.j2")
    inline = Markup(draw.inline_svg(svg, "bleu-"))
    paths["html"].write_text(html.render(**context, svg=inline), encoding="utf-8")
    return paths


def environment(autoescape: bool) -> jinja2.Environment:
    """:func:`distill.report.render.environment` with this task's templates, plus ``score``
    and ``rate``."""
    env = render.environment(autoescape, TEMPLATES)
    env.filters.update(score=fmt_score, rate=fmt_rate)
    return env


def fmt_score(x: Any) -> str:
    """A BLEU, chrF or ROUGE score on sacrebleu's 0-100 scale."""
    return render.DASH if render.missing(x) else f"{x:.2f}"


def fmt_rate(x: Any) -> str:
    """Tokens/s: one decimal below 1000, none above."""
    if render.missing(x):
        return render.DASH
    return f"{x:.1f}" if x < 1000 else f"{x:.0f}"


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
