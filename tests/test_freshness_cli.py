"""Stale and clobbered results, through `distill run` on tiny real models (issue #17)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, run_distill
from task_projects import NAME, Project

from distill.pipeline.artifacts import read_manifest, sha256_file, verify_files

DISTILL = (sys.executable, "-m", "distill")
LONGER_TEACHER = ("--set", "teacher.epochs=8", "--set", "teacher.early_stopping_patience=0")
STAGES = ("data", "teacher", "labels", "student", "export", "report")


def _ran(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [
        line.split("stage")[1].split()[0]
        for line in result.stderr.splitlines()
        if " running (" in line
    ]


@pytest.fixture(scope="module")
def project(
    finished_project: Callable[[str], Project], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A copy of the classification contract project after its `distill run`: these tests
    edit its data and rerun it."""
    root = tmp_path_factory.mktemp("fresh") / "project"
    shutil.copytree(finished_project("sequence-classification").root, root)
    return root


def test_a_label_edit_reruns_data_and_every_later_stage_and_changes_the_cached_labels(
    project: Path,
) -> None:
    run = project / "runs" / NAME
    logits_before = sha256_file(run / "labels" / "logits" / "train.npz")
    csv = project / "data.csv"
    lines = csv.read_text(encoding="utf-8").splitlines()
    text, label = lines[1].rsplit(",", 1)
    flipped = "negative" if label == "positive" else "positive"
    lines[1] = f"{text},{flipped}"
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = run_distill(["run", "recipe.toml"], project)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _ran(result) == list(STAGES)
    names = json.loads((run / "data" / "labels.json").read_text(encoding="utf-8"))["labels"]
    rows = [
        json.loads(line)
        for split in ("train", "validation", "test")
        for line in (run / "data" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    (edited,) = [row for row in rows if row["text"] == text.strip('"')]
    assert names[edited["label"]] == flipped
    assert sha256_file(run / "labels" / "logits" / "train.npz") != logits_before

    again = run_distill(["run", "recipe.toml"], project)
    assert again.returncode == 0 and _ran(again) == []


def test_a_second_run_while_the_first_is_running_exits_2_naming_the_lock(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from distill.cli import main

    first = subprocess.Popen(
        # A teacher that trains a few seconds: still running when the second run starts.
        [*DISTILL, "run", "recipe.toml", "--only", "teacher", *LONGER_TEACHER],
        cwd=project,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = project / "runs" / NAME
    deadline = time.time() + 120
    while not list(run.glob(".teacher.tmp-*")) and time.time() < deadline:
        assert first.poll() is None, first.communicate()[1][-3000:]
        time.sleep(0.02)
    monkeypatch.chdir(project)
    # In this process, so that it starts at once (no interpreter start-up to wait for).
    assert main(["run", "recipe.toml"]) == 2
    assert first.poll() is None, "the first run ended before the second started: no overlap"
    message = capsys.readouterr().err
    assert f"in use by another distill run (PID and host: {first.pid} " in message
    assert str(run / ".lock") in message

    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    for stage in STAGES:
        manifest = read_manifest(run / stage)
        assert manifest is not None, stage
        assert verify_files(run / stage, manifest) == [], stage
