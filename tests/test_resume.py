"""Interrupted training resumes from the last sealed checkpoint and ends where a straight run ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import SHORT_EXPORT_TIMING, run_command, run_distill, write_csv

from distill.data.files import load_logits
from distill.pipeline.artifacts import read_manifest

ROOT = Path(__file__).parent.parent

# Runs the real CLI in a child process, killing it with SIGKILL at a chosen point of the
# teacher's training: right after checkpoint-8 is sealed, or in the middle of writing it.
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import transformers
    from distill.train import trainer as training
    from distill.cli import main

    where = sys.argv[1]
    if where == "after-seal":
        sealed = training.MarkCompleteCheckpoints.on_save
        def on_save(self, args, state, control, **kw):
            sealed(self, args, state, control, **kw)
            if state.global_step == 8:
                os.kill(os.getpid(), signal.SIGKILL)
        training.MarkCompleteCheckpoints.on_save = on_save
    else:
        save_rng = transformers.Trainer._save_rng_state
        def mid_write(self, output_dir):
            if self.state.global_step == 8:
                os.kill(os.getpid(), signal.SIGKILL)
            return save_rng(self, output_dir)
        transformers.Trainer._save_rng_state = mid_write
    sys.exit(main(sys.argv[2:]))
    """
)


def write_project(root: Path, model_dir: Path) -> Path:

    from conftest import synthetic_rows

    root.mkdir(parents=True, exist_ok=True)
    write_csv((root / "reviews.csv"), ["text", "label"], synthetic_rows(120))
    recipe = root / "recipe.toml"
    recipe.write_text(
        f"""
name = "resume"
seed = 11
[data]
path = "reviews.csv"
max_length = 24
[teacher]
model = "{model_dir}"
max_steps = 16
eval_steps = 4
early_stopping_patience = 0
learning_rate = 3e-3
batch_size = 8
[student]
num_layers = 1
min_steps = 0
[export]
{SHORT_EXPORT_TIMING}""",
        encoding="utf-8",
    )
    return recipe


def run_cli(
    args: list[str], cwd: Path, killer: str | None = None
) -> subprocess.CompletedProcess[str]:
    if killer is None:
        return run_distill(args, cwd)
    return run_command([sys.executable, "-c", KILLER, killer, *args], cwd)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("straight")
    write_project(root, tiny_model_dir)
    result = run_cli(["run", "recipe.toml", "--only", "teacher"], root)
    assert result.returncode == 0, result.stderr[-2000:]
    return root


@pytest.mark.parametrize(
    ("killer", "resumed_from"), [("after-seal", "checkpoint-8"), ("mid-write", "checkpoint-4")]
)
def test_killed_teacher_resumes_and_matches_a_straight_run(
    straight: Path, tiny_model_dir: Path, tmp_path: Path, killer: str, resumed_from: str
) -> None:
    write_project(tmp_path, tiny_model_dir)
    killed = run_cli(["run", "recipe.toml", "--only", "teacher"], tmp_path, killer=killer)
    assert killed.returncode == -9
    teacher = tmp_path / "runs" / "resume" / "teacher"
    assert not teacher.exists()  # no manifest, no folder: never mistaken for complete
    checkpoints = list(
        (tmp_path / "runs" / "resume" / ".checkpoints").glob("teacher-*/model/checkpoint-*")
    )
    assert checkpoints, "the killed run left no checkpoint to resume from"

    resumed = run_cli(["run", "recipe.toml", "--only", "teacher"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr and resumed_from in resumed.stderr
    assert not list(
        (tmp_path / "runs" / "resume" / ".checkpoints").glob("teacher-*")
    )  # cleaned after success

    a, b = read_manifest(straight / "runs" / "resume" / "teacher"), read_manifest(teacher)
    assert a is not None and b is not None
    assert b["metrics"]["test"] == a["metrics"]["test"]
    assert b["metrics"]["steps"] == a["metrics"]["steps"] == 16
    ids = json.loads(json.dumps(load_logits(teacher / "logits" / "test.npz")[0]))
    straight_logits = load_logits(
        straight / "runs" / "resume" / "teacher" / "logits" / "test.npz", ids
    )[1]
    resumed_logits = load_logits(teacher / "logits" / "test.npz", ids)[1]
    assert np.allclose(straight_logits, resumed_logits, atol=1e-5)


def test_sigterm_stops_cleanly_and_prints_the_resume_command(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import signal
    import time

    write_project(tmp_path, tiny_model_dir)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distill",
            "run",
            "recipe.toml",
            "--set",
            "teacher.max_steps=100000",
            "--force",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_dir = tmp_path / "runs" / "resume"
    deadline = time.time() + 120
    while (
        not list(run_dir.glob(".checkpoints/teacher-*/model/checkpoint-4"))
        and time.time() < deadline
    ):
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert "distill run recipe.toml --set teacher.max_steps=100000" in stderr
    assert "--force" not in stderr.split("Resume with:")[1]
    assert (run_dir / "data" / "manifest.json").is_file()  # finished stages are kept
    assert not (run_dir / "teacher").exists()
    assert not list(run_dir.glob(".teacher.tmp-*"))  # the staging folder was removed
