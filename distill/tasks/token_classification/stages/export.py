"""Stage `export` for tagging: the student to ONNX (torch dynamo, ``token-classification``), parity
with PyTorch, the int8 candidates, the one gate on the entity micro-F1 drop
(``export.max_f1_drop``), and the fastest candidate that passes it deployed.

1. ``torch.onnx.export(dynamo=True)`` writes the student's fp32 graph, checked against PyTorch on real test sentences
   (:class:`~distill.errors.ParityError` beyond ``export.parity_tolerance``);
2. when a candidate needs it, onnxscript's onnxruntime fusions (:mod:`distill.export.fusion`,
   ``export.optimization_level``) fuse the graph (Attention, SkipLayerNormalization,
   BiasGelu; the counts recorded), checked against PyTorch again with the same
   tolerance. A graph that cannot be optimized drops the ``-optimized`` candidates,
   the reason logged and recorded (``optimization.skipped``). CLS pruning is never applied:
   a tagger reads every token's output;
3. every int8 candidate (``export.candidates``, by default ``dynamic`` and
   ``dynamic-optimized``; see :data:`distill.export.candidates.CANDIDATES`) is built, scored
   on the test split as its bundle would serve it (the runner's whole-word entities read
   back onto the words, :mod:`~distill.tasks.token_classification.onnx_tags`: entity
   micro-F1 and the rest of :func:`score`, agreement with fp32's entities) and weighed;
   then all of them and the fp32 graph are timed together, batch 1 at
   ``data.max_length``, interleaved (:func:`distill.export.candidates.time_models`);
4. the fastest candidate whose entity-F1 drop vs fp32 is within ``export.max_f1_drop`` is
   deployed (:func:`distill.export.candidates.choose_candidate`, the tie rules classification
   uses); when none passes, fp32 is, or with ``export.require_int8``
   :class:`~distill.errors.AccuracyDropError` is raised.

With ``export.teacher_baseline`` the teacher goes the same way with the candidate the student
deployed (else the recipe's first), scored on the test split: never gated or deployed.

Writes ``bundle/`` (published to ``export/<run>/``): ``model.onnx`` (deployed), the fp32
reference under ``fp32/`` when int8 is deployed, config.json (real tag names), the fast
tokenizer, ``quantization.json`` of an int8 model, and manifest.json (last): task, tags,
max_length, aggregation, every candidate with its measurements, the chosen one and why, and
the metrics. ``teacher_baseline/model.onnx``: the teacher's int8 graph, for the report.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.artifacts import RunContext
from distill.config import DataConfig, ExportConfig
from distill.errors import AccuracyDropError
from distill.export import candidates as shared
from distill.export import onnx as onnx_utils
from distill.export.bundle import FP32_REFERENCE, assemble_bundle, write_bundle_manifest
from distill.export.candidates import CANDIDATES, Candidate, Measure
from distill.export.gate import Gate
from distill.models import load_tokenizer
from distill.progress import track
from distill.tasks.token_classification.aggregation import DEFAULT_AGGREGATION
from distill.tasks.token_classification.files import TaggedSplit, read_tag_names, read_tagged_split
from distill.tasks.token_classification.metrics import tagging_metrics
from distill.tasks.token_classification.models import load_saved_tagger
from distill.tasks.token_classification.onnx_tags import onnx_served_tags
from distill.tasks.token_classification.task import TokenClassification

log = logging.getLogger("distill")
PARITY_SENTENCES = 32
# What the gate and the choice read of a candidate's record (distill.export.candidates).
ENTITY_F1 = Measure(score="entity_f1", drop="entity_f1_drop", label="entity F1")
# The scores of a candidate the bundle manifest's ``metrics.test`` carries.
TEST_METRICS = (
    "entity_f1",
    "entity_macro_f1",
    "entity_precision",
    "entity_recall",
    "token_accuracy",
    "per_type",
    "examples",
    "tokens",
)


@dataclass(frozen=True)
class Tagged:
    """One graph's output on the test split, as its bundle would serve it: logits per
    sentence, and the gold and served tags of the words it saw (truncated words excluded)."""

    logits: list[np.ndarray]
    gold: list[list[str]]
    tags: list[list[str]]


def tag_test(
    model_path: Path,
    folder: Path,
    test: TaggedSplit,
    tag_names: list[str],
    max_length: int,
    desc: str,
) -> Tagged:
    """Serve an ONNX graph (with the tokenizer saved in ``folder``) over the test split, the
    words of each sentence joined by spaces, and read each word's tag off the entities it
    serves with the aggregation the bundle records."""
    served = onnx_served_tags(model_path, folder, test.tokens, tag_names, max_length, desc)
    gold = [
        [tag_names[t] for t in tags[: len(seen)]]
        for tags, seen in zip(test.tags, served.tags, strict=True)
    ]
    return Tagged(served.logits, gold, served.tags)


def score(
    model_path: Path,
    folder: Path,
    test: TaggedSplit,
    tag_names: list[str],
    max_length: int,
    desc: str,
) -> dict[str, Any]:
    """Entity metrics of an ONNX graph on the test split (words cut by truncation excluded)."""
    tagged = tag_test(model_path, folder, test, tag_names, max_length, desc)
    return tagging_metrics(tagged.gold, tagged.tags)


@dataclass(frozen=True)
class Scoring:
    """What scoring a candidate of one model needs: its tokenizer's folder, the test split,
    fp32's output and entity F1 (the reference of the drop and of the agreement)."""

    folder: Path
    test: TaggedSplit
    tag_names: list[str]
    max_length: int
    fp32: Tagged
    fp32_f1: float


