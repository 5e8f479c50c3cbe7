"""The same recipe under a real launcher: `torchrun --nproc_per_node 2` with gloo on CPU."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import run_command, run_distill

from distill.data.files import load_logits
from distill.pipeline.artifacts import read_manifest

ROOT = Path(__file__).parent.parent
TORCHRUN = Path(sys.executable).parent / "torchrun"

# Kills rank 1 with SIGKILL in the middle of the student's training.
KILL_RANK_1 = textwrap.dedent(
    """
    import os, signal, sys
    from distill.train import trainer as training
    from distill.cli import main

    original = training.DistillationTrainer.compute_loss
    def compute_loss(self, *args, **kwargs):
        if os.environ.get("RANK") == "1" and self.state.global_step == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args, **kwargs)
    training.DistillationTrainer.compute_loss = compute_loss
    sys.exit(main(sys.argv[1:]))
    """
)


def launch(
    args: list[str], cwd: Path, script: Path | None = None
) -> subprocess.CompletedProcess[str]:
    target = [str(script)] if script else ["-m", "distill"]
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", *target, *args]
    return run_command(command, cwd, OMP_NUM_THREADS="1")


def single(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_distill(args, cwd)


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, Path]:
    from test_resume import write_project

    one = tmp_path_factory.mktemp("one-process")
    write_project(
        one, tiny_model_dir
    )  # 120 rows: a validation/test size that does not split evenly
    result = single(
        ["run", "recipe.toml", "--only", "student", "--set", "student.max_steps=8"], one
    )
    assert result.returncode == 0, result.stderr[-3000:]
    two = tmp_path_factory.mktemp("two-processes")
    shutil.copytree(one, two, dirs_exist_ok=True)
    result = launch(["run", "recipe.toml", "--from", "labels", "--set", "student.max_steps=8"], two)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return one, two


def assert_same_cache(one: Path, two: Path, atol: float) -> None:
    for split in ("train", "validation", "test"):
        ids_one, logits_one = load_logits(one / "runs/resume/labels/logits" / f"{split}.npz")
        ids_two, logits_two = load_logits(two / "runs/resume/labels/logits" / f"{split}.npz")
        assert ids_two == ids_one  # no example lost, doubled or reordered
        assert np.allclose(logits_two, logits_one, atol=atol)


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this python")
def test_onnxruntime_labelling_under_two_processes_equals_the_single_process_cache(
    projects: tuple[Path, Path],
) -> None:
    one, two = projects
    assert_same_cache(one, two, atol=1e-5)
    manifest = read_manifest(two / "runs/resume/labels")
    assert manifest is not None and manifest["metrics"]["processes"] == 2
    assert manifest["metrics"]["backend"] == "onnxruntime"  # run by the main process alone


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this python")
def test_sharded_pytorch_labelling_pass_equals_the_single_process_cache(
    projects: tuple[Path, Path], tmp_path: Path
) -> None:
    one, _ = projects
    sharded = tmp_path / "sharded"
    shutil.copytree(one, sharded)
    result = launch(
        ["run", "recipe.toml", "--only", "labels", "--set", "labels.backend='pytorch'"], sharded
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    manifest = read_manifest(sharded / "runs/resume/labels")
    assert manifest is not None and manifest["metrics"]["processes"] == 2
    assert manifest["metrics"]["backend"] == "pytorch"
    # the single-process cache came from ONNX Runtime: equal within fp32 noise, not 1e-3
    assert_same_cache(one, sharded, atol=1e-4)


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this python")
def test_student_under_two_processes(projects: tuple[Path, Path]) -> None:
    one, two = projects
    first, second = (
        read_manifest(one / "runs/resume/student"),
        read_manifest(two / "runs/resume/student"),
    )
    assert first is not None and second is not None
    assert second["metrics"]["batch"] == {
        "processes": 2,
        "per_device_batch_size": 16,
        "gradient_accumulation_steps": 1,
        "effective_batch_size": 32,
    }
    assert first["metrics"]["batch"]["effective_batch_size"] == 32
    assert abs(second["metrics"]["test"]["accuracy"] - first["metrics"]["test"]["accuracy"]) <= 0.15
    # Exactly one copy of each artifact: no per-rank folders, no leftovers; one run lock.
    assert sorted(p.name for p in (two / "runs/resume").iterdir()) == [
        ".lock",
        "data",
        "export",
        "labels",
        "report",
        "student",
        "teacher",
    ]
    assert sorted(p.name for p in (two / "export").iterdir()) == ["resume"]
    assert (two / "reports/resume/report.html").is_file()


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this python")
def test_a_killed_rank_fails_the_run_without_a_manifest(
    projects: tuple[Path, Path], tmp_path: Path
) -> None:
    _, two = projects
    before = read_manifest(two / "runs/resume/student")
    script = tmp_path / "kill_rank_1.py"
    script.write_text(KILL_RANK_1, encoding="utf-8")
    result = launch(
        ["run", "recipe.toml", "--set", "student.temperature=3", "--set", "student.max_steps=8"],
        two,
        script=script,
    )
    assert result.returncode != 0
    after = read_manifest(two / "runs/resume/student")
    assert after is not None and before is not None
    assert (
        after["fingerprint"] == before["fingerprint"]
    )  # the interrupted stage was never marked complete
