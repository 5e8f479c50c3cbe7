"""The int8 candidates every encoder export weighs, and how one is chosen: what each candidate
is (:data:`CANDIDATES`), the ORT-optimized graph some are built from (checked against
PyTorch), the dynamic int8 build, the batch-1 timing of all of them together, and the choice
of the fastest one the gate passes.

The stages share this so that a candidate means, is built, is timed and is chosen the same
way whatever the task. Each stage scores its candidates with its own measure (accuracy,
entity F1) into dicts; :func:`choose_candidate` reads the keys a :class:`Measure` names.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.export import onnx as onnx_utils
from distill.export.fusion import FUSION_TOOL, GraphRewrite
from distill.export.gate import Gate

log = logging.getLogger("distill")

# Batch-1 latency of the candidates: warm-up calls, then timed calls spread over rounds
# (export.latency_*), so a burst of load from elsewhere hits every model.
# Candidates whose batch-1 p50 (or, among those, file size) is within this fraction of the
# best one's are a tie.
LATENCY_TIE = 0.05
# What the timing records of each model (the rest of LatencyStats is noise in a manifest).
_LATENCY_KEYS = ("p50_ms", "p95_ms", "mean_ms", "runs", "warmup", "threads")


def latency_check(max_length: int, timing: dict[str, int]) -> dict[str, int]:
    """How :func:`time_models` timed the candidates (``timing``: its runs, warmup and
    rounds, from ``export.latency_*``), for the export manifest."""
    return {
        "batch_size": 1,
        "seq_len": max_length,
        "threads": onnx_utils.SESSION_THREADS,
        **timing,
    }


@dataclass(frozen=True)
class Candidate:
    """One way of making the int8 model. ``mode``: ``dynamic`` and ``static`` are built here
    (:func:`dynamic_int8`, :func:`static_int8`); any other mode is a task's own, built by
    the task's quantizer and described by ``summary``."""

    name: str
    mode: str
    optimized: bool  # quantize the ORT-optimized (fused) graph instead of the plain export
    quantize_embeddings: bool  # int8 embedding tables (Gather / EmbedLayerNormalization)
    summary: str = ""  # what describe() says of a task's own mode

    def describe(self) -> str:
        if self.summary:
            return self.summary
        graph = "ORT-optimized graph" if self.optimized else "plain graph"
        embeddings = "int8 embeddings" if self.quantize_embeddings else "fp32 embeddings"
        if self.mode == "static":
            return f"static QDQ (MinMax calibration) on the {graph}"
        return f"dynamic int8 on the {graph}, {embeddings}"


CANDIDATES: dict[str, Candidate] = {
    c.name: c
    for c in (
        Candidate("dynamic", "dynamic", optimized=False, quantize_embeddings=True),
        Candidate("dynamic-fp32-embeddings", "dynamic", optimized=False, quantize_embeddings=False),
        Candidate("dynamic-optimized", "dynamic", optimized=True, quantize_embeddings=True),
        Candidate(
            "dynamic-optimized-fp32-embeddings",
            "dynamic",
            optimized=True,
            quantize_embeddings=False,
        ),
        Candidate("static", "static", optimized=False, quantize_embeddings=True),
    )
}


def teacher_candidate(names: Sequence[str], student_chosen: str | None) -> str | None:
    """The int8 candidate for a teacher baseline: the one the student deployed, else the
    first of ``names`` (the recipe's; None when it asks for none)."""
    if not names:
        return None
    return student_chosen if student_chosen in names else names[0]


# --------------------------------------------------------------------------- building


def optimize_checked(
    fp32_path: Path,
    work: Path,
    *,
    level: int,
    rewrites: Sequence[GraphRewrite] = (),
    torch_model: Any,
    tokenizer: Any,
    texts: Sequence[Any],
    max_length: int,
    tolerance: float,
) -> tuple[Path | None, dict[str, Any]]:
    """The ORT-optimized graph, with the task's ``rewrites`` (None when the model type has no
    transformer optimizer: the reason is logged and recorded as ``skipped``) and its settings,
    including its parity with PyTorch on ``texts`` (ParityError beyond ``tolerance``)."""
    try:
        path, settings = onnx_utils.optimize_graph(
            fp32_path, work / "optimized", level=level, rewrites=rewrites
        )
    except NotImplementedError as exc:
        log.warning("graph optimization skipped: %s", exc)
        return None, {"level": level, "skipped": str(exc)}
    settings["parity_differences"] = onnx_utils.check_parity(
        path, torch_model, tokenizer, texts, max_length=max_length, tolerance=tolerance
    )
    settings["parity_max_abs_diff"] = max(settings["parity_differences"].values())
    log.info(
        "optimized graph (level %s): %s -> %s nodes, fused %s%s, parity %s",
        settings["level"],
        settings["nodes_before"],
        settings["nodes"],
        settings["fused_operators"],
        "".join(f", {r.label} {settings[r.key]}" for r in rewrites),
        settings["parity_differences"],
    )
    return path, settings


