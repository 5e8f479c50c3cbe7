"""ONNX for causal LMs: export with a KV cache (optimum, ``text-generation-with-past``),
logit parity against PyTorch on the first step and on a step with past, int8 quantization
(dynamic, or weight-only in blocks), and perplexity with onnxruntime.

Running the exported model goes through :class:`distill.tasks.causal_lm.generate.OnnxCausalLM`,
the torch-free runner that generation uses, so parity and perplexity check the code path
that serves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import ModelLoadError, ParityError
from distill.export import onnx as onnx_utils
from distill.latency import ort_session
from distill.tasks.causal_lm.generate import OnnxCausalLM
from distill.tasks.causal_lm.task import CausalLM

# The weight matmuls only; the activation x activation matmuls of attention (Q.K^T, P.V) stay
# fp32 (MatMulConstBOnly in onnx_utils.DYNAMIC_EXTRA_OPTIONS). Not the embedding Gather here:
# quantized by ORT, a tied table would be dequantized and transposed in full at every
# decoding step (optimum feeds the tied head a Transpose of it);
# quantize_embedding_table stores it once in int8 for both uses instead.
INT8_OPERATORS = ("MatMul",)


def export_causal_lm(model_dir: Path, out_dir: Path, *, opset: int | None = None) -> Path:
    """Export a ``save_pretrained`` causal LM to ``out_dir/model.onnx`` with KV-cache inputs.

    One graph serves both steps: the prompt with an empty past, then one token at a time.
    optimum also copies the config, generation config and tokenizer files into ``out_dir``,
    which makes it a folder :meth:`OnnxCausalLM.load` reads; :func:`check_causal_parity`
    checks it.
    """
    return onnx_utils.export_onnx(model_dir, out_dir, task=CausalLM.export_task, opset=opset)


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


# Weight-only int8 (ONNX Runtime's MatMulNBits): each weight matrix in blocks of 32 input
# rows with one symmetric scale per block and column; activations stay float between ops and
# accuracy_level 4 lets the kernel quantize them per block at run time. Why not dynamic int8
# for LMs: its activations get one scale per tensor, and the inputs of SmolLM2's down_proj
# carry outliers; measured on a 20-layer SmolLM2 student (test perplexity 150.2 fp32):
# dynamic 229.4 (+53%), weight-only block 32 153.8 (+2.4%), int4 block 32 188.1 (+25%).
WEIGHT_ONLY = {"bits": 8, "block_size": 32, "is_symmetric": True, "accuracy_level": 4}


def describe_quantization(mode: str | None) -> str | None:
    """One line for the report saying what ``export.quantization = mode`` did to the weights."""
    if mode == "weight-only":
        return (
            f"weight-only: int{WEIGHT_ONLY['bits']} weight matmuls (MatMulNBits, blocks of "
            f"{WEIGHT_ONLY['block_size']}, symmetric; accuracy level {WEIGHT_ONLY['accuracy_level']}: "
            "activations quantized per block at run time); the token-embedding table in int8 "
            "where the graph gathers from one"
        )
    if mode == "dynamic":
        return (
            "dynamic: int8 weight matmuls, activations quantized at run time; the token-embedding "
            "table in int8 where the graph gathers from one"
        )
    return None if mode is None else "none: fp32 only"


def quantize_int8(onnx_path: Path, save_dir: Path, mode: str = "dynamic") -> Path:
    """int8 weight matmuls (see :data:`INT8_OPERATORS`), then the embedding table (and a head
    tied to it) in int8 too (:func:`quantize_embedding_table`); returns
    ``save_dir/<stem>_quantized.onnx``.

    ``mode`` "dynamic": ONNX Runtime's dynamic quantization (weights QInt8, per channel,
    reduced range: :data:`distill.export.onnx.QUANTIZATION_DEFAULTS`; ``save_dir`` also gets
    optimum's ``ort_config.json``). "weight-only": :data:`WEIGHT_ONLY` (``save_dir`` gets
    ``quantization.json`` with those settings).
    """
    import onnx

    if mode == "weight-only":
        path = _quantize_weight_only(Path(onnx_path), Path(save_dir))
    elif mode == "dynamic":
        config = onnx_utils.quantization_config("dynamic", operators=INT8_OPERATORS)
        path = onnx_utils.quantize_dynamic(Path(onnx_path), Path(save_dir), config)
    else:
        raise ValueError(f"int8 mode {mode!r}: expected 'dynamic' or 'weight-only'")
    model = onnx.load(str(path))
    if quantize_embedding_table(model):
        onnx.save(model, str(path))
    return path


def _quantize_weight_only(onnx_path: Path, save_dir: Path) -> Path:
    import json

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    save_dir.mkdir(parents=True, exist_ok=True)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(onnx_path)), **WEIGHT_ONLY)
    quantizer.process()
    path = save_dir / f"{onnx_path.stem}_quantized.onnx"
    onnx.save(quantizer.model.model, str(path))
    settings = {"mode": "weight-only", "operator": "MatMulNBits", **WEIGHT_ONLY}
    (save_dir / "quantization.json").write_text(
        json.dumps(settings, indent=1) + "\n", encoding="utf-8"
    )
    return path


def _row_quantize(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row: ``table ~= q * scale[:, None]``."""
    scale = np.abs(table).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    quantized = np.clip(np.rint(table / scale[:, None]), -127, 127).astype(np.int8)
    return quantized, scale.astype(np.float32)


