"""Stage `report` for task ``causal-lm``: teacher, distilled student, its no-KD twin and the
student's ONNX exports, side by side.

Writes ``report.json`` first (the source of truth, ``task = "causal-lm"``) and then renders
``report.md``, ``report.html`` and ``perplexity_vs_size.svg`` from that JSON alone
(:mod:`distill.tasks.causal_lm.render`), so a report can be re-rendered without rerunning
anything (:func:`distill.report.reports.rerender`).

One row per model: the teacher and the distilled student in PyTorch fp32, the student
trained without distillation when the student stage made one, the student's fp32 and int8
ONNX files, and the teacher's own fp32 and int8 ONNX files (``export.teacher_baseline``:
the same KV-cache export and quantization), so that the deployed student's "smaller" and
"faster" (``headline``) are stated against the PyTorch teacher and the teacher's int8 ONNX. Test perplexities are copied from the upstream manifests (the numbers the
stages measured on the models they shipped); sizes are the weight files on disk; generation
speed is measured here, on this machine: greedy decoding of ``max_new_tokens`` tokens at
batch 1 with a pinned thread count, EOS ignored so every model generates the same number of
tokens, the models interleaved run by run. ``samples`` held-out prompts (the first half of
a test text) are continued greedily by each model and shown side by side. Each section is
built by its own module of :mod:`distill.tasks.causal_lm.report`; this stage loads the models,
times and samples them in one pass and puts the sections together.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from distill.config import ReportConfig, task_dump
from distill.data.files import SPLITS
from distill.errors import ArtifactError
from distill.pipeline.artifacts import RunContext, library_versions, upstream_manifests
from distill.report.document import created, recipe_tables, report_stage, wall_times
from distill.report.ratios import add_ratios, kept, times_faster, times_smaller
from distill.report.training import training_record
from distill.tasks.causal_lm import render
from distill.tasks.causal_lm.files import read_split
from distill.tasks.causal_lm.int8 import describe_quantization
from distill.tasks.causal_lm.render import SCHEMA_VERSION, TASK
from distill.tasks.causal_lm.report.distillation import distillation_section
from distill.tasks.causal_lm.report.models import (
    load_onnx,
    load_torch,
    onnx_caller,
    onnx_continuer,
    tokenizer,
    torch_caller,
    torch_continuer,
)
from distill.tasks.causal_lm.report.rows import (
    deployed_files,
    number,
    student_onnx_rows,
    teacher_onnx,
    teacher_onnx_rows,
    torch_row,
)
from distill.tasks.causal_lm.report.samples import MAX_PROMPT_WORDS, continue_prompts, split_prompt
from distill.tasks.causal_lm.report.speed import (
    SPEED_PROMPTS,
    speed_budget,
    speed_setup,
    time_generation,
    tokens_per_s,
)
from distill.timing.latency import hardware_info, torch_threads

log = logging.getLogger("distill")

UPSTREAM = ("data", "teacher", "student", "export")
# Against the teacher: times smaller (bytes), times faster (tokens/s), perplexity ratio.
RATIOS = {
    "size_ratio": times_smaller,
    "speedup": partial(times_faster, speed=tokens_per_s, rate=True),
    "perplexity_ratio": kept("perplexity"),
}
# The deployed student is stated against these, when the run has them.
REFERENCES = ("teacher", "teacher_onnx_int8", "teacher_onnx_fp32")


def summary_metrics(document: dict[str, Any]) -> dict[str, Any]:
    """The small part of the report kept in the stage manifest."""
    rows = {
        row["key"]: {
            "perplexity": row.get("perplexity"),
            "tokens_per_s": (row.get("speed") or {}).get("tokens_per_s"),
            "bytes": row.get("bytes"),
            "size_ratio": row.get("size_ratio"),
            "speedup": row.get("speedup"),
        }
        for row in document["rows"]
    }
    return {
        "rows": rows,
        "deployed": next((r["key"] for r in document["rows"] if r.get("deployed")), None),
        "perplexity_gain_over_no_kd": document["distillation"]["perplexity_gain_over_no_kd"],
    }


# --------------------------------------------------------------------------- building the JSON


@dataclass
class _Models:
    """The loaded models: PyTorch teacher, student and no-KD twin; ONNX files by row key;
    the teacher's ONNX files the export stage made (row key -> (precision, path))."""

    teacher: Any
    student: Any
    no_kd: Any | None
    onnx: dict[str, Any]
    teacher_files: dict[str, tuple[str, Path]]


