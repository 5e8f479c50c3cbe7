"""Render a report's JSON (the source of truth) as Markdown and as one self-contained HTML page.

The HTML page has inline CSS and inline SVG plots (matplotlib's SVG backend with text kept
as text), no scripts, fonts or other network requests, so it opens offline and can be
mailed as a single file. Jinja2 autoescapes everything in the HTML template; the
Markdown template escapes table-breaking and HTML-like characters with the ``md`` filter.
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

SCHEMA_VERSION = 1
TEMPLATES = Path(__file__).parent / "templates"
PLOT_FILE = "accuracy_vs_size.svg"
_PLOT_COLORS = {
    "teacher": "#4c72b0",
    "student": "#dd8452",
    "student_no_kd": "#8c8c8c",
    "student_onnx_fp32": "#55a868",
    "student_onnx_int8": "#c44e52",
}


_PLOT_MARKERS = {
    "teacher": "o",
    "student": "s",
    "student_no_kd": "v",
    "student_onnx_fp32": "D",
    "student_onnx_int8": "^",
}


class ReportSchemaError(ValueError):
    """A report.json this renderer does not understand."""


def load_report(path: Path) -> dict[str, Any]:
    """Read a report.json and check its schema version."""
    report = json.loads(Path(path).read_text(encoding="utf-8"))
    version = report.get("schema_version") if isinstance(report, dict) else None
    if version != SCHEMA_VERSION:
        raise ReportSchemaError(
            f"{path}: schema_version {version!r}; this renderer reads {SCHEMA_VERSION}"
        )
    return report


def write_reports(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write report.md, report.html and the plot (as its own SVG, for the Markdown) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "report.md", "html": out / "report.html", "plot": out / PLOT_FILE}
    plot = accuracy_size_svg(report)
    paths["plot"].write_text(plot, encoding="utf-8")
    paths["markdown"].write_text(render_markdown(report, plot_file=PLOT_FILE), encoding="utf-8")
    paths["html"].write_text(render_html(report, plot_svg=plot), encoding="utf-8")
    return paths


def render_markdown(report: dict[str, Any], plot_file: str | None = None) -> str:
    """The report as GitHub-flavoured Markdown; ``plot_file`` is an image path to link, if any."""
    template = _environment(autoescape=False).get_template("report.md.j2")
    return template.render(**_context(report), plot_file=plot_file)


def render_html(report: dict[str, Any], plot_svg: str | None = None) -> str:
    """The report as one HTML page with inline CSS and inline SVG."""
    template = _environment(autoescape=True).get_template("report.html.j2")
    plot = _inline_svg(plot_svg if plot_svg is not None else accuracy_size_svg(report), "plot-")
    curves = training_curves_svg(report)
    return template.render(
        **_context(report),
        # Both SVGs are drawn here by matplotlib, which escapes their text itself.
        plot_svg=Markup(plot),
        curves_svg=Markup(_inline_svg(curves, "curves-")) if curves else None,
    )


# --------------------------------------------------------------------------- template context


def _context(report: dict[str, Any]) -> dict[str, Any]:
    rows = report.get("rows", [])
    by_key = {row["key"]: row for row in rows}
    deployed = next((row for row in rows if row.get("deployed")), None)
    baseline = report.get("baseline") or {}
    below = [by_key[key] for key in baseline.get("below_baseline", []) if key in by_key]
    return {
        "report": report,
        "rows": rows,
        "teacher": by_key.get("teacher"),
        "deployed": deployed,
        "below_baseline": below,
        "splits": (report.get("data") or {}).get("splits", {}),
        "labels": report.get("labels", []),
    }


def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
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
    )
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
    """Escape what would break a Markdown table cell or be read as HTML."""
    text = "" if text is None else str(text)
    for old, new in (("\\", "\\\\"), ("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|")):
        text = text.replace(old, new)
    return " ".join(text.split())


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


def accuracy_size_svg(report: dict[str, Any]) -> str:
    """Test accuracy against size on disk (log scale), with the TF-IDF floor as a line.

    Models are told apart by colour, marker and a legend rather than text next to each
    point: the PyTorch student and its fp32 ONNX export usually sit on top of each other.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

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
    if baseline:
        axes.axhline(
            100 * baseline["accuracy"],
            color="#555555",
            linestyle="--",
            linewidth=1,
            label=f"TF-IDF floor: {fmt_pct(baseline['accuracy'], 1)}",
        )
    if points:
        axes.set_xscale("log")
        sizes = [r["bytes"] / 1e6 for r in points]
        axes.set_xlim(min(sizes) / 1.5, max(sizes) * 1.5)
        axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.xaxis.set_minor_formatter(NullFormatter())
    values = [100 * r["accuracy"] for r in points] + (
        [100 * baseline["accuracy"]] if baseline else []
    )
    if values:
        low, high = min(values), max(values)
        pad = max(1.0, 0.15 * (high - low))
        axes.set_ylim(max(0.0, low - pad), min(100.0, high + pad) + 0.5)
    axes.set_xlabel("size on disk (MB, log scale)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title("Accuracy vs size")
    axes.grid(True, which="both", alpha=0.3)
    if points or baseline:
        axes.legend(fontsize=8, loc="best", framealpha=0.9)
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