def quantize_embedding_table(model: Any) -> bool:
    """Store the token embedding table once, in int8 with a scale per token, in place.

    In small LMs the table is a fifth or more of the weights and, tied, also the output head;
    the int8 matmul pass leaves both in fp32 (the tied head multiplies by a ``Transpose`` of
    the table, not a constant). The table is stored transposed, [hidden, vocab] int8:

    * embeddings: ``Gather(axis=1)`` of the ids' columns, transposed back, cast and scaled;
    * tied head: ``DynamicQuantizeLinear(hidden)`` then ``MatMulInteger`` with the table,
      rescaled by the activation scale and the per-token scales (each logit's row is one
      token's embedding, so a per-token scale is exactly per output channel).

    Returns False (graph unchanged) when no embedding ``Gather`` over an initializer is fed
    by ``input_ids``.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    gather = next(
        (
            n
            for n in graph.node
            if n.op_type == "Gather"
            and n.input[0] in initializers
            and n.input[1] == "input_ids"
            and len(initializers[n.input[0]].dims) == 2
        ),
        None,
    )
    if gather is None:
        return False
    table_name = gather.input[0]
    table = numpy_helper.to_array(initializers[table_name]).astype(np.float32)
    quantized, scale = _row_quantize(table)
    transpose = next(
        (n for n in graph.node if n.op_type == "Transpose" and list(n.input) == [table_name]),
        None,
    )
    heads = (
        [n for n in graph.node if n.op_type == "MatMul" and n.input[1] == transpose.output[0]]
        if transpose is not None
        else []
    )
    users = [
        n for n in graph.node if table_name in n.input and n is not gather and n is not transpose
    ]
    if users or (transpose is not None and len(heads) != 1):
        return False  # the table feeds something else too: leave the graph as it is
    stored, scales = f"{table_name}.int8_t", f"{table_name}.row_scale"
    graph.initializer.remove(initializers[table_name])
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.ascontiguousarray(quantized.T), stored),
            numpy_helper.from_array(scale, scales),
        ]
    )
    prefix = "/distill/embedding_int8"
    embedded = gather.output[0]
    nodes = [
        helper.make_node("Gather", [stored, "input_ids"], [f"{prefix}/cols"], axis=1),
        helper.make_node("Transpose", [f"{prefix}/cols"], [f"{prefix}/rows"], perm=[1, 2, 0]),
        helper.make_node("Cast", [f"{prefix}/rows"], [f"{prefix}/rows_f"], to=TensorProto.FLOAT),
        helper.make_node("Gather", [scales, "input_ids"], [f"{prefix}/scale"], axis=0),
        helper.make_node("Unsqueeze", [f"{prefix}/scale", f"{prefix}/last"], [f"{prefix}/scale_u"]),
        helper.make_node("Mul", [f"{prefix}/rows_f", f"{prefix}/scale_u"], [embedded]),
    ]
    graph.initializer.append(numpy_helper.from_array(np.asarray([-1], np.int64), f"{prefix}/last"))
    graph.node.remove(gather)
    graph.node.extend(nodes)
    if transpose is not None:
        (head,) = heads
        hidden, logits = head.input[0], head.output[0]
        head_prefix = "/distill/head_int8"
        head_nodes = [
            helper.make_node(
                "DynamicQuantizeLinear",
                [hidden],
                [f"{head_prefix}/q", f"{head_prefix}/q_scale", f"{head_prefix}/q_zero"],
            ),
            helper.make_node(
                "MatMulInteger",
                [f"{head_prefix}/q", stored, f"{head_prefix}/q_zero"],
                [f"{head_prefix}/int"],
            ),
            helper.make_node(
                "Cast", [f"{head_prefix}/int"], [f"{head_prefix}/f"], to=TensorProto.FLOAT
            ),
            helper.make_node(
                "Mul", [f"{head_prefix}/f", f"{head_prefix}/q_scale"], [f"{head_prefix}/a"]
            ),
            helper.make_node("Mul", [f"{head_prefix}/a", scales], [logits]),
        ]
        graph.node.remove(head)
        graph.node.remove(transpose)
        graph.node.extend(head_nodes)
    _toposort(graph)
    return True


def _toposort(graph: Any) -> None:
    """Reorder ``graph.node`` so each node follows the producers of its inputs (ONNX requires
    it), keeping the existing order where it already does (Kahn's algorithm)."""
    import heapq

    nodes = list(graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    waiting = [0] * len(nodes)
    consumers: dict[int, list[int]] = {}
    for i, node in enumerate(nodes):
        sources = {producer[name] for name in node.input if name in producer}
        waiting[i] = len(sources)
        for source in sources:
            consumers.setdefault(source, []).append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    ordered = []
    while ready:
        i = heapq.heappop(ready)
        ordered.append(nodes[i])
        for j in consumers.get(i, []):
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(ordered) != len(nodes):
        raise ModelLoadError("int8 embedding rewrite left a cycle in the graph")
    del graph.node[:]
    graph.node.extend(ordered)


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
    :func:`distill.tasks.causal_lm.losses.mean_token_nll`, so the two compare directly.
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
