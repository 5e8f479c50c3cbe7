"""Ordered stages; a stage whose manifest is up to date is skipped; --from / --only.

Each stage is a function ``run(ctx, inputs, out, **sections) -> metrics`` where
``inputs`` maps each upstream stage to its finished folder, ``out`` is an empty
staging folder, and ``sections`` are the recipe tables the stage declares (and only
those). The pipeline decides freshness from a fingerprint of those tables, the task,
the seed, the content of the files the stage reads (``StageSpec.reads``) and the files
its upstream stages actually produced (their manifests' sha256s), and checks every file's
sha256 before reuse. One process at a time runs in a run folder (``runs/<name>/.lock``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill import __version__
from distill.config import Recipe, task_dump
from distill.errors import ArtifactError, DistillError
from distill.pipeline.artifacts import (
    RunContext,
    fingerprint,
    publish_copy,
    read_manifest,
    replace_dir,
    staging_dir,
    verify_files,
    write_manifest,
)
from distill.pipeline.distributed import barrier
from distill.pipeline.fingerprints import ContentHashes, identify
from distill.pipeline.locking import run_lock
from distill.pipeline.reads import (
    adapt_reads,
    data_reads,
    model_sources,
    student_reads,
    transfer_reads,
)
from distill.pipeline.spec import StageSpec, recipe_entry

log = logging.getLogger("distill")


def _published_bundles(ctx: RunContext, folder: Path) -> dict[str, Path]:
    """Where the export stage's bundles are published: its ``bundle/`` as the run's bundle,
    and each further bundle the task exported, at ``<group>/<NAME>/bundle/`` in the stage
    folder (another student of the run), beside it as ``<run>.<NAME>``."""
    return {
        "bundle": ctx.export_dir,
        **{
            f"{extra.parent.relative_to(folder).as_posix()}/bundle": ctx.export_dir.with_name(
                f"{ctx.name}.{extra.parent.name}"
            )
            for extra in sorted(folder.glob("*/*/bundle"))
            if extra.is_dir()
        },
    }


# What the adapt stage reads of [teacher]: the model, not its fine-tuning budget (tuning
# the teacher does not redo the adaptation).
TEACHER_MODEL = tuple(
    f"teacher.{key}" for key in ("model", "archive", "revision", "trust_remote_code")
)


PLAIN_TWINS = ("plain-teacher", "plain-student")  # what the report reads of them


def _plain_twin(*trained: str) -> Callable[[Recipe], bool]:
    """Whether [adapt] asks for plain twins of these (adapt.baseline)."""
    return lambda recipe: recipe.adapt.baseline in trained


STAGES: tuple[StageSpec, ...] = (
    StageSpec("data", ("data",), (), reads=data_reads),
    StageSpec(
        "adapt",
        ("data", "adapt", *TEACHER_MODEL, "student.transfer"),
        ("data",),
        distributed=True,
        reads=adapt_reads,
        switch="adapt",
        ignores=("adapt.baseline",),  # which twins run besides is not the adaptation's
    ),
    StageSpec(
        "teacher",
        ("data", "teacher"),
        ("data", "adapt"),  # the adapted encoder, when the recipe adapts
        distributed=True,
        reads=lambda recipe: model_sources("teacher", recipe.teacher),
    ),
    # The same teacher fine-tuned from the original weights, same seed and budget: the
    # twin that shows what adaptation bought (the task's teacher body without "adapt").
    StageSpec(
        "plain-teacher",
        ("data", "teacher"),
        ("data",),
        body_of="teacher",
        distributed=True,
        reads=lambda recipe: model_sources("teacher", recipe.teacher),
        switch="adapt",
        runs=_plain_twin("teacher", "teacher-and-student"),
    ),
    StageSpec(
        "labels",
        ("data", "student.transfer", "labels"),
        ("data", "teacher"),
        distributed=True,
        reads=transfer_reads,
    ),
    StageSpec(
        "student",
        ("data", "student"),
        ("data", "teacher", "labels"),
        distributed=True,
        reads=student_reads,
    ),
    # The plain teacher's soft targets and its students (the task's labels and student bodies,
    # the plain twin given as their teacher): whether the adapted teacher's gain reaches them.
    StageSpec(
        "plain-labels",
        ("data", "student.transfer", "labels"),
        ("data", "plain-teacher"),
        body_of="labels",
        distributed=True,
        reads=transfer_reads,
        switch="adapt",
        runs=_plain_twin("teacher-and-student"),
        renames={"teacher": "plain-teacher"},
    ),
    StageSpec(
        "plain-student",
        ("data", "student"),
        ("data", "plain-teacher", "plain-labels"),
        body_of="student",
        distributed=True,
        reads=student_reads,
        switch="adapt",
        runs=_plain_twin("teacher-and-student"),
        renames={"teacher": "plain-teacher", "labels": "plain-labels"},
    ),
    StageSpec(
        "export",
        ("data", "export"),
        ("data", "teacher", "student"),  # a task may export a teacher baseline
        publish=lambda ctx, folder: _published_bundles(ctx, folder),
    ),
    StageSpec(
        "report",
        ("report",),
        ("data", "teacher", "labels", "student", "export", "adapt", *PLAIN_TWINS),
        publish=lambda ctx, folder: {".": ctx.report_dir},
    ),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


@dataclass(frozen=True)
class Dependencies:
    """Everything a stage's result depends on; the fingerprint hashes all of it."""

    settings: dict[str, Any]  # the recipe tables the stage reads
    sources: dict[str, Any]  # content identities of the files/folders/hub refs it reads
    upstream: dict[str, str]  # a digest of each upstream stage's output files

    def fingerprint(self, spec: StageSpec, recipe: Recipe) -> str:
        return fingerprint(
            {
                "stage": spec.name,
                "distill": __version__,
                "task": recipe.task,
                "seed": recipe.seed,
                "settings": self.settings,
                "sources": self.sources,
                "upstream": self.upstream,
            }
        )


