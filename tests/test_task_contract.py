"""The contract every registered task passes: a tiny end-to-end `distill run`, a bundle the
one reader verifies, a runner that answers without torch, a report that renders.

A new task is done when it passes here (its project goes in tests/task_projects.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from html.parser import HTMLParser

import pytest
from conftest import run_cli_watching_imports
from task_projects import NAME, PROJECTS, Project

from distill.export.bundle import read_bundle
from distill.pipeline.artifacts import read_manifest, sha256_file
from distill.tasks import TASKS, get_task, task_of_report


def test_every_registered_task_has_a_contract_project() -> None:
    assert sorted(PROJECTS) == sorted(TASKS)


@pytest.fixture(scope="module", params=sorted(TASKS))
def finished(request: pytest.FixtureRequest, finished_project: Callable[[str], Project]) -> Project:
    """The task's project after `distill run` (run once per session, see conftest.py)."""
    return finished_project(request.param)


def _task_name(project: Project) -> str:
    return read_manifest(project.root / "runs" / NAME / "data")["task"]


def test_every_stage_finishes_with_a_manifest_of_the_task(finished: Project) -> None:
    for stage in ("data", "teacher", "labels", "student", "export", "report"):
        manifest = read_manifest(finished.root / "runs" / NAME / stage)
        assert manifest is not None and manifest["task"] == _task_name(finished), stage


def test_bundle_verifies_with_the_one_reader_and_names_its_task(finished: Project) -> None:
    bundle = read_bundle(finished.root / "export" / NAME)
    assert bundle.task.name == _task_name(finished)
    assert bundle.manifest["files"], "an empty bundle"
    for rel, entry in bundle.manifest["files"].items():  # what the reader checked, checked here
        assert sha256_file(bundle.path / rel) == entry["sha256"], rel


def test_runner_answers_without_torch(finished: Project) -> None:
    """A fresh interpreter runs the task's CLI verb on the bundle; no heavy module loads."""
    task = get_task(_task_name(finished))
    argv = [task.command, str(finished.root / "export" / NAME), *finished.runner_args]
    result, reported = run_cli_watching_imports(argv)
    assert result.returncode == 0, result.stderr[-2000:]
    assert reported == {"rc": 0, "loaded": []}
    assert result.stdout.strip(), "the runner printed nothing"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.seen: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.seen.add(tag)
        if tag not in ("meta", "br", "img", "link", "input", "hr", "path", "use", "rect"):
            self.open.append(tag)


def test_report_renders_json_markdown_and_html(finished: Project) -> None:
    folder = finished.root / "reports" / NAME
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert task_of_report(report).name == _task_name(finished)
    rows = report["rows"]
    assert len(rows) >= 3  # teacher, distilled student, deployed bundle at least
    html = (folder / "report.html").read_text(encoding="utf-8")
    markdown = (folder / "report.md").read_text(encoding="utf-8")
    for row in rows:
        assert row["name"] in markdown, row["name"]
    parser = _Tags()
    parser.feed(html)
    assert {"html", "table", "svg"} <= parser.seen
