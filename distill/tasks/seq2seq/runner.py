"""The seq2seq bundle runner (``distill generate``): translate or summarize texts with the
bundle's encoder and decoder graphs, onnxruntime, tokenizers and numpy only.

:func:`load_bundle` reads a bundle after :func:`distill.export.bundle.read_bundle` has verified
every file it lists. Its manifest names the graphs (``encoder``, ``decoder``; default
``encoder.onnx`` / ``decoder.onnx``) and holds ``source_prefix`` (put before every source, as
T5 expects), ``max_length`` (source tokens kept, the prefix and EOS included: longer sources
are cut, and :func:`translate` says how many were), ``max_target_length`` (the default
number of new tokens) and ``num_beams`` (the default beam size). Beam search scores as
transformers does, with the ``length_penalty`` and ``early_stopping`` of the bundle's
``generation_config.json`` (defaults 1.0 and False).

This module must stay importable without torch or transformers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from distill.errors import ArtifactError, DataError
from distill.export.bundle import Bundle, is_int, problems_error, read_bundle, unlisted
from distill.serving.tokenizer import TOKENIZER_FILE, load_tokenizer
from distill.tasks.seq2seq.decoding import generate_ids
from distill.tasks.seq2seq.onnx_model import (
    DECODER_FILE,
    ENCODER_FILE,
    OnnxSeq2Seq,
    read_json,
)
from distill.tasks.seq2seq.task import Seq2Seq

log = logging.getLogger("distill")
DEFAULT_BATCH_SIZE = 16


@dataclass
class Seq2SeqBundle:
    """A loaded seq2seq bundle: the model, its tokenizer (truncating sources to
    ``max_length``) and the bundle's decoding defaults."""

    model: OnnxSeq2Seq
    tokenizer: Any
    source_prefix: str = ""
    max_length: int | None = None
    max_target_length: int = 64
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    max_positions: int | None = None  # the decoder's learnt positions (None: unbounded)
    name: str = "bundle"
    truncated: int = field(default=0)  # sources cut to max_length by the last translate

    @property
    def default_max_new_tokens(self) -> int:
        """What `distill generate` decodes at most without --max-new-tokens."""
        return self.max_target_length


@dataclass(frozen=True)
class Seq2SeqOutput:
    """One source's output for ``distill generate``: the text (special tokens skipped), the
    new ids (with EOS if it ended the text), the source's ids and why decoding stopped.
    ``continues_prompt`` is False: the text is not a continuation of the input."""

    text: str
    token_ids: list[int]
    prompt_ids: list[int]
    finish_reason: Literal["eos", "length"]
    continues_prompt: bool = False


def _manifest_int(manifest: dict[str, Any], key: str, default: int, where: Path) -> int:
    value = manifest.get(key, default)
    if not is_int(value) or value < 1:
        raise ArtifactError(f"{where}: {key!r} must be a positive integer, not {value!r}")
    return int(value)


def load_bundle(bundle: Path | str | Bundle, *, threads: int | None = None) -> Seq2SeqBundle:
    """The model of a bundle verified by :func:`read_bundle`, its tokenizer and defaults."""
    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle, command=Seq2Seq.command)
    manifest, where = bundle.manifest, bundle.manifest_path
    encoder = manifest.get("encoder", ENCODER_FILE)
    decoder = manifest.get("decoder", DECODER_FILE)
    needed = [encoder, decoder, TOKENIZER_FILE, "config.json"]
    if (bundle.path / "generation_config.json").is_file():  # read by OnnxSeq2Seq.load
        needed.append("generation_config.json")
    problems = unlisted(where, manifest["files"], needed)
    if problems:
        raise problems_error(bundle.path, problems)
    prefix = manifest.get("source_prefix", "")
    if not isinstance(prefix, str):
        raise ArtifactError(f"{where}: 'source_prefix' must be text, not {prefix!r}")
    return load_graphs(
        bundle.path,
        source_prefix=prefix,
        max_length=_manifest_int(manifest, "max_length", 512, where),
        max_target_length=_manifest_int(manifest, "max_target_length", 64, where),
        num_beams=_manifest_int(manifest, "num_beams", 1, where),
        threads=threads,
        files=(encoder, decoder),
        manifest=manifest,
    )


def load_graphs(
    folder: Path,
    *,
    source_prefix: str,
    max_length: int,
    max_target_length: int,
    num_beams: int,
    threads: int | None = None,
    files: tuple[str, str] = (ENCODER_FILE, DECODER_FILE),
    manifest: dict[str, Any] | None = None,
) -> Seq2SeqBundle:
    """The graphs ``files`` (encoder, decoder) of ``folder`` with its tokenizer and configs,
    served with these settings: a bundle's, or an export's graphs scored before their bundle
    exists (so the gate and the report read what the bundle will serve)."""
    if manifest is None:  # the folder's own files (an export's, not yet a bundle)
        manifest = {"files": {p.name: {} for p in folder.iterdir() if p.is_file()}}
    tokenizer = load_tokenizer(folder, {**manifest, "max_length": max_length})
    tokenizer.no_padding()  # decoding pads the batch itself
    model = OnnxSeq2Seq.load(folder, threads=threads, encoder_file=files[0], decoder_file=files[1])
    positions = read_json(folder / "config.json").get("max_position_embeddings")
    return Seq2SeqBundle(
        model=model,
        tokenizer=tokenizer,
        source_prefix=source_prefix,
        max_length=max_length,
        max_target_length=max_target_length,
        num_beams=num_beams,
        length_penalty=model.rules.length_penalty,
        early_stopping=model.rules.early_stopping,
        max_positions=positions if is_int(positions) else None,
        name=str(folder),
    )


