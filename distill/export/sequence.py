"""The one export sequence of an encoder, for students and teachers alike: fp32 ONNX checked
against PyTorch, the optimized graph when a candidate needs it (checked too), every int8
candidate built and scored against fp32; then, for the model to deploy, all of them timed
together and the fastest one the gate passes chosen.

It names no task and assumes no input or output shape: the task gives what differs through
an :class:`EncoderExport` (how to load its model, the inputs of the parity check and of the
timing, how a graph is run over its test data and scored, what its gate reads). The
building blocks are :mod:`distill.export.candidates`, :mod:`distill.export.gate` and
:mod:`distill.export.bundle`; each task's stage keeps its metrics, files and bundle fields.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import ExportConfig
from distill.errors import AccuracyDropError
from distill.export import candidates
from distill.export import onnx as onnx_utils
from distill.export.bundle import assemble_bundle
from distill.export.candidates import CANDIDATES, Candidate, Measure
from distill.export.fusion import GraphRewrite
from distill.export.gate import Gate
from distill.pipeline.progress import track

log = logging.getLogger("distill")


@dataclass(frozen=True)
class Scored:
    """A graph's output on the test data as the task reads it (logits, served tags: the
    task's own type) and its metrics."""

    output: Any
    scores: dict[str, Any]


# (graph, label for progress, tokenizer) -> the graph's output on the test data
Infer = Callable[[Path, str, Any], Any]
# a task's own int8 mode: (candidate, source graph, save folder) -> (file, settings)
Quantize = Callable[[Candidate, Path, Path], tuple[Path, dict[str, Any]]]


@dataclass(frozen=True)
class EncoderExport:
    """What one task gives the sequence for one model (student, variant or teacher).

    ``load(model_dir, role)``: its tokenizer and PyTorch model (the parity reference);
    ``parity_inputs`` / ``timing_inputs``: inputs as its tokenizer takes them;
    ``infer``: a graph run over the test data; ``evaluate``: fp32's metrics of that output;
    ``compare(output, fp32)``: a candidate's measures against fp32, in record order (its
    scores, the drop the gate reads, ``agreement_with_fp32``, ...); ``measure`` / ``gate``:
    what the choice reads; ``examples``: the test data in words, for messages."""

    model_class: str  # the transformers auto class the dynamo export loads
    load: Callable[[Path, str], tuple[Any, Any]]
    parity_inputs: Sequence[Any]
    timing_inputs: Sequence[Any]
    infer: Infer
    evaluate: Callable[[Any], dict[str, Any]]
    compare: Callable[[Any, Scored], dict[str, Any]]
    measure: Measure
    gate: Gate
    examples: str
    max_length: int
    rewrites: Sequence[GraphRewrite] = ()  # of the optimized graph
    # The fp32 graph written another way than the dynamo export: (torch model, path) -> path.
    export_fp32: Callable[[Any, Path], Path] | None = None
    # Training inputs for a static candidate's calibration (read only when one is built).
    calibration: Callable[[], Sequence[Any]] | None = None
    quantize: Quantize | None = None  # the task's own candidate modes


@dataclass
class Exported:
    """One model through :func:`export_model`: its fp32 graph (and what it declares), the
    tokenizer, the parity and optimization records, fp32's output, every candidate's record
    and the ones built (file and output)."""

    fp32_path: Path
    graph: dict[str, Any]
    tokenizer: Any
    parity: dict[str, float]
    optimization: dict[str, Any]
    fp32: Scored
    records: list[dict[str, Any]] = field(default_factory=list)
    built: dict[str, tuple[Path, Any]] = field(default_factory=dict)


def export_model(
    spec: EncoderExport,
    model_dir: Path,
    work: Path,
    export: ExportConfig,
    wanted: Sequence[Candidate],
    role: str,
    *,
    plain_fallback: bool = False,
) -> Exported:
    """fp32 ONNX (parity-checked), the optimized graph when a ``wanted`` candidate needs it
    (parity-checked), and each candidate built and scored against fp32. Without an optimized
    graph the optimized candidates are dropped or, with ``plain_fallback`` (a teacher
    baseline wants its one int8 row), built on the plain graph."""
    tokenizer, torch_model = spec.load(model_dir, role)
    fp32 = (
        spec.export_fp32(torch_model, work / "fp32" / "model.onnx")
        if spec.export_fp32 is not None
        else onnx_utils.export_onnx(
            model_dir, work / "fp32", model_class=spec.model_class, opset=export.opset
        )
    )
    graph = onnx_utils.graph_info(fp32)
    log.info("exported %s (opset %s, inputs %s)", fp32.name, graph["opset"], graph["input_names"])
    checked = {
        "torch_model": torch_model,
        "tokenizer": tokenizer,
        "texts": spec.parity_inputs,
        "max_length": spec.max_length,
        "tolerance": export.parity_tolerance,
    }
    parity = onnx_utils.check_parity(fp32, **checked)
    log.info("parity with PyTorch: %s", parity)
    optimized, optimization = candidates.optimize_for(
        wanted, fp32, work, level=export.optimization_level, rewrites=spec.rewrites, **checked
    )
    if optimized is None:
        wanted = candidates.without_optimized(wanted, plain_fallback)
    del torch_model, checked
    output = spec.infer(fp32, f"{role} fp32", tokenizer)
    exported = Exported(
        fp32, graph, tokenizer, parity, optimization, Scored(output, spec.evaluate(output))
    )
    for candidate in track(wanted, desc=f"export: {role} int8 candidates", unit="candidate"):
        source = optimized if candidate.optimized else fp32
        assert source is not None
        _build(spec, exported, candidate, source, work, export)
    return exported


