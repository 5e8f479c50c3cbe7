"""Stage skipping, resume after a killed stage, integrity checks and publication."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from distill.config import Recipe, validate_recipe
from distill.errors import ArtifactError
from distill.pipeline.artifacts import RunContext, read_manifest
from distill.pipeline.stages import StageSpec, outputs_digest, run_pipeline

RAW = {
    "name": "p",
    "data": {"path": "x.csv"},
    "teacher": {"model": "m"},
    "student": {"num_layers": 1},
}
CALLS: list[str] = []


def _stage(name: str, fail: BaseException | None = None) -> Any:
    def run(ctx: RunContext, inputs: dict[str, Path], out: Path, **sections: Any) -> dict[str, Any]:
        CALLS.append(name)
        upstream = {k: (v / "value.txt").read_text() for k, v in inputs.items()}
        # Like a real stage, what it writes depends on its settings and its inputs.
        settings = {
            k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in sections.items()
        }
        (out / "value.txt").write_text(f"{name}<-{sorted(upstream.items())} {settings}")
        if fail is not None:
            raise fail
        return {"sections": sorted(sections)}

    return run


def stages(fail_at: str | None = None, fail: BaseException | None = None) -> tuple[StageSpec, ...]:
    def spec(
        name: str, sections: tuple[str, ...], requires: tuple[str, ...], **kw: Any
    ) -> StageSpec:
        return StageSpec(
            name,
            sections,
            requires,
            lambda task: _stage(name, fail if name == fail_at else None),
            **kw,
        )

    return (
        spec("data", ("data",), ()),
        spec("teacher", ("data", "teacher"), ("data",)),
        spec("student", ("student",), ("data", "teacher")),
        spec(
            "export", ("export",), ("student",), publish=lambda ctx, folder: {".": ctx.export_dir}
        ),
    )


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    CALLS.clear()
    return RunContext(
        name="p", seed=1, task="sequence-classification", workdir=tmp_path, recipe_dir=tmp_path
    )


def recipe(**overrides: Any) -> Recipe:
    raw = json.loads(json.dumps(RAW))
    for table, values in overrides.items():
        raw[table].update(values)
    return validate_recipe(raw)


def test_runs_in_order_then_skips_everything(ctx: RunContext) -> None:
    manifests = run_pipeline(recipe(), ctx, stages=stages())
    assert CALLS == ["data", "teacher", "student", "export"]
    assert (ctx.stage_dir("student") / "value.txt").read_text().startswith("student<-[('data'")
    assert manifests["teacher"]["config"].keys() == {"data", "teacher"}  # only its own tables
    assert manifests["teacher"]["files"]["value.txt"]["bytes"] > 0
    assert manifests["teacher"]["upstream"] == {"data": outputs_digest(manifests["data"])}
    CALLS.clear()
    run_pipeline(recipe(), ctx, stages=stages())
    assert CALLS == []


def test_changing_a_table_reruns_exactly_the_stages_it_affects(ctx: RunContext) -> None:
    run_pipeline(recipe(), ctx, stages=stages())
    CALLS.clear()
    run_pipeline(recipe(student={"temperature": 4.0}), ctx, stages=stages())
    assert CALLS == ["student", "export"]
    CALLS.clear()
    run_pipeline(recipe(student={"temperature": 4.0}, teacher={"epochs": 1}), ctx, stages=stages())
    assert CALLS == ["teacher", "student", "export"]


def test_from_and_only(ctx: RunContext) -> None:
    run_pipeline(recipe(), ctx, stages=stages())
    CALLS.clear()
    run_pipeline(recipe(), ctx, start="student", stages=stages())
    assert CALLS == ["student", "export"]
    CALLS.clear()
    run_pipeline(recipe(), ctx, only="teacher", stages=stages())
    assert CALLS == ["teacher"]


def test_failed_stage_leaves_no_folder_and_earlier_stages_intact(ctx: RunContext) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        run_pipeline(recipe(), ctx, stages=stages("student", RuntimeError("boom")))
    assert read_manifest(ctx.stage_dir("teacher")) is not None
    assert not ctx.stage_dir("student").exists()
    assert not list(ctx.run_dir.glob(".student*"))  # the staging folder is gone too
    CALLS.clear()
    run_pipeline(recipe(), ctx, stages=stages())
    assert CALLS == ["student", "export"]


def test_disk_full_names_the_path_and_keeps_earlier_stages(ctx: RunContext) -> None:
    full = OSError(28, "No space left on device", "/somewhere/model.safetensors")
    with pytest.raises(
        ArtifactError,
        match=r"stage teacher: could not write /somewhere/model.safetensors: No space left",
    ):
        run_pipeline(recipe(), ctx, stages=stages("teacher", full))
    assert read_manifest(ctx.stage_dir("data")) is not None
    assert not ctx.stage_dir("teacher").exists()


@pytest.mark.parametrize(
    "damage", ["flip-byte", "delete-file", "edit-manifest", "corrupt-manifest"]
)
def test_damaged_artifact_reruns_its_stage(ctx: RunContext, damage: str) -> None:
    run_pipeline(recipe(), ctx, stages=stages())
    folder = ctx.stage_dir("teacher")
    target = folder / "value.txt"
    if damage == "flip-byte":
        data = bytearray(target.read_bytes())
        data[0] ^= 0x01
        target.write_bytes(bytes(data))
    elif damage == "delete-file":
        target.unlink()
    elif damage == "edit-manifest":
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["fingerprint"] = "0" * 64
        (folder / "manifest.json").write_text(json.dumps(manifest))
    else:
        (folder / "manifest.json").write_text("{not json")
    CALLS.clear()
    run_pipeline(recipe(), ctx, stages=stages())
    assert CALLS[0] == "teacher"
    assert read_manifest(folder) is not None


def test_published_copy_is_restored_when_removed_or_edited(ctx: RunContext) -> None:
    run_pipeline(recipe(), ctx, stages=stages())
    published = ctx.export_dir / "value.txt"
    assert published.read_text() == (ctx.stage_dir("export") / "value.txt").read_text()
    published.write_text("tampered")
    CALLS.clear()
    run_pipeline(recipe(), ctx, stages=stages())
    assert CALLS == []  # the stage itself is fine: only the public copy is refreshed
    assert published.read_text().startswith("export<-")


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    import test_pipeline as tp
    from distill.pipeline.artifacts import RunContext

    def slow(ctx, inputs, out, **sections):
        (out / "value.txt").write_text("partial")
        Path({marker!r}).write_text("started")
        time.sleep(60)
        return {{}}

    specs = list(tp.stages())
    specs[2] = tp.StageSpec("student", ("student",), ("data", "teacher"), lambda task: slow)
    ctx = RunContext(name="p", seed=1, task="sequence-classification", workdir=Path({workdir!r}), recipe_dir=Path({workdir!r}))
    tp.run_pipeline(tp.recipe(), ctx, stages=tuple(specs))
    """
)


def test_kill_9_mid_stage_is_never_taken_for_complete(ctx: RunContext, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    script = KILL_SCRIPT.format(
        tests=str(Path(__file__).parent), marker=str(marker), workdir=str(ctx.workdir)
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": os.getcwd()}
    )
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), "the slow stage never started"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not ctx.stage_dir("student").exists()
    assert list(ctx.run_dir.glob(".student.tmp-*"))  # the partial work is there, under a temp name
    CALLS.clear()
    run_pipeline(recipe(), ctx, stages=stages())
    assert CALLS == ["student", "export"]  # data and teacher reused; student redone
    assert not list(ctx.run_dir.glob(".student.tmp-*"))  # the leftover was cleaned
    assert (ctx.stage_dir("student") / "value.txt").read_text().startswith("student<-")