# --------------------------------------------------------------------------- one model


def export_model(
    model_dir: Path,
    work: Path,
    export: ExportConfig,
    test: TaggedSplit,
    tag_names: list[str],
    max_length: int,
    who: str,
    names: list[str],
    *,
    plain_fallback: bool = False,
) -> dict[str, Any]:
    """fp32 ONNX (parity-checked), the optimized graph when a candidate needs it
    (parity-checked), and each int8 candidate of ``names`` built and scored against fp32.
    ``plain_fallback``: an optimized candidate whose model type has no optimizer is built on
    the plain graph instead of dropped (the teacher baseline wants one int8 row)."""
    tokenizer = load_tokenizer(str(model_dir), f"{who} model")
    torch_model = load_saved_tagger(model_dir).eval()
    fp32 = onnx_utils.export_onnx(
        model_dir, work / "fp32", task=TokenClassification.export_task, opset=export.opset
    )
    texts = [" ".join(words) for words in test.tokens[:PARITY_SENTENCES]]
    parity = onnx_utils.check_parity(
        fp32,
        torch_model,
        tokenizer,
        texts,
        max_length=max_length,
        tolerance=export.parity_tolerance,
    )
    wanted = [CANDIDATES[name] for name in names]
    optimized, optimization = _optimized_graph(
        wanted, export, fp32, work, torch_model, tokenizer, texts, max_length
    )
    if optimized is None:
        wanted = _without_optimized(wanted, plain_fallback)
    del torch_model
    reference = tag_test(fp32, model_dir, test, tag_names, max_length, f"export: {who} fp32")
    fp32_scores = tagging_metrics(reference.gold, reference.tags)
    scoring = Scoring(model_dir, test, tag_names, max_length, reference, fp32_scores["entity_f1"])
    result: dict[str, Any] = {
        "fp32_path": fp32,
        "tokenizer": tokenizer,
        "parity": parity,
        "optimization": optimization,
        "fp32": {**fp32_scores, "bytes": fp32.stat().st_size},
        "candidates": [],
        "built": {},
    }
    for candidate in track(wanted, desc=f"export: {who} int8 candidates", unit="candidate"):
        source = optimized if candidate.optimized else fp32
        assert source is not None
        record, path = _build_candidate(candidate, export, source, optimization, work, scoring)
        result["candidates"].append(record)
        if path is not None:
            result["built"][candidate.name] = path
    return result


def _optimized_graph(
    wanted: list[Candidate],
    export: ExportConfig,
    fp32: Path,
    work: Path,
    torch_model: Any,
    tokenizer: Any,
    texts: list[str],
    max_length: int,
) -> tuple[Path | None, dict[str, Any]]:
    """The fused graph when a wanted candidate is built on it, checked against PyTorch; never
    CLS-pruned (every token's tag is read). ``(None, settings saying why)`` otherwise."""
    return shared.optimize_for(
        wanted,
        fp32,
        work,
        level=export.optimization_level,
        cls_pruning=False,
        torch_model=torch_model,
        tokenizer=tokenizer,
        texts=texts,
        max_length=max_length,
        tolerance=export.parity_tolerance,
    )


