"""Fingerprints over content, one run at a time per run folder, staging ownership.

Stages here are small fakes that read the files a real stage reads (the data file, the
teacher folder) so that reruns are cheap; tests/test_freshness_cli.py does the same through
`distill run` on tiny real models.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from distill.config import Recipe, validate_recipe
from distill.errors import ArtifactError
from distill.pipeline.artifacts import RunContext, read_manifest, staging_dir
from distill.pipeline.fingerprints import ContentHashes
from distill.pipeline.locking import RunInUseError, run_lock
from distill.pipeline.reads import data_reads, model_sources
from distill.pipeline.stages import StageSpec, run_pipeline

CALLS: list[str] = []


def _reader(name: str) -> Any:
    """A stage that writes what it read: its upstream values, and the data file or the
    teacher folder its recipe table names (as a real stage's output depends on them)."""

    def run(ctx: RunContext, inputs: dict[str, Path], out: Path, **sections: Any) -> dict:
        CALLS.append(name)
        seen = [(k, (v / "value.txt").read_text()) for k, v in sorted(inputs.items())]
        if name == "data":
            seen.append(("csv", (ctx.recipe_dir / sections["data"].path).read_text()))
        if name == "teacher":
            folder = ctx.recipe_dir / sections["teacher"].model
            seen += [(p.name, p.read_text()) for p in sorted(folder.iterdir())]
        (out / "value.txt").write_text(repr(seen))
        return {}

    return run


def _specs() -> tuple[StageSpec, ...]:
    def spec(name: str, sections: tuple[str, ...], requires: tuple[str, ...], **kw: Any):
        return StageSpec(name, sections, requires, lambda task: _reader(name), **kw)

    return (
        spec("data", ("data",), (), reads=data_reads),
        spec(
            "teacher",
            ("teacher",),
            ("data",),
            reads=lambda recipe: model_sources("teacher", recipe.teacher),
        ),
        spec("labels", (), ("data", "teacher")),
        spec("student", ("student",), ("data", "labels")),
    )


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunContext:
    CALLS.clear()
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "reviews.csv").write_text("text,label\ngood,positive\nbad,negative\n")
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "config.json").write_text('{"layers": 6}')
    (teacher / "model.safetensors").write_text("weights-v1")
    return RunContext(
        name="f", seed=1, task="sequence-classification", workdir=tmp_path, recipe_dir=tmp_path
    )


def _recipe(**student: Any) -> Recipe:
    return validate_recipe(
        {
            "name": "f",
            "data": {"path": "reviews.csv"},
            "teacher": {"model": "teacher"},
            "student": {"num_layers": 1, **student},
        }
    )


def _run(ctx: RunContext, **kw: Any) -> list[str]:
    CALLS.clear()
    run_pipeline(_recipe(), ctx, stages=_specs(), **kw)
    return list(CALLS)


def test_editing_a_label_in_the_data_file_reruns_data_and_every_later_stage(
    project: RunContext,
) -> None:
    assert _run(project) == ["data", "teacher", "labels", "student"]
    csv = project.recipe_dir / "reviews.csv"
    csv.write_text(csv.read_text().replace("good,positive", "good,negative"))
    assert _run(project) == ["data", "teacher", "labels", "student"]
    assert "good,negative" in (project.stage_dir("data") / "value.txt").read_text()
    manifest = read_manifest(project.stage_dir("data"))
    assert manifest is not None and manifest["sources"]["data.path"]["sha256"]


def test_replacing_the_teacher_folder_reruns_teacher_onward_only(project: RunContext) -> None:
    _run(project)
    teacher = project.recipe_dir / "teacher"
    shutil.rmtree(teacher)
    teacher.mkdir()
    (teacher / "config.json").write_text('{"layers": 6}')
    (teacher / "model.safetensors").write_text("weights-v2")
    assert _run(project) == ["teacher", "labels", "student"]


def test_touching_files_without_changing_them_reruns_nothing(project: RunContext) -> None:
    _run(project)
    later = time.time() + 100
    for path in (project.recipe_dir / "reviews.csv", *(project.recipe_dir / "teacher").iterdir()):
        os.utime(path, (later, later))
    assert _run(project) == []


def test_data_rerun_alone_makes_every_later_stage_stale(project: RunContext) -> None:
    """`run --only data` after an edit, then `run`: the later stages see the new data."""
    _run(project)
    csv = project.recipe_dir / "reviews.csv"
    csv.write_text(csv.read_text() + "fine,positive\n")
    assert _run(project, only="data") == ["data"]
    assert _run(project) == ["teacher", "labels", "student"]


def test_a_stale_stage_says_what_changed(
    project: RunContext, caplog: pytest.LogCaptureFixture
) -> None:
    _run(project)
    (project.recipe_dir / "teacher" / "model.safetensors").write_text("weights-v3")
    with caplog.at_level("INFO", logger="distill"):
        _run(project)
    assert "stage teacher  running (teacher.model changed on disk)" in caplog.text
    assert "stage labels   running (upstream teacher changed)" in caplog.text


