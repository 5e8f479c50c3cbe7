"""Stage `report` for task ``seq2seq``: the teacher, the distilled student, its no-KD twin
and sequence-level twin (when trained), the deployed bundle and the teacher's int8 graphs
(``export.teacher_baseline``), side by side.

Every model decodes every test source here, the same way (``report.num_beams``, at most
``data.max_target_length`` new tokens; the PyTorch models through ``generate``, the bundle
through its own runner, the teacher's graphs through the onnxruntime decoder), and is
scored on the same references with sacrebleu and rouge_score: BLEU, chrF, ROUGE-1/2/L,
exact match, and agreement with the teacher's outputs; then size, parameters, latency per
source at batch 1 and 32 and tokens/s (:mod:`~distill.tasks.seq2seq.report.speed`); the
paired bootstrap of "distilled beats no-KD" and the headline with its warnings
(:mod:`~distill.tasks.seq2seq.report.verdict`); ``report.examples`` test sources with
every model's output.

The data settings (prefix, source and target lengths) are those the data stage recorded in
its manifest, so the report decodes as the run trained. Writes ``report.json`` (the source
of truth) and renders ``report.md`` / ``report.html`` from it
(:mod:`distill.tasks.seq2seq.render`).
"""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path
from typing import Any

from distill.config import ReportConfig, task_dump
from distill.errors import ArtifactError
from distill.pipeline.artifacts import RunContext, library_versions, upstream_manifests
from distill.report.document import created, recipe_tables, report_stage, wall_times
from distill.report.ratios import add_ratios, times_faster, times_smaller
from distill.report.training import training_summary
from distill.tasks.seq2seq import render
from distill.tasks.seq2seq.files import read_split
from distill.tasks.seq2seq.render import SCHEMA_VERSION, TASK
from distill.tasks.seq2seq.report.models import (
    Decoder,
    DecodeSettings,
    bundle_decoder,
    decode_all,
    onnx_decoder,
    torch_decoder,
)
from distill.tasks.seq2seq.report.rows import bleu_kept, graph_files, model_files, model_rows
from distill.tasks.seq2seq.report.samples import side_by_side
from distill.tasks.seq2seq.report.speed import (
    speed_budget,
    speed_setup,
    time_decoders,
)
from distill.tasks.seq2seq.report.verdict import headline, significance
from distill.tasks.seq2seq.task import SEQUENCE_TWIN
from distill.timing.latency import hardware_info

log = logging.getLogger("distill")

UPSTREAM = ("data", "teacher", "student", "export")
# Outputs decoded per generate call when scoring (speed is timed at batch 1 and 32 apart).
SCORING_BATCH = 16
# Against the PyTorch teacher: times smaller (bytes), times faster per source at batch 1,
# the share of its BLEU kept.
RATIOS = {
    "size_ratio": times_smaller,
    "speedup": lambda row, ref: times_faster(row, ref, _batch_1_ms),
    "bleu_kept": bleu_kept,
}
# Same architecture as the distilled student: timing them would repeat its row.
UNTIMED = ("student_no_kd", "student_sequence")
DATA_KEYS = ("source_prefix", "max_length", "max_target_length")


def _batch_1_ms(row: dict[str, Any]) -> float | None:
    return (row.get("latency") or {}).get("batch_1_ms")


def summary_metrics(document: dict[str, Any]) -> dict[str, Any]:
    """The small part of the report kept in the stage manifest: each row's scores and size,
    the KD gain and whether it is significant."""
    kd = document["distillation"].get("kd")
    return {
        "rows": {
            row["key"]: {**row["scores"], "bytes": row["bytes"], "batch_1_ms": _batch_1_ms(row)}
            for row in document["rows"]
        },
        "deployed": document["deployed"],
        "kd_gain_bleu": None if kd is None else kd["bleu_difference"],
        "kd_significant": None if kd is None else kd["significant"],
    }


