"""ONNX helpers: export with optimum, graph optimization (ORTOptimizer), parity against
PyTorch, int8 quantization and batched inference with plain onnxruntime (the bundle's
manifest is :mod:`distill.export.bundle`'s).

Everything here tokenizes the same way (``tokenizer(texts, truncation=True,
max_length=..., padding=..., return_tensors="np")``) and feeds a graph only the inputs it
declares, so BERT (with ``token_type_ids``) and MPNet (without) are handled alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from distill.artifacts import write_json_atomic
from distill.errors import ModelLoadError, ParityError
from distill.export.pruning import prune_to_first_token
from distill.latency import ort_session
from distill.progress import track

log = logging.getLogger("distill")

SESSION_THREADS = 2
Padding = Literal["max_length", "longest"]
# int8 settings for x86-64 CPUs with AVX2 whose int8 dot products may lack VNNI:
# - weights QInt8 (u8 activations x s8 weights): onnxruntime's u8s8 kernels ran 1.4-1.8x
#   faster than the preset's QUInt8 weights (u8u8) on a 2-layer MiniLM, seq 64, 2 threads;
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
# Passed to onnxruntime's quantize_dynamic (optimum's ORTQuantizer cannot pass them):
# - DefaultTensorType: the fused contrib ops (Attention, SkipLayerNormalization, ...) of an
#   optimized graph have no inferred output types; without a default the quantizer fails
#   with "Unable to find data type for weight_name=...";
# - MatMulConstBOnly: only matmuls with a constant (weight) operand; the activation x
#   activation matmuls of unfused attention stay fp32 (onnxruntime's own dynamic default).
DYNAMIC_EXTRA_OPTIONS: dict[str, Any] = {"DefaultTensorType": "FLOAT", "MatMulConstBOnly": True}
# Transformer fusions of optimum's OptimizationConfig that stay on for every level > 0
# (optimum disables the embedding fusion by default; it is exact here and lets the
# quantizer turn the three embedding tables into one int8 EmbedLayerNormalization).
OPTIMIZATION_OPTIONS: dict[str, Any] = {"disable_embed_layer_norm_fusion": False}
_NUMPY_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}


# --------------------------------------------------------------------------- export


def export_onnx(model_dir: Path, out_dir: Path, *, task: str, opset: int | None = None) -> Path:
    """Export a ``save_pretrained`` model to ``out_dir/model.onnx`` (fp32) for optimum's
    ``task`` (the exporting task's ``Task.export_task``).

    optimum also copies the config, generation config and tokenizer files into ``out_dir``.
    Its own validation is off: each task checks parity on real inputs.
    """
    from optimum.exporters.onnx import main_export

    main_export(
        str(model_dir),
        output=out_dir,
        task=task,
        opset=opset,
        device="cpu",
        do_validation=False,
        local_files_only=True,
        library_name="transformers",
    )
    path = Path(out_dir) / "model.onnx"
    if not path.is_file():  # pragma: no cover - optimum always writes it
        raise ModelLoadError(f"{model_dir}: the ONNX export wrote no model.onnx in {out_dir}")
    return path


def graph_info(model_path: Path) -> dict[str, Any]:
    """Input and output names and the default-domain opset of an ONNX file."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "input_names": [i.name for i in model.graph.input if i.name not in initializers],
        "output_names": [o.name for o in model.graph.output],
        "opset": opset,
    }


def op_counts(model_path: Path) -> dict[str, int]:
    """How many nodes of each operator type the graph holds (``domain:op`` outside ONNX's)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        name = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------- graph optimization


def optimization_config(level: int) -> Any:
    """optimum's ``OptimizationConfig`` for CPU at ``level`` (see :data:`OPTIMIZATION_OPTIONS`)."""
    from optimum.onnxruntime.configuration import OptimizationConfig

    return OptimizationConfig(
        optimization_level=level, optimize_for_gpu=False, fp16=False, **OPTIMIZATION_OPTIONS
    )