def build_report(ctx: RunContext, inputs: dict[str, Path], config: ReportConfig) -> dict[str, Any]:
    """Everything the report shows, as one JSON-able dict."""
    started = time.perf_counter()
    manifests = upstream_manifests(inputs, UPSTREAM)
    data_dir, export_dir = inputs["data"], inputs["export"]
    metrics = {name: manifests[name].get("metrics") or {} for name in UPSTREAM}
    test = read_split(data_dir, "test")
    texts = [(i, t) for i, t in zip(test.ids, test.texts, strict=True) if t.split()]
    if not texts:
        raise ArtifactError(f"{data_dir / 'test.jsonl'}: the test split has no text to prompt with")
    bundle = export_dir / "bundle"
    prompt_tokenizer = tokenizer(bundle, inputs["student"] / "model")
    notes: list[str] = []
    hardware = hardware_info()
    runs, warmup = speed_budget(config, hardware, notes)
    deployed, fp32_path, int8_path = deployed_files(bundle, metrics["export"], notes)
    models = _load_models(inputs, metrics["export"], fp32_path, int8_path, config, notes)
    rows = _model_rows(inputs, models, metrics, fp32_path, int8_path, notes)
    deployed_key = "student_onnx_int8" if int8_path is not None else "student_onnx_fp32"
    prompts = [(example_id, *split_prompt(text)) for example_id, text in texts]
    speed_ids = [list(prompt_tokenizer.encode(p).ids) for _, p, _ in prompts[:SPEED_PROMPTS]]
    speeds, samples = _speeds_and_samples(
        models,
        speed_ids,
        prompts[: config.samples],
        prompt_tokenizer,
        config,
        runs,
        warmup,
        (deployed_key, f"Student ONNX {deployed} (deployed)"),
    )
    for row in rows:
        row["speed"] = speeds.get(row["key"])
    del models
    gc.collect()
    add_ratios(rows, RATIOS)
    by_key = {row["key"]: row for row in rows}
    distillation = distillation_section(manifests, metrics["student"], metrics["teacher"], by_key)
    if any(row["perplexity"] is None for row in rows):
        absent = [row["name"] for row in rows if row["perplexity"] is None]
        notes.append(f"No test perplexity in the upstream manifests for: {', '.join(absent)}.")
    return {
        "schema_version": SCHEMA_VERSION,
        "task": TASK,
        "run": ctx.name,
        "created": created(),
        "data": _data_section(data_dir, metrics["teacher"]),
        "rows": rows,
        "deployed": deployed_key,
        # The deployed student against the PyTorch teacher and the teacher's own ONNX files.
        "headline": {
            reference: _versus(by_key[deployed_key], by_key[reference])
            for reference in REFERENCES
            if reference in by_key
        },
        "export": _export_section(metrics["export"], deployed),
        "speed_setup": speed_setup(
            config.latency_threads, config.max_new_tokens, runs, warmup, speed_ids
        ),
        "samples": samples,
        "samples_setup": {
            "max_new_tokens": config.max_new_tokens,
            "decoding": "greedy; stops at the model's EOS token",
            "prompt": f"the first half of a test text's words (at most {MAX_PROMPT_WORDS})",
        },
        "distillation": distillation,
        "training": {name: training_record(manifests[name]) for name in ("teacher", "student")},
        "recipe": recipe_tables(manifests, UPSTREAM, task_dump(config, "report", TASK)),
        "wall_time_s": wall_times(
            manifests, inputs, ("data", "teacher", "labels", "student", "export"), started
        ),
        "versions": library_versions(),
        "hardware": hardware,
        "notes": notes,
    }


def _load_models(
    inputs: dict[str, Path],
    export_metrics: dict[str, Any],
    fp32_path: Path,
    int8_path: Path | None,
    config: ReportConfig,
    notes: list[str],
) -> _Models:
    """Every model the report runs: PyTorch teacher, student (and its no-KD twin when the
    student stage trained one), the student's ONNX files and the teacher's."""
    threads = config.latency_threads
    bundle, export_dir = inputs["export"] / "bundle", inputs["export"]
    teacher = load_torch(inputs["teacher"] / "model")
    student = load_torch(inputs["student"] / "model")
    onnx = {"student_onnx_fp32": load_onnx(bundle, fp32_path, threads)}
    if int8_path is not None:
        onnx["student_onnx_int8"] = load_onnx(bundle, int8_path, threads)
    teacher_files = teacher_onnx(export_dir, export_metrics, notes)
    for key, (_, path) in teacher_files.items():
        onnx[key] = load_onnx(export_dir / "teacher", path, threads)
    no_kd_dir = inputs["student"] / "baseline" / "model"
    no_kd = load_torch(no_kd_dir) if no_kd_dir.is_dir() else None
    return _Models(teacher, student, no_kd, onnx, teacher_files)


