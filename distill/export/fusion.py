"""Graph fusion for onnxruntime on CPU: the transformer fusions (Attention,
SkipLayerNormalization, BiasGelu, ...) of a dynamo-exported encoder, the fused attention fed
the padding mask so that int8 can quantize it, then the task's own rewrites of the fused graph
(:class:`GraphRewrite`).

Why onnxscript's ``optimize_for_ort`` and not onnxruntime's ``optimize_model``: the latter's
patterns were written for TorchScript-shaped graphs; on a dynamo graph it fuses the layer
norms and GELU but no attention (onnxruntime PRs #27556, #23887). onnxscript's rewriter is
Microsoft's path for dynamo graphs and fuses attention too. The counts of fused operators are
recorded (and tested), never assumed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.export.exporter import op_counts, quiet_exporter

log = logging.getLogger("distill")

FUSION_TOOL = "onnxscript.rewriter.ort_fusions.optimize_for_ort"
MASK_INDEX = "distill_mask_index"
# Largest |difference| of logits tolerated between the graph before and after the mask rewrite
# (the fused Attention masks with -10000 where the export adds the float minimum).
MASK_REWRITE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class GraphRewrite:
    """A task's own rewrite of the fused graph, run in place after the fusions (say, a layer
    cut down to the tokens its head reads): what ``apply`` returns is recorded under ``key``
    in the optimization settings, and logs name it ``label``."""

    key: str
    label: str
    apply: Callable[[Path], dict[str, Any]]


def optimize_graph(
    onnx_path: Path,
    save_dir: Path,
    *,
    level: int,
    rewrites: Sequence[GraphRewrite] = (),
) -> tuple[Path, dict[str, Any]]:
    """Fuse ``onnx_path`` for onnxruntime into ``save_dir/<stem>_optimized.onnx``: onnxscript's
    ORT fusions, :func:`attention_mask_index` (so the quantizer can make the fused attention
    ``QAttention``), then each of ``rewrites``. Returns the path and the settings to record
    (fused operator counts before/after, what each rewrite did). ``level`` (1, 2, 99) is
    recorded; sessions apply onnxruntime's own graph optimizations at load whatever it is."""
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    if level not in (1, 2, 99):
        raise ValueError(f"optimization level must be 1, 2 or 99 (got {level})")
    save_dir.mkdir(parents=True, exist_ok=True)
    path = save_dir / f"{onnx_path.stem}_optimized.onnx"
    model = ir.load(str(onnx_path))
    with quiet_exporter():
        model, fusion_counts = optimize_for_ort(model)
    ir.save(model, str(path))
    folded = fold_constant_concats(path)
    mask_index = attention_mask_index(path)
    counts = op_counts(path)
    settings: dict[str, Any] = {
        "tool": FUSION_TOOL,
        "level": level,
        "nodes": sum(counts.values()),
        "nodes_before": sum(op_counts(onnx_path).values()),
        "fusions": {k: int(v) for k, v in fusion_counts.items() if v},
        "mask_index": mask_index,
        "folded_concats": folded,
        "fused_operators": {k: v for k, v in counts.items() if k.startswith("com.microsoft:")},
    }
    for rewrite in rewrites:
        settings[rewrite.key] = rewrite.apply(path)
    return path, settings