def _build(
    spec: EncoderExport,
    exported: Exported,
    candidate: Candidate,
    source: Path,
    work: Path,
    export: ExportConfig,
) -> None:
    """Quantize one candidate and score it against fp32 into ``exported``; a candidate whose
    quantizer fails is recorded with its error (it cannot be chosen) rather than failing the
    stage."""
    started = time.perf_counter()
    record: dict[str, Any] = {"name": candidate.name, "description": candidate.describe()}
    exported.records.append(record)
    try:
        level = exported.optimization.get("level", 0)
        path, settings = _quantize(spec, candidate, source, work, export, exported.tokenizer, level)
    except Exception as exc:  # the quantizers raise anything from ValueError to RuntimeError
        log.warning("int8 candidate %s failed to build: %s", candidate.name, exc)
        record["error"] = f"{type(exc).__name__}: {exc}"
        return
    output = spec.infer(path, candidate.name, exported.tokenizer)
    record.update(
        {
            "settings": settings,
            "bytes": path.stat().st_size,
            **spec.compare(output, exported.fp32),
            "build_seconds": round(time.perf_counter() - started, 2),
        }
    )
    exported.built[candidate.name] = (path, output)


def _quantize(
    spec: EncoderExport,
    candidate: Candidate,
    source: Path,
    work: Path,
    export: ExportConfig,
    tokenizer: Any,
    level: int,
) -> tuple[Path, dict[str, Any]]:
    """The candidate's int8 file (``quantization.json`` beside it) and its settings: dynamic
    and static built here, any other mode by the task. ``level``: the optimization level of
    the graph an optimized candidate quantizes."""
    save_dir = work / "candidates" / candidate.name
    bits = {"per_channel": export.per_channel, "reduce_range": export.reduce_range}
    if candidate.mode == "dynamic":
        return candidates.dynamic_int8(candidate, source, save_dir, level=level, **bits)
    if candidate.mode == "static" and spec.calibration is not None:
        return candidates.static_int8(
            candidate,
            source,
            save_dir,
            calibration=spec.calibration(),
            tokenizer=tokenizer,
            max_length=spec.max_length,
            level=level,
            work_dir=work / "calibration" / candidate.name,
            **bits,
        )
    if spec.quantize is None:
        raise ValueError(f"no quantizer for {candidate.mode!r} candidates in this export")
    return spec.quantize(candidate, source, save_dir)


# --------------------------------------------------------------------------- the model to deploy


@dataclass(frozen=True)
class Choice:
    """The candidate to deploy (None: fp32) and why, with every graph's batch-1 timing."""

    chosen: str | None
    reason: str
    latency: dict[str, dict[str, Any]]

    def record(self, exported: Exported) -> dict[str, Any] | None:
        """The chosen candidate's record (None when fp32 is deployed)."""
        return next((r for r in exported.records if r["name"] == self.chosen), None)

    def int8(self, exported: Exported) -> tuple[Path, Any] | None:
        """The chosen candidate's file and output (None when fp32 is deployed)."""
        return None if self.chosen is None else exported.built[self.chosen]


def time_and_choose(
    spec: EncoderExport, exported: Exported, export: ExportConfig, *, time_fp32: bool = False
) -> Choice:
    """Time fp32 and every built candidate together (batch 1, ``max_length``, interleaved;
    fp32 alone too with ``time_fp32``), then choose the fastest candidate the gate passes;
    each record gets its latency, speedup and ``qualifies``. With ``export.require_int8``,
    no candidate passing raises :class:`AccuracyDropError`."""
    latency: dict[str, dict[str, Any]] = {}
    if exported.built or time_fp32:
        latency = candidates.time_models(
            {"fp32": exported.fp32_path, **{k: p for k, (p, _) in exported.built.items()}},
            exported.tokenizer,
            spec.timing_inputs,
            spec.max_length,
            **export.timing(),
        )
    for record in exported.records:
        if record["name"] in latency:
            record["latency_b1"] = latency[record["name"]]
            record["speedup_vs_fp32"] = latency["fp32"]["p50_ms"] / record["latency_b1"]["p50_ms"]
    records, measure = exported.records, spec.measure
    chosen, reason = candidates.choose_candidate(records, spec.gate, measure=measure)
    log.info("int8 candidates: %s", candidates.candidates_line(records, measure))
    log.info("deployed: %s (%s)", chosen or "fp32", reason)
    if chosen is None and records and export.require_int8:
        raise AccuracyDropError(
            f"no int8 candidate was built with {measure.label} within "
            f"{spec.gate.describe()} of fp32 ({exported.fp32.scores[measure.score]:.4f} on "
            f"{spec.examples}): {candidates.candidates_line(records, measure)}; not published "
            f"(export.require_int8 = true; raise {spec.gate.key}, try other "
            "export.candidates, or allow an fp32 fallback)"
        )
    if chosen is not None and latency[chosen]["p50_ms"] > latency["fp32"]["p50_ms"]:
        log.warning(
            "the chosen int8 model is slower than fp32 at batch 1 (%.2f vs %.2f ms p50)",
            latency[chosen]["p50_ms"],
            latency["fp32"]["p50_ms"],
        )
    return Choice(chosen, reason, latency)


