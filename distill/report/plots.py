"""Plot helpers every task's report uses: a bare matplotlib Figure, its SVG text (stable,
text kept as text, no metadata), the SVG ready to inline in HTML, a log axis, and one
colour and marker per row key, so a model looks the same in every plot.
"""

from __future__ import annotations

import io
import re
from typing import Any

# Row keys (teacher, student, its twins and exports) -> colour and marker; others get the default.
COLORS = {
    "teacher": "#4c72b0",
    "student": "#dd8452",
    "student_no_kd": "#8c8c8c",
    "student_pseudo": "#b8b8b8",
    "student_onnx_fp32": "#55a868",
    "student_onnx_int8": "#c44e52",
    "teacher_onnx_fp32": "#8172b3",
    "teacher_onnx_int8": "#64b5cd",
}
MARKERS = {
    "teacher": "o",
    "student": "s",
    "student_no_kd": "v",
    "student_pseudo": "<",
    "student_onnx_fp32": "D",
    "student_onnx_int8": "^",
    "teacher_onnx_fp32": "P",
    "teacher_onnx_int8": "X",
}
DEFAULT_COLOR = "#937860"
DEFAULT_MARKER = "o"


def color(key: str) -> str:
    """The colour of a row (by its key) in every plot."""
    return COLORS.get(key, DEFAULT_COLOR)


def marker(key: str) -> str:
    """The marker of a row (by its key) in every plot."""
    return MARKERS.get(key, DEFAULT_MARKER)


def point(axes: Any, x: float, y: float, key: str, label: str) -> None:
    """One model as a point, in its row's colour and marker (the same look in every report)."""
    axes.scatter(
        [x],
        [y],
        s=70,
        marker=marker(key),
        color=color(key),
        edgecolors="white",
        linewidths=0.8,
        alpha=0.9,
        zorder=3,
        label=label,
    )


def figure(width: float = 6.4, height: float = 4.0) -> Any:
    """A matplotlib Figure with a constrained layout, ``width`` x ``height`` inches."""
    # A bare Figure (no pyplot): no global backend is selected and no state is shared.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def svg_text(figure: Any) -> str:
    """The figure as an SVG document: text as text, fixed ids, no metadata (stable output)."""
    import matplotlib

    buffer = io.StringIO()
    # Text stays text (small, selectable, no embedded glyphs); fixed ids make output stable.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "distill"}):
        # No RDF metadata block: no creation date (stable output) and no third-party namespaces.
        figure.savefig(
            buffer, format="svg", metadata=dict.fromkeys(("Date", "Creator", "Format", "Type"))
        )
    return buffer.getvalue()


def inline_svg(svg: str, prefix: str) -> str:
    """Ready an SVG document to sit inside HTML: no XML declaration or DOCTYPE, and every
    id (and reference to one) prefixed, since matplotlib numbers ids per figure and two
    figures on one page would otherwise share ``figure_1``, ``axes_1``, ...
    """
    start = svg.find("<svg")
    svg = svg[start:] if start >= 0 else svg
    return re.sub(r'(\bid="|url\(#|href="#)', lambda m: m.group(1) + prefix, svg)


def log_x(axes: Any, low: float, high: float) -> None:
    """A log x axis spanning [low, high] with margin, ticked at 1, 2, 5 x 10^k."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axes.set_xscale("log")
    axes.set_xlim(low / 1.5, high * 1.5)
    axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
