"""The static student as an ONNX graph, written from its weights: ``input_ids`` ->
Gather(table) -> masked (weighted) mean -> head -> ``logits``, with the same inputs as a
transformer bundle's (``input_ids``, ``attention_mask``), so every runner serves it as is.

The int8 form stores the table as int8 with one float scale per row (symmetric:
``scale = max|row| / 127``), dequantized after the gather: each element is off by at most
half its row's scale, and the file is about a quarter of fp32's. The head stays fp32 (it is
a few thousand numbers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OPSET = 17


def quantize_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8: ``(q, scales)`` with ``table ~= q * scales[:, None]``."""
    peak = np.abs(table).max(axis=1)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(table / scales[:, None]), -127, 127).astype(np.int8)
    return q, scales


def _head_nodes(head: list[tuple[np.ndarray, np.ndarray]], start: str) -> tuple[list, list]:
    """MatMul + Add per linear layer (ReLU between), from ``start`` to ``logits``."""
    from onnx import helper, numpy_helper

    nodes, weights, current = [], [], start
    for i, (weight, bias) in enumerate(head):
        last = i == len(head) - 1
        weights += [
            numpy_helper.from_array(np.ascontiguousarray(weight.T, dtype=np.float32), f"head{i}.w"),
            numpy_helper.from_array(bias.astype(np.float32), f"head{i}.b"),
        ]
        nodes += [
            helper.make_node("MatMul", [current, f"head{i}.w"], [f"head{i}.mm"]),
            helper.make_node(
                "Add", [f"head{i}.mm", f"head{i}.b"], ["logits" if last else f"head{i}.z"]
            ),
        ]
        if not last:
            nodes.append(helper.make_node("Relu", [f"head{i}.z"], [f"head{i}.a"]))
            current = f"head{i}.a"
    return nodes, weights


def static_graph(
    table: np.ndarray,
    head: list[tuple[np.ndarray, np.ndarray]],
    token_weights: np.ndarray | None = None,
    *,
    int8: bool = False,
) -> bytes:
    """The serialized ONNX model (``head``: ``(weight [out, in], bias)`` per linear layer)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # The mean as one batched MatMul: each text's weights over its tokens (mask / count,
    # times the row scales of an int8 table) times its gathered rows; no (batch, tokens,
    # width) temporaries beyond the rows themselves.
    nodes = [helper.make_node("Cast", ["attention_mask"], ["mask_real"], to=TensorProto.FLOAT)]
    weights = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "token_axis"),
        numpy_helper.from_array(np.array(1e-6, dtype=np.float32), "tiny"),
    ]
    mask = "mask_real"
    if token_weights is not None:
        weights.append(numpy_helper.from_array(token_weights.astype(np.float32), "token_weight"))
        nodes += [
            helper.make_node("Gather", ["token_weight", "input_ids"], ["log_weight"]),
            helper.make_node("Exp", ["log_weight"], ["weight"]),
            helper.make_node("Mul", ["mask_real", "weight"], ["mask_weighted"]),
        ]
        mask = "mask_weighted"
    nodes += [
        helper.make_node("ReduceSum", [mask, "token_axis"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "tiny"], ["count_safe"]),
        helper.make_node("Div", [mask, "count_safe"], ["share"]),
    ]
    share = "share"
    if int8:
        q, scales = quantize_rows(table)
        weights += [
            numpy_helper.from_array(q, "table_int8"),
            numpy_helper.from_array(scales, "table_scale"),
        ]
        nodes += [
            helper.make_node("Gather", ["table_scale", "input_ids"], ["row_scale"]),
            helper.make_node("Mul", ["share", "row_scale"], ["share_scaled"]),
            helper.make_node("Gather", ["table_int8", "input_ids"], ["rows_int8"]),
            helper.make_node("Cast", ["rows_int8"], ["rows"], to=TensorProto.FLOAT),
        ]
        share = "share_scaled"
    else:
        weights.append(numpy_helper.from_array(table.astype(np.float32), "table"))
        nodes.append(helper.make_node("Gather", ["table", "input_ids"], ["rows"]))
    nodes += [
        helper.make_node("Unsqueeze", [share, "token_axis"], ["share3"]),
        helper.make_node("MatMul", ["share3", "rows"], ["pooled3"]),
        helper.make_node("Squeeze", ["pooled3", "token_axis"], ["pooled"]),
    ]
    head_nodes, head_weights = _head_nodes(head, "pooled")
    graph = helper.make_graph(
        nodes + head_nodes,
        "distill-static-student",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info(
                "attention_mask", TensorProto.INT64, ["batch", "sequence"]
            ),
        ],
        [
            helper.make_tensor_value_info(
                "logits", TensorProto.FLOAT, ["batch", head[-1][0].shape[0]]
            )
        ],
        weights + head_weights,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="distill"
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def export_static(model: object, path: Path, *, int8: bool = False) -> Path:
    """Write a :class:`~distill.tasks.classification.static.model.StaticClassifier` as ONNX."""
    from torch import nn

    assert isinstance(model, nn.Module)
    linear = [m for m in model.head.modules() if isinstance(m, nn.Linear)]  # type: ignore[union-attr]
    head = [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in linear]
    weights = model.token_weights  # type: ignore[attr-defined]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        static_graph(
            model.embeddings.weight.detach().numpy(),  # type: ignore[attr-defined]
            head,
            None if weights is None else weights.detach().numpy(),
            int8=int8,
        )
    )
    return path


def int8_table_graph(fp32_path: Path, out_path: Path) -> Path:
    """The int8-table candidate of an fp32 static graph (same head, same pooling)."""
    import onnx
    from onnx import numpy_helper

    weights = {
        init.name: numpy_helper.to_array(init)
        for init in onnx.load(str(fp32_path)).graph.initializer
    }
    head = []
    while f"head{len(head)}.w" in weights:
        i = len(head)
        head.append((weights[f"head{i}.w"].T, weights[f"head{i}.b"]))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(
        static_graph(weights["table"], head, weights.get("token_weight"), int8=True)
    )
    return out_path