def optimize_for(
    wanted: Sequence[Candidate], fp32_path: Path, work: Path, *, level: int, **checked: Any
) -> tuple[Path | None, dict[str, Any]]:
    """:func:`optimize_checked` when a ``wanted`` candidate is built on the optimized graph;
    otherwise ``(None, settings saying why)`` and no optimizer run."""
    if not any(c.optimized for c in wanted):
        settings: dict[str, Any] = {"level": level}
        if level:
            settings["skipped"] = "no '-optimized' int8 candidate to build"
        return None, settings
    return optimize_checked(fp32_path, work, level=level, **checked)


def without_optimized(wanted: Sequence[Candidate], plain_fallback: bool) -> list[Candidate]:
    """The candidates that need no optimized graph (when there is none); with
    ``plain_fallback`` each optimized one becomes its plain twin (``dynamic-optimized`` ->
    ``dynamic``), once."""
    kept: list[Candidate] = []
    for candidate in wanted:
        if candidate.optimized:
            if not plain_fallback:
                continue
            candidate = CANDIDATES[candidate.name.replace("-optimized", "")]
        if candidate not in kept:
            kept.append(candidate)
    return kept


def candidate_settings(candidate: Candidate, config: Any, level: int) -> dict[str, Any]:
    """What a manifest records of a dynamic or static candidate's build: the
    quantization settings ``config`` and the graph it quantizes (``level``: the optimization
    level of that graph, 0 for the plain export)."""
    settings = onnx_utils.describe_quantization(config, candidate.mode)
    settings.update(
        {
            "candidate": candidate.name,
            "graph": "optimized" if candidate.optimized else "plain",
            "optimization_level": level if candidate.optimized else 0,
            "quantize_embeddings": candidate.quantize_embeddings,
        }
    )
    return settings


def dynamic_int8(
    candidate: Candidate,
    source: Path,
    save_dir: Path,
    *,
    per_channel: bool,
    reduce_range: bool,
    level: int,
) -> tuple[Path, dict[str, Any]]:
    """A dynamic candidate's int8 file (``quantization.json`` beside it) and its settings:
    the weight matmuls, plus the embedding tables unless the candidate keeps them fp32.
    ``source``: the plain export or, for an optimized candidate, the graph optimized at
    ``level``."""
    operators = list(onnx_utils.DYNAMIC_MATMUL_OPERATORS)
    if candidate.quantize_embeddings:
        operators += onnx_utils.EMBEDDING_OPERATORS
    config = onnx_utils.quantization_config(
        "dynamic", per_channel=per_channel, reduce_range=reduce_range, operators=operators
    )
    settings = candidate_settings(candidate, config, level)
    settings["quantizer"] = "onnxruntime.quantization.quantize_dynamic"
    settings["extra_options"] = dict(onnx_utils.DYNAMIC_EXTRA_OPTIONS)
    optimization = {"level": level, "tool": FUSION_TOOL} if candidate.optimized else None
    path = onnx_utils.quantize_dynamic(source, save_dir, config, optimization=optimization)
    return path, settings


def static_int8(
    candidate: Candidate,
    source: Path,
    save_dir: Path,
    *,
    calibration: Sequence[Any],
    tokenizer: Any,
    max_length: int,
    per_channel: bool,
    reduce_range: bool,
    level: int,
    work_dir: Path,
) -> tuple[Path, dict[str, Any]]:
    """A static (QDQ, MinMax) candidate's int8 file and its settings, its activations
    calibrated on ``calibration`` (training inputs, as the tokenizer takes them, padded to
    ``max_length``)."""
    config = onnx_utils.quantization_config(
        "static", per_channel=per_channel, reduce_range=reduce_range
    )
    settings = candidate_settings(candidate, config, level)
    features = onnx_utils.encode(
        tokenizer,
        calibration,
        max_length=max_length,
        input_names=onnx_utils.graph_info(source)["input_names"],
        padding="max_length",
    )
    settings["quantizer"] = "onnxruntime.quantization.quantize_static"
    path = onnx_utils.quantize_static(source, save_dir, config, features, work_dir=work_dir)
    settings["calibration"] = {"method": "minmax", "split": "train", "samples": len(calibration)}
    return path, settings