# Files that record how a result was made rather than the result: training logs with wall
# times, tensorboard event files, the Trainer's pickled arguments (which hold the output
# path). They differ between two identical runs, so later stages do not depend on them.
RECORD_ONLY = frozenset({"log_history.json", "training_args.bin", "tensorboard"})


def outputs_digest(manifest: dict[str, Any]) -> str:
    """What a finished stage produced: a digest of its result files' paths, sizes and sha256s."""
    files = manifest["files"]
    results = {rel: entry for rel, entry in files.items() if RECORD_ONLY.isdisjoint(rel.split("/"))}
    return fingerprint(results)


def stage_settings(spec: StageSpec, recipe: Recipe) -> dict[str, Any]:
    """The recipe tables (or keys) the stage reads, as JSON."""
    settings = {
        s: task_dump(recipe_entry(recipe, s), s, recipe.task)
        for s in spec.sections_for(recipe.task)
    }
    for dotted in spec.ignores:
        table, _, key = dotted.rpartition(".")
        if isinstance(settings.get(table), dict):
            settings[table].pop(key, None)
    return settings


def stage_dependencies(
    spec: StageSpec,
    recipe: Recipe,
    ctx: RunContext,
    upstream: dict[str, dict[str, Any]],
    hashes: ContentHashes,
) -> Dependencies:
    """The stage's recipe tables, the content of what it reads, and its upstream outputs."""
    return Dependencies(
        settings=stage_settings(spec, recipe),
        sources=identify(spec.reads(recipe), ctx.recipe_dir, hashes),
        upstream={name: outputs_digest(manifest) for name, manifest in upstream.items()},
    )


def _up_to_date(folder: Path, expected: str, deps: Dependencies) -> tuple[bool, str]:
    manifest = read_manifest(folder)
    if manifest is None:
        return False, "no complete manifest" if folder.exists() else "not run yet"
    if manifest.get("fingerprint") != expected:
        return False, _what_changed(manifest, deps)
    problems = verify_files(folder, manifest)
    if problems:
        return False, "; ".join(problems[:3])
    return True, "up to date"


