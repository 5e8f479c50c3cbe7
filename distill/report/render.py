"""What every task's report rendering shares: the Jinja2 environment and its filters.

A task renders its own report (``distill/tasks/<task>/render.py``) from its own templates
(the task folder's ``templates/``), which extend the shared ones here (``base.html.j2``:
the page skeleton and CSS). Filters format numbers the same way in every report: ``pct``,
``ms``, ``size``, ``count``, ``ratio``, ``points``, ``value``, ``md`` (Markdown escaping),
``prob``, ``pvalue``, ``shade``, ``delta``, ``metric``. Plot helpers are in
:mod:`distill.report.plots`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jinja2

from distill.errors import ArtifactError

TEMPLATES = Path(__file__).parent / "templates"


def load_task_report(
    path: Path, task: str, version: int, error: type[Exception] = ArtifactError
) -> dict[str, Any]:
    """Read a report.json of ``task`` at schema ``version``; ``error`` names what is wrong."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise error(f"{path}: cannot read it as JSON ({exc})") from None
    if not isinstance(report, dict) or report.get("task") != task:
        raise error(f"{path}: not a {task} report (no task = {task!r})")
    if report.get("schema_version") != version:
        raise error(
            f"{path}: schema_version {report.get('schema_version')!r}; "
            f"this renderer reads {version}"
        )
    return report


def environment(autoescape: bool, folder: Path | None = None) -> jinja2.Environment:
    """The Jinja2 environment of the report templates, with their filters (``pct``, ``md``, ...);
    templates are looked up in ``folder`` (a task's templates) first, then in the shared ones."""
    folders = [str(folder)] if folder is not None else []
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([*folders, str(TEMPLATES)]),
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
        rate=fmt_rate,
    )
    return env


# --------------------------------------------------------------------------- formatting

DASH = "–"


def write_task_reports(
    out: Path,
    templates: Path,
    context: dict[str, Any],
    svg: str,
    plot_file: str,
    svg_prefix: str,
    filters: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """A task's ``report.md`` and ``report.html`` from its templates (``report.md.j2``,
    ``report.html.j2``, which may use the task's own ``filters`` beside the shared ones) and
    ``context``, and its plot: its own SVG file for the Markdown, inline in the HTML (ids
    prefixed with ``svg_prefix``)."""
    from markupsafe import Markup

    from distill.report.plots import inline_svg

    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "report.md", "html": out / "report.html", "plot": out / plot_file}
    paths["plot"].write_text(svg, encoding="utf-8")
    markdown_env, html_env = environment(False, templates), environment(True, templates)
    for env in (markdown_env, html_env):
        env.filters.update(filters or {})
    markdown = markdown_env.get_template("report.md.j2")
    paths["markdown"].write_text(markdown.render(**context, plot_file=plot_file), encoding="utf-8")
    html = html_env.get_template("report.html.j2")
    svg_inline = Markup(inline_svg(svg, svg_prefix))
    paths["html"].write_text(html.render(**context, svg=svg_inline), encoding="utf-8")
    return paths


def missing(x: Any) -> bool:
    """Nothing to show: ``None``, NaN or an infinity."""
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def fmt_pct(x: Any, digits: int = 2) -> str:
    return DASH if missing(x) else f"{100 * x:.{digits}f}%"


def fmt_points(x: Any) -> str:
    """A difference of two fractions, in percentage points with a sign."""
    return DASH if missing(x) else f"{100 * x:+.2f} pt"


def fmt_ms(x: Any) -> str:
    if missing(x):
        return DASH
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def fmt_rate(x: Any) -> str:
    """A rate (tokens/s): one decimal below 1000, none above."""
    if missing(x):
        return DASH
    return f"{x:.1f}" if x < 1000 else f"{x:.0f}"


def fmt_bytes(n: Any) -> str:
    if missing(n):
        return DASH
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def fmt_count(n: Any) -> str:
    if missing(n):
        return DASH
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def fmt_ratio(x: Any) -> str:
    return DASH if missing(x) else f"{x:.2f}×"


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
    if missing(x):
        return DASH
    return "< 0.001" if x < 0.001 else f"{x:.3g}"


def fmt_prob(x: Any) -> str:
    """A probability, as a plain number with 3 decimals."""
    return DASH if missing(x) else f"{x:.3f}"


def fmt_shade(share: Any) -> str:
    """An inline CSS background for a table cell, darker for a larger share (0..1)."""
    share = 0.0 if missing(share) else max(0.0, min(1.0, float(share)))
    return f"background-color: rgba(9, 105, 218, {0.08 + 0.6 * share:.3f})" if share else ""


def fmt_metric(x: Any, kind: str = "fraction") -> str:
    """A metric value in its unit: ``fraction`` as a percentage, ``ms``, ``bytes``, ``count``, ``ratio``."""
    if kind == "fraction":
        return fmt_pct(x)
    if kind == "ms":
        return DASH if missing(x) else f"{fmt_ms(x)} ms"
    if kind == "bytes":
        return fmt_bytes(x)
    if kind == "count":
        return fmt_count(x)
    if kind == "ratio":
        return fmt_ratio(x)
    return DASH if missing(x) else f"{x:g}"


def fmt_delta(x: Any, kind: str = "fraction") -> str:
    """A signed change: percentage points for fractions, else in the metric's unit."""
    if missing(x):
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
