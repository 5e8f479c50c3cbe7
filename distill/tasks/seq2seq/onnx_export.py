"""ONNX for encoder-decoder models (T5, BART, Marian, mT5): two graphs exported with
``torch.onnx.export(..., dynamo=True)``, and their parity with PyTorch.

- ``encoder.onnx`` runs once per source: ``input_ids`` and ``attention_mask`` [batch, source]
  in; ``encoder_hidden_states`` and, per decoder layer ``i``, the cross-attention keys and
  values ``cross.{i}.key`` / ``cross.{i}.value`` [batch, heads, source, head dim] out. The
  cross keys/values depend on the source only, so the decoder never recomputes them.
- ``decoder.onnx`` runs once per generated token: ``input_ids`` [batch, step],
  ``encoder_attention_mask`` [batch, source], the self-attention cache ``past.{i}.key`` /
  ``.value`` [batch, heads, past, head dim] (past 0 on the first step) and the cross
  keys/values in; ``logits`` [batch, step, vocab] and ``present.{i}.key`` / ``.value``
  [batch, heads, past + step, head dim] out.

Both graphs wrap the model's own forward in a small module that builds transformers'
``EncoderDecoderCache(DynamicCache, DynamicCache)`` from the tensors: the encoder graph runs
one decoder step on an empty cache and returns the cross-attention cache it filled (the rest
of that step is dead code the exporter's optimizer drops); the decoder graph passes the cross
cache already filled, which marks it computed (``is_updated``, read by T5's and BART's
attention), so only the query side of cross-attention runs. T5's relative position bias and
BART's learned positions are offset by the self-attention cache's length, a run-time value.
No torch internals are patched.

:func:`quantize_seq2seq` makes the int8 pair: dynamic int8 of each graph's weight matmuls
(a tied output head fed by ``Transpose(table)`` rather than a weight stays fp32).

Running the graphs goes through :class:`distill.tasks.seq2seq.onnx_model.OnnxSeq2Seq` and
:func:`distill.tasks.seq2seq.decoding.generate_ids`, the torch-free code that serves, so
:func:`check_seq2seq_parity` checks the code path of the bundle.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import ModelLoadError, ParityError
from distill.export import quantize as int8_utils
from distill.export.exporter import quiet_exporter, save_program
from distill.export.model_files import MODEL_FILES, copy_model_files, name_weights
from distill.tasks.seq2seq.decoding import generate_ids
from distill.tasks.seq2seq.onnx_model import DECODER_FILE, ENCODER_FILE, OnnxSeq2Seq

# Sample sizes for tracing: none 0 or 1 (torch.export would specialize the axis to the
# constant) and no two equal (it could tie them). Past length 0 (the first step) is then a
# run-time value of the dynamic axis, which the tests run in onnxruntime.
_SAMPLE_BATCH, _SAMPLE_SOURCE, _SAMPLE_STEP, _SAMPLE_PAST = 2, 7, 3, 5
# int8: the weight matmuls only (the activation x activation matmuls of attention stay fp32,
# MatMulConstBOnly in distill.export.quantize.DYNAMIC_EXTRA_OPTIONS).
INT8_OPERATORS = ("MatMul",)
# sdpa, transformers' default, where the architecture has it (eager otherwise).
ATTENTION = "sdpa"


def export_seq2seq(model_dir: Path, out_dir: Path, *, opset: int | None = None) -> Path:
    """Export a ``save_pretrained`` seq2seq model to ``out_dir/encoder.onnx`` and
    ``out_dir/decoder.onnx`` (see the module docstring), with its config, generation config
    and tokenizer files beside them; returns ``out_dir``, a folder :meth:`OnnxSeq2Seq.load`
    reads."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    model = load_for_export(model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = _samples(model)
    for file_name, program in (
        (ENCODER_FILE, _export_encoder(model, samples, opset)),
        (DECODER_FILE, _export_decoder(model, samples, opset)),
    ):
        name_weights(program.model, model, "model")
        save_program(program, model, out_dir / file_name)
    copy_model_files(model_dir, out_dir)
    return out_dir


