"""ONNX export of encoder models (a transformers class with a head, named by the task) with
``torch.onnx.export(..., dynamo=True)``: one graph with dynamic batch and sequence axes, inputs named as the tokenizer
names them, outputs named as the model's output fields (``logits``; ``start_logits`` and
``end_logits`` for a question-answering head).

Why torch's dynamo exporter and not ``transformers.exporters``: the latter (transformers 5)
is marked experimental, pins the torch/onnx/onnxscript versions it was tested with (older
than ours) and wraps the very same ``torch.onnx.export(dynamo=True)`` call plus fusions that
distill runs itself (:mod:`distill.export.fusion`) so they can be counted and checked; an
encoder with a head needs nothing of its decomposition machinery. TorchScript export is gone
from transformers 5 and deprecated by PyTorch, and optimum-onnx (the previous route) holds
transformers below 4.58.

The export folder gets what ``from_pretrained`` and the bundle need beside the graph: the
model's ``config.json`` and the tokenizer files.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distill.errors import ModelLoadError

log = logging.getLogger("distill")

MODEL_FILE = "model.onnx"
# The inputs an encoder graph may take, in the order the tokenizer gives them.
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Above 2 GB a protobuf cannot hold the weights: they go to a file beside the graph.
PROTOBUF_LIMIT = 2 * 1024**3
# Sample shapes for tracing: neither 0 nor 1 (torch.export specializes those), a padded row.
_SAMPLE_BATCH, _SAMPLE_LENGTH = 2, 8


def export_onnx(
    model_dir: Path, out_dir: Path, *, model_class: str, opset: int | None = None
) -> Path:
    """Export a ``save_pretrained`` encoder to ``out_dir/model.onnx`` (fp32), with the config
    and tokenizer files beside it; ``model_class``: the transformers Auto class, named by the
    task, that loads it with its head. Parity is each stage's to check, on real inputs."""
    import transformers

    loader = getattr(transformers, model_class, None)
    if loader is None or not hasattr(loader, "from_pretrained"):
        raise ValueError(f"no transformers model class {model_class!r} to export with")
    model = loader.from_pretrained(str(model_dir)).float().eval()
    _exportable_attention(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MODEL_FILE
    sample = _sample_inputs(model)
    export_module(model, sample, path, opset=opset, output_names=_output_names(model, sample))
    model.config.save_pretrained(out_dir)
    _copy_tokenizer(model_dir, out_dir)
    return path


def export_module(
    model: Any,
    sample: dict[str, Any],
    path: Path,
    *,
    opset: int | None,
    output_names: tuple[str, ...] = ("logits",),
) -> None:
    """``torch.onnx.export(dynamo=True)`` of ``model(**sample)`` to ``path`` with outputs
    ``output_names`` (the exporter names only as many outputs as it is given: the rest get
    internal names), every input's axes 0 and 1 dynamic (batch, sequence), then
    :func:`drop_weight_value_info`."""
    import torch

    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with quiet_exporter(), torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            model,
            (),
            kwargs=sample,
            input_names=list(sample),
            output_names=list(output_names),
            dynamic_shapes={name: {0: batch, 1: sequence} for name in sample},
            opset_version=opset,
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise ModelLoadError(f"torch.onnx.export wrote nothing for {path}")
    save_program(program, model, path)
    drop_weight_value_info(path)


def save_program(program: Any, model: Any, path: Path) -> None:
    """Write an ONNX program of ``model``, its weights to a file beside ``path`` when they
    pass the protobuf limit (:data:`PROTOBUF_LIMIT`)."""
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    program.save(str(path), external_data=size >= PROTOBUF_LIMIT)


def drop_weight_value_info(path: Path) -> None:
    """Remove ``value_info`` entries that name initializers: the dynamo exporter records
    shapes for weights, which onnxruntime's quantizer then trusts over the (rewritten)
    initializers and fails on."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weights = {init.name for init in model.graph.initializer}
    stale = [vi for vi in model.graph.value_info if vi.name in weights]
    if not stale:
        return
    for vi in stale:
        model.graph.value_info.remove(vi)
    onnx.save(model, str(path))


def _sample_inputs(model: Any) -> dict[str, Any]:
    """Token ids for the inputs the model's forward takes, one row padded."""
    import torch

    accepted = inspect.signature(model.forward).parameters
    names = [name for name in ENCODER_INPUTS if name in accepted]
    vocab = int(getattr(model.config, "vocab_size", 100) or 100)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(
        min(5, vocab - 1), vocab, (_SAMPLE_BATCH, _SAMPLE_LENGTH), generator=generator
    )
    mask = torch.ones_like(ids)
    mask[1, _SAMPLE_LENGTH // 2 :] = 0
    sample = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return {name: sample[name] for name in names}


def _output_names(model: Any, sample: dict[str, Any]) -> tuple[str, ...]:
    """The names of the tensors ``model(**sample)`` returns, as its output fields name them
    (``logits``; ``start_logits``, ``end_logits``); ``("logits",)`` for a plain tensor."""
    import torch

    with torch.no_grad():
        output = model(**sample)
    keys = getattr(output, "keys", None)
    if keys is None:
        return ("logits",)
    return tuple(key for key in keys() if isinstance(output[key], torch.Tensor))


def _exportable_attention(model: Any) -> None:
    """flash and flex attention have no ONNX lowering: fall back to sdpa (else eager)."""
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation in (None, "eager", "sdpa"):
        return
    for fallback in ("sdpa", "eager"):
        try:
            model.set_attn_implementation(fallback)
            log.info("export: attention %s -> %s (ONNX cannot lower it)", implementation, fallback)
            return
        except (ValueError, ImportError):
            continue


def _copy_tokenizer(model_dir: Path, out_dir: Path) -> None:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{model_dir}: cannot load the tokenizer to export ({exc})") from None
    tokenizer.save_pretrained(out_dir)


@contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """The loggers ``names`` ("" is the root) raised to ERROR for a block, then restored."""
    loggers = [logging.getLogger(n or None) for n in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextmanager
def quiet_exporter() -> Iterator[None]:
    """The exporter warns about optional torchvision ops, and it and onnxscript's rewriter log
    every pass at INFO (which distill's log level shows): keep errors."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir")
    with quiet_loggers(*names), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def op_counts(model_path: Path) -> dict[str, int]:
    """How many nodes of each operator type the graph holds (``domain:op`` outside ONNX's)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        name = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))
