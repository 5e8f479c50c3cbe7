"""ONNX helpers: export with optimum, parity against PyTorch, int8 quantization, batched
inference with plain onnxruntime, and the deployable bundle's manifest.

Everything here tokenizes the same way (``tokenizer(texts, truncation=True,
max_length=..., padding=..., return_tensors="np")``) and feeds a graph only the inputs it
declares, so BERT (with ``token_type_ids``) and MPNet (without) are handled alike.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from distill.artifacts import sha256_file, write_json_atomic
from distill.errors import ModelLoadError, ParityError

log = logging.getLogger("distill")

SESSION_THREADS = 2
BUNDLE_FORMAT = "distill-onnx-bundle"
BUNDLE_FORMAT_VERSION = 1
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
_NUMPY_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}


# --------------------------------------------------------------------------- export


def export_onnx(model_dir: Path, out_dir: Path, *, opset: int | None = None) -> Path:
    """Export a ``save_pretrained`` sequence classifier to ``out_dir/model.onnx`` (fp32).

    optimum's own validation is off: :func:`check_parity` does it on real texts.
    """
    from optimum.exporters.onnx import main_export

    main_export(
        str(model_dir),
        output=out_dir,
        task="text-classification",
        opset=opset,
        device="cpu",
        do_validation=False,
        local_files_only=True,
        library_name="transformers",
    )
    path = out_dir / "model.onnx"
    if not path.is_file():  # pragma: no cover - optimum always writes it for this task
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


# --------------------------------------------------------------------------- inference


def make_session(model_path: Path, threads: int = SESSION_THREADS) -> Any:
    """A CPU ``onnxruntime.InferenceSession`` with the thread count set explicitly."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(
        str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
    )


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
) -> np.ndarray:
    """Logits of an ONNX classifier over ``texts`` (batched, each batch padded to its longest)."""
    session = make_session(model_path, threads)
    output = _logits_output(session)
    chunks = []
    for start in range(0, len(texts), batch_size):
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


def _logits_output(session: Any) -> str:
    names = [o.name for o in session.get_outputs()]
    return "logits" if "logits" in names else names[0]


def latency_ms(
    model_path: Path,
    feeds: dict[str, np.ndarray],
    *,
    runs: int = 30,
    warmup: int = 3,
    threads: int = SESSION_THREADS,
) -> float:
    """Median wall time (ms) of one ``session.run`` on ``feeds``."""
    session = make_session(model_path, threads)
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - started) * 1000.0)
    return float(statistics.median(times))


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
) -> Any:
    """optimum's AVX2 preset (``AutoQuantizationConfig.avx2``) with the weight type set.

    The preset quantizes weights as QUInt8; ``weights_dtype="QInt8"`` selects the faster
    u8 x s8 kernels of onnxruntime's CPU backend (see :data:`QUANTIZATION_DEFAULTS`).
    """
    from onnxruntime.quantization import QuantType
    from optimum.onnxruntime import AutoQuantizationConfig

    config = AutoQuantizationConfig.avx2(
        is_static=(mode == "static"), per_channel=per_channel, reduce_range=reduce_range
    )
    config.weights_dtype = QuantType[weights_dtype]
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


def quantize_dynamic(onnx_path: Path, save_dir: Path, config: Any) -> Path:
    """Dynamic int8 quantization with optimum's ``ORTQuantizer``; returns the quantized file.

    ``save_dir`` also receives ``ort_config.json`` (the settings), ``config.json`` and the
    tokenizer files next to the model.
    """
    from optimum.onnxruntime import ORTQuantizer

    quantizer = ORTQuantizer.from_pretrained(onnx_path.parent, file_name=onnx_path.name)
    quantizer.quantize(quantization_config=config, save_dir=save_dir)
    return _quantized_file(onnx_path, save_dir)


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


# --------------------------------------------------------------------------- bundle


def write_bundle_manifest(
    bundle: Path, roles: dict[str, str], info: dict[str, Any]
) -> dict[str, Any]:
    """Hash every file of ``bundle`` and write ``bundle/manifest.json`` (atomically, last).

    ``roles`` maps each file (relative POSIX path) to its role; a file in the folder without
    a role, or a role without a file, is a bug and raises ``ValueError``. ``files`` has the
    shape :func:`distill.artifacts.verify_files` checks.
    """
    present = {
        p.relative_to(bundle).as_posix()
        for p in bundle.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }
    if present != set(roles):
        raise ValueError(
            f"{bundle}: files without a role {sorted(present - set(roles))}, "
            f"roles without a file {sorted(set(roles) - present)}"
        )
    files = {
        rel: {
            "role": roles[rel],
            "sha256": sha256_file(bundle / rel),
            "bytes": (bundle / rel).stat().st_size,
        }
        for rel in sorted(roles)
    }
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        **info,
        "files": files,
    }
    write_json_atomic(bundle / "manifest.json", manifest)
    return manifest