def _check_budget(model: Seq2SeqBundle, max_new_tokens: int, name: str) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"{name} must be >= 1, not {max_new_tokens}")
    limit = model.max_positions
    # The start token and every new token but the last are fed back: N tokens, N positions.
    if limit is not None and max_new_tokens > limit:
        raise DataError(
            f"{name} {max_new_tokens} needs {max_new_tokens} decoder positions, but "
            f"{model.name} has {limit} (max_position_embeddings in config.json); set {name} "
            f"to {limit} or less"
        )


def encode_sources(model: Seq2SeqBundle, sources: list[str]) -> list[list[int]]:
    """The ids of each source (the bundle's prefix before it), cut to ``max_length``;
    ``model.truncated`` counts the sources that were cut."""
    texts = [model.source_prefix + source for source in sources]
    encodings = model.tokenizer.encode_batch(texts) if texts else []
    model.truncated = sum(1 for encoding in encodings if encoding.overflowing)
    ids = [list(encoding.ids) for encoding in encodings]
    for text, row in zip(texts, ids, strict=True):
        if not row:
            raise ValueError(f"the source {text[:40]!r} has no tokens")
    return ids


def _decode_options(model: Seq2SeqBundle, num_beams: int | None) -> dict[str, Any]:
    beams = model.num_beams if num_beams is None else num_beams
    if beams < 1:
        raise ValueError(f"num_beams must be >= 1, not {beams}")
    return {
        "num_beams": beams,
        "length_penalty": model.length_penalty,
        "early_stopping": model.early_stopping,
    }


def translate_ids(
    model: Seq2SeqBundle,
    sources: list[str],
    *,
    num_beams: int | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_new_tokens_name: str = "max_new_tokens",
) -> tuple[list[list[int]], list[list[int]]]:
    """The source ids and generated ids of each source, in input order; the sources go in
    batches of similar length (longest first) through :func:`generate_ids`."""
    budget = model.max_target_length if max_new_tokens is None else max_new_tokens
    _check_budget(model, budget, max_new_tokens_name)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    options = _decode_options(model, num_beams)
    ids = encode_sources(model, sources)
    if model.truncated:
        log.warning(
            "%d of %d source(s) were longer than %d tokens and were cut to that length "
            "(max_length of %s)",
            model.truncated,
            len(sources),
            model.max_length,
            model.name,
        )
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    outputs: list[list[int]] = [[] for _ in ids]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        generated = generate_ids(
            model.model, [ids[i] for i in chunk], max_new_tokens=budget, **options
        )
        for i, tokens in zip(chunk, generated, strict=True):
            outputs[i] = tokens
    return ids, outputs


def translate(
    model: Seq2SeqBundle,
    sources: list[str],
    *,
    num_beams: int | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[str]:
    """The output text of each source, in input order (defaults: the bundle's beam size and
    ``max_target_length``); sources longer than ``max_length`` tokens are cut, with one
    warning giving their count."""
    _, outputs = translate_ids(
        model, sources, num_beams=num_beams, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    return [model.tokenizer.decode(tokens, skip_special_tokens=True) for tokens in outputs]


def generate_many(
    model: Seq2SeqBundle,
    prompts: list[str],
    *,
    max_new_tokens: int,
    num_beams: int | None = None,
    max_new_tokens_name: str = "max_new_tokens",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[Seq2SeqOutput]:
    """:func:`generate`'s output for each of ``prompts`` (in input order), decoded in batches."""
    source_ids, outputs = translate_ids(
        model,
        prompts,
        num_beams=num_beams,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        max_new_tokens_name=max_new_tokens_name,
    )
    eos = set(model.model.eos_token_ids)
    return [
        Seq2SeqOutput(
            text=model.tokenizer.decode(tokens, skip_special_tokens=True),
            token_ids=tokens,
            prompt_ids=ids,
            finish_reason="eos" if tokens and tokens[-1] in eos else "length",
        )
        for ids, tokens in zip(source_ids, outputs, strict=True)
    ]


def generate(
    model: Seq2SeqBundle,
    prompt: str,
    *,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    max_new_tokens_name: str = "max_new_tokens",
    num_beams: int | None = None,
) -> Seq2SeqOutput:
    """The output for one source (``distill generate``): greedy or beam search (``num_beams``,
    default the bundle's). Sampling is refused: a seq2seq bundle decodes the best output."""
    if do_sample:
        raise ValueError(
            "a seq2seq bundle decodes greedily or by beam search: sampling (--sample, "
            "temperature, top-k, top-p, seed) is not supported; drop --sample"
        )
    outputs = generate_many(
        model,
        [prompt],
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
        max_new_tokens_name=max_new_tokens_name,
    )
    return outputs[0]
