"""Causal-LM preparation for token-level distillation: a GGUF checkpoint turned once into a
normal safetensors folder, a student cut from a teacher's decoder layers, and the vocabulary
check that token-level KD depends on.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from torch import nn

from distill.errors import ModelLoadError
from distill.pipeline.artifacts import sha256_file

log = logging.getLogger("distill")

# Written last into the staging folder, before the rename: a folder without it is not a model.
MATERIALIZED_MARKER = "materialized.json"
_KEY_HEX = 16


class TokenizerMismatchError(ModelLoadError):
    """Teacher and student tokenizers map tokens to ids differently."""


def _load_gguf(gguf_path: Path) -> tuple[nn.Module, Any]:
    """The model (dequantized to float32) and tokenizer transformers reads from a GGUF file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    _apply_gguf_special_tokens(tokenizer, gguf_metadata(gguf_path))
    return model, tokenizer


def gguf_metadata(gguf_path: Path) -> dict[str, Any]:
    """The ``tokenizer.ggml.*`` special-token fields of a GGUF file (ids and add-BOS/EOS flags)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    keys = [f"tokenizer.ggml.{k}_token_id" for k in ("bos", "eos", "padding", "unknown")]
    keys += ["tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token"]
    return {k: reader.fields[k].contents() for k in keys if k in reader.fields}


def _apply_gguf_special_tokens(tokenizer: Any, metadata: dict[str, Any]) -> None:
    """Set the special tokens and the add-BOS/EOS flags that the GGUF file declares.

    transformers 4.57's GGUF tokenizer converter swaps BOS and EOS (for SmolLM2 the EOS
    becomes ``<|im_start|>``) and always prepends BOS, whatever the file says
    (``tokenizer.ggml.add_bos_token = false`` for SmolLM2); the file is the reference.
    """
    roles = {"bos": "bos_token", "eos": "eos_token", "padding": "pad_token", "unknown": "unk_token"}
    for key, attribute in roles.items():
        token_id = metadata.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None:
            setattr(tokenizer, attribute, tokenizer.convert_ids_to_tokens(int(token_id)))
    for flag in ("add_bos_token", "add_eos_token"):
        value = metadata.get(f"tokenizer.ggml.{flag}")
        # LlamaTokenizerFast rebuilds its post-processor when these are set.
        if value is not None and hasattr(tokenizer, flag):
            setattr(tokenizer, flag, bool(value))


def _clean_copy(model: nn.Module) -> nn.Module:
    """The same weights in a model built from its config without ``quantization_config``.

    A model loaded from GGUF carries the GGUF quantization config, and ``save_pretrained``
    refuses to write it; a model built from the cleaned config saves like any other.
    """
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config)
    result = clean.load_state_dict(model.state_dict(), strict=False)
    # Tied heads (lm_head = embeddings) may be absent from one side; anything else is a bug.
    tied = set(clean._tied_weights_keys or ())
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise ModelLoadError(
            f"{type(model).__name__} from GGUF: its weights do not fit a model built from its "
            f"config (missing {missing[:5]}, unexpected {result.unexpected_keys[:5]})"
        )
    clean.tie_weights()
    clean.generation_config = copy.deepcopy(model.generation_config)
    return clean.eval()


def materialized_folder(gguf_path: Path, cache_dir: Path, digest: str | None = None) -> Path:
    """Where :func:`materialize_gguf` puts ``gguf_path``: keyed by the file's sha256."""
    digest = digest or sha256_file(gguf_path)
    return Path(cache_dir) / f"{gguf_path.stem}-{digest[:_KEY_HEX]}"


def is_materialized(folder: Path) -> bool:
    return (folder / MATERIALIZED_MARKER).is_file()


