"""int8 with ``onnxruntime.quantization`` directly: the settings (:class:`QuantizationSettings`),
dynamic and static (QDQ, MinMax calibration) quantization, and ``quantization.json``, the
record written beside every int8 file.

The settings are the AVX2 preset that distill used through optimum (u8 activations, symmetric
weights, per-channel, reduced range) with weights in QInt8: see :data:`QUANTIZATION_DEFAULTS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from distill.errors import ModelLoadError
from distill.export.exporter import quiet_loggers
from distill.pipeline.artifacts import write_json_atomic

QUANTIZATION_FILE = "quantization.json"
# int8 settings for x86-64 CPUs with AVX2 whose int8 dot products may lack VNNI:
# - weights QInt8 (u8 activations x s8 weights): onnxruntime's u8s8 kernels ran 1.4-1.8x
#   faster than QUInt8 weights (u8u8) on a 2-layer MiniLM, seq 64, 2 threads;
# - reduce_range: 7-bit weights, so the u8 x s8 pair sums of AVX2's VPMADDUBSW cannot
#   saturate int16 on CPUs without VNNI (no measurable cost in speed or accuracy there);
# - per_channel: per-row weight scales; best agreement with fp32 (99.2% of predictions).
QUANTIZATION_DEFAULTS: dict[str, Any] = {
    "weights_dtype": "QInt8",
    "per_channel": True,
    "reduce_range": True,
}
# Operators quantized by the dynamic candidates: the weight matmuls (plain MatMul, or the fused
# Attention of an optimized graph), plus the embedding tables (Gather on the plain graph,
# EmbedLayerNormalization on a fused one) unless the candidate keeps embeddings fp32. The
# 30522 x 384 word embedding of MiniLM is three quarters of the fp32 file.
DYNAMIC_MATMUL_OPERATORS = ("MatMul", "Attention")
EMBEDDING_OPERATORS = ("Gather", "EmbedLayerNormalization")
# What static quantization converts (the operators of the AVX2 static preset a transformer
# encoder holds); activations get QDQ pairs calibrated on training texts.
STATIC_OPERATORS = ("MatMul", "Gemm", "Gather", "Attention", "Transpose", "Reshape", "Where")
# Passed to onnxruntime's quantize_dynamic:
# - DefaultTensorType: the fused contrib ops (Attention, SkipLayerNormalization, ...) of an
#   optimized graph have no inferred output types; without a default the quantizer fails
#   with "Unable to find data type for weight_name=...";
# - MatMulConstBOnly: only matmuls with a constant (weight) operand; the activation x
#   activation matmuls of unfused attention stay fp32 (onnxruntime's own dynamic default).
DYNAMIC_EXTRA_OPTIONS: dict[str, Any] = {"DefaultTensorType": "FLOAT", "MatMulConstBOnly": True}


@dataclass(frozen=True)
class QuantizationSettings:
    """One int8 pass: what :func:`quantize_dynamic` / :func:`quantize_static` are told."""

    mode: Literal["dynamic", "static"]
    operators: tuple[str, ...]
    weights_dtype: str = QUANTIZATION_DEFAULTS["weights_dtype"]
    activations_dtype: str = "QUInt8"
    weights_symmetric: bool = True
    activations_symmetric: bool = False
    per_channel: bool = QUANTIZATION_DEFAULTS["per_channel"]
    reduce_range: bool = QUANTIZATION_DEFAULTS["reduce_range"]
    extra_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from onnxruntime.quantization import QuantType

        if self.mode not in ("dynamic", "static"):
            raise ValueError(f"quantization mode {self.mode!r}: expected 'dynamic' or 'static'")
        for dtype in (self.weights_dtype, self.activations_dtype):
            if dtype not in QuantType.__members__:
                raise ValueError(
                    f"unknown int8 type {dtype!r} (known: {list(QuantType.__members__)})"
                )

    @property
    def format(self) -> str:
        """QOperator (integer ops) for dynamic, QDQ pairs for static."""
        return "QDQ" if self.mode == "static" else "QOperator"


def quantization_config(
    mode: Literal["dynamic", "static"],
    *,
    per_channel: bool = QUANTIZATION_DEFAULTS["per_channel"],
    reduce_range: bool = QUANTIZATION_DEFAULTS["reduce_range"],
    weights_dtype: str = QUANTIZATION_DEFAULTS["weights_dtype"],
    operators: Sequence[str] | None = None,
) -> QuantizationSettings:
    """The settings of one pass; ``operators`` default to the mode's usual set."""
    if operators is None:
        operators = STATIC_OPERATORS if mode == "static" else DYNAMIC_MATMUL_OPERATORS
    return QuantizationSettings(
        mode=mode,
        operators=tuple(operators),
        weights_dtype=weights_dtype,
        per_channel=per_channel,
        reduce_range=reduce_range,
    )


