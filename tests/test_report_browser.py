"""The HTML report (and the comparison page) in a real browser, offline.

playwright-python drives Debian's ``/usr/bin/chromium`` (``executable_path``; ``playwright
install`` would download a browser and fails offline). Every request that is not a
``file://`` URL is aborted and recorded, and the test fails if there was any; it also
fails on console errors, page errors or dialogs (an escaped ``onerror=alert(1)`` in an
example text must stay text), on any ``<svg>`` or ``<figure>`` rendered with zero size,
and when the models table lacks a row per model. A full-page screenshot goes to
``$DISTILL_ARTIFACTS`` (else the test's tmp folder); its path is printed.

Skipped, with the reason, where chromium or playwright is missing.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not CHROMIUM.is_file():
    pytest.skip(
        f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="playwright is not installed (pip install playwright; no `playwright install`)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def report_dir(unit_report: Path) -> Path:
    """A real report from the fake upstream stages of tests/test_report.py (the one those
    tests read, run once per session)."""
    return unit_report


def _artifacts_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("DISTILL_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _open_offline(browser: Any, page_file: Path) -> tuple[Any, dict[str, list[str]]]:
    """Open ``page_file`` with every non-file:// request aborted; returns the page and what
    it tried: requests blocked, console errors, page errors, dialogs."""
    seen: dict[str, list[str]] = {"blocked": [], "console": [], "errors": [], "dialogs": []}
    context = browser.new_context(viewport={"width": 1280, "height": 900})

    def route(request_route: Any) -> None:
        url = request_route.request.url
        if url.startswith("file://"):
            request_route.continue_()
        else:
            seen["blocked"].append(url)
            request_route.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on(
        "console",
        lambda message: seen["console"].append(message.text) if message.type == "error" else None,
    )
    page.on("pageerror", lambda error: seen["errors"].append(str(error)))

    def dialog(opened: Any) -> None:
        seen["dialogs"].append(opened.message)
        opened.dismiss()

    page.on("dialog", dialog)
    page.goto(page_file.resolve().as_uri(), wait_until="load")
    page.wait_for_timeout(200)  # let late resource requests (if any) show up
    return page, seen


def _sizes(page: Any, selector: str) -> list[dict[str, Any]]:
    return page.eval_on_selector_all(
        selector,
        """elements => elements.map(e => {
            const r = e.getBoundingClientRect();
            return {id: e.id || (e.parentElement && e.parentElement.id) || e.tagName,
                    width: r.width, height: r.height};
        })""",
    )


def _screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    path = _artifacts_dir(tmp_path) / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def test_report_renders_offline(browser: Any, report_dir: Path, tmp_path: Path) -> None:
    document = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    page, seen = _open_offline(browser, report_dir / "report.html")
    try:
        assert seen["blocked"] == [], f"the page tried to load {seen['blocked']}"
        assert seen["console"] == [] and seen["errors"] == []
        assert seen["dialogs"] == [], "an example text ran as script"

        svgs = _sizes(page, "svg")
        assert len(svgs) == 4, svgs  # size, latency, reliability, training curves
        figures = _sizes(page, "figure")
        assert len(figures) >= len(svgs) + 2  # plus the two confusion matrices
        for box in svgs + figures:
            assert box["width"] > 0 and box["height"] > 0, box

        rows = page.eval_on_selector_all("#comparison tbody tr", "rows => rows.map(r => r.id)")
        assert rows == [f"row-{row['key']}" for row in document["rows"]]
        per_class = page.eval_on_selector_all("#per-class-f1 tbody tr", "rows => rows.length")
        assert per_class == len(document["rows"])
        examples = page.eval_on_selector_all(
            "#disagreement-examples tbody tr", "rows => rows.length"
        )
        assert examples == len(document["disagreements"]["examples"]) > 0
        # The label names and the injected markup are shown as text, not as elements.
        assert page.locator("img").count() == 0
        assert page.locator("script").count() == 0
        assert "<script>alert(1)</script>" in page.inner_text("#per-class-f1")
        assert "<img src=x onerror=alert(1)>" in page.inner_text("#disagreement-examples")

        shot = _screenshot(page, tmp_path, "report.png")
        assert shot.stat().st_size > 10_000
    finally:
        page.context.close()


def test_compare_page_renders_offline(browser: Any, report_dir: Path, tmp_path: Path) -> None:
    from distill.tasks.classification.compare import run_compare

    other = tmp_path / "reports" / "other"
    shutil.copytree(report_dir, other)
    changed = json.loads((other / "report.json").read_text(encoding="utf-8"))
    changed["run"] = "other"
    changed["recipe"]["student"]["alpha"] = 0.9
    (other / "report.json").write_text(json.dumps(changed), encoding="utf-8")
    out = run_compare(report_dir, other, tmp_path / "compare")

    page, seen = _open_offline(browser, out / "compare.html")
    try:
        assert seen == {"blocked": [], "console": [], "errors": [], "dialogs": []}
        tables = _sizes(page, "table")
        assert tables and all(t["width"] > 0 and t["height"] > 0 for t in tables)
        rows = page.eval_on_selector_all("#overview-table tbody tr", "rows => rows.length")
        assert rows == len(changed["rows"]) + 1  # plus the deployed model
        assert "alpha" in page.inner_text("#recipe-diff")
        _screenshot(page, tmp_path, "compare.png")
    finally:
        page.context.close()