def load_for_export(model_dir: Path) -> Any:
    """The saved ``AutoModelForSeq2SeqLM`` in float32 and eval mode, with :data:`ATTENTION`
    (eager for an architecture without it)."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    try:
        try:
            model = AutoModelForSeq2SeqLM.from_pretrained(
                str(model_dir), dtype=torch.float32, attn_implementation=ATTENTION
            )
        except ValueError as exc:
            if "attention implementation" not in str(exc):
                raise
            model = AutoModelForSeq2SeqLM.from_pretrained(
                str(model_dir), dtype=torch.float32, attn_implementation="eager"
            )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{model_dir}: cannot load it as a sequence-to-sequence model: {exc}"
        ) from None
    return model.float().eval()


def _modules(model: Any) -> tuple[Any, Any]:
    """The encoder and decoder wrappers (classes built here: no torch at import time)."""
    import torch
    from transformers import DynamicCache, EncoderDecoderCache

    hidden_size = int(model.get_input_embeddings().embedding_dim)

    def decoder_step(
        input_ids: Any, encoder_attention_mask: Any, cache: Any, encoder_hidden_states: Any
    ) -> Any:
        return model(
            encoder_outputs=(encoder_hidden_states,),
            attention_mask=encoder_attention_mask,
            decoder_input_ids=input_ids,
            cache=cache,
            use_cache=True,
        )

    class EncoderGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> tuple[Any, ...]:
            encoder = self.model.get_encoder()
            hidden = encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
            # One decoder step on an empty cache fills the cross-attention cache; its logits
            # are not an output, so the step's other nodes are dropped from the graph.
            decoder_step(input_ids[:, :1], attention_mask, cache, hidden)
            cross = cache.cross_attention_cache.layers
            return (hidden, *(t for layer in cross for t in (layer.keys, layer.values)))

    class DecoderGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self,
            input_ids: Any,
            encoder_attention_mask: Any,
            past: list[tuple[Any, Any]],
            cross: list[tuple[Any, Any]],
        ) -> tuple[Any, ...]:
            cache = EncoderDecoderCache(
                DynamicCache(ddp_cache_data=list(past)), DynamicCache(ddp_cache_data=list(cross))
            )
            # The cross cache is given: mark it computed for every layer (T5's and BART's
            # attention then reuse it and never project encoder states).
            cache.is_updated = dict.fromkeys(range(len(cross)), True)
            key = cross[0][0]
            # Only its shape is read (the encoder mask's key length): never projected.
            hidden = key.new_zeros((key.shape[0], key.shape[2], hidden_size))
            outputs = decoder_step(input_ids, encoder_attention_mask, cache, hidden)
            layers = outputs.cache.self_attention_cache.layers
            return (outputs.logits, *(t for layer in layers for t in (layer.keys, layer.values)))

    return EncoderGraph().eval(), DecoderGraph().eval()


def _samples(model: Any) -> dict[str, Any]:
    """Sample tensors for tracing, the cache shapes read from one real step (head counts and
    sizes are spelled differently across architectures and pruned students)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    vocab = int(model.get_input_embeddings().num_embeddings)
    batch, source = _SAMPLE_BATCH, _SAMPLE_SOURCE
    ids = torch.randint(3, vocab, (batch, source), generator=generator)
    mask = torch.ones(batch, source, dtype=torch.int64)
    mask[1, -2:] = 0  # a padded row, so that no mask-free shortcut gets traced
    encoder, _ = _modules(model)
    with torch.no_grad():
        _, *cross = encoder(ids, mask)

    def random_like(t: Any, length: int) -> Any:
        shape = (*t.shape[:2], length, *t.shape[3:])
        return torch.randn(*shape, generator=generator, dtype=t.dtype)

    pairs = list(zip(cross[::2], cross[1::2], strict=True))
    return {
        "ids": ids,
        "mask": mask,
        "step_ids": torch.randint(3, vocab, (batch, _SAMPLE_STEP), generator=generator),
        "past": [(random_like(k, _SAMPLE_PAST), random_like(v, _SAMPLE_PAST)) for k, v in pairs],
        "cross": [(k.clone(), v.clone()) for k, v in pairs],
    }


