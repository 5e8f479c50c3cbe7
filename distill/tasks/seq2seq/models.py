"""Seq2seq models: encoder-decoder teachers (T5, mT5, BART, Marian, and BERT2BERT
``EncoderDecoderModel``) loaded through ``AutoModelForSeq2SeqLM``, the positions they can
read, and the three ways a student is built from the teacher.

- ``teacher-layers``: DistilBART's shrink and fine-tune. The decoder keeps ``student.layers``
  (or ``student.num_layers`` evenly spaced, first and last included), the encoder
  ``student.encoder_layers`` (default: all), copied from the teacher (:mod:`.shrink`).
- ``pretrained``: a smaller model of its own (``student.model``) that must share the
  teacher's vocabulary: word-level KD compares distributions id by id.
- ``config``: the teacher's config with ``student.config`` overrides (``student.num_layers``
  sets the decoder's layers), seeded random weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from distill.errors import DataError, ModelLoadError
from distill.train.models import (
    load_tokenizer,
    parameter_counts,
    resolve_model,
    student_from_config,
    with_supported_attention,
)

# The config field that holds each family's decoder layer count (student.num_layers).
_DECODER_LAYER_FIELDS = ("num_decoder_layers", "decoder_layers")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _require_encoder_decoder(source: str, key: str, revision: str | None, trust: bool) -> None:
    """A clear refusal of a model that is not an encoder-decoder (a causal LM, an encoder)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=trust)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{key}: cannot read the config of {source!r}: {_first_line(exc)}"
        ) from None
    if not getattr(config, "is_encoder_decoder", False):
        raise ModelLoadError(
            f"{key}: {source!r} is a {config.model_type!r} model, not an encoder-decoder; task "
            "'seq2seq' needs a sequence-to-sequence model (T5, mT5, BART, Marian, or an "
            "EncoderDecoderModel)"
        )


def load_seq2seq(
    source: str | Path, key: str, revision: str | None = None, trust_remote_code: bool = False
) -> nn.Module:
    """An encoder-decoder model with its language-model head (safetensors only)."""
    from transformers import AutoModelForSeq2SeqLM

    _require_encoder_decoder(str(source), key, revision, trust_remote_code)
    try:
        return with_supported_attention(
            AutoModelForSeq2SeqLM.from_pretrained,
            str(source),
            revision=revision,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{key}: cannot load {str(source)!r} as a sequence-to-sequence model: "
            f"{_first_line(exc)}"
        ) from None


def require_fast_tokenizer(tokenizer: Any, key: str, reference: str) -> None:
    """The bundle is served by the ``tokenizers`` library from ``tokenizer.json``: a model
    whose tokenizer has no fast version (Marian's pair of sentencepiece models in
    transformers 5.25) is refused before any training, naming the key."""
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"{key}: {reference!r} has a {type(tokenizer).__name__}, which has no fast version "
            "(tokenizer.json); a seq2seq bundle is served without Python tokenizer code and "
            "needs one (Marian's sentencepiece tokenizers have none yet)"
        )


def learned_positions(config: Any) -> tuple[int | None, int | None]:
    """The most source and target tokens the model's learned position embeddings cover
    (None: relative positions, as T5's, with no such limit)."""
    if getattr(config, "encoder", None) is not None and getattr(config, "decoder", None):
        return (
            getattr(config.encoder, "max_position_embeddings", None),
            getattr(config.decoder, "max_position_embeddings", None),
        )
    limit = getattr(config, "max_position_embeddings", None)
    return limit, limit


def check_positions(config: Any, data: Any, where: str = "teacher.model") -> None:
    """Refuse ``data.max_length`` / ``data.max_target_length`` beyond the model's learned
    positions (a longer input would index past its position table)."""
    sources, targets = learned_positions(config)
    for key, value, limit in (
        ("data.max_length", data.max_length, sources),
        ("data.max_target_length", data.max_target_length, targets),
    ):
        if limit is not None and value > limit:
            raise DataError(
                f"{key} = {value}: {where} ({config.model_type}) has learned positions for "
                f"{limit} tokens; lower {key} to {limit} or less"
            )


def vocabulary_problem(teacher_tokenizer: Any, tokenizer: Any) -> str | None:
    """Why ``tokenizer`` cannot stand for the teacher's in word-level KD (None: it can)."""
    if teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
        return (
            f"its vocabulary ({len(tokenizer)} tokens) differs from the teacher's "
            f"({len(teacher_tokenizer)})"
        )
    for name in ("pad_token_id", "eos_token_id"):
        if getattr(teacher_tokenizer, name) != getattr(tokenizer, name):
            return f"its {name} differs from the teacher's"
    return None


