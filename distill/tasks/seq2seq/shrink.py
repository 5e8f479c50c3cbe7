"""Students cut from an encoder-decoder teacher: DistilBART's "shrink and fine-tune" (copy
some of the teacher's layers, then train), Distil-Whisper's first-and-last decoder layers.

:func:`shrink_seq2seq` builds a NEW model of the teacher's class from a config with fewer
layers and copies the teacher's weights into it by state-dict key remapping (teacher layer
``keep[j]`` becomes student layer ``j``). Building from the config, rather than deleting
layers from a copy, makes every attention module's ``layer_idx`` (which transformers 5's
KV caches index by) and every config field right by construction, and keeps the teacher's
tying of shared embeddings and LM head as the config says.

The shapes known: T5 / mT5 (``encoder.block`` / ``decoder.block``; config ``num_layers`` /
``num_decoder_layers``), BART / mBART / Marian / Pegasus (``model.encoder.layers`` /
``model.decoder.layers``; ``encoder_layers`` / ``decoder_layers``) and
``EncoderDecoderModel`` such as BERT2BERT (its encoder's and decoder's
``num_hidden_layers``). The layer stacks are found as the shallowest ``nn.ModuleList`` of the
configured length under ``get_encoder()`` / ``get_decoder()``.

T5 keeps its relative position bias in block 0 of each stack only: the student's block 0
gets the teacher's bias even when the teacher's layer 0 is not kept (the teacher's other
blocks have none to give).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from distill.errors import ModelLoadError

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class LayerChoiceError(ModelLoadError, ValueError):
    """A list of teacher layers to keep that cannot be used (names the recipe key)."""


# The recipe key that chooses each stack's layers, named in errors.
DECODER_KEY = "student.layers"
ENCODER_KEY = "student.encoder_layers"


@dataclass(frozen=True)
class _Stack:
    """One layer stack of a model: the state-dict prefix of its layers (``"encoder.block."``)
    and how many layers it has."""

    prefix: str
    count: int


def layer_counts(config: Any) -> tuple[int, int]:
    """``(encoder layers, decoder layers)`` of a T5/mT5, BART/mBART/Marian/Pegasus or
    ``EncoderDecoderModel`` config."""
    kind = _config_kind(config)
    if kind == "encoder-decoder":
        return int(config.encoder.num_hidden_layers), int(config.decoder.num_hidden_layers)
    if kind == "bart":
        return int(config.encoder_layers), int(config.decoder_layers)
    decoder = config.num_decoder_layers
    return int(config.num_layers), int(config.num_layers if decoder is None else decoder)


def _config_kind(config: Any) -> str:
    """Which of the known shapes ``config`` has: "encoder-decoder", "bart" or "t5"."""
    from transformers import PretrainedConfig

    if isinstance(getattr(config, "encoder", None), PretrainedConfig) and isinstance(
        getattr(config, "decoder", None), PretrainedConfig
    ):
        return "encoder-decoder"
    fields = vars(config)  # attribute_map aliases (num_hidden_layers) are not in vars()
    if "encoder_layers" in fields and "decoder_layers" in fields:
        return "bart"
    if "num_layers" in fields and "num_decoder_layers" in fields:
        return "t5"
    raise ModelLoadError(
        f"{type(config).__name__}: cannot tell its encoder and decoder layer counts (distill "
        "knows T5/mT5, BART/mBART/Marian/Pegasus and EncoderDecoderModel configs)"
    )


def _set_layer_counts(config: Any, encoder: int, decoder: int) -> None:
    kind = _config_kind(config)
    if kind == "encoder-decoder":
        config.encoder.num_hidden_layers = encoder
        config.decoder.num_hidden_layers = decoder
    elif kind == "bart":
        config.encoder_layers, config.decoder_layers = encoder, decoder
    else:
        config.num_layers, config.num_decoder_layers = encoder, decoder


def even_layers(count: int, keep: int) -> list[int]:
    """``keep`` of ``count`` layer indices, evenly spaced, always the first and the last.

    The rule: pick ``i`` (of ``keep``) is ``round(i * (count - 1) / (keep - 1))``, halves
    rounded up, so the picks are distinct and run from 0 to ``count - 1``. Against
    DistilBART's hand-written table for a 12-layer teacher (``LAYERS_TO_COPY``): 12 -> 6
    keeps 0, 2, 4, 7, 9, 11 and 12 -> 3 keeps 0, 6, 11, as it does; 12 -> 4 keeps
    0, 4, 7, 11 (the table: 0, 4, 8, 11) and 12 -> 2 keeps 0, 11, Distil-Whisper's first and
    last (the table: 0, 6). ``keep = 1`` keeps the first layer only, as the table does.
    """
    if not 1 <= count:
        raise LayerChoiceError(f"even_layers: a teacher with {count} layers has none to keep")
    if not 1 <= keep <= count:
        raise LayerChoiceError(
            f"student.num_layers = {keep}: keep between 1 and the teacher's {count} layers"
        )
    if keep == 1:
        return [0]
    span, steps = count - 1, keep - 1
    return [(2 * i * span + steps) // (2 * steps) for i in range(keep)]


def check_layers(layers: list[int], count: int, key: str) -> None:
    """Raise :class:`LayerChoiceError` (a ``ValueError``) unless ``layers`` is a non-empty,
    strictly increasing list of indices into a stack of ``count`` layers."""
    where = f"{key} = {list(layers)!r}"
    if not layers:
        raise LayerChoiceError(f"{where}: keep at least one of the teacher's {count} layers")
    for position, index in enumerate(layers):
        if isinstance(index, bool) or not hasattr(index, "__index__"):
            raise LayerChoiceError(f"{where}: {index!r} is not a layer index")
        if not 0 <= index < count:
            raise LayerChoiceError(
                f"{where}: layer {index} is out of range; the teacher has {count} layers "
                f"(0..{count - 1})"
            )
        if position and index <= layers[position - 1]:
            problem = "repeated" if index == layers[position - 1] else "out of order"
            raise LayerChoiceError(
                f"{where}: layer {index} is {problem} (the teacher's {count} layers are kept "
                "in increasing order, each once)"
            )


def shrink_seq2seq(
    teacher: PreTrainedModel,
    *,
    decoder_layers: list[int] | None,
    encoder_layers: list[int] | None,
) -> PreTrainedModel:
    """A new model of the teacher's class keeping only the given layers of each stack
    (indices into the teacher's stacks, increasing; None = all), the teacher's weights
    copied in; ``teacher`` is unchanged. Same dtype, device, attention kernel, generation
    config and train/eval mode as the teacher; each tensor keeps the teacher's dtype (a
    half-precision T5 keeps its float32 ``wo``)."""
    encoder_count, decoder_count = layer_counts(teacher.config)
    encoder_keep = _kept(encoder_layers, encoder_count, ENCODER_KEY)
    decoder_keep = _kept(decoder_layers, decoder_count, DECODER_KEY)
    teacher_stacks = _stacks(teacher, encoder_count, decoder_count)

    config = copy.deepcopy(teacher.config)
    _set_layer_counts(config, len(encoder_keep), len(decoder_keep))
    student = type(teacher)(config)
    student_stacks = _stacks(student, len(encoder_keep), len(decoder_keep))

    source = teacher.state_dict()
    moves = {
        student_stacks[0].prefix: (teacher_stacks[0].prefix, encoder_keep),
        student_stacks[1].prefix: (teacher_stacks[1].prefix, decoder_keep),
    }
    weights = {
        key: source[_teacher_key(key, moves, source, type(teacher).__name__)]
        for key in student.state_dict()
    }
    _match_dtypes(student, weights)
    student.load_state_dict(weights, strict=True)
    student.to(device=next(teacher.parameters()).device)
    if getattr(teacher, "generation_config", None) is not None:
        student.generation_config = copy.deepcopy(teacher.generation_config)
    return student.train(teacher.training)


def _kept(layers: list[int] | None, count: int, key: str) -> list[int]:
    """The checked indices of one stack as plain ints (None: all ``count`` layers)."""
    if layers is None:
        return list(range(count))
    check_layers(list(layers), count, key)
    return [int(index) for index in layers]


def _teacher_key(
    key: str, moves: dict[str, tuple[str, list[int]]], source: dict[str, torch.Tensor], name: str
) -> str:
    """The teacher's state-dict key whose tensor goes to the student's ``key``: layer ``j``
    of a stack comes from the teacher's layer ``keep[j]``; a tensor only the teacher's
    block 0 holds (T5's relative attention bias) comes from the teacher's block 0."""
    for student_prefix, (teacher_prefix, keep) in moves.items():
        if not key.startswith(student_prefix):
            continue
        index, _, rest = key[len(student_prefix) :].partition(".")
        candidates = [f"{teacher_prefix}{keep[int(index)]}.{rest}", f"{teacher_prefix}0.{rest}"]
        break
    else:
        candidates = [key]
    for candidate in candidates:
        if candidate in source:
            return candidate
    raise ModelLoadError(
        f"{name}: the student's weight {key!r} has no counterpart in the teacher (looked for "
        f"{', '.join(candidates)})"
    )


def _stacks(model: nn.Module, encoder_count: int, decoder_count: int) -> tuple[_Stack, _Stack]:
    """The encoder's and decoder's layer stacks of ``model``."""
    names = {id(module): name for name, module in model.named_modules()}
    found = []
    for side, part, count in (
        ("encoder", model.get_encoder(), encoder_count),
        ("decoder", model.get_decoder(), decoder_count),
    ):
        base = names.get(id(part))
        if part is model or base is None:
            raise ModelLoadError(f"{type(model).__name__}: cannot find its {side}")
        lists = [
            (name.count("."), name)
            for name, module in part.named_modules()
            if isinstance(module, nn.ModuleList) and len(module) == count and name
        ]
        if not lists:
            raise ModelLoadError(
                f"{type(model).__name__}: its {side} has no stack of {count} layers"
            )
        inner = min(lists)[1]
        found.append(_Stack(prefix=f"{base}.{inner}." if base else f"{inner}.", count=count))
    if found[0].prefix.startswith(found[1].prefix) or found[1].prefix.startswith(found[0].prefix):
        raise ModelLoadError(
            f"{type(model).__name__}: its encoder and decoder layers are one stack"
        )  # pragma: no cover
    return found[0], found[1]


def _match_dtypes(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Give each parameter and buffer of ``model`` the dtype of its tensor in ``weights``
    (tied parameters are one object: converted once)."""
    tensors = [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]
    for name, tensor in tensors:
        wanted = weights[name].dtype if name in weights else tensor.dtype
        if tensor.dtype != wanted:
            tensor.data = tensor.data.to(wanted)