# --------------------------------------------------------------------------- timing


def time_models(
    paths: dict[str, Path],
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    *,
    runs: int,
    warmup: int,
    rounds: int,
) -> dict[str, dict[str, Any]]:
    """Batch-1 latency at ``max_length`` (``texts`` padded to it) of every graph, interleaved
    so that noise hits them alike: ``{name: {p50_ms, p95_ms, mean_ms, runs, warmup,
    threads}}``."""
    from distill.serving.session import onnx_session
    from distill.timing import latency

    inputs = latency.fixed_length_batch(tokenizer, texts, batch_size=1, max_length=max_length)
    threads = onnx_utils.SESSION_THREADS
    sessions = {name: onnx_session(path, threads) for name, path in paths.items()}
    stats = latency.interleaved_latency(
        {name: latency.onnx_call(session, inputs) for name, session in sessions.items()},
        runs=runs,
        warmup=warmup,
        rounds=rounds,
        desc="export: timing",
    )
    return {
        name: {
            k: v
            for k, v in s.with_setup(threads=threads, batch_size=1, sequence_length=max_length)
            .to_dict()
            .items()
            if k in _LATENCY_KEYS
        }
        for name, s in stats.items()
    }


# --------------------------------------------------------------------------- the choice


@dataclass(frozen=True)
class Measure:
    """The keys of a candidate record that the choice reads: ``score`` (higher is better),
    ``drop`` (its loss vs fp32, what the gate judges), and how messages name the score."""

    score: str
    drop: str
    label: str


ACCURACY = Measure("accuracy", "accuracy_drop", "accuracy")


def choose_candidate(
    records: list[dict[str, Any]],
    gate: Gate,
    tie: float = LATENCY_TIE,
    *,
    measure: Measure = ACCURACY,
) -> tuple[str | None, str]:
    """The candidate to deploy and why: the fastest (batch-1 p50) of those the gate passes
    (each record gets ``qualifies``). p50s within ``tie`` of the fastest are a tie, settled by
    size (files within ``tie`` of the smallest stay tied), then by agreement with fp32, then
    the score. ``(None, reason)`` when no candidate qualifies."""
    if not records:
        return None, "no int8 candidates (export.quantization = 'none')"
    for r in records:
        r["qualifies"] = "error" not in r and gate.passes(r.get(measure.drop))
    qualified = [r for r in records if r["qualifies"]]
    if not qualified:
        return None, (
            f"no int8 candidate within {gate.describe()} "
            f"({candidates_line(records, measure)}): fp32 deployed"
        )
    fastest = min(r["latency_b1"]["p50_ms"] for r in qualified)
    tied = [r for r in qualified if r["latency_b1"]["p50_ms"] <= fastest * (1 + tie)]
    smallest = min(r["bytes"] for r in tied)
    small = [r for r in tied if r["bytes"] <= smallest * (1 + tie)]
    best = min(
        small,
        key=lambda r: (
            -r["agreement_with_fp32"],
            -r[measure.score],
            r["latency_b1"]["p50_ms"],
        ),
    )
    reason = (
        f"fastest at batch 1 within the {measure.label} budget: "
        f"{best['latency_b1']['p50_ms']:.2f} ms p50, {measure.label} drop "
        f"{best[measure.drop]:+.4f} <= {gate.budget:g}"
    )
    if len(tied) > 1:
        others = ", ".join(r["name"] for r in tied if r is not best)
        reason += f"; tied within {tie:.0%} with {others}"
        if len(small) < len(tied):
            reason += ", so the smaller file"
        if len(small) > 1:
            reason += ", so the closest agreement with fp32"
    excluded = [r["name"] for r in records if r not in qualified]
    if excluded:
        reason += f"; over the {measure.label} budget or failed: {', '.join(excluded)}"
    return best["name"], reason


def candidates_line(records: list[dict[str, Any]], measure: Measure = ACCURACY) -> str:
    """Every candidate on one line, for logs and errors: its score, drop, size and p50."""
    parts = []
    for r in records:
        if "error" in r:
            parts.append(f"{r['name']} failed ({r['error']})")
            continue
        p50 = (r.get("latency_b1") or {}).get("p50_ms")
        timing = f", {p50:.2f} ms" if p50 is not None else ""
        parts.append(
            f"{r['name']} {measure.label} {r[measure.score]:.4f} "
            f"(drop {r[measure.drop]:+.4f}), {r['bytes'] / 1e6:.1f} MB{timing}"
        )
    return "; ".join(parts)