def _without_optimized(wanted: list[Candidate], plain_fallback: bool) -> list[Candidate]:
    """The candidates that need no optimized graph; with ``plain_fallback`` each optimized one
    becomes its plain twin (``dynamic-optimized`` -> ``dynamic``), once."""
    kept: list[Candidate] = []
    for candidate in wanted:
        if candidate.optimized:
            if not plain_fallback:
                continue
            candidate = CANDIDATES[candidate.name.replace("-optimized", "")]
        if candidate not in kept:
            kept.append(candidate)
    return kept


def _build_candidate(
    candidate: Candidate,
    export: ExportConfig,
    source: Path,
    optimization: dict[str, Any],
    work: Path,
    scoring: Scoring,
) -> tuple[dict[str, Any], Path | None]:
    """Quantize one candidate and score it on the test split against the gold tags and fp32's;
    a candidate whose quantizer fails is recorded with its error (it cannot be chosen) rather
    than failing the stage."""
    started = time.perf_counter()
    record: dict[str, Any] = {"name": candidate.name, "description": candidate.describe()}
    try:
        path, settings = shared.dynamic_int8(
            candidate,
            source,
            work / "candidates" / candidate.name,
            per_channel=export.per_channel,
            reduce_range=export.reduce_range,
            level=optimization.get("level", 0),
        )
    except Exception as exc:  # the quantizer raises anything from ValueError to RuntimeError
        log.warning("int8 candidate %s failed to build: %s", candidate.name, exc)
        record["error"] = f"{type(exc).__name__}: {exc}"
        return record, None
    tagged = tag_test(
        path,
        scoring.folder,
        scoring.test,
        scoring.tag_names,
        scoring.max_length,
        f"export: {candidate.name}",
    )
    reference = scoring.fp32
    scores = tagging_metrics(reference.gold, tagged.tags, reference.tags)
    record.update(
        {
            "settings": settings,
            "bytes": path.stat().st_size,
            **{k: v for k, v in scores.items() if k != "agreement"},
            "entity_f1_drop": scoring.fp32_f1 - scores["entity_f1"],
            "agreement_with_fp32": scores["agreement"],
            "max_abs_logit_diff_vs_fp32": max(
                (
                    float(np.max(np.abs(a - b)))
                    for a, b in zip(tagged.logits, reference.logits, strict=True)
                ),
                default=0.0,
            ),
            "build_seconds": round(time.perf_counter() - started, 2),
        }
    )
    return record, path


# --------------------------------------------------------------------------- the choice


def time_and_choose(
    exported: dict[str, Any], export: ExportConfig, test: TaggedSplit, max_length: int
) -> tuple[str | None, str]:
    """Time fp32 and every built candidate together (batch 1, ``max_length``), then choose the
    fastest candidate the gate passes; each record gets its latency and ``qualifies``."""
    records = exported["candidates"]
    latency: dict[str, dict[str, Any]] = {}
    if exported["built"]:
        latency = shared.time_models(
            {"fp32": exported["fp32_path"], **exported["built"]},
            exported["tokenizer"],
            [" ".join(words) for words in test.tokens],
            max_length,
            **export.timing(),
        )
        exported["fp32"]["latency_b1"] = latency["fp32"]
    for record in records:
        if record["name"] in latency:
            record["latency_b1"] = latency[record["name"]]
            record["speedup_vs_fp32"] = (
                latency["fp32"]["p50_ms"] / latency[record["name"]]["p50_ms"]
            )
    gate = Gate("export.max_f1_drop", export.max_f1_drop)
    chosen, reason = shared.choose_candidate(records, gate, measure=ENTITY_F1)
    log.info("int8 candidates: %s", shared.candidates_line(records, ENTITY_F1))
    log.info("deployed: %s (%s)", chosen or "fp32", reason)
    if chosen is None and records and export.require_int8:
        raise AccuracyDropError(
            f"no int8 candidate was built with an entity F1 within {gate.describe()} of fp32 "
            f"({exported['fp32']['entity_f1']:.4f} on {len(test)} test sentences): "
            f"{shared.candidates_line(records, ENTITY_F1)}; not published "
            "(export.require_int8 = true; raise export.max_f1_drop, try other "
            "export.candidates, or allow an fp32 fallback)"
        )
    return chosen, reason


