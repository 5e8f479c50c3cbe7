"""ONNX for causal LMs: export with a KV cache (``torch.onnx.export(..., dynamo=True)``, one
graph), logit parity against PyTorch on the first step and on a step with past, int8
quantization (dynamic, or weight-only in blocks), and perplexity with onnxruntime.

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

import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import ModelLoadError, ParityError
from distill.export import quantize as int8_utils
from distill.latency import ort_session
from distill.tasks.causal_lm.generate import MODEL_FILE, OnnxCausalLM

# The weight matmuls only; the activation x activation matmuls of attention (Q.K^T, P.V) stay
# fp32 (MatMulConstBOnly in int8_utils.DYNAMIC_EXTRA_OPTIONS). Not the embedding Gather here:
# quantized by ORT, a tied table would be dequantized and transposed in full at every
# decoding step (the export feeds the tied head a Transpose of it);
# quantize_embedding_table stores it once in int8 for both uses instead.
INT8_OPERATORS = ("MatMul",)
# Above 2 GB a protobuf cannot hold the weights: they go to ``model.onnx.data`` beside it.
PROTOBUF_LIMIT = 2 * 1024**3
# Sample sizes for tracing: none is 0 or 1 (torch.export would specialize that axis to the
# constant) and no two are equal (it could tie them). Past length 0 (the first step) is then
# a run-time value of the dynamic axis; the tests check it in onnxruntime.
_SAMPLE_BATCH, _SAMPLE_LENGTH, _SAMPLE_PAST = 2, 3, 5
# Copied from the model folder beside the graph, when present: what OnnxCausalLM.load and the
# bundle read (tokenizer.json, EOS ids) and what from_pretrained needs for the tokenizer.
COPIED_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)
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
    _name_weights(program.model, model)
    _share_tied_head(program.model)
    _gemm_as_matmul(program.model)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    program.save(str(path), external_data=size >= PROTOBUF_LIMIT)
    _copy_model_files(model_dir, out_dir)
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
    module imports no torch (the report imports it for :func:`describe_quantization`).
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
    with _quiet_exporter(), torch.no_grad():
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


def _name_weights(graph_model: Any, model: Any) -> None:
    """Give the graph's weights the model's own parameter names: ``model.embed_tokens.weight``,
    not the wrapper's ``lm.lm_head.weight`` (a tied table is named after its first owner, the
    input embedding). Weights the exporter folded (transposed copies, ``val_N``) keep theirs."""
    owners: dict[int, str] = {}
    for name, tensor in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(tensor), name)
    canonical = {
        f"lm.{name}": owners[id(t)] for name, t in model.named_parameters(remove_duplicate=False)
    }
    canonical.update({f"lm.{name}": name for name, _ in model.named_buffers()})
    graph = graph_model.graph
    for value in list(graph.initializers.values()):
        new = canonical.get(value.name)
        if new is not None and new not in graph.initializers:
            value.name = new


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
    :data:`INT8_OPERATORS` names the weight matmuls. Only plain ones (alpha 1, beta 1, no
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


def _copy_model_files(model_dir: Path, out_dir: Path) -> None:
    """:data:`COPIED_FILES` present in ``model_dir``; a folder with a slow tokenizer only gets
    ``tokenizer.json`` written by its fast conversion (the runner reads nothing else)."""
    import shutil

    for name in COPIED_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out_dir / name)
    if not (out_dir / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        try:
            AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(out_dir))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"{model_dir}: cannot load the tokenizer to export ({exc})"
            ) from None


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter warns about optional torchvision ops and unused axis names, and logs
    every pass: keep errors only."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


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