def metric_versions() -> dict[str, str]:
    """The versions of the metric libraries, beside the shared ones."""
    from importlib import metadata

    versions = {}
    for name in ("sacrebleu", "rouge-score"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def decode_settings(manifests: dict[str, dict[str, Any]], config: ReportConfig) -> DecodeSettings:
    """The data stage's prefix and lengths (its manifest's ``config``) and the beam size."""
    data = ((manifests["data"].get("config") or {}).get("data")) or {}
    missing = [key for key in DATA_KEYS[1:] if data.get(key) is None]
    if missing:
        raise ArtifactError(
            f"data stage manifest: no data.{' or data.'.join(missing)} in its config (a data "
            "stage of another task?)"
        )
    return DecodeSettings(
        prefix=data.get("source_prefix") or "",
        max_length=int(data["max_length"]),
        max_new_tokens=int(data["max_target_length"]),
        num_beams=config.num_beams,
    )


def deployed_precision(bundle: Path, export_metrics: dict[str, Any]) -> str:
    """What the bundle serves: the export's ``deployed`` (int8 when fp32/ holds the fp32
    graphs beside it, when the export did not say)."""
    deployed = export_metrics.get("deployed")
    if deployed in ("int8", "fp32"):
        return str(deployed)
    return "int8" if (bundle / "fp32").is_dir() else "fp32"


def load_decoders(
    inputs: dict[str, Path],
    settings: DecodeSettings,
    config: ReportConfig,
    precision: str,
    notes: list[str],
) -> tuple[list[Decoder], dict[str, list[Path]]]:
    """Every model the run has, as a decoder, the teacher first; and each one's files."""
    student_dir, export_dir = inputs["student"], inputs["export"]
    torch_models = [
        ("teacher", "Teacher", inputs["teacher"] / "model"),
        ("student", "Student (distilled)", student_dir / "model"),
        ("student_no_kd", "Student without KD", student_dir / "baseline" / "model"),
        (
            "student_sequence",
            "Student on the teacher's outputs (sequence-level)",
            student_dir / SEQUENCE_TWIN / "model",
        ),
    ]
    decoders, files = [], {}
    for key, name, folder in torch_models:
        if key in UNTIMED and not folder.is_dir():
            continue
        decoders.append(torch_decoder(key, name, folder, settings))
        files[key] = model_files(folder)
    bundle = export_dir / "bundle"
    threads = config.latency_threads
    decoders.append(
        bundle_decoder(
            "deployed",
            f"Student ONNX {precision} (deployed)",
            bundle,
            student_dir / "model",
            settings,
            threads,
            precision,
        )
    )
    files["deployed"] = graph_files(bundle)
    int8 = export_dir / "teacher" / "int8"
    if (int8 / "encoder.onnx").is_file():
        teacher_dir = inputs["teacher"] / "model"
        decoders.append(
            onnx_decoder(
                "teacher_onnx_int8",
                "Teacher ONNX int8",
                int8,
                teacher_dir,
                settings,
                threads,
                "int8",
            )
        )
        files["teacher_onnx_int8"] = graph_files(int8)
    else:
        notes.append("No teacher int8 row: the export stage made no teacher graphs.")
    return decoders, files


def export_section(export_metrics: dict[str, Any], precision: str) -> dict[str, Any]:
    """What the export stage deployed and measured: its scalar metrics as it recorded them
    (fp32 and int8 BLEU, bytes, parity ...)."""
    values = {
        key: value
        for key, value in export_metrics.items()
        if isinstance(value, str | int | float | bool) or value is None
    }
    return {"deployed": precision, "values": values}


def build_report(ctx: RunContext, inputs: dict[str, Path], config: ReportConfig) -> dict[str, Any]:
    """Everything the report shows, as one JSON-able dict."""
    started = time.perf_counter()
    manifests = upstream_manifests(inputs, UPSTREAM)
    export_metrics = manifests["export"].get("metrics") or {}
    test = read_split(inputs["data"], "test")
    if not len(test):
        raise ArtifactError(f"{inputs['data'] / 'test.jsonl'}: the test split has no pairs")
    settings = decode_settings(manifests, config)
    precision = deployed_precision(inputs["export"] / "bundle", export_metrics)
    notes: list[str] = []
    hardware = hardware_info()
    decoders, files = load_decoders(inputs, settings, config, precision, notes)
    outputs = decode_all(decoders, test.sources, SCORING_BATCH, log.info)
    rows, signatures = model_rows(decoders, outputs, test.targets, files, ctx.workdir, "deployed")
    runs, warmup = speed_budget(config, hardware, notes)
    timed = [d for d in decoders if d.key not in UNTIMED]
    latency = time_decoders(timed, test.sources, config, runs, warmup)
    if len(timed) < len(decoders):
        notes.append(
            "The twins have the distilled student's architecture: their speed is not "
            "measured again."
        )
    for row in rows:
        row["latency"] = latency.get(row["key"])
    del decoders, timed
    gc.collect()
    add_ratios(rows, RATIOS)
    compared = significance(outputs, test.targets)
    names = {row["key"]: row["name"] for row in rows}
    return {
        "schema_version": SCHEMA_VERSION,
        "task": TASK,
        "run": ctx.name,
        "created": created(),
        "rows": rows,
        "deployed": "deployed",
        "headline": headline(rows, compared),
        "distillation": compared,
        "signatures": signatures,
        "decoding": {
            "num_beams": settings.num_beams,
            "max_new_tokens": settings.max_new_tokens,
            "max_source_tokens": settings.max_length,
            "source_prefix": settings.prefix,
            "test_sources": len(test),
        },
        "examples": side_by_side(
            test.ids, test.sources, test.targets, outputs, names, config.examples
        ),
        "export": export_section(export_metrics, precision),
        "speed_setup": speed_setup(
            config, settings, runs, warmup, [row["key"] for row in rows if row["latency"]]
        ),
        "training": {name: training_summary(manifests[name]) for name in ("teacher", "student")},
        "data": manifests["data"].get("metrics") or {},
        "recipe": recipe_tables(manifests, UPSTREAM, task_dump(config, "report", TASK)),
        "wall_time_s": wall_times(
            manifests, inputs, ("data", "teacher", "labels", "student", "export"), started
        ),
        "versions": {**library_versions(), **metric_versions()},
        "hardware": hardware,
        "notes": notes,
    }


# The stage's body, as the pipeline calls it: run(ctx, inputs, out, report=...).
run = report_stage(build_report, render, summary_metrics)