def deploy(
    bundle: Path,
    model_dir: Path,
    exported: Exported,
    choice: Choice,
    fp32_reference: bool = True,
) -> tuple[Path, dict[str, str]]:
    """The bundle's deployed files (:func:`~distill.export.bundle.assemble_bundle`): the
    chosen candidate as ``model.onnx`` or fp32; the task adds its own files and the
    manifest, last."""
    int8 = choice.int8(exported)
    return assemble_bundle(
        bundle,
        model_dir,
        exported.tokenizer,
        exported.fp32_path,
        None if int8 is None else int8[0],
        fp32_reference,
    )


# --------------------------------------------------------------------------- the teacher


def teacher_wanted(export: ExportConfig, student_chosen: str | None) -> list[Candidate]:
    """The teacher baseline's one candidate: the one the student deployed, else the recipe's
    first (none when it asks for none)."""
    name = candidates.teacher_candidate(export.candidate_names(), student_chosen)
    return [CANDIDATES[name]] if name else []


def baseline_skipped(export: ExportConfig, inputs: dict[str, Path]) -> dict[str, str] | None:
    """Why there is no teacher baseline (``{"skipped": why}``), or None when there is one."""
    if not export.teacher_baseline:
        return {"skipped": "export.teacher_baseline = false"}
    if "teacher" not in inputs:  # a stage called without its teacher (tests of the student path)
        return {"skipped": "no teacher stage among the inputs"}
    return None


# --------------------------------------------------------------------------- stage records


def fp32_record(exported: Exported, choice: Choice | None = None) -> dict[str, Any]:
    """fp32's record: its scores, size and (timed with candidates) batch-1 latency."""
    record = {**exported.fp32.scores, "bytes": exported.fp32_path.stat().st_size}
    if choice is not None and choice.latency:
        record["latency_b1"] = choice.latency["fp32"]
    return record


def student_record(
    student: Exported,
    choice: Choice,
    export: ExportConfig,
    gate: Gate,
    test_keys: Sequence[str],
    max_length: int,
) -> dict[str, Any]:
    """What the stage manifest records: fp32's scores, parity and the optimized graph, every
    candidate, the one deployed and why, and how they were timed."""
    record = choice.record(student)
    fp32 = fp32_record(student, choice)
    return {
        "student": {
            "fp32": fp32,
            "parity": student.parity,
            "optimization": student.optimization,
        },
        "candidates": student.records,
        "chosen": choice.chosen,
        "chosen_reason": choice.reason,
        "deployed": "fp32" if choice.chosen is None else "int8",
        "quantization": {"mode": "none"} if record is None else record["settings"],
        "gate": gate.describe(),
        "latency_check": candidates.latency_check(max_length, export.timing()),
        "test": {k: (record or fp32).get(k) for k in test_keys},
    }


def teacher_baseline(
    spec: EncoderExport,
    teacher_dir: Path,
    work: Path,
    out: Path,
    export: ExportConfig,
    student_chosen: str | None,
) -> dict[str, Any]:
    """The teacher through the same export sequence with the student's deployed candidate
    (else the recipe's first): fp32 and int8 scored, the int8 graph kept for the report's
    timing."""
    wanted = teacher_wanted(export, student_chosen)
    teacher = export_model(spec, teacher_dir, work, export, wanted, "teacher", plain_fallback=True)
    metrics = {
        "fp32": fp32_record(teacher),
        "parity": teacher.parity,
        "optimization": teacher.optimization,
    }
    built = next(iter(teacher.built.items()), None)
    if built is not None:
        metrics["int8"] = {**teacher.records[0], "candidate": built[0]}
        (out / "teacher_baseline").mkdir()
        shutil.copyfile(built[1][0], out / "teacher_baseline" / "model.onnx")
    elif teacher.records:
        metrics["int8_error"] = teacher.records[0].get("error")
    return metrics