def _model_rows(
    inputs: dict[str, Path],
    models: _Models,
    metrics: dict[str, dict[str, Any]],
    fp32_path: Path,
    int8_path: Path | None,
    notes: list[str],
) -> list[dict[str, Any]]:
    """The rows in order: teacher, student, its no-KD twin, the student's ONNX files, the
    teacher's."""
    teacher_dir, student_dir, export_dir = inputs["teacher"], inputs["student"], inputs["export"]
    student_metrics = metrics["student"]
    rows = [
        torch_row("teacher", "Teacher", teacher_dir / "model", models.teacher, metrics["teacher"]),
        torch_row(
            "student", "Student (distilled)", student_dir / "model", models.student, student_metrics
        ),
    ]
    if models.no_kd is not None:
        no_kd_metrics = student_metrics.get("baseline") or {}
        no_kd_dir = student_dir / "baseline" / "model"
        rows.append(
            torch_row("student_no_kd", "Student without KD", no_kd_dir, models.no_kd, no_kd_metrics)
        )
        # Same architecture as the distilled student: timing it would repeat that row.
        notes.append(
            "Student without KD: same architecture as the distilled student; its speed is not "
            "measured again."
        )
    rows += student_onnx_rows(
        rows[1],
        export_dir / "bundle",
        export_dir,
        metrics["export"],
        fp32_path=fp32_path,
        int8_path=int8_path,
    )
    rows += teacher_onnx_rows(rows[0], models.teacher_files, export_dir, metrics["export"])
    return rows


def _speeds_and_samples(
    models: _Models,
    speed_ids: list[list[int]],
    prompts: list[tuple[str, str, str]],
    prompt_tokenizer: Any,
    config: ReportConfig,
    runs: int,
    warmup: int,
    deployed: tuple[str, str],
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Tokens/s of every model (timed together, interleaved) and the samples: ``prompts``
    continued by the PyTorch models and the deployed ONNX file (``deployed``: its key, name)."""
    n_new = config.max_new_tokens
    callers: dict[str, Callable[[list[int]], int]] = {
        "teacher": torch_caller(models.teacher, n_new),
        "student": torch_caller(models.student, n_new),
        **{key: onnx_caller(lm, n_new) for key, lm in models.onnx.items()},
    }
    continuers: list[tuple[str, str, Callable[[list[int]], tuple[list[int], str]]]] = [
        ("teacher", "Teacher", torch_continuer(models.teacher, n_new)),
        ("student", "Student (distilled)", torch_continuer(models.student, n_new)),
    ]
    if models.no_kd is not None:
        continuers.append(
            ("student_no_kd", "Student without KD", torch_continuer(models.no_kd, n_new))
        )
    deployed_key, deployed_name = deployed
    continuers.append(
        (deployed_key, deployed_name, onnx_continuer(models.onnx[deployed_key], n_new))
    )
    with torch_threads(config.latency_threads):
        log.info("report: timing greedy generation of %d tokens (%d runs)", n_new, runs)
        speeds = time_generation(callers, speed_ids, runs=runs, warmup=warmup)
        samples = continue_prompts(prompts, prompt_tokenizer, continuers)
    return speeds, samples


def _data_section(data_dir: Path, teacher_metrics: dict[str, Any]) -> dict[str, Any]:
    """The examples of each split, and the test tokens perplexity was scored on."""
    return {
        "splits": {
            name: {"examples": len(read_split(data_dir, name))}
            for name in SPLITS
            if (data_dir / f"{name}.jsonl").is_file()
        },
        "test_tokens_scored": (teacher_metrics.get("test") or {}).get("tokens"),
    }


def _export_section(export_metrics: dict[str, Any], deployed: str) -> dict[str, Any]:
    """What the export stage deployed and measured: quantization, perplexities, parity, sizes."""
    return {
        "deployed": deployed,
        "quantization": export_metrics.get("quantization"),
        "quantization_pass": describe_quantization(export_metrics.get("quantization")),
        "fp32_perplexity": number(export_metrics.get("fp32_perplexity")),
        "int8_perplexity": number(export_metrics.get("int8_perplexity")),
        "parity_max_abs_diff": number(export_metrics.get("parity_max_abs_diff")),
        "fp32_bytes": export_metrics.get("fp32_bytes"),
        "int8_bytes": export_metrics.get("int8_bytes"),
    }


def _versus(row: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """How many times smaller and faster ``row`` is than ``reference``, and both perplexities."""
    return {
        "name": reference["name"],
        "size_ratio": times_smaller(row, reference),
        "speedup": times_faster(row, reference, tokens_per_s, rate=True),
        "perplexity": reference.get("perplexity"),
    }


# The stage's body, as the pipeline calls it: run(ctx, inputs, out, report=...).
run = report_stage(build_report, render, summary_metrics)