def _cache_names(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def _export_encoder(model: Any, samples: dict[str, Any], opset: int | None) -> Any:
    import torch

    dim = torch.export.Dim
    b, s = dim("batch_size"), dim("source_length")
    encoder, _ = _modules(model)
    with quiet_exporter(), torch.no_grad():
        return torch.onnx.export(
            encoder,
            (samples["ids"], samples["mask"]),
            input_names=["input_ids", "attention_mask"],
            output_names=["encoder_hidden_states", *_cache_names("cross", len(samples["cross"]))],
            dynamic_shapes={"input_ids": {0: b, 1: s}, "attention_mask": {0: b, 1: s}},
            opset_version=opset,
            dynamo=True,
            optimize=True,
            verbose=False,
        )


def _export_decoder(model: Any, samples: dict[str, Any], opset: int | None) -> Any:
    import torch

    dim = torch.export.Dim
    b, s = dim("batch_size"), dim("source_length")
    p, t = dim("past_length"), dim("step_length")
    layers = len(samples["past"])
    past_axes, cross_axes = {0: b, 2: p}, {0: b, 2: s}
    shapes = {
        "input_ids": {0: b, 1: t},
        "encoder_attention_mask": {0: b, 1: s},
        "past": [(past_axes, past_axes)] * layers,
        "cross": [(cross_axes, cross_axes)] * layers,
    }
    _, decoder = _modules(model)
    args = (samples["step_ids"], samples["mask"], samples["past"], samples["cross"])
    with quiet_exporter(), torch.no_grad():
        return torch.onnx.export(
            decoder,
            args,
            input_names=[
                "input_ids",
                "encoder_attention_mask",
                *_cache_names("past", layers),
                *_cache_names("cross", layers),
            ],
            output_names=["logits", *_cache_names("present", layers)],
            dynamic_shapes=shapes,
            opset_version=opset,
            dynamo=True,
            optimize=True,
            verbose=False,
        )


def seq2seq_parity_differences(
    model: OnnxSeq2Seq, torch_model: Any, source_ids: list[int]
) -> dict[str, float]:
    """Max |difference| between onnxruntime and PyTorch on one source: the encoder states,
    the logits of a first decoder step (the start token and two more, empty cache) and of a
    step fed from that cache (against PyTorch on the four tokens at once)."""
    import torch

    start = model.decoder_start_token_id
    ids = np.asarray([source_ids], dtype=np.int64)
    mask = np.ones_like(ids)
    steps = np.asarray([[start, 5, 7, 9]], dtype=np.int64) % model.vocab_size
    encoded = model.encode(ids, mask)
    first, past = model.decode_step(steps[:, :3], mask, encoded.cross)
    second, _ = model.decode_step(steps[:, 3:], mask, encoded.cross, past)
    with torch.no_grad():
        reference = torch_model(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            decoder_input_ids=torch.from_numpy(steps),
        )
    hidden = reference.encoder_last_hidden_state.float().numpy()
    logits = reference.logits.float().numpy()
    return {
        "encoder.onnx:encoder_hidden_states": float(np.abs(encoded.hidden - hidden).max()),
        "decoder.onnx:logits_first_step": float(np.abs(first - logits[:, :3]).max()),
        "decoder.onnx:logits_with_past": float(np.abs(second - logits[:, 3:]).max()),
    }


def torch_greedy(torch_model: Any, source_ids: list[int], max_new_tokens: int) -> list[int]:
    """PyTorch's greedy tokens for one source, without the start token, cut after EOS."""
    import torch

    with torch.no_grad():
        out = torch_model.generate(
            input_ids=torch.tensor([source_ids]),
            attention_mask=torch.ones(1, len(source_ids), dtype=torch.int64),
            num_beams=1,
            do_sample=False,
            max_new_tokens=max_new_tokens,
        )
    return cut_after_eos(out[0, 1:].tolist(), torch_model.generation_config.eos_token_id)


def cut_after_eos(tokens: list[int], eos: int | list[int] | None) -> list[int]:
    """``tokens`` up to and with the first EOS (all of them when there is none)."""
    stops = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    for i, token in enumerate(tokens):
        if token in stops:
            return tokens[: i + 1]
    return tokens


def check_seq2seq_parity(
    folder: Path,
    torch_model: Any,
    source_ids: list[list[int]],
    *,
    tolerance: float,
    max_new_tokens: int,
    graphs: OnnxSeq2Seq | None = None,
) -> dict[str, float]:
    """Parity of an exported folder (``graphs``: its graphs, already loaded) with
    ``torch_model`` on ``source_ids``: the largest
    :func:`seq2seq_parity_differences` over the sources (:class:`ParityError` naming the graph
    and output beyond ``tolerance``) and ``greedy_token_agreement``, the share of sources whose
    greedy tokens (:func:`generate_ids`) equal ``torch_model.generate``'s."""
    if not source_ids:
        raise ValueError("parity needs at least one source")
    model = graphs if graphs is not None else OnnxSeq2Seq.load(Path(folder))
    worst: dict[str, float] = {}
    for ids in source_ids:
        for name, value in seq2seq_parity_differences(model, torch_model, ids).items():
            worst[name] = max(worst.get(name, 0.0), value) if value == value else float("nan")
    if any(not d <= tolerance for d in worst.values()):  # NaN counts as a failure
        raise ParityError(str(folder), worst, tolerance)
    onnx_tokens = generate_ids(model, source_ids, max_new_tokens=max_new_tokens)
    same = [
        onnx == torch_greedy(torch_model, ids, max_new_tokens)
        for ids, onnx in zip(source_ids, onnx_tokens, strict=True)
    ]
    return {**worst, "greedy_token_agreement": sum(same) / len(same)}


def quantize_seq2seq(fp32_dir: Path, out_dir: Path) -> dict[str, Path]:
    """Dynamic int8 of both graphs of an exported folder (:func:`distill.export.quantize.
    quantize_dynamic` with :data:`INT8_OPERATORS` and distill's default settings), written
    under the same file names in ``out_dir`` beside a copy of the config and tokenizer files
    and ``quantization.json``; returns the graph paths by file name."""
    fp32_dir, out_dir = Path(fp32_dir), Path(out_dir)
    config = int8_utils.quantization_config("dynamic", operators=INT8_OPERATORS)
    paths: dict[str, Path] = {}
    for name in (ENCODER_FILE, DECODER_FILE):
        source = fp32_dir / name
        if not source.is_file():
            raise ModelLoadError(f"{source}: missing; {fp32_dir} is not an exported seq2seq")
        quantized = int8_utils.quantize_dynamic(source, out_dir, config)
        paths[name] = quantized.replace(out_dir / name)
    for name in MODEL_FILES:
        if (fp32_dir / name).is_file():
            shutil.copy2(fp32_dir / name, out_dir / name)
    return paths
