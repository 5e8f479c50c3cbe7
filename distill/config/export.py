"""[export] and [report]: the deployed graph's int8 candidates and gate, and the report's
measurements."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    model_validator,
)

from distill.config.tables import _Table, noted, with_task_keys

ExportCandidate = Literal[
    "dynamic",
    "dynamic-fp32-embeddings",
    "dynamic-optimized",
    "dynamic-optimized-fp32-embeddings",
    "static",
]


class _ExportConfig(_Table):
    """[export]: ONNX export, parity check, int8 candidates and the accuracy gate."""

    quantization: Literal["none", "dynamic", "static", "weight-only"] = Field(
        "dynamic",
        description=noted(
            "export.quantization",
            "'none' deploys fp32; 'dynamic' / 'static' (calibrated on training texts) pick the "
            "default int8 candidates; 'weight-only' stores the weight matmuls as int8 in blocks "
            "of 32 with a scale each (ONNX Runtime MatMulNBits) and quantizes no activation "
            "ahead of time or per tensor.",
        ),
    )
    max_accuracy_drop: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Largest test accuracy loss of an int8 candidate vs fp32 for it to be "
        "deployed (0.01 = 1 point).",
    )
    parity_tolerance: float = Field(1e-4, gt=0, description="Max |ONNX - PyTorch| on logits.")
    opset: int | None = Field(
        None,
        ge=18,
        le=23,
        description="ONNX opset of the export (default: the dynamo exporter's, 18 or newer; "
        "below 18 its LayerNormalization and attention ops have no earlier version).",
    )
    calibration_samples: int = Field(
        256,
        ge=1,
        description="quantization 'static': training texts used to calibrate activations.",
    )
    optimization_level: Literal[0, 1, 2, 99] = Field(
        2,
        description="Graph fusion for the '-optimized' candidates: 0 off; 1, 2 or 99 run "
        "onnxscript's onnxruntime fusions (Attention, SkipLayerNormalization, BiasGelu) "
        "on the exported graph (their counts recorded in the export manifest; the fused "
        "graph parity-checked like the export); onnxruntime applies its own graph "
        "optimizations when a session loads the file, whichever level is set.",
    )
    candidates: list[ExportCandidate] | None = Field(
        None,
        description=noted(
            "export.candidates",
            "int8 candidates to build, evaluate and time; the fastest within the task's "
            "quality gate is deployed (p50s within 5% tie, settled by the smaller file). "
            "Default: by `quantization` (dynamic: dynamic and dynamic-optimized, only dynamic at "
            "optimization_level 0; static: static). The '-fp32-embeddings' ones keep the "
            "embedding tables fp32 (about 3.3x larger files), for when int8 embeddings cost "
            "too much accuracy.",
        ),
    )
    per_channel: bool = Field(True, description="Per-output-channel weight scales.")
    reduce_range: bool = Field(
        True,
        description="7-bit weights: safe on AVX2 CPUs without VNNI (no int16 saturation); "
        "false uses all 8 bits on VNNI CPUs.",
    )
    require_int8: bool = Field(
        False,
        description="Fail (AccuracyDropError) when no int8 candidate passes the gate, "
        "instead of deploying fp32.",
    )
    fp32_reference: bool = Field(
        True,
        description="Bundles carry the fp32 graph beside the deployed int8 one "
        "(fp32/model_fp32.onnx); false keeps it in runs/<name>/export/fp32/ only, for a "
        "smaller bundle.",
    )
    latency_runs: int = Field(
        60,
        ge=1,
        le=100_000,
        description="Timed calls per model, spread over latency_rounds rounds, when the int8 "
        "candidates and the fp32 graph are timed against each other (batch 1, "
        "data.max_length), and when the serving thread count is chosen.",
    )
    latency_rounds: int = Field(
        12,
        ge=1,
        le=1000,
        description="Rounds of that timing (at most latency_runs): the models take turns "
        "round by round, so that noise hits them alike.",
    )
    latency_warmup: int = Field(
        5, ge=0, le=10_000, description="Untimed calls per model before that timing."
    )
    teacher_baseline: bool = Field(
        True,
        description=noted(
            "export.teacher_baseline",
            "Also export the teacher to fp32 ONNX and int8 (the student's export path and "
            "deployed candidate) and score it on the test split: a baseline row in the report "
            "(never deployed), for every task. Written to runs/<name>/export/teacher/.",
        ),
    )

    @model_validator(mode="after")
    def _candidates_are_usable(self) -> _ExportConfig:
        if self.candidates is not None:
            if self.quantization == "none":
                raise ValueError(
                    "export.candidates needs export.quantization 'dynamic' or 'static'"
                )
            if not self.candidates:
                raise ValueError("export.candidates must name at least one candidate")
            if len(set(self.candidates)) != len(self.candidates):
                raise ValueError("export.candidates lists a candidate twice")
            optimized = [c for c in self.candidates if "optimized" in c]
            if optimized and self.optimization_level == 0:
                raise ValueError(
                    f"export.candidates {optimized} need export.optimization_level > 0"
                )
        if self.require_int8 and self.quantization == "none":
            raise ValueError("export.require_int8 = true contradicts export.quantization = 'none'")
        return self

    def timing(self) -> dict[str, int]:
        """How the export times its graphs against each other: ``runs``, ``warmup``,
        ``rounds`` (the keyword arguments of :func:`distill.export.candidates.time_models`)."""
        return {
            "runs": self.latency_runs,
            "warmup": self.latency_warmup,
            "rounds": self.latency_rounds,
        }

    def candidate_names(self) -> list[str]:
        """The int8 candidates this table asks for (empty for quantization = 'none')."""
        if self.quantization == "none":
            return []
        if self.candidates is not None:
            return list(self.candidates)
        if self.quantization == "static":
            return ["static"]
        if self.quantization == "weight-only":
            return []  # a task's own pass; the others refuse it (Task.check_recipe)
        if self.optimization_level == 0:
            return ["dynamic"]
        return ["dynamic", "dynamic-optimized"]


ExportConfig = with_task_keys(_ExportConfig, "export")


class _ReportConfig(_Table):
    """[report]: what the comparison measures."""

    latency_threads: int = Field(2, ge=1, le=256, description="CPU threads for latency runs.")
    latency_batch_size: int = Field(
        1, ge=1, le=4096, description="Texts per timed call in the latency runs."
    )
    latency_runs: int = Field(
        50,
        ge=3,
        le=100000,
        description=noted(
            "report.latency_runs", "Timed runs per model, whose percentiles the report gives."
        ),
    )
    latency_warmup: int = Field(
        5,
        ge=0,
        le=10000,
        description=noted("report.latency_warmup", "Untimed runs per model before the timed ones."),
    )
    tfidf_baseline: bool = Field(
        True,
        description="Compute the TF-IDF + logistic-regression floor; the report warns about a "
        "model that does not beat it on accuracy.",
    )


ReportConfig = with_task_keys(_ReportConfig, "report")
