"""Every model the seq2seq report runs, behind one interface: a :class:`Decoder` turns test
sources (as the data stage wrote them, without ``data.source_prefix``) into output texts at
a given batch size, the way that model is served:

- the PyTorch models (teacher, distilled student, its twins) through
  :func:`distill.tasks.seq2seq.generation.generate_texts` (``model.generate``);
- the deployed bundle through the bundle runner
  (:func:`distill.tasks.seq2seq.runner.translate`: onnxruntime, tokenizers, numpy), which
  puts the bundle's own prefix before each source;
- the teacher's int8 graphs through :class:`~distill.tasks.seq2seq.onnx_model.OnnxSeq2Seq`
  and :func:`~distill.tasks.seq2seq.decoding.generate_ids`, tokenized by the teacher's
  tokenizer.

Every decoder uses the same beam size and new-token budget (:class:`DecodeSettings`), and
counts an output's tokens with its own tokenizer (for tokens/s).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.errors import ArtifactError

# (sources, batch size) -> one output per source, in order.
DecodeFn = Callable[[list[str], int], list[str]]


@dataclass(frozen=True)
class DecodeSettings:
    """How every model decodes the test sources: ``data.source_prefix``, ``data.max_length``
    source tokens, ``data.max_target_length`` new tokens, ``report.num_beams``."""

    prefix: str
    max_length: int
    max_new_tokens: int
    num_beams: int


@dataclass
class Decoder:
    """One model of the report: its row key and name, how it decodes, how many tokens an
    output is (its own tokenizer, special tokens not counted), and what it is."""

    key: str
    name: str
    decode: DecodeFn
    count_tokens: Callable[[str], int]
    runtime: str
    precision: str
    parameters: int | None = None


def token_counter(tokenizer: Any) -> Callable[[str], int]:
    """An output's length in ``tokenizer``'s tokens, special tokens (EOS) not counted."""
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def load_tokenizer_of(folder: Path, what: str) -> Any:
    from distill.train.models import load_tokenizer

    return load_tokenizer(str(folder), f"{what} {folder}")


def torch_decoder(key: str, name: str, folder: Path, settings: DecodeSettings) -> Decoder:
    """A PyTorch model a stage saved in ``folder`` (``save_pretrained``, with its tokenizer)."""
    from transformers import AutoModelForSeq2SeqLM

    from distill.tasks.seq2seq.generation import generate_texts
    from distill.train.models import load_saved

    if not folder.is_dir():
        raise ArtifactError(f"{folder}: the {name} model folder is missing")
    model = load_saved(AutoModelForSeq2SeqLM, folder).eval()
    tokenizer = load_tokenizer_of(folder, f"{name} tokenizer")

    def decode(sources: list[str], batch_size: int) -> list[str]:
        return generate_texts(
            model,
            tokenizer,
            sources,
            prefix=settings.prefix,
            max_length=settings.max_length,
            max_new_tokens=settings.max_new_tokens,
            num_beams=settings.num_beams,
            batch_size=batch_size,
        )

    parameters = int(sum(p.numel() for p in model.parameters()))
    return Decoder(key, name, decode, token_counter(tokenizer), "pytorch", "fp32", parameters)


def bundle_decoder(
    key: str,
    name: str,
    bundle: Path,
    tokenizer_dir: Path,
    settings: DecodeSettings,
    threads: int,
    precision: str,
) -> Decoder:
    """The deployed bundle, served by its own runner (which adds the bundle's prefix)."""
    from distill.tasks.seq2seq.runner import load_bundle, translate

    model = load_bundle(bundle, threads=threads)

    def decode(sources: list[str], batch_size: int) -> list[str]:
        return translate(
            model,
            sources,
            num_beams=settings.num_beams,
            max_new_tokens=settings.max_new_tokens,
            batch_size=batch_size,
        )

    counter = token_counter(load_tokenizer_of(tokenizer_dir, "student tokenizer"))
    return Decoder(key, name, decode, counter, "onnxruntime", precision)


def onnx_decoder(
    key: str,
    name: str,
    folder: Path,
    tokenizer_dir: Path,
    settings: DecodeSettings,
    threads: int,
    precision: str,
) -> Decoder:
    """An encoder graph and a decoder graph in ``folder`` (the teacher's int8, say), fed the
    sources as ``tokenizer_dir``'s tokenizer encodes them (prefix in front, cut to
    ``max_length`` tokens), the generated ids decoded without special tokens."""
    from distill.tasks.seq2seq.decoding import generate_ids
    from distill.tasks.seq2seq.files import with_prefix
    from distill.tasks.seq2seq.onnx_model import OnnxSeq2Seq

    model = OnnxSeq2Seq.load(folder, threads=threads)
    tokenizer = load_tokenizer_of(tokenizer_dir, f"{name} tokenizer")

    def decode(sources: list[str], batch_size: int) -> list[str]:
        texts = with_prefix(settings.prefix, sources)
        encoded = tokenizer(texts, truncation=True, max_length=settings.max_length)["input_ids"]
        outputs: list[str] = []
        for start in range(0, len(encoded), batch_size):
            ids = generate_ids(
                model,
                [list(x) for x in encoded[start : start + batch_size]],
                num_beams=settings.num_beams,
                max_new_tokens=settings.max_new_tokens,
            )
            outputs += tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [text.strip() for text in outputs]

    return Decoder(key, name, decode, token_counter(tokenizer), "onnxruntime", precision)


def decode_all(
    decoders: Sequence[Decoder], sources: list[str], batch_size: int, log: Callable[..., Any]
) -> dict[str, list[str]]:
    """Every decoder's outputs for ``sources``, by row key; an error names a decoder that
    returns the wrong number of outputs."""
    outputs = {}
    for decoder in decoders:
        log("report: %s decodes %d test sources", decoder.name, len(sources))
        texts = decoder.decode(list(sources), batch_size)
        if len(texts) != len(sources):
            raise ArtifactError(
                f"report: {decoder.name} returned {len(texts)} outputs for {len(sources)} "
                "test sources"
            )
        outputs[decoder.key] = [str(text) for text in texts]
    return outputs