def optimize_graph(
    onnx_path: Path,
    save_dir: Path,
    *,
    level: int,
    model_config_dir: Path,
    cls_pruning: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """ONNX Runtime graph optimization with optimum's ``ORTOptimizer`` (transformer fusions:
    Attention, SkipLayerNormalization, EmbedLayerNormalization, BiasGelu, ...), then, with
    ``cls_pruning``, :func:`prune_to_first_token`.

    ``model_config_dir`` holds the transformers ``config.json`` (heads, hidden size, model
    type). Returns ``save_dir/<stem>_optimized.onnx`` and the settings to record;
    ``save_dir`` also receives ``ort_config.json``. Raises ``NotImplementedError`` for a model
    type that onnxruntime's transformer optimizer does not know.
    """
    from optimum.onnxruntime import ORTOptimizer
    from transformers import AutoConfig

    if level not in (1, 2, 99):
        raise ValueError(f"optimization level must be 1, 2 or 99 (got {level})")
    config = AutoConfig.from_pretrained(model_config_dir)
    optimization = optimization_config(level)
    with _quiet_root_logger():
        ORTOptimizer([onnx_path], config=config).optimize(optimization, save_dir)
    path = save_dir / f"{onnx_path.stem}_optimized.onnx"
    if not path.is_file():  # pragma: no cover - ORTOptimizer names it so
        raise ModelLoadError(f"optimization of {onnx_path} wrote no {path.name} in {save_dir}")
    counts = op_counts(path)
    settings = {
        "tool": "optimum.onnxruntime.ORTOptimizer",
        "level": level,
        "model_type": config.model_type,
        **OPTIMIZATION_OPTIONS,
        "nodes": sum(counts.values()),
        "nodes_before": sum(op_counts(onnx_path).values()),
        "fused_operators": {k: v for k, v in counts.items() if k.startswith("com.microsoft:")},
    }
    if cls_pruning:
        settings["cls_pruning"] = prune_to_first_token(path)
    return path, settings


# --------------------------------------------------------------------------- inference


def make_session(model_path: Path, threads: int = SESSION_THREADS) -> Any:
    """A CPU ``onnxruntime.InferenceSession`` with the thread count set explicitly."""
    return ort_session(model_path, threads)


def encode(
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    input_names: Sequence[str],
    padding: Padding = "longest",
    input_types: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Tokenize ``texts`` and keep exactly the graph's inputs (raises if one is missing)."""
    encoded = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        padding="max_length" if padding == "max_length" else True,
        return_tensors="np",
    )
    missing = [name for name in input_names if name not in encoded]
    if missing:
        raise ModelLoadError(
            f"the ONNX graph needs input(s) {missing} that the tokenizer does not produce "
            f"(it gives {sorted(encoded.keys())})"
        )
    types = input_types or {}
    return {
        name: np.asarray(encoded[name], dtype=types.get(name, np.int64)) for name in input_names
    }


def session_feeds(
    session: Any, tokenizer: Any, texts: Sequence[str], *, max_length: int, padding: Padding
) -> dict[str, np.ndarray]:
    """:func:`encode` for a session: its declared input names and integer types."""
    inputs = session.get_inputs()
    types = {i.name: _NUMPY_TYPES.get(i.type, np.int64) for i in inputs}
    return encode(
        tokenizer,
        texts,
        max_length=max_length,
        input_names=[i.name for i in inputs],
        padding=padding,
        input_types=types,
    )


def predict_logits(
    model_path: Path,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int = 32,
    threads: int = SESSION_THREADS,
    desc: str = "onnxruntime",
) -> np.ndarray:
    """Logits of an ONNX classifier over ``texts`` (batched in order, each batch padded to its
    longest: the way ``distill predict`` batches, so dynamic int8, whose activation scales
    depend on the batch, gives the same numbers here and there); progress shown as ``desc``."""
    session = make_session(model_path, threads)
    return session_logits(
        session, tokenizer, texts, max_length=max_length, batch_size=batch_size, desc=desc
    )


def session_logits(
    session: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int,
    desc: str = "onnxruntime",
) -> np.ndarray:
    """:func:`predict_logits` on an open session: batches of ``batch_size`` in the order
    given, each padded to its longest text."""
    output = _logits_output(session)
    chunks = []
    for start in track(range(0, len(texts), batch_size), desc=desc, unit="batch"):
        feeds = session_feeds(
            session,
            tokenizer,
            texts[start : start + batch_size],
            max_length=max_length,
            padding="longest",
        )
        chunks.append(session.run([output], feeds)[0])
    if not chunks:
        num_labels = session.get_outputs()[0].shape[-1]
        return np.zeros((0, num_labels if isinstance(num_labels, int) else 0), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32)


def token_lengths(tokenizer: Any, texts: Sequence[str], *, max_length: int) -> np.ndarray:
    """Tokens per text (special tokens included), truncated at ``max_length``."""
    if not texts:
        return np.zeros(0, dtype=np.int64)
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return np.asarray([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)


def _logits_output(session: Any) -> str:
    names = [o.name for o in session.get_outputs()]
    return "logits" if "logits" in names else names[0]


# --------------------------------------------------------------------------- parity


def parity_differences(
    model_path: Path,
    torch_model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    threads: int = SESSION_THREADS,
) -> dict[str, float]:
    """Max |ONNX Runtime - PyTorch| per graph output, over ``texts`` padded to ``max_length``
    and padded dynamically (to the longest text)."""
    import torch

    session = make_session(model_path, threads)
    output_names = [o.name for o in session.get_outputs()]
    differences = dict.fromkeys(output_names, 0.0)
    torch_model.eval()
    for padding in ("max_length", "longest"):
        feeds = session_feeds(session, tokenizer, texts, max_length=max_length, padding=padding)
        onnx_outputs = session.run(output_names, feeds)
        with torch.inference_mode():
            reference = torch_model(
                **{k: torch.from_numpy(v.astype(np.int64)) for k, v in feeds.items()}
            )
        for name, got in zip(output_names, onnx_outputs, strict=True):
            expected = reference[name].detach().float().numpy()
            if got.shape != expected.shape:
                differences[name] = float("inf")
                continue
            diff = float(np.max(np.abs(got.astype(np.float64) - expected))) if got.size else 0.0
            differences[name] = max(differences[name], diff)
    return differences


def check_parity(
    model_path: Path,
    torch_model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    tolerance: float,
    threads: int = SESSION_THREADS,
) -> dict[str, float]:
    """:func:`parity_differences`, raising :class:`ParityError` when any output exceeds ``tolerance``."""
    differences = parity_differences(
        model_path, torch_model, tokenizer, texts, max_length=max_length, threads=threads
    )
    if any(not diff <= tolerance for diff in differences.values()):  # NaN counts as a failure
        raise ParityError(str(model_path), differences, tolerance)
    return differences


# --------------------------------------------------------------------------- quantization


def quantization_config(
    mode: Literal["dynamic", "static"],
    *,
    per_channel: bool = QUANTIZATION_DEFAULTS["per_channel"],
    reduce_range: bool = QUANTIZATION_DEFAULTS["reduce_range"],
    weights_dtype: str = QUANTIZATION_DEFAULTS["weights_dtype"],
    operators: Sequence[str] | None = None,
) -> Any:
    """optimum's AVX2 preset (``AutoQuantizationConfig.avx2``) with the weight type set.

    The preset quantizes weights as QUInt8; ``weights_dtype="QInt8"`` selects the faster
    u8 x s8 kernels of onnxruntime's CPU backend (see :data:`QUANTIZATION_DEFAULTS`).
    ``operators`` replaces the preset's operator types to quantize.
    """
    from onnxruntime.quantization import QuantType
    from optimum.onnxruntime import AutoQuantizationConfig

    config = AutoQuantizationConfig.avx2(
        is_static=(mode == "static"), per_channel=per_channel, reduce_range=reduce_range
    )
    config.weights_dtype = QuantType[weights_dtype]
    if operators is not None:
        config.operators_to_quantize = list(operators)
    return config


def describe_quantization(config: Any, mode: str) -> dict[str, Any]:
    """The JSON-able settings of an optimum ``QuantizationConfig`` (for manifests and metrics)."""
    return {
        "mode": mode,
        "preset": "avx2",
        "format": config.format.name,
        "activations_dtype": config.activations_dtype.name,
        "activations_symmetric": bool(config.activations_symmetric),
        "weights_dtype": config.weights_dtype.name,
        "weights_symmetric": bool(config.weights_symmetric),
        "per_channel": bool(config.per_channel),
        "reduce_range": bool(config.reduce_range),
        "operators": sorted(str(getattr(op, "value", op)) for op in config.operators_to_quantize),
    }


def quantize_dynamic(
    onnx_path: Path, save_dir: Path, config: Any, *, optimization: Any = None
) -> Path:
    """Dynamic int8 quantization; returns ``save_dir/<stem>_quantized.onnx``.

    Runs ``onnxruntime.quantization.quantize_dynamic`` with the settings of the optimum
    ``QuantizationConfig`` ``config`` plus :data:`DYNAMIC_EXTRA_OPTIONS` (which optimum's
    ``ORTQuantizer`` cannot pass, and without which an optimized graph does not quantize).
    ``save_dir`` also receives ``ort_config.json``: optimum's ``ORTConfig`` of the
    quantization (and of the graph ``optimization`` that preceded it, if any), plus the
    quantizer call and its extra options under ``"quantizer"``.
    """
    import onnx
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    save_dir.mkdir(parents=True, exist_ok=True)
    path = save_dir / f"{onnx_path.stem}_quantized.onnx"
    extra_options = {
        **DYNAMIC_EXTRA_OPTIONS,
        "DefaultTensorType": getattr(onnx.TensorProto, DYNAMIC_EXTRA_OPTIONS["DefaultTensorType"]),
        "WeightSymmetric": bool(config.weights_symmetric),
        "ActivationSymmetric": bool(config.activations_symmetric),
    }
    with _quiet_root_logger():  # "Please consider to run pre-processing" on every call
        ort_quantize_dynamic(
            onnx_path,
            path,
            op_types_to_quantize=[
                str(getattr(op, "value", op)) for op in config.operators_to_quantize
            ],
            per_channel=bool(config.per_channel),
            reduce_range=bool(config.reduce_range),
            weight_type=config.weights_dtype,
            nodes_to_quantize=list(config.nodes_to_quantize or []),
            nodes_to_exclude=list(config.nodes_to_exclude or []),
            extra_options=extra_options,
        )
    write_ort_config(
        save_dir,
        quantization=config,
        optimization=optimization,
        quantizer={
            "function": "onnxruntime.quantization.quantize_dynamic",
            "extra_options": {**extra_options, **DYNAMIC_EXTRA_OPTIONS},
        },
    )
    return _quantized_file(onnx_path, save_dir)


def write_ort_config(
    save_dir: Path, *, quantization: Any, optimization: Any = None, quantizer: dict | None = None
) -> Path:
    """``save_dir/ort_config.json``: optimum's ``ORTConfig`` (loadable by optimum) with the
    quantizer call recorded under ``"quantizer"``."""
    import json

    from optimum.onnxruntime.configuration import ORTConfig

    ORTConfig(optimization=optimization, quantization=quantization).save_pretrained(save_dir)
    path = save_dir / "ort_config.json"
    if quantizer is not None:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["quantizer"] = quantizer
        write_json_atomic(path, data)
    return path


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Raise the root logger to ERROR for a block: onnxruntime's quantizer warns and its
    transformer optimizer logs every fusion there, through the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_static(
    onnx_path: Path,
    save_dir: Path,
    config: Any,
    calibration_features: dict[str, np.ndarray],
    *,
    work_dir: Path,
    batch_size: int = 8,
) -> Path:
    """Static int8 quantization: MinMax calibration on ``calibration_features`` (the graph's
    inputs, all rows padded to one length) with ``ORTQuantizer.fit``, then ``quantize``."""
    from datasets import Dataset
    from optimum.onnxruntime import AutoCalibrationConfig, ORTQuantizer

    dataset = Dataset.from_dict(
        {name: value.tolist() for name, value in calibration_features.items()}
    )
    calibration = AutoCalibrationConfig.minmax(dataset)
    quantizer = ORTQuantizer.from_pretrained(onnx_path.parent, file_name=onnx_path.name)
    work_dir.mkdir(parents=True, exist_ok=True)
    with _quiet_root_logger():  # "Axis 1 is out-of-range for weight ..." per LayerNorm weight
        ranges = quantizer.fit(
            dataset=dataset,
            calibration_config=calibration,
            onnx_augmented_model_name=work_dir / "augmented_model.onnx",
            operators_to_quantize=config.operators_to_quantize,
            batch_size=batch_size,
        )
        quantizer.quantize(
            quantization_config=config, save_dir=save_dir, calibration_tensors_range=ranges
        )
    return _quantized_file(onnx_path, save_dir)


def _quantized_file(onnx_path: Path, save_dir: Path) -> Path:
    path = save_dir / f"{onnx_path.stem}_quantized.onnx"
    if not path.is_file():  # pragma: no cover - ORTQuantizer names it so
        raise ModelLoadError(f"quantization of {onnx_path} wrote no {path.name} in {save_dir}")
    return path