def _decoder_layers(config: Any, count: int) -> dict[str, int]:
    """The config override that gives the decoder ``count`` layers."""
    if getattr(config, "decoder", None) is not None and hasattr(config, "encoder"):
        raise ModelLoadError(
            "student.num_layers with init = 'config' is not supported for an "
            "EncoderDecoderModel teacher; use init = 'teacher-layers'"
        )
    for field in _DECODER_LAYER_FIELDS:
        if hasattr(config, field):
            return {field: count}
    raise ModelLoadError(f"student.num_layers: {type(config).__name__} has no decoder layer count")


def _teacher_layers(teacher: nn.Module, config: Any) -> tuple[nn.Module, dict[str, Any]]:
    from distill.tasks.seq2seq.shrink import even_layers, layer_counts, shrink_seq2seq

    encoders, decoders = layer_counts(teacher.config)
    decoder = list(config.layers) if config.layers else None
    if decoder is None and config.num_layers is not None:
        if not 1 <= config.num_layers <= decoders:
            raise ModelLoadError(
                f"student.num_layers = {config.num_layers}: the teacher has {decoders} "
                "decoder layers"
            )
        decoder = even_layers(decoders, config.num_layers)
    encoder = list(config.encoder_layers) if config.encoder_layers else None
    # Bad indices are a LayerChoiceError (a ModelLoadError) naming the recipe key.
    model = shrink_seq2seq(teacher, decoder_layers=decoder, encoder_layers=encoder)
    built = {
        "init": "teacher-layers",
        "decoder_layers": decoder if decoder is not None else list(range(decoders)),
        "encoder_layers": encoder if encoder is not None else list(range(encoders)),
    }
    return model, built


def build_student(
    teacher_dir: Path, config: Any, seed: int, recipe_dir: Path | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The initial student (``config``: the resolved [student] table) and how it was built.
    Its tokenizer is the teacher's (a pretrained student's must match it)."""
    from transformers import set_seed

    set_seed(seed)
    if config.init == "pretrained":
        return _pretrained(teacher_dir, config, recipe_dir or Path.cwd())
    teacher = load_seq2seq(teacher_dir, "teacher model")
    if config.init == "teacher-layers":
        return _teacher_layers(teacher, config)
    overrides: dict[str, Any] = dict(config.config or {})
    if config.num_layers is not None:
        for field, value in _decoder_layers(teacher.config, config.num_layers).items():
            overrides.setdefault(field, value)
    model = student_from_config(teacher, overrides, seed)
    return model, {"init": "config", "overrides": overrides}


def _pretrained(
    teacher_dir: Path, config: Any, recipe_dir: Path
) -> tuple[nn.Module, dict[str, Any]]:
    assert config.model is not None  # checked by the recipe
    source = resolve_model(
        config.model, recipe_dir, "student.model", config.trust_remote_code, config.archive
    )
    tokenizer = load_tokenizer(source, "student.model", config.revision, config.trust_remote_code)
    problem = vocabulary_problem(load_tokenizer(str(teacher_dir), "teacher model"), tokenizer)
    if problem is not None:
        raise ModelLoadError(
            f"student.model {config.model!r}: {problem}; word-level KD and the teacher's "
            "outputs need the very same tokenizer"
        )
    model = load_seq2seq(source, "student.model", config.revision, config.trust_remote_code)
    return model, {"init": "pretrained", "model": config.model}


def encoder_stack(model: nn.Module) -> nn.ModuleList:
    """The encoder's blocks (T5's ``block``, BART's and Marian's ``layers``, a BERT
    encoder's ``encoder.layer``)."""
    encoder = model.get_encoder()
    for path in ("block", "layers", "encoder.layer", "layer"):
        module: Any = encoder
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return module
    raise ModelLoadError(f"{type(model).__name__}: cannot find its encoder layers to freeze")


def freeze_seq2seq(
    model: nn.Module, embeddings: bool, lowest_layers: int, table: str = "teacher"
) -> dict[str, int]:
    """Freeze the token embeddings (shared by encoder, decoder and, when tied, the output
    head) and/or the lowest ``lowest_layers`` encoder layers; returns trainable/total
    parameter counts."""
    if lowest_layers:
        layers = encoder_stack(model)
        if lowest_layers > len(layers):
            raise ModelLoadError(
                f"{table}.freeze_layers = {lowest_layers}: the model's encoder has "
                f"{len(layers)} layers (seq2seq freezes the lowest encoder layers)"
            )
        for layer in list(layers)[:lowest_layers]:
            layer.requires_grad_(False)
    if embeddings:
        model.get_input_embeddings().requires_grad_(False)
        model.get_decoder().get_input_embeddings().requires_grad_(False)
    return parameter_counts(model)