def describe_quantization(config: QuantizationSettings, mode: str | None = None) -> dict[str, Any]:
    """The JSON-able settings (for manifests, metrics and ``quantization.json``)."""
    return {
        "mode": mode or config.mode,
        "is_static": config.mode == "static",
        "format": config.format,
        "activations_dtype": config.activations_dtype,
        "activations_symmetric": config.activations_symmetric,
        "weights_dtype": config.weights_dtype,
        "weights_symmetric": config.weights_symmetric,
        "per_channel": config.per_channel,
        "reduce_range": config.reduce_range,
        "operators": sorted(config.operators),
    }


def quantize_dynamic(
    onnx_path: Path, save_dir: Path, config: QuantizationSettings, *, optimization: Any = None
) -> Path:
    """Dynamic int8 (``onnxruntime.quantization.quantize_dynamic`` with
    :data:`DYNAMIC_EXTRA_OPTIONS`); returns ``save_dir/<stem>_quantized.onnx`` with
    ``quantization.json`` beside it (the settings, the graph ``optimization`` it was built on,
    the quantizer call)."""
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    save_dir.mkdir(parents=True, exist_ok=True)
    path = save_dir / f"{onnx_path.stem}_quantized.onnx"
    extra_options = {
        **DYNAMIC_EXTRA_OPTIONS,
        "DefaultTensorType": getattr(onnx.TensorProto, DYNAMIC_EXTRA_OPTIONS["DefaultTensorType"]),
        "WeightSymmetric": config.weights_symmetric,
        "ActivationSymmetric": config.activations_symmetric,
    }
    with quiet_root_logger():  # "Please consider to run pre-processing" on every call
        ort_quantize_dynamic(
            onnx_path,
            path,
            op_types_to_quantize=list(config.operators),
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            weight_type=QuantType[config.weights_dtype],
            extra_options=extra_options,
        )
    write_quantization_record(
        save_dir,
        config,
        optimization=optimization,
        quantizer={
            "function": "onnxruntime.quantization.quantize_dynamic",
            "extra_options": {**extra_options, **DYNAMIC_EXTRA_OPTIONS},
        },
    )
    return _quantized_file(onnx_path, save_dir)


class _Calibration:
    """``onnxruntime.quantization.CalibrationDataReader`` over feature rows, in batches."""

    def __init__(self, features: dict[str, np.ndarray], batch_size: int) -> None:
        rows = len(next(iter(features.values()))) if features else 0
        self._batches = iter(
            [
                {name: value[start : start + batch_size] for name, value in features.items()}
                for start in range(0, rows, batch_size)
            ]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_static(
    onnx_path: Path,
    save_dir: Path,
    config: QuantizationSettings,
    calibration_features: dict[str, np.ndarray],
    *,
    work_dir: Path,
    batch_size: int = 8,
) -> Path:
    """Static int8 (QDQ): MinMax calibration on ``calibration_features`` (the graph's inputs,
    all rows padded to one length), then ``onnxruntime.quantization.quantize_static``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    save_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    path = save_dir / f"{onnx_path.stem}_quantized.onnx"
    extra_options = {
        "WeightSymmetric": config.weights_symmetric,
        "ActivationSymmetric": config.activations_symmetric,
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
    }
    reader = _Calibration(calibration_features, batch_size)
    with quiet_root_logger():  # "Axis 1 is out-of-range for weight ..." per LayerNorm weight
        ort_quantize_static(
            onnx_path,
            path,
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(config.operators),
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            activation_type=QuantType[config.activations_dtype],
            weight_type=QuantType[config.weights_dtype],
            calibrate_method=CalibrationMethod.MinMax,
            calibration_providers=["CPUExecutionProvider"],
            extra_options=extra_options,
        )
    write_quantization_record(
        save_dir,
        config,
        quantizer={
            "function": "onnxruntime.quantization.quantize_static",
            "calibration": {
                "method": "MinMax",
                "rows": len(next(iter(calibration_features.values()))),
            },
            "extra_options": extra_options,
        },
    )
    return _quantized_file(onnx_path, save_dir)


def write_quantization_record(
    save_dir: Path,
    config: QuantizationSettings,
    *,
    optimization: Any = None,
    quantizer: dict[str, Any] | None = None,
) -> Path:
    """``save_dir/quantization.json``: the settings, the graph optimization the int8 file was
    built on (None for the plain export) and the quantizer call."""
    record = {
        "quantization": describe_quantization(config),
        "optimization": optimization,
        "quantizer": quantizer,
        "settings": asdict(config),
    }
    path = save_dir / QUANTIZATION_FILE
    write_json_atomic(path, record)
    return path


def quiet_root_logger() -> AbstractContextManager[None]:
    """The root logger and onnxruntime's at ERROR for a block: the quantizers warn through
    the root logger, and the MatMulNBits quantizer logs every node at INFO."""
    return quiet_loggers("", "onnxruntime")


def _quantized_file(onnx_path: Path, save_dir: Path) -> Path:
    path = save_dir / f"{onnx_path.stem}_quantized.onnx"
    if not path.is_file():  # pragma: no cover - the quantizer writes it or raises
        raise ModelLoadError(f"quantization of {onnx_path} wrote no {path.name} in {save_dir}")
    return path
