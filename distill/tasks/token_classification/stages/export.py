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
   micro-F1 and the rest of :func:`compare`, agreement with fp32's entities) and weighed;
   then all of them and the fp32 graph are timed together, batch 1 at
   ``data.max_length``, interleaved (:func:`distill.export.candidates.time_models`);
4. the fastest candidate whose entity-F1 drop vs fp32 is within ``export.max_f1_drop`` is
   deployed (:func:`distill.export.candidates.choose_candidate`, the tie rules classification
   uses); when none passes, fp32 is, or with ``export.require_int8``
   :class:`~distill.errors.AccuracyDropError` is raised.

Steps 1-4 are the one export sequence of :mod:`distill.export.sequence`, given tagging's
part by :func:`export_spec`. With ``export.teacher_baseline`` the teacher goes the same way with the candidate the student
deployed (else the recipe's first), scored on the test split: never gated or deployed.

Writes ``bundle/`` (published to ``export/<run>/``): ``model.onnx`` (deployed), the fp32
reference under ``fp32/`` when int8 is deployed, config.json (real tag names), the fast
tokenizer, ``quantization.json`` of an int8 model, and manifest.json (last): task, tags,
max_length, aggregation, every candidate with its measurements, the chosen one and why, and
the metrics. ``teacher_baseline/model.onnx``: the teacher's int8 graph, for the report.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.config import DataConfig, ExportConfig
from distill.export.bundle import FP32_REFERENCE, write_bundle_manifest
from distill.export.candidates import CANDIDATES, Measure
from distill.export.gate import Gate
from distill.export.sequence import (
    EncoderExport,
    Scored,
    deploy,
    export_model,
    student_record,
    teacher_baseline,
    time_and_choose,
)
from distill.pipeline.artifacts import RunContext
from distill.tasks.token_classification.aggregation import DEFAULT_AGGREGATION
from distill.tasks.token_classification.files import TaggedSplit, read_tag_names, read_tagged_split
from distill.tasks.token_classification.metrics import tagging_metrics
from distill.tasks.token_classification.models import load_saved_tagger
from distill.tasks.token_classification.onnx_tags import onnx_served_tags
from distill.tasks.token_classification.task import TokenClassification
from distill.train.models import load_tokenizer

log = logging.getLogger("distill")
PARITY_SENTENCES = 32
MODEL_CLASS = "AutoModelForTokenClassification"
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


def compare(tagged: Tagged, fp32: Scored) -> dict[str, Any]:
    """A candidate's record measures: its entity scores against the gold tags, the F1 drop
    the gate reads, and its agreement with fp32's tags and logits."""
    reference: Tagged = fp32.output
    scores = tagging_metrics(reference.gold, tagged.tags, reference.tags)
    return {
        **{k: v for k, v in scores.items() if k != "agreement"},
        "entity_f1_drop": fp32.scores["entity_f1"] - scores["entity_f1"],
        "agreement_with_fp32": scores["agreement"],
        "max_abs_logit_diff_vs_fp32": max(
            (
                float(np.max(np.abs(a - b)))
                for a, b in zip(tagged.logits, reference.logits, strict=True)
            ),
            default=0.0,
        ),
    }


def export_spec(
    model_dir: Path, test: TaggedSplit, tag_names: list[str], export: ExportConfig, max_length: int
) -> EncoderExport:
    """What the export sequence needs of tagging for one model (its tokenizer serves the
    graphs as its bundle would); the fused graph is never CLS-pruned: every token's tag is
    read."""
    texts = [" ".join(words) for words in test.tokens]

    def load(folder: Path, role: str) -> tuple[Any, Any]:
        return load_tokenizer(str(folder), f"{role} model"), load_saved_tagger(folder).eval()

    def infer(path: Path, label: str, tokenizer: Any) -> Tagged:
        return tag_test(path, model_dir, test, tag_names, max_length, f"export: {label}")

    return EncoderExport(
        model_class=MODEL_CLASS,
        load=load,
        parity_inputs=texts[:PARITY_SENTENCES],
        timing_inputs=texts,
        infer=infer,
        evaluate=lambda tagged: tagging_metrics(tagged.gold, tagged.tags),
        compare=compare,
        measure=ENTITY_F1,
        gate=Gate("export.max_f1_drop", export.max_f1_drop),
        examples=f"{len(test)} test sentences",
        max_length=max_length,
    )


# --------------------------------------------------------------------------- the stage


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig, export: ExportConfig
) -> dict[str, Any]:
    """Export, check, weigh and time the student's candidates, deploy the chosen one into
    ``bundle/``, then (``export.teacher_baseline``) the teacher with the same candidate."""
    tag_names = read_tag_names(inputs["data"])
    test = read_tagged_split(inputs["data"], "test")
    model_dir = inputs["student"] / "model"
    spec = export_spec(model_dir, test, tag_names, export, data.max_length)
    with tempfile.TemporaryDirectory(prefix="distill-export-") as scratch:
        work = Path(scratch)
        wanted = [CANDIDATES[name] for name in export.candidate_names()]
        student = export_model(spec, model_dir, work / "student", export, wanted, "student")
        choice = time_and_choose(spec, student, export)
        bundle, roles = deploy(out / "bundle", model_dir, student, choice)
        metrics = student_record(student, choice, export, spec.gate, TEST_METRICS, data.max_length)
        metrics["deployed_bytes"] = (bundle / "model.onnx").stat().st_size
        if export.teacher_baseline:
            teacher_dir = inputs["teacher"] / "model"
            metrics["teacher_baseline"] = teacher_baseline(
                export_spec(teacher_dir, test, tag_names, export, data.max_length),
                teacher_dir,
                work / "teacher",
                out,
                export,
                choice.chosen,
            )
    write_bundle_manifest(bundle, roles, _bundle_info(ctx, metrics, tag_names, data))
    return metrics


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