def test_content_hashes_are_read_once_and_rehashed_only_when_the_file_changes(
    tmp_path: Path,
) -> None:
    big = tmp_path / "weights.bin"
    big.write_bytes(b"x" * 100_000)
    first = ContentHashes(tmp_path / "cache.json")
    digest = first.sha256(big)
    first.save()
    again = ContentHashes(tmp_path / "cache.json")
    assert again.sha256(big) == digest and again.hashed_bytes == 0
    os.utime(big, (time.time() + 50, time.time() + 50))
    assert again.sha256(big) == digest and again.hashed_bytes == 100_000  # touched: re-read
    big.write_bytes(b"y" * 100_000)
    assert again.sha256(big) != digest


HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from distill.pipeline.locking import run_lock
    with run_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def _hold_lock(run_dir: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_run_in_a_locked_run_folder_is_refused_naming_the_holder(
    project: RunContext,
) -> None:
    holder = _hold_lock(project.run_dir)
    try:
        with pytest.raises(
            RunInUseError, match=rf"in use by another distill run \(PID and host: {holder.pid} "
        ):
            _run(project)
        assert CALLS == [] and not project.stage_dir("data").exists()
    finally:
        holder.kill()
        holder.wait()
    # The kernel released the dead holder's lock: the folder is usable at once.
    assert _run(project) == ["data", "teacher", "labels", "student"]


def test_the_run_lock_is_released_when_the_run_ends(project: RunContext) -> None:
    _run(project)
    with run_lock(project.run_dir) as path:
        assert path.read_text().split() == [str(os.getpid()), socket.gethostname()]


def test_a_live_processs_staging_folder_is_left_alone_and_a_dead_ones_removed(
    tmp_path: Path,
) -> None:
    final = tmp_path / "runs" / "x" / "teacher"
    final.parent.mkdir(parents=True)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    theirs = final.with_name(f".teacher.tmp-{host}-{alive.pid}-abcdef")
    gone = final.with_name(f".teacher.tmp-{host}-{dead.pid}-abcdef")
    other_host = final.with_name(f".teacher.tmp-elsewhere-{dead.pid}-abcdef")
    for folder in (theirs, gone, other_host):
        folder.mkdir()
    try:
        with staging_dir(final) as mine:
            assert mine.name.startswith(f".teacher.tmp-{host}-{os.getpid()}-")
        assert theirs.is_dir() and other_host.is_dir()
        assert not gone.exists()
    finally:
        alive.kill()
        alive.wait()


def test_workdir_that_is_a_file_is_a_clear_error(project: RunContext, tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    ctx = RunContext(
        name="f", seed=1, task="sequence-classification", workdir=blocker, recipe_dir=tmp_path
    )
    with pytest.raises(ArtifactError, match=rf"{blocker} is a file, not a folder"):
        run_pipeline(_recipe(), ctx, stages=_specs())


def test_unwritable_workdir_is_a_clear_error(
    project: RunContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only(self: Path, *args: Any, **kwargs: Any) -> None:
        raise OSError(30, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(ArtifactError, match=r"cannot create .*runs/f: Read-only file system"):
        _run(project)


def test_a_hub_reference_counts_by_the_commit_its_revision_resolves_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    from distill.pipeline.fingerprints import source_identity

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    refs = tmp_path / "hub" / "models--org--tiny" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("a" * 40)
    hashes = ContentHashes(tmp_path / "cache.json")

    def commit(revision: str | None, repo: str = "org/tiny") -> str | None:
        return source_identity(repo, tmp_path, "teacher.model", hashes, revision)["commit"]

    assert commit(None) == "a" * 40  # the cached ref of "main"
    assert commit("b" * 40) == "b" * 40  # a commit names itself
    assert commit("v2") is None  # offline, nothing cached for that revision
    (refs / "main").write_text("c" * 40)  # the cache moved on: so does the fingerprint
    assert commit(None) == "c" * 40


def test_editing_a_pretrained_variants_model_reruns_the_student_stage_only(
    project: RunContext,
) -> None:
    from distill.pipeline.reads import student_reads

    small = project.recipe_dir / "small"
    small.mkdir()
    (small / "model.safetensors").write_text("small-v1")
    specs = list(_specs())
    specs[3] = StageSpec(
        "student",
        ("student",),
        ("data", "labels"),
        lambda task: _reader("student"),
        reads=student_reads,
    )
    recipe = validate_recipe(
        {
            "name": "f",
            "data": {"path": "reviews.csv"},
            "teacher": {"model": "teacher"},
            "student": {
                "num_layers": 1,
                "variants": {"small": {"init": "pretrained", "model": "small"}},
            },
        }
    )

    def run() -> list[str]:
        CALLS.clear()
        run_pipeline(recipe, project, stages=tuple(specs))
        return list(CALLS)

    assert run() == ["data", "teacher", "labels", "student"]
    (small / "model.safetensors").write_text("small-v2")
    assert run() == ["student"]
    manifest = read_manifest(project.stage_dir("student"))
    assert manifest is not None and set(manifest["sources"]) == {"student.variants.small.model"}
