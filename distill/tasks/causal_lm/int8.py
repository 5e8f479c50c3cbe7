"""int8 for causal LMs: the weight matmuls (dynamic, or weight-only in blocks with
MatMulNBits) and the token-embedding table (with a head tied to it) stored once in int8."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import ModelLoadError
from distill.export import quantize as int8_utils

# The weight matmuls only; the activation x activation matmuls of attention (Q.K^T, P.V) stay
# fp32 (MatMulConstBOnly in int8_utils.DYNAMIC_EXTRA_OPTIONS). Not the embedding Gather here:
# quantized by ORT, a tied table would be dequantized and transposed in full at every
# decoding step (the export feeds the tied head a Transpose of it);
# quantize_embedding_table stores it once in int8 for both uses instead.
INT8_OPERATORS = ("MatMul",)


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
    reduced range: :data:`distill.export.quantize.QUANTIZATION_DEFAULTS`; ``save_dir`` also
    gets its ``quantization.json`` record). "weight-only": :data:`WEIGHT_ONLY` (``save_dir``
    gets ``quantization.json`` with those settings).
    """
    import onnx

    if mode == "weight-only":
        path = _quantize_weight_only(Path(onnx_path), Path(save_dir))
    elif mode == "dynamic":
        config = int8_utils.quantization_config("dynamic", operators=INT8_OPERATORS)
        path = int8_utils.quantize_dynamic(Path(onnx_path), Path(save_dir), config)
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
    with int8_utils.quiet_root_logger():  # a line per node at INFO otherwise
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

    * embeddings: ``Gather(axis=1)`` of the (flattened) ids' columns, transposed back, cast,
      scaled and shaped as the ids plus a hidden axis;
    * tied head: ``DynamicQuantizeLinear(hidden)`` then ``MatMulInteger`` with the table,
      rescaled by the activation scale and the per-token scales (each logit's row is one
      token's embedding, so a per-token scale is exactly per output channel).

    Returns False (graph unchanged) when no embedding ``Gather`` over an initializer is fed
    by ``input_ids`` (directly or through a reshape, as GPT-2's), or the table has other uses.
    """
    from onnx import numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = {out: n for n in graph.node for out in n.output}
    gather = next(
        (
            n
            for n in graph.node
            if n.op_type == "Gather"
            and n.input[0] in initializers
            and len(initializers[n.input[0]].dims) == 2
            and _from_input_ids(n.input[1], producers)
        ),
        None,
    )
    if gather is None:
        return False
    table_name = gather.input[0]
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
    table = numpy_helper.to_array(initializers[table_name]).astype(np.float32)
    quantized, scale = _row_quantize(table)
    stored, scales = f"{table_name}.int8_t", f"{table_name}.row_scale"
    graph.initializer.remove(initializers[table_name])
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.ascontiguousarray(quantized.T), stored),
            numpy_helper.from_array(scale, scales),
        ]
    )
    _gather_int8_rows(graph, gather, stored, scales, hidden=table.shape[1])
    if transpose is not None:
        (head,) = heads
        _int8_head(graph, head, stored, scales)
        graph.node.remove(transpose)
    _toposort(graph)
    return True


# Ops that pass token ids on unchanged in value (a view, a cast): GPT-2 gathers its token
# embeddings from input_ids.view(-1, length), not from input_ids itself.
_ID_VIEWS = ("Reshape", "Cast", "Identity", "Squeeze", "Unsqueeze", "Flatten")


def _from_input_ids(name: str, producers: dict[str, Any]) -> bool:
    """Whether ``name`` is the graph input ``input_ids`` or a view of it (:data:`_ID_VIEWS`)."""
    while name != "input_ids":
        node = producers.get(name)
        if node is None or node.op_type not in _ID_VIEWS:
            return False
        name = node.input[0]
    return True


def _gather_int8_rows(graph: Any, gather: Any, stored: str, scales: str, *, hidden: int) -> None:
    """Replace the embedding ``gather`` by rows of the int8 table ``stored`` [hidden, vocab]
    times their ``scales``, shaped as ``gather``'s (whatever the rank of its ids)."""
    from onnx import TensorProto, helper, numpy_helper

    prefix, ids = "/distill/embedding_int8", gather.input[1]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.asarray([-1], np.int64), f"{prefix}/last"),
            numpy_helper.from_array(np.asarray([hidden], np.int64), f"{prefix}/hidden"),
        ]
    )
    nodes = [
        helper.make_node("Reshape", [ids, f"{prefix}/last"], [f"{prefix}/flat_ids"]),
        helper.make_node("Gather", [stored, f"{prefix}/flat_ids"], [f"{prefix}/cols"], axis=1),
        helper.make_node("Transpose", [f"{prefix}/cols"], [f"{prefix}/rows"], perm=[1, 0]),
        helper.make_node("Cast", [f"{prefix}/rows"], [f"{prefix}/rows_f"], to=TensorProto.FLOAT),
        helper.make_node("Gather", [scales, f"{prefix}/flat_ids"], [f"{prefix}/scale"], axis=0),
        helper.make_node("Unsqueeze", [f"{prefix}/scale", f"{prefix}/last"], [f"{prefix}/scale_u"]),
        helper.make_node("Mul", [f"{prefix}/rows_f", f"{prefix}/scale_u"], [f"{prefix}/flat"]),
        helper.make_node("Shape", [ids], [f"{prefix}/ids_shape"]),
        helper.make_node(
            "Concat", [f"{prefix}/ids_shape", f"{prefix}/hidden"], [f"{prefix}/shape"], axis=0
        ),
        helper.make_node("Reshape", [f"{prefix}/flat", f"{prefix}/shape"], [gather.output[0]]),
    ]
    graph.node.remove(gather)
    graph.node.extend(nodes)


def _int8_head(graph: Any, head: Any, stored: str, scales: str) -> None:
    """Replace the tied ``head`` MatMul by an int8 one over the table ``stored``."""
    from onnx import TensorProto, helper

    hidden, logits = head.input[0], head.output[0]
    prefix = "/distill/head_int8"
    nodes = [
        helper.make_node(
            "DynamicQuantizeLinear",
            [hidden],
            [f"{prefix}/q", f"{prefix}/q_scale", f"{prefix}/q_zero"],
        ),
        helper.make_node(
            "MatMulInteger", [f"{prefix}/q", stored, f"{prefix}/q_zero"], [f"{prefix}/int"]
        ),
        helper.make_node("Cast", [f"{prefix}/int"], [f"{prefix}/f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [f"{prefix}/f", f"{prefix}/q_scale"], [f"{prefix}/a"]),
        helper.make_node("Mul", [f"{prefix}/a", scales], [logits]),
    ]
    graph.node.remove(head)
    graph.node.extend(nodes)


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