# --------------------------------------------------------------------------- the stage


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig, export: ExportConfig
) -> dict[str, Any]:
    """Export, check, weigh and time the student's candidates, deploy the chosen one into
    ``bundle/``, then (``export.teacher_baseline``) the teacher with the same candidate."""
    tag_names = read_tag_names(inputs["data"])
    test = read_tagged_split(inputs["data"], "test")
    model_dir = inputs["student"] / "model"
    with tempfile.TemporaryDirectory(prefix="distill-export-") as scratch:
        work = Path(scratch)
        student = export_model(
            model_dir,
            work / "student",
            export,
            test,
            tag_names,
            data.max_length,
            "student",
            export.candidate_names(),
        )
        chosen, reason = time_and_choose(student, export, test, data.max_length)
        int8 = student["built"][chosen] if chosen is not None else None
        bundle, roles = assemble_bundle(
            out / "bundle", model_dir, student["tokenizer"], student["fp32_path"], int8
        )
        metrics = _student_metrics(student, chosen, reason, export, data)
        metrics["deployed_bytes"] = (bundle / "model.onnx").stat().st_size
        if export.teacher_baseline:
            metrics["teacher_baseline"] = _teacher_baseline(
                inputs["teacher"] / "model",
                work / "teacher",
                out,
                export,
                test,
                tag_names,
                data.max_length,
                chosen,
            )
    write_bundle_manifest(bundle, roles, _bundle_info(ctx, metrics, tag_names, data))
    return metrics


def _student_metrics(
    student: dict[str, Any],
    chosen: str | None,
    reason: str,
    export: ExportConfig,
    data: DataConfig,
) -> dict[str, Any]:
    """What the stage manifest records: fp32's scores, parity and the optimized graph, every
    candidate, the one deployed and why, and how they were timed."""
    record = next((r for r in student["candidates"] if r["name"] == chosen), None)
    return {
        "student": {k: student[k] for k in ("fp32", "parity", "optimization")},
        "candidates": student["candidates"],
        "chosen": chosen,
        "chosen_reason": reason,
        "deployed": "fp32" if chosen is None else "int8",
        "quantization": {"mode": "none"} if record is None else record["settings"],
        "gate": Gate("export.max_f1_drop", export.max_f1_drop).describe(),
        "latency_check": shared.latency_check(data.max_length, export.timing()),
        "test": {k: (record or student["fp32"]).get(k) for k in TEST_METRICS},
    }


def _bundle_info(
    ctx: RunContext, metrics: dict[str, Any], tag_names: list[str], data: DataConfig
) -> dict[str, Any]:
    """The manifest's own keys (the runner reads the tags, max_length and aggregation)."""
    return {
        "task": TokenClassification.bundle_task,
        "model": "model.onnx",
        "precision": metrics["deployed"],
        # assemble_bundle puts the fp32 graph beside an int8 model.onnx (distill bench reads it)
        "fp32_reference": FP32_REFERENCE if metrics["deployed"] == "int8" else None,
        "labels": tag_names,
        "max_length": data.max_length,
        "aggregation": DEFAULT_AGGREGATION,  # the one every score above was read through
        "run": ctx.name,
        "optimization": metrics["student"]["optimization"],
        "quantization": metrics["quantization"],
        "chosen": metrics["chosen"],
        "chosen_reason": metrics["chosen_reason"],
        "candidates": metrics["candidates"],
        "metrics": {"test": metrics["test"]},
    }


def _teacher_baseline(
    teacher_dir: Path,
    work: Path,
    out: Path,
    export: ExportConfig,
    test: TaggedSplit,
    tag_names: list[str],
    max_length: int,
    student_chosen: str | None,
) -> dict[str, Any]:
    """The teacher through the same export with the student's deployed candidate (else the
    recipe's first): fp32 and int8 scored, the int8 graph kept for the report's timing."""
    names = export.candidate_names()
    name = shared.teacher_candidate(names, student_chosen)
    teacher = export_model(
        teacher_dir,
        work,
        export,
        test,
        tag_names,
        max_length,
        "teacher",
        [name] if name else [],
        plain_fallback=True,
    )
    metrics = {k: teacher[k] for k in ("fp32", "parity", "optimization")}
    built = next(iter(teacher["built"].items()), None)
    if built is not None:
        metrics["int8"] = {**teacher["candidates"][0], "candidate": built[0]}
        (out / "teacher_baseline").mkdir()
        shutil.copyfile(built[1], out / "teacher_baseline" / "model.onnx")
    elif teacher["candidates"]:
        metrics["int8_error"] = teacher["candidates"][0].get("error")
    return metrics
