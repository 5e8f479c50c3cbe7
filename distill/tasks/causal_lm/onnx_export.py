"""ONNX for causal LMs: export with a KV cache (``torch.onnx.export(..., dynamo=True)``, one
graph), logit parity against PyTorch on the first step and on a step with past, and
perplexity with onnxruntime (int8: :mod:`distill.tasks.causal_lm.int8`).

Why torch's dynamo exporter directly and not ``transformers.exporters`` (transformers 5):
its ``export_for_generation`` splits the model into a ``prefill`` and a ``decode`` graph,
while :class:`~distill.tasks.causal_lm.generate.OnnxCausalLM` serves one graph for both
steps; its single-graph ``OnnxExporter.export`` (tried on a 2-layer Llama with a
``DynamicCache`` sample) does give one graph, but names the cache
``past_key_values.layers.N.keys`` in and ``cache.layers.N.keys`` out (renaming needed), always
writes the weights to a ``model.onnx.data`` file plus an ``export.json``, warns that it is
experimental and tested on older torch / onnx / onnxscript than ours, and wraps the same
``torch.onnx.export(dynamo=True)`` call; it also took longer (15 s against 10.5 s). A small
wrapper (:func:`_cache_step`) gives the exact names, with no patches of torch internals.
TorchScript export is gone from transformers 5.

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
from distill.export.exporter import quiet_exporter, save_program
from distill.export.model_files import copy_model_files, name_weights
from distill.serving.session import onnx_session
from distill.tasks.causal_lm.generate import MODEL_FILE, OnnxCausalLM

# Sample sizes for tracing: none is 0 or 1 (torch.export would specialize that axis to the
# constant) and no two are equal (it could tie them). Past length 0 (the first step) is then
# a run-time value of the dynamic axis; the tests check it in onnxruntime.
_SAMPLE_BATCH, _SAMPLE_LENGTH, _SAMPLE_PAST = 2, 3, 5
# Attention implementation exported: sdpa (transformers' default) rather than eager, though
# both export cleanly. Neither gives NaN on a fully masked row (left padding): torch.onnx
# lowers sdpa with a guard that turns such a row's NaN into 0 as torch does, and eager adds
# the dtype's minimum instead of -inf. Measured on a 2-layer slice of SmolLM2-135M: the same
# parity (max |logit diff| 6.1e-5 sdpa, 5.7e-5 eager) and decoding speed (13.2 against
# 13.6 ms per token, 2 threads: within noise).
ATTENTION = "sdpa"


def export_causal_lm(model_dir: Path, out_dir: Path, *, opset: int | None = None) -> Path:
    """Export a ``save_pretrained`` causal LM to ``out_dir/model.onnx`` with KV-cache inputs.

    One graph serves both steps: the prompt with an empty past, then one token at a time
    (the interface of :class:`OnnxCausalLM`, see :mod:`distill.tasks.causal_lm.generate`).
    The config, generation config and tokenizer files are copied into ``out_dir``, which
    makes it a folder :meth:`OnnxCausalLM.load` reads; :func:`check_causal_parity` checks it.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    model = _load_for_export(model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MODEL_FILE
    program = _export_program(model, opset)
    name_weights(program.model, model, "lm")
    _share_tied_head(program.model)
    _gemm_as_matmul(program.model)
    save_program(program, model, path)
    copy_model_files(model_dir, out_dir)
    return path


def _load_for_export(model_dir: Path) -> Any:
    """The saved model in float32 and eval mode, with :data:`ATTENTION` (eager for the
    architectures without it, such as Bloom: its additive mask gives no NaN either)."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(model_dir), dtype=torch.float32, attn_implementation=ATTENTION
            )
        except ValueError as exc:
            if "attention implementation" not in str(exc):
                raise
            model = AutoModelForCausalLM.from_pretrained(
                str(model_dir), dtype=torch.float32, attn_implementation="eager"
            )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{model_dir}: cannot load it as a causal LM: {exc}") from None
    return model.float().eval()


def _cache_step(model: Any) -> Any:
    """``model`` as a module over flat tensors: ``input_ids``, ``attention_mask``,
    ``position_ids`` (None when the model takes none) and a list of per-layer (key, value)
    past tensors in; logits then each layer's present key and value out.

    The past goes into a ``DynamicCache`` (full-length layers, no sliding window) that
    the model extends by this step's keys and values. The class is built here so that this
    module imports no torch at import time.
    """
    import torch
    from transformers import DynamicCache

    class CacheStep(torch.nn.Module):
        def __init__(self, lm: Any) -> None:
            super().__init__()
            self.lm = lm

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            position_ids: torch.Tensor | None,
            past: list[tuple[torch.Tensor, torch.Tensor]],
        ) -> tuple[torch.Tensor, ...]:
            cache = DynamicCache(ddp_cache_data=[(key, value) for key, value in past])
            outputs = self.lm(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
            )
            present = [t for layer in outputs.cache.layers for t in (layer.keys, layer.values)]
            return (outputs.logits, *present)

    return CacheStep(model).eval()


def _export_program(model: Any, opset: int | None) -> Any:
    """``torch.onnx.export(dynamo=True)`` of :func:`_cache_step`: the ONNX program, with
    the graph names of :mod:`distill.tasks.causal_lm.generate`."""
    import inspect

    import torch

    batch, length, past = _SAMPLE_BATCH, _SAMPLE_LENGTH, _SAMPLE_PAST
    generator = torch.Generator().manual_seed(0)
    vocab = int(model.get_input_embeddings().num_embeddings)
    ids = torch.randint(0, vocab, (batch, length), generator=generator)
    past_kv = _sample_past(model, batch, past, generator)
    positions = torch.arange(past, past + length).expand(batch, length)
    if "position_ids" not in inspect.signature(model.forward).parameters:
        positions = None
    mask = torch.ones(batch, past + length, dtype=torch.int64)
    mask[1, :2] = 0  # a left-padded row, so that no mask-free shortcut gets traced
    # Named axes: torch.onnx writes these names into the graph's input and output shapes.
    dim = torch.export.Dim
    b, s, p = dim("batch_size"), dim("sequence_length"), dim("past_sequence_length")
    cache_axes = {0: b, 2: p}
    shapes = {
        "input_ids": {0: b, 1: s},
        "attention_mask": {0: b, 1: dim("total_sequence_length")},
        "position_ids": None if positions is None else {0: b, 1: s},
        "past": [(cache_axes, cache_axes)] * len(past_kv),
    }
    pairs = [(i, kind) for i in range(len(past_kv)) for kind in ("key", "value")]
    names = ["input_ids", "attention_mask"] + (["position_ids"] if positions is not None else [])
    names += [f"past_key_values.{i}.{kind}" for i, kind in pairs]
    with quiet_exporter(), torch.no_grad():
        return torch.onnx.export(
            _cache_step(model),
            (ids, mask, positions, past_kv),
            input_names=names,
            output_names=["logits"] + [f"present.{i}.{kind}" for i, kind in pairs],
            dynamic_shapes=shapes,
            opset_version=opset,
            dynamo=True,
            optimize=True,
            verbose=False,
        )


def _sample_past(model: Any, batch: int, past: int, generator: Any) -> list[tuple[Any, Any]]:
    """Random (key, value) per layer, ``past`` positions long, shaped as the model's own cache:
    read from one forward step rather than the config, whose head counts and sizes
    architectures (and pruned students) spell differently. Those axes stay static in the
    graph, where :class:`OnnxCausalLM` reads them."""
    import torch

    probe = torch.zeros(batch, 1, dtype=torch.int64)
    with torch.no_grad():
        cache = model(input_ids=probe, attention_mask=torch.ones_like(probe), use_cache=True).cache
    return [
        tuple(
            torch.randn(*t.shape[:2], past, *t.shape[3:], generator=generator, dtype=t.dtype)
            for t in (layer.keys, layer.values)
        )
        for layer in cache.layers
    ]


def _share_tied_head(graph_model: Any) -> None:
    """Feed a tied head ``Transpose(table)`` again instead of a transposed copy of the table.

    The exporter folds the transposes of weights into constants; an embedding table above its
    fold limit (8192 values) feeds both the ``Gather`` and a ``Transpose`` and stays so, a
    smaller one gets a second, transposed copy. Undoing the copy stores the table once and
    gives every size the graph :func:`quantize_embedding_table` rewrites.
    """
    import onnx_ir as ir

    graph = graph_model.graph
    tables = {
        id(table): table
        for node in graph
        if node.op_type == "Gather"
        and (table := node.inputs[0]) is not None
        and table.is_initializer()
        and table.shape is not None
        and len(table.shape) == 2
    }
    for table in tables.values():
        array = table.const_value.numpy()
        for node in list(graph):
            copied = node.inputs[1] if node.op_type == "MatMul" else None
            if copied is None or copied is table or not copied.is_initializer():
                continue
            if copied.shape is None or tuple(copied.shape) != array.shape[::-1]:
                continue
            if not np.array_equal(copied.const_value.numpy(), array.T):
                continue
            transpose = ir.node(
                "Transpose", [table], {"perm": [1, 0]}, name=f"{table.name}/Transpose"
            )
            transposed = transpose.outputs[0]
            transposed.name = f"{table.name}.transposed"
            transposed.type, transposed.shape = table.type, ir.Shape(array.shape[::-1])
            graph.insert_before(node, transpose)
            node.replace_input_with(1, transposed)
            if not copied.uses():
                graph.initializers.pop(copied.name)


def _gemm_as_matmul(graph_model: Any) -> None:
    """Rewrite ``Gemm(x, W[, b])`` over a weight initializer as ``MatMul(x, W)`` (``+ b``).

    Modules that call ``addmm`` on a 2-D view (GPT-2's ``Conv1D``) export as ``Gemm``, which
    the int8 passes skip: weight-only quantization takes ``MatMul`` only, and
    :data:`distill.tasks.causal_lm.int8.INT8_OPERATORS` names the weight matmuls. Only plain ones (alpha 1, beta 1, no
    transposed operand) are rewritten; the result is the same product.
    """
    import onnx_ir as ir

    graph = graph_model.graph
    for node in list(graph):
        if node.op_type != "Gemm" or node.domain not in ("", "ai.onnx"):
            continue
        attributes = node.attributes
        x, weight, *rest = node.inputs
        bias = rest[0] if rest else None
        plain = (
            attributes.get_float("alpha", 1.0) == 1.0
            and (bias is None or attributes.get_float("beta", 1.0) == 1.0)
            and not attributes.get_int("transA", 0)
            and not attributes.get_int("transB", 0)
        )
        if not plain or weight is None or not weight.is_initializer():
            continue
        output = node.outputs[0]
        steps = [ir.node("MatMul", [x, weight], name=f"{node.name}/MatMul")]
        if bias is not None:
            steps.append(ir.node("Add", [steps[0].outputs[0], bias], name=f"{node.name}/Add"))
        for step in steps:
            step.outputs[0].type, step.outputs[0].shape = output.type, output.shape
        graph.insert_before(node, steps)
        output.replace_all_uses_with(steps[-1].outputs[0], replace_graph_outputs=True)
        name = output.name
        graph.remove(node, safe=True)
        steps[-1].outputs[0].name = name


def _runner(model: OnnxCausalLM | Path, threads: int | None = None) -> OnnxCausalLM:
    if isinstance(model, OnnxCausalLM):
        return model
    return OnnxCausalLM(onnx_session(model, threads), name=str(model))


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
