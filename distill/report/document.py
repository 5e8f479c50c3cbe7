"""What every task's report stage does alike around its own sections: the stage body
(build the document, write ``report.json``, render from that file), the date, each stage's
wall time, the recipe tables the stages used, and the note when the timing threads exceed
the cores."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.pipeline.artifacts import read_manifest, write_json_atomic

if TYPE_CHECKING:
    from distill.config import ReportConfig
    from distill.pipeline.artifacts import RunContext
    from distill.tasks.contract import RenderModule

REPORT_FILE = "report.json"


def report_stage(
    build: Callable[[RunContext, dict[str, Path], ReportConfig], dict[str, Any]],
    render: RenderModule,
    summarize: Callable[[dict[str, Any]], dict[str, Any]],
) -> Callable[..., dict[str, Any]]:
    """A task's report stage, ``run(ctx, inputs, out, *, report)``: ``build`` the document from
    the upstream folders, :func:`publish` it into ``out`` with the task's ``render`` module,
    and return what the stage manifest keeps of it (``summarize(document)``)."""

    def run(
        ctx: RunContext, inputs: dict[str, Path], out: Path, *, report: ReportConfig
    ) -> dict[str, Any]:
        """Build ``report.json`` from the upstream folders, then render Markdown and HTML
        from it."""
        document = build(ctx, inputs, report)
        publish(document, out, render)
        return summarize(document)

    return run


def publish(document: dict[str, Any], out: Path, render: RenderModule) -> None:
    """Write ``report.json``, then render it with the task's ``render`` module from the
    file just written, not the in-memory dict: the JSON is the source of truth."""
    write_json_atomic(out / REPORT_FILE, document)
    render.write_reports(render.load_report(out / REPORT_FILE), out)


def created() -> str:
    """When the report was made, local time with its offset."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def wall_times(
    manifests: dict[str, dict[str, Any]],
    inputs: dict[str, Path],
    order: Sequence[str],
    started: float,
) -> dict[str, Any]:
    """Each stage's wall seconds in ``order`` (a stage missing from ``manifests`` is read
    from its input folder, left out when the run has none), then the report's own since
    ``started``."""
    times: dict[str, Any] = {}
    for name in order:
        if name in manifests:
            times[name] = manifests[name].get("wall_time_s")
        elif name in inputs:
            times[name] = (read_manifest(inputs[name]) or {}).get("wall_time_s")
    times["report"] = round(time.perf_counter() - started, 3)
    return times


def recipe_tables(
    manifests: dict[str, dict[str, Any]], stages: Sequence[str], report: dict[str, Any]
) -> dict[str, Any]:
    """Each recipe table as the stage that used it recorded it (the first of ``stages``
    wins), then the report's own table."""
    recipe: dict[str, Any] = {}
    for name in stages:
        for section, values in (manifests[name].get("config") or {}).items():
            if isinstance(values, dict):
                recipe.setdefault(section, values)
    recipe["report"] = report
    return recipe


def threads_note(threads: int, hardware: dict[str, Any], consequence: str) -> str | None:
    """A note when ``threads`` exceeds the cores this process may use (``consequence``:
    what that does to the numbers), else None."""
    cores = hardware.get("available_cores")
    if cores and threads > cores:
        return (
            f"latency_threads = {threads} exceeds the {cores} cores available to this "
            f"process: {consequence}"
        )
    return None
