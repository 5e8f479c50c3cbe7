"""ONNX for causal LMs: export with a KV cache (optimum, ``text-generation-with-past``),
logit parity against PyTorch on the first step and on a step with past, dynamic int8
quantization, and perplexity with onnxruntime.

Running the exported model goes through :class:`distill.generation.generate.OnnxCausalLM`,
the torch-free runner that generation uses, so parity and perplexity check the code path
that serves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import ModelLoadError, ParityError
from distill.generation.generate import MODEL_FILE, OnnxCausalLM
from distill.latency import ort_session

TASK = "text-generation-with-past"
# The weight matmuls only; the activation x activation matmuls of attention (Q.K^T, P.V) stay
# fp32 (MatMulConstBOnly in onnx_utils.DYNAMIC_EXTRA_OPTIONS). Not the embedding Gather: with
# tied embeddings optimum's export feeds the head a Transpose of the embedding table, so an
# int8 table would be dequantized and transposed in full at every decoding step. For the same
# reason a tied head is no constant MatMul weight and stays fp32.
INT8_OPERATORS = ("MatMul",)


def export_causal_lm(model_dir: Path, out_dir: Path, *, opset: int | None = None) -> Path:
    """Export a ``save_pretrained`` causal LM to ``out_dir/model.onnx`` with KV-cache inputs.

    One graph serves both steps: the prompt with an empty past, then one token at a time.
    optimum also copies the config, generation config and tokenizer files into ``out_dir``,
    which makes it a folder :meth:`OnnxCausalLM.load` reads. optimum's own validation is off:
    :func:`check_causal_parity` does it.
    """
    from optimum.exporters.onnx import main_export

    main_export(
        str(model_dir),
        output=out_dir,
        task=TASK,
        opset=opset,
        device="cpu",
        do_validation=False,
        local_files_only=True,
        library_name="transformers",
    )
    path = Path(out_dir) / MODEL_FILE
    if not path.is_file():
        raise ModelLoadError(f"{model_dir}: the ONNX export wrote no {MODEL_FILE} in {out_dir}")
    return path


def _runner(model: OnnxCausalLM | Path, threads: int | None = None) -> OnnxCausalLM:
    if isinstance(model, OnnxCausalLM):
        return model
    return OnnxCausalLM(ort_session(model, threads), name=str(model))


def causal_parity_differences(
    onnx_model: OnnxCausalLM | Path, torch_model: Any, input_ids: Sequence[int]
) -> dict[str, float]:
    """Max |logit difference| between ONNX Runtime and PyTorch: on the first step (all of
    ``input_ids`` but the last, empty past) and on the next step (the last id, fed with the
    ONNX cache of the first step, against PyTorch on the whole sequence)."""
    import torch

    if len(input_ids) < 2:
        raise ValueError("parity needs at least two token ids (a prompt and one more step)")
    lm = _runner(onnx_model)
    ids = np.asarray([list(input_ids)], dtype=np.int64)
    first_logits, past = lm.forward(ids[:, :-1])
    step_logits, _ = lm.forward(ids[:, -1:], past=past)
    with torch.no_grad():
        reference = torch_model(input_ids=torch.from_numpy(ids)).logits.float().numpy()
    return {
        "logits_first_step": float(np.abs(first_logits - reference[:, :-1]).max()),
        "logits_with_past": float(np.abs(step_logits - reference[:, -1:]).max()),
    }


def check_causal_parity(
    onnx_model: OnnxCausalLM | Path,
    torch_model: Any,
    input_ids: Sequence[int],
    *,
    tolerance: float,
) -> dict[str, float]:
    """:func:`causal_parity_differences`, raising :class:`ParityError` beyond ``tolerance``."""
    differences = causal_parity_differences(onnx_model, torch_model, input_ids)
    if any(not d <= tolerance for d in differences.values()):  # NaN counts as a failure
        name = onnx_model.name if isinstance(onnx_model, OnnxCausalLM) else str(onnx_model)
        raise ParityError(name, differences, tolerance)
    return differences


def quantize_int8(onnx_path: Path, save_dir: Path) -> Path:
    """Dynamic int8 quantization (weights QInt8, per channel, reduced range: the settings of
    :data:`distill.onnx_utils.QUANTIZATION_DEFAULTS`) of the weight matmuls (see
    :data:`INT8_OPERATORS`); returns ``save_dir/<stem>_quantized.onnx``. ``save_dir`` also gets ``ort_config.json``.
    """
    from distill import onnx_utils

    config = onnx_utils.quantization_config("dynamic", operators=INT8_OPERATORS)
    return onnx_utils.quantize_dynamic(Path(onnx_path), Path(save_dir), config)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def onnx_perplexity(
    onnx_model: OnnxCausalLM | Path,
    sequences: Iterable[Sequence[int]],
    *,
    threads: int | None = None,
) -> dict[str, float]:
    """Perplexity of an ONNX causal LM over token id sequences (each scored from its second
    token on, one forward pass per sequence, no padding): ``exp(summed nll / tokens)``.

    Returns ``nll`` (summed, nats), ``tokens`` and ``perplexity``; the same pooling as
    :func:`distill.generation.losses.mean_token_nll`, so the two compare directly.
    """
    lm = _runner(onnx_model, threads)
    total, count = 0.0, 0
    for sequence in sequences:
        ids = np.asarray([list(sequence)], dtype=np.int64)
        if ids.shape[1] < 2:
            continue  # nothing to predict
        logits, _ = lm.forward(ids)
        log_probs = _log_softmax(logits[0, :-1])
        targets = ids[0, 1:]
        total -= float(log_probs[np.arange(targets.size), targets].sum())
        count += int(targets.size)
    if count == 0:
        raise ValueError("no sequence of two or more tokens to score")
    return {"nll": total, "tokens": count, "perplexity": float(np.exp(total / count))}