def _what_changed(manifest: dict[str, Any], deps: Dependencies) -> str:
    """Why a stage is stale, in words: which upstream stage, input file or recipe table."""

    def differing(old: Any, new: dict[str, Any]) -> list[str]:
        old = old if isinstance(old, dict) else {}
        return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))

    reasons = []
    if changed := differing(manifest.get("upstream"), deps.upstream):
        reasons.append(f"upstream {', '.join(changed)} changed")
    if changed := differing(manifest.get("sources"), deps.sources):
        reasons.append(f"{', '.join(changed)} changed on disk")
    if changed := differing(manifest.get("config"), deps.settings):
        reasons.append(f"recipe {', '.join(changed)} changed")
    return "; ".join(reasons) or "seed, task or distill version changed"


def _publish(spec: StageSpec, ctx: RunContext, folder: Path) -> None:
    for sub, final in spec.publish(ctx, folder).items():
        source = folder / sub
        published = read_manifest(final)
        current = read_manifest(source)
        # Re-copy when the public copy is missing, partial, edited or from another run.
        if (
            published is None
            or current is None
            or published.get("files") != current.get("files")
            or verify_files(final, published)
        ):
            publish_copy(source, final)
            log.info("published %s", final)


def run_pipeline(
    recipe: Recipe,
    ctx: RunContext,
    start: str | None = None,
    only: str | None = None,
    force: bool = False,
    stages: tuple[StageSpec, ...] = STAGES,
) -> dict[str, dict[str, Any]]:
    """Run the stages in order; returns each stage's manifest.

    ``start``/``only`` force those stages to run again; earlier stages are still reused
    when their manifests are up to date (and run when they are not: a stage never reads a
    stale input).
    """
    for name in (only, start):
        spec = next((s for s in stages if s.name == name), None)
        if spec is not None and not spec.active(recipe):
            raise DistillError(
                f"stage {name} does not run for this recipe: "
                + (f"it has no [{spec.switch}] table" if spec.switch else "it is switched off")
            )
    stages = tuple(spec for spec in stages if spec.active(recipe))
    names = [spec.name for spec in stages]
    forced: set[str] = set()
    if only is not None:
        forced = {only}
    elif start is not None:
        forced = set(names[names.index(start) :])
    elif force:
        forced = set(names)
    last = names.index(only) if only else len(stages) - 1

    check_output_paths(ctx)
    # One run at a time per run folder: the main process holds the lock for the whole run
    # (helper processes of the same launch share it); a second run is refused at once.
    with run_lock(ctx.run_dir) if ctx.is_main_process else nullcontext():
        return _run_stages(recipe, ctx, stages[: last + 1], forced)


def _run_stages(
    recipe: Recipe, ctx: RunContext, selected: tuple[StageSpec, ...], forced: set[str]
) -> dict[str, dict[str, Any]]:
    manifests: dict[str, dict[str, Any]] = {}
    running = {spec.name for spec in selected}
    hashes = ContentHashes()
    for position, spec in enumerate(selected):
        # Once no data-parallel stage is left, helper processes leave (rather than spin in a
        # barrier while the main process exports and times models, skewing the latencies),
        # and the main process stops waiting for them.
        shared = any(s.distributed for s in selected[position:])
        if not shared and not ctx.is_main_process:
            break
        if shared:
            barrier()  # under a launcher: the main process has finished the previous stage
        folder = ctx.stage_dir(spec.name)
        # Stages left out for this recipe are not inputs (selected holds the ones that run).
        requires = [u for u in spec.requires if u in running]
        deps = stage_dependencies(spec, recipe, ctx, {u: manifests[u] for u in requires}, hashes)
        hashes.save()
        expected = deps.fingerprint(spec, recipe)
        fresh, why = _up_to_date(folder, expected, deps)
        inputs = {u: ctx.stage_dir(u) for u in requires}
        for name, stage in spec.renames.items():  # a twin stage's body reads its own inputs
            inputs[name] = inputs.pop(stage)
        if fresh and spec.name not in forced:
            log.info("stage %-8s skipped (%s)", spec.name, why)
        elif ctx.is_main_process:
            reason = "forced" if spec.name in forced else why
            log.info("stage %-8s running (%s)", spec.name, reason)
            _run_stage(spec, recipe, ctx, folder, expected, inputs, deps)
        elif spec.distributed:
            _assist_stage(spec, recipe, ctx, expected, inputs)
        if shared:
            barrier()
        manifest = read_manifest(folder)
        if manifest is None:  # pragma: no cover - _run_stage always leaves one
            raise ArtifactError(f"{folder}: stage finished without a manifest")
        if ctx.is_main_process:
            _publish(spec, ctx, folder)
        manifests[spec.name] = manifest
    return manifests


