"""Render a causal-LM report.json (the source of truth) as Markdown and as one self-contained
HTML page (inline CSS, the perplexity-vs-size plot as inline SVG), with the shared filters of
:mod:`distill.report.render` plus ``num``, ``rate`` and ``times``; the plot is also written as
its own ``.svg`` for the Markdown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from distill.errors import ArtifactError
from distill.report import plots as draw
from distill.report import render

SCHEMA_VERSION = 1
TASK = "causal-lm"
TEMPLATES = Path(__file__).parent / "templates"
MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
PLOT_FILE = "perplexity_vs_size.svg"


class GenerationReportError(ArtifactError):
    """A report.json that is not a causal-LM report this renderer reads."""


def load_report(path: Path) -> dict[str, Any]:
    """Read a causal-LM report.json and check its task and schema version."""
    return render.load_task_report(path, TASK, SCHEMA_VERSION, GenerationReportError)


def write_reports(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write report.md, report.html and the plot (as its own SVG, for the Markdown) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    svg = perplexity_size_svg(report)
    paths = {"markdown": out / MARKDOWN_FILE, "html": out / HTML_FILE, "plot": out / PLOT_FILE}
    paths["plot"].write_text(svg, encoding="utf-8")
    paths["markdown"].write_text(render_markdown(report, plot_file=PLOT_FILE), encoding="utf-8")
    paths["html"].write_text(render_html(report, svg=svg), encoding="utf-8")
    return paths


def _context(report: dict[str, Any]) -> dict[str, Any]:
    rows = report.get("rows", [])
    return {
        "report": report,
        "rows": rows,
        "teacher": next((row for row in rows if row["key"] == "teacher"), None),
        "deployed": next((row for row in rows if row.get("deployed")), None),
        "rows_by_key": {row["key"]: row for row in rows},
    }


def environment(autoescape: bool) -> jinja2.Environment:
    """:func:`distill.report.render.environment` plus ``num`` (4 significant digits: perplexities,
    logit differences) and ``times`` (a ratio in words)."""
    env = render.environment(autoescape, TEMPLATES)
    env.filters.update(num=fmt_number, times=fmt_times)
    return env


def fmt_times(x: Any, more: str, less: str) -> str:
    """A ratio against the teacher in words: ``2.50× smaller``, or ``1.25× larger`` below 1."""
    if render.missing(x) or x <= 0:
        return f"{render.DASH} {more}"
    return f"{x:.2f}× {more}" if x >= 1 else f"{1 / x:.2f}× {less}"


def fmt_number(x: Any) -> str:
    return render.DASH if render.missing(x) else f"{x:.4g}"


def render_markdown(report: dict[str, Any], plot_file: str | None = PLOT_FILE) -> str:
    """The report as GitHub-flavoured Markdown, linking ``plot_file`` when given."""
    template = environment(autoescape=False).get_template("report.md.j2")
    return template.render(**_context(report), plot_file=plot_file)


def render_html(report: dict[str, Any], svg: str | None = None) -> str:
    """The report as one HTML page with inline CSS and the plot as inline SVG."""
    template = environment(autoescape=True).get_template("report.html.j2")
    svg = perplexity_size_svg(report) if svg is None else svg
    # matplotlib escapes the SVG's text itself; the id prefix keeps ids unique on the page.
    return template.render(**_context(report), svg=Markup(draw.inline_svg(svg, "ppl-")))


def perplexity_size_svg(report: dict[str, Any]) -> str:
    """Test perplexity (lower is better) against size on disk, both on log scales."""
    figure = draw.figure()
    axes = figure.add_subplot()
    points = [r for r in report.get("rows", []) if r.get("bytes") and r.get("perplexity")]
    for row in points:
        label = (
            f"{row['name']}: {render.fmt_bytes(row['bytes'])}, perplexity {row['perplexity']:.3g}"
        )
        draw.point(axes, row["bytes"] / 1e6, row["perplexity"], row["key"], label)
    if points:
        sizes = [r["bytes"] / 1e6 for r in points]
        draw.log_x(axes, min(sizes), max(sizes))
        values = [r["perplexity"] for r in points]
        if max(values) / min(values) > 10:
            axes.set_yscale("log")
        axes.legend(fontsize=8, loc="best", framealpha=0.9)
    axes.set_xlabel("size on disk (MB, log scale)")
    axes.set_ylabel("test perplexity (lower is better)")
    axes.set_title("Perplexity vs size")
    axes.grid(True, which="both", alpha=0.3)
    return draw.svg_text(figure)