def materialize_gguf(gguf_path: Path, cache_dir: Path) -> Path:
    """A ``from_pretrained`` folder (float32 safetensors, tokenizer) made once from a GGUF file.

    Loading a GGUF file dequantizes every tensor (about 30 s for SmolLM2-135M on 2 cores);
    the folder reloads in under a second. It lives under ``cache_dir``, named after the
    file's stem and the first hex digits of its sha256, so a changed file gets a new folder.
    The folder is written under a staging name and renamed into place only after
    :data:`MATERIALIZED_MARKER` is written in it: an interrupted run leaves a staging folder,
    never a folder that passes for complete. A later call finds the marker and returns the
    folder without loading anything.
    """
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ModelLoadError(f"{gguf_path}: no such GGUF file")
    cache_dir = Path(cache_dir)
    digest = sha256_file(gguf_path)
    target = materialized_folder(gguf_path, cache_dir, digest)
    if is_materialized(target):
        return target
    if target.exists():
        # Not ours to trust: something else wrote it, or an older layout. Rebuild it.
        log.warning("%s has no %s; materializing it again", target, MATERIALIZED_MARKER)
        shutil.rmtree(target)
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = cache_dir / f".{target.name}.staging-{uuid.uuid4().hex[:8]}"
    try:
        started = time.perf_counter()
        model, tokenizer = _load_gguf(gguf_path)
        loaded = time.perf_counter()
        clean = _clean_copy(model)
        del model
        clean.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        marker = {
            "source": gguf_path.name,
            "source_bytes": gguf_path.stat().st_size,
            "source_sha256": digest,
            "architecture": type(clean).__name__,
            "parameters": sum(p.numel() for p in clean.parameters()),
            "dtype": str(next(clean.parameters()).dtype).removeprefix("torch."),
            "load_seconds": round(loaded - started, 2),
            "total_seconds": round(time.perf_counter() - started, 2),
        }
        (staging / MATERIALIZED_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        try:
            os.replace(staging, target)
        except OSError:
            # Another process renamed its copy first (the target is a non-empty folder).
            if not is_materialized(target):
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("materialized %s into %s", gguf_path.name, target)
    return target


# --------------------------------------------------------------------------- layer dropping


def decoder_of(model: nn.Module) -> nn.Module:
    """The decoder (``model.model``) of a Llama-style causal LM, whose ``layers`` are its blocks."""
    decoder = getattr(model, "model", None)
    if decoder is None or not isinstance(getattr(decoder, "layers", None), nn.ModuleList):
        raise ModelLoadError(
            f"{type(model).__name__}: not a Llama-style causal LM (no model.layers to select from)"
        )
    return decoder


def drop_layers(model: nn.Module, keep: list[int]) -> nn.Module:
    """A new model with only the decoder layers ``keep`` (in that order), weights deep-copied.

    Each kept layer's attention ``layer_idx`` is renumbered 0..n-1 (the KV cache is indexed
    by it), and ``config.num_hidden_layers`` (and ``config.layer_types`` where the config has
    it) follow. The embeddings, final norm and head are copied too; ``model`` is unchanged.
    """
    decoder = decoder_of(model)
    layers = decoder.layers
    total = len(layers)
    bad = [i for i in keep if not isinstance(i, int) or not 0 <= i < total]
    if not keep or bad or len(set(keep)) != len(keep):
        raise ModelLoadError(
            f"layers to keep {keep}: need distinct indices in 0..{total - 1} "
            f"(the model has {total} decoder layers)"
        )
    # Copy everything but the layer stack, so the dropped layers are never copied.
    decoder.layers = nn.ModuleList()
    try:
        student = copy.deepcopy(model)
    finally:
        decoder.layers = layers
    kept = nn.ModuleList(copy.deepcopy(layers[i]) for i in keep)
    for new_index, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    decoder_of(student).layers = kept
    config = student.config
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [config.layer_types[i] for i in keep]
    return student


# --------------------------------------------------------------------------- tokenizers


def check_same_tokenizer(
    teacher_tok: Any, student_tok: Any, teacher_name: str, student_name: str
) -> None:
    """Raise :class:`TokenizerMismatchError` unless both tokenizers map the same tokens to the
    same ids: token-level KD compares the two models' distributions id by id."""
    teacher_vocab, student_vocab = teacher_tok.get_vocab(), student_tok.get_vocab()
    if teacher_vocab == student_vocab:
        return
    only_teacher = sorted(set(teacher_vocab) - set(student_vocab))
    only_student = sorted(set(student_vocab) - set(teacher_vocab))
    moved = sorted(
        t for t in set(teacher_vocab) & set(student_vocab) if teacher_vocab[t] != student_vocab[t]
    )
    details = []
    if only_teacher:
        details.append(
            f"{len(only_teacher)} token(s) only in the teacher's, e.g. {only_teacher[:3]}"
        )
    if only_student:
        details.append(
            f"{len(only_student)} token(s) only in the student's, e.g. {only_student[:3]}"
        )
    if moved:
        example = moved[0]
        details.append(
            f"{len(moved)} token(s) with other ids, e.g. {example!r}: "
            f"{teacher_vocab[example]} vs {student_vocab[example]}"
        )
    raise TokenizerMismatchError(
        f"teacher {teacher_name} ({len(teacher_vocab)} tokens) and student {student_name} "
        f"({len(student_vocab)} tokens) have different vocabularies: {'; '.join(details)}. "
        "Token-level distillation needs the same tokenizer; pick a student of the teacher's "
        "family or a student built from the teacher"
    )