def fold_constant_concats(path: Path) -> int:
    """Replace each ``Concat`` of initializers by one initializer holding its result (rewrites
    ``path`` when there is one); returns how many were folded.

    The attention fusion packs Q, K and V into one weight with a ``Concat`` node: the
    quantizer quantizes the packed weight but leaves the node and its three fp32 inputs in
    the file, dead, a third of a 2-layer student's int8 file."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    folded = 0
    for node in list(graph.node):
        if node.op_type != "Concat" or not all(name in initializers for name in node.input):
            continue
        axis = next(a.i for a in node.attribute if a.name == "axis")
        parts = [numpy_helper.to_array(initializers[name]) for name in node.input]
        graph.initializer.append(
            numpy_helper.from_array(np.concatenate(parts, axis=axis), node.output[0])
        )
        graph.node.remove(node)
        folded += 1
    if not folded:
        return 0
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for init in list(graph.initializer):
        if init.name not in used:
            graph.initializer.remove(init)
    onnx.save(model, str(path))
    return folded


def attention_mask_index(path: Path) -> dict[str, Any]:
    """Feed each fused ``Attention`` the padding mask as ``mask_index`` (int32 [batch, seq],
    1 = attend) in place of the additive float bias the export computed from it, and drop
    ``qkv_hidden_sizes`` when Q, K and V are the same size (rewrites ``path`` when it applies).

    Why: onnxruntime's dynamic quantizer turns ``Attention`` into ``QAttention`` only when it
    has neither an attention bias input nor ``qkv_hidden_sizes``: without this the attention
    projections of a fused graph stay fp32. Applied only where the bias depends on no graph
    input but the model's (a padding mask, not a relative-position bias), and kept only when
    the logits match the unrewritten graph on padded random batches."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    graph = model.graph
    attentions = [n for n in graph.node if n.op_type == "Attention" and n.domain == "com.microsoft"]
    if not attentions:
        return {"applied": False, "reason": "no fused Attention node"}
    inputs = {i.name for i in graph.input}
    if "attention_mask" not in inputs:
        return {"applied": False, "reason": "the graph has no attention_mask input"}
    changed = 0
    for node in attentions:
        bias = node.input[5] if len(node.input) > 5 else ""
        if not bias or _input_ancestors(graph, bias) - {
            "input_ids",
            "token_type_ids",
            "attention_mask",
        }:
            continue
        sizes = next((a for a in node.attribute if a.name == "qkv_hidden_sizes"), None)
        if sizes is not None and len(set(sizes.ints)) != 1:
            continue
        if sizes is not None:
            node.attribute.remove(sizes)
        node.input[3] = MASK_INDEX
        del node.input[4:]
        changed += 1
    if not changed:
        return {"applied": False, "reason": "no Attention with a padding-mask bias"}
    graph.node.insert(
        0, helper.make_node("Cast", ["attention_mask"], [MASK_INDEX], to=TensorProto.INT32)
    )
    _drop_dead_nodes(graph)
    rewritten = path.with_name(f"{path.stem}.mask_index.onnx")
    onnx.save(model, str(rewritten))
    difference = _max_logit_difference(path, rewritten, _vocabulary_size(graph))
    if not difference <= MASK_REWRITE_TOLERANCE:
        rewritten.unlink()
        return {"applied": False, "reason": f"logits moved by {difference:.3g}: kept the bias"}
    rewritten.replace(path)
    return {"applied": True, "attention_nodes": changed, "max_abs_diff": difference}


def _input_ancestors(graph: Any, name: str) -> set[str]:
    """The graph inputs that ``name`` is computed from (initializers and constants aside)."""
    producers = {out: node for node in graph.node for out in node.output}
    inputs = {i.name for i in graph.input}
    found, seen, stack = set(), set(), [name]
    while stack:
        current = stack.pop()
        if current in seen or not current:
            continue
        seen.add(current)
        if current in inputs:
            found.add(current)
        elif current in producers:
            stack.extend(producers[current].input)
    return found


def _drop_dead_nodes(graph: Any) -> None:
    """Remove nodes none of whose outputs reach a graph output."""
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(kept))


def _vocabulary_size(graph: Any) -> int:
    """Rows of the table that ``input_ids`` index (100 when no such Gather is found)."""
    tables = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Gather" and node.input[1] == "input_ids" and node.input[0] in tables:
            return int(tables[node.input[0]].dims[0])
    return 100


def _max_logit_difference(before: Path, after: Path, vocab: int) -> float:
    """Max |difference| of every output between two graphs on padded random batches."""
    from distill.serving.session import onnx_session

    sessions = [onnx_session(p, 1) for p in (before, after)]
    rng = np.random.default_rng(0)
    worst = 0.0
    for batch, length in ((1, 5), (3, 9)):
        feeds = _random_feeds(sessions[0], rng, batch, length, vocab)
        first, second = (s.run(None, feeds) for s in sessions)
        for a, b in zip(first, second, strict=True):
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b))))
    return worst


def _random_feeds(
    session: Any, rng: Any, batch: int, length: int, vocab: int
) -> dict[str, np.ndarray]:
    """Ids drawn from the vocabulary, a mask padding each row after a different length."""
    lengths = np.linspace(length, 2, batch).astype(np.int64) if batch > 1 else [length]
    mask = (np.arange(length)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    values = {
        "input_ids": rng.integers(min(3, vocab - 1), vocab, size=(batch, length)),
        "attention_mask": mask,
        "token_type_ids": np.zeros((batch, length), dtype=np.int64),
    }
    feeds = {}
    for declared in session.get_inputs():
        dtype = np.int32 if declared.type == "tensor(int32)" else np.int64
        feeds[declared.name] = values[declared.name].astype(dtype)
    return feeds