def _run_stage(
    spec: StageSpec,
    recipe: Recipe,
    ctx: RunContext,
    folder: Path,
    expected: str,
    inputs: dict[str, Path],
    deps: Dependencies,
) -> None:
    run, checkpoints = _bind(spec, recipe, ctx, expected, inputs)
    started = time.perf_counter()
    with staging_dir(folder) as out:
        try:
            metrics = run(out)
        except DistillError:
            raise
        except OSError as exc:
            # A full disk or a permission problem: name the path, keep earlier stages intact.
            where = getattr(exc, "filename", None) or out
            raise ArtifactError(
                f"stage {spec.name}: could not write {where}: {exc.strerror or exc}"
            ) from exc
        write_manifest(
            out,
            {
                "stage": spec.name,
                "run": ctx.name,
                "fingerprint": expected,
                "task": recipe.task,
                "seed": recipe.seed,
                "config": deps.settings,
                "sources": deps.sources,
                "upstream": deps.upstream,
                "metrics": metrics,
                "wall_time_s": round(time.perf_counter() - started, 3),
            },
        )
        replace_dir(out, folder)
    shutil.rmtree(checkpoints, ignore_errors=True)  # only needed to resume this stage
    try:
        checkpoints.parent.rmdir()  # .checkpoints/, once no stage has any
    except OSError:
        pass


def _assist_stage(
    spec: StageSpec, recipe: Recipe, ctx: RunContext, expected: str, inputs: dict[str, Path]
) -> None:
    """A non-main process's share of a data-parallel stage; what it writes is thrown away."""
    run, _ = _bind(spec, recipe, ctx, expected, inputs)
    with tempfile.TemporaryDirectory(prefix=f"distill-{spec.name}-") as scratch:
        run(Path(scratch))


def _bind(
    spec: StageSpec, recipe: Recipe, ctx: RunContext, expected: str, inputs: dict[str, Path]
) -> tuple[Callable[[Path], dict[str, Any]], Path]:
    """The stage function with its inputs, its own recipe tables and its checkpoint folder
    bound; what is left to give is the folder it writes to."""
    stage = spec.body(recipe.task)
    sections = {
        keyword: recipe_entry(recipe, section)
        for keyword, section in spec.table_keywords(recipe.task).items()
    }
    checkpoints = _checkpoint_root(ctx, spec.name, expected)
    stage_ctx = dataclasses.replace(ctx, checkpoints=checkpoints)
    return (lambda out: stage(stage_ctx, inputs, out, **sections)), checkpoints


def _checkpoint_root(ctx: RunContext, stage: str, expected: str) -> Path:
    """Checkpoints of this stage at this fingerprint; those of other fingerprints are stale."""
    root = ctx.run_dir / ".checkpoints"
    current = root / f"{stage}-{expected[:16]}"
    if ctx.is_main_process:
        for stale in root.glob(f"{stage}-*"):
            if stale != current:
                shutil.rmtree(stale, ignore_errors=True)
    return current


def check_output_paths(ctx: RunContext) -> None:
    """Refuse output folders reached through a symbolic link: they could write outside the project."""
    for path in (ctx.run_dir, ctx.export_dir, ctx.report_dir):
        current = path
        while current != ctx.workdir and current != current.parent:
            if current.is_symlink():
                raise ArtifactError(
                    f"{current} is a symbolic link (to {os.readlink(current)}); distill writes "
                    "only to real folders under the work folder. Remove the link or change name"
                )
            current = current.parent
