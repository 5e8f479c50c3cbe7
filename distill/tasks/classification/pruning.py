"""CLS pruning: the last transformer layer of a fused sequence classifier computed for the
first token only (the one its head reads), after that layer's attention."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# Operators that treat every token alike and independently (given weights/constants that do
# not vary along the sequence): the tail of the last layer may run on one token through them.
_TOKENWISE_OPS = frozenset(
    {
        "Add",
        "BiasGelu",
        "Cast",
        "Div",
        "Erf",
        "FastGelu",
        "Gelu",
        "LayerNormalization",
        "MatMul",
        "Mul",
        "Pow",
        "QuickGelu",
        "Relu",
        "SimplifiedLayerNormalization",
        "SkipLayerNormalization",
        "SkipSimplifiedLayerNormalization",
        "Sqrt",
        "Sub",
        "Tanh",
    }
)


def prune_to_first_token(model_path: Path) -> dict[str, Any]:
    """Make the last transformer layer of a fused classifier run on the first token only,
    after its attention (rewrites ``model_path`` in place when it applies).

    A sequence classifier reads one vector of the last layer: the first token's (the BERT
    pooler, the DistilBERT/MPNet heads: ``Gather(axis=1, index 0)``). The last layer still
    needs every token's keys and values for that token's attention, but everything after the
    attention (output projection, residuals, layer norms, feed-forward) works token by token,
    so computing it for the first token alone gives the same logits with about a third
    fewer matmul operations in a 2-layer student. Applied only when the graph has that
    shape: the last fused ``Attention`` node followed by token-wise operators (
    :data:`_TOKENWISE_OPS`, weights and constants that do not vary along the sequence) whose
    only exits are first-token ``Gather`` nodes. Returns what was done, or why not.
    """
    import onnx

    model = onnx.load(str(model_path))
    graph = model.graph
    nodes = list(graph.node)
    attentions = [
        i
        for i, n in enumerate(nodes)
        if n.op_type in ("Attention", "MultiHeadAttention") and n.domain == "com.microsoft"
    ]
    if not attentions:
        return {"applied": False, "reason": "no fused Attention node"}
    at = attentions[-1]
    attention = nodes[at]
    if len([o for o in attention.output if o]) != 1:
        return {"applied": False, "reason": "the last Attention has more than one output"}
    found = _first_token_tail(graph, nodes, at)
    if isinstance(found, str):
        return {"applied": False, "reason": found}
    tail, readers, first = found
    _cut_to_first_token(graph, nodes, at, tail, first)
    onnx.save(model, str(model_path))
    return {
        "applied": True,
        "attention": attention.name,
        "first_token_nodes": len(tail),
        "readers": [n.name for n in readers],
    }


def _constants(graph: Any) -> tuple[dict[str, list[int]], dict[str, np.ndarray]]:
    """The shape of every initializer and ``Constant`` output, and the values of the scalar
    (or one-element) ones: what tells token-wise inputs and first-token indices apart."""
    from onnx import numpy_helper

    shapes = {init.name: list(init.dims) for init in graph.initializer}
    values: dict[str, np.ndarray] = {
        init.name: numpy_helper.to_array(init)
        for init in graph.initializer
        if list(init.dims) in ([], [1])
    }
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = list(attr.t.dims)
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return shapes, values


def _first_token_tail(
    graph: Any, nodes: list[Any], at: int
) -> tuple[list[Any], list[Any], dict[str, None]] | str:
    """The token-wise nodes after the attention ``nodes[at]`` (the tail), the first-token
    ``Gather`` nodes that read them, and every tensor the tail touches; or why the graph
    does not have that shape."""
    shapes, values = _constants(graph)
    attention = nodes[at]
    first = {attention.output[0]: None, attention.input[0]: None}  # tensors cut to token 0
    tail, readers = [], []
    for node in nodes[at + 1 :]:
        if not any(name in first for name in node.input):
            continue
        if _reads_first_token(node, values):
            readers.append(node)
            continue
        problem = _not_tokenwise(node, first, shapes)
        if problem:
            return problem
        tail.append(node)
        first.update(dict.fromkeys(o for o in node.output if o))
    outputs = {o.name for o in graph.output}
    if not tail or not readers or outputs & set(first):
        return "the last layer's output is not read at token 0 only"
    return tail, readers, first


def _not_tokenwise(node: Any, first: dict[str, None], shapes: dict[str, list[int]]) -> str | None:
    """Why ``node`` (reading a tensor of ``first``) may not run on the first token alone, or None."""
    if node.op_type not in _TOKENWISE_OPS:
        return f"{node.op_type} {node.name!r} is not token-wise"
    for position, name in enumerate(node.input):
        if not name or name in first:
            continue
        if name not in shapes:  # another activation: not provably token-wise
            return f"{node.name!r} mixes in {name!r}"
        weights = node.op_type == "MatMul" and position == 1 and len(shapes[name]) == 2
        if not weights and any(d != 1 for d in shapes[name][:-1]):
            return f"{name!r} varies along the sequence"
    if node.op_type == "MatMul" and node.input[1] in first:
        return f"{node.name!r} multiplies two activations"
    return None


def _cut_to_first_token(
    graph: Any, nodes: list[Any], at: int, tail: list[Any], first: dict[str, None]
) -> None:
    """Slice the attention's output and its residual input to token 0 and feed the tail
    those slices (``graph`` is rewritten in place)."""
    from onnx import helper, numpy_helper

    attention = nodes[at]
    cut = {}
    for name in (attention.output[0], attention.input[0]):
        cut[name] = f"{name}__first_token"
    starts, ends, axes = "distill_first_token_start", "distill_first_token_end", "distill_seq_axis"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([0], dtype=np.int64), starts),
            numpy_helper.from_array(np.array([1], dtype=np.int64), ends),
            numpy_helper.from_array(np.array([1], dtype=np.int64), axes),
        ]
    )
    slices = [
        helper.make_node(
            "Slice", [name, starts, ends, axes], [cut[name]], name=f"{name}/first_token"
        )
        for name in cut
    ]
    for node in tail:
        for position, name in enumerate(node.input):
            if name in cut:
                node.input[position] = cut[name]
    # shapes recorded for the tail's tensors no longer hold (sequence length is now 1)
    stale = [vi for vi in graph.value_info if vi.name in first]
    for vi in stale:
        graph.value_info.remove(vi)
    graph.ClearField("node")
    graph.node.extend([*nodes[: at + 1], *slices, *nodes[at + 1 :]])


def _reads_first_token(node: Any, values: dict[str, np.ndarray]) -> bool:
    """Whether ``node`` is ``Gather(x, 0, axis=1)``: the first token of a (batch, seq, ...) tensor."""
    if node.op_type != "Gather" or len(node.input) != 2 or node.input[1] not in values:
        return False
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    index = values[node.input[1]]
    return axis == 1 and index.size == 1 and int(index.reshape(-1)[0]) == 0
