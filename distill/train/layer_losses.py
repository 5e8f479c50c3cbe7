"""Layer-level distillation: hidden states (TinyBERT) and attention maps (MiniLM).

The student's layer ``s`` learns from the teacher's layer ``t`` for each pair of the
layer map. Hidden states go through a learned linear projection when the widths differ
(the projection is trained with the student and thrown away afterwards). Attention maps
are compared as distributions (KL per query row, MiniLM); when head counts differ the
maps are averaged over heads first. Both need the teacher online and the same
tokenization on both sides, so the positions line up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from distill.errors import ModelLoadError
from distill.train.models import transformer_layers

if TYPE_CHECKING:
    from distill.config import StudentConfig

LayerMap = list[tuple[int, int]]


def uniform_layer_map(student_layers: int, teacher_layers: int) -> LayerMap:
    """Student layer ``i`` (0-based) <- teacher layer ``round((i + 1) * n / m) - 1``: the last
    student layer always learns from the last teacher layer, the others spread evenly."""
    return [
        (i, max(0, round((i + 1) * teacher_layers / student_layers) - 1))
        for i in range(student_layers)
    ]


def check_layer_map(layer_map: LayerMap, student_layers: int, teacher_layers: int) -> None:
    """Every pair must name a layer that exists on both sides; each student layer at most once."""
    problems = []
    for s, t in layer_map:
        if not 0 <= s < student_layers:
            problems.append(f"student layer {s} (the student has {student_layers})")
        if not 0 <= t < teacher_layers:
            problems.append(f"teacher layer {t} (the teacher has {teacher_layers})")
    students = [s for s, _ in layer_map]
    if len(set(students)) != len(students):
        problems.append("a student layer mapped twice")
    if problems:
        raise ModelLoadError(f"student.layer_map: {'; '.join(problems)} (layers count from 0)")


def check_same_vocabulary(
    teacher_tokenizer: Any, student_tokenizer: Any, teacher: str, student: str
) -> None:
    """Layer losses compare position by position: both sides must split text identically."""
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise ModelLoadError(
            f"student.hidden_weight / student.attention_weight need the teacher's tokenization, but "
            f"the teacher ({teacher}, {type(teacher_tokenizer).__name__}, "
            f"{len(teacher_tokenizer)} tokens) and the student ({student}, "
            f"{type(student_tokenizer).__name__}, {len(student_tokenizer)} tokens) have different "
            "vocabularies; use logit distillation only (weights 0) for this pair"
        )


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` [B, T, ...] over the positions where ``mask`` [B, T] is 1."""
    weights = mask.to(values.dtype).view(*mask.shape, *([1] * (values.dim() - 2)))
    per_position = values[0, 0].numel()
    return (values * weights).sum() / (weights.sum() * per_position).clamp_min(1.0)


def hidden_state_loss(
    student_hidden: list[torch.Tensor],
    teacher_hidden: list[torch.Tensor],
    projections: nn.ModuleList,
    layer_map: LayerMap,
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """Mean over mapped layers of the MSE between projected student and teacher layer outputs,
    over real (non-padding) tokens. ``*_hidden[i]`` is the output of layer ``i``."""
    losses = []
    for projection, (s, t) in zip(projections, layer_map, strict=True):
        projected = projection(student_hidden[s])
        squared = (projected - teacher_hidden[t].to(projected.dtype)) ** 2
        losses.append(_masked_mean(squared, attention_mask))
    return torch.stack(losses).mean()


def attention_loss(
    student_attentions: list[torch.Tensor],
    teacher_attentions: list[torch.Tensor],
    layer_map: LayerMap,
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """Mean over mapped layers of KL(teacher row || student row) for each real query token.

    Maps are [B, heads, T, T] probabilities; with different head counts both are averaged
    over heads (a student with fewer heads cannot copy each teacher head).
    """
    losses = []
    for s, t in layer_map:
        student_map, teacher_map = (
            student_attentions[s],
            teacher_attentions[t].to(student_attentions[s].dtype),
        )
        if student_map.shape[1] != teacher_map.shape[1]:
            student_map = student_map.mean(dim=1, keepdim=True)
            teacher_map = teacher_map.mean(dim=1, keepdim=True)
        eps = torch.finfo(student_map.dtype).tiny
        kl = teacher_map * (teacher_map.clamp_min(eps).log() - student_map.clamp_min(eps).log())
        per_query = kl.sum(dim=-1).mean(dim=1)  # [B, T]: summed over keys, averaged over heads
        losses.append(_masked_mean(per_query, attention_mask))
    return torch.stack(losses).mean()


class StudentWithProjections(nn.Module):
    """The student plus the projections its hidden-state loss trains.

    The Trainer trains (and checkpoints, and syncs under DDP) both; only ``student`` is
    saved as the result. In eval mode it is just the student.
    """

    def __init__(self, student: nn.Module, projections: nn.ModuleList, attentions: bool) -> None:
        super().__init__()
        self.student = student
        self.projections = projections
        self.attentions = attentions

    def forward(self, **inputs: Any) -> Any:
        if not self.training:
            return self.student(**inputs)
        return self.student(**inputs, output_hidden_states=True, output_attentions=self.attentions)


def projections_for(
    student_width: int, teacher_width: int, layer_map: LayerMap, seed: int
) -> nn.ModuleList:
    """One linear map per mapped pair; the identity (no parameters) when widths match."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return nn.ModuleList(
            nn.Identity()
            if student_width == teacher_width
            else nn.Linear(student_width, teacher_width, bias=False)
            for _ in layer_map
        )
    finally:
        torch.random.set_rng_state(generator_state)


@dataclass
class LayerDistillation:
    """What the trainer needs to add the layer losses to the logit loss."""

    teacher: nn.Module
    layer_map: LayerMap
    hidden_weight: float
    attention_weight: float
    # For a student with a trimmed vocabulary: student token id -> teacher token id.
    teacher_ids: torch.Tensor | None = None
    # The student's attention implementation before the attention loss switched it to eager.
    student_attention: str | None = None

    def restore_attention(self, student: nn.Module) -> None:
        """Eager attention was only needed for the maps: the trained student gets its own back
        (for the logits computed after training, and for whoever loads it)."""
        if self.attention_weight > 0 and self.student_attention is not None:
            student.set_attn_implementation(self.student_attention)

    def loss(
        self, model: nn.Module, student_outputs: Any, inputs: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        teacher_inputs = dict(inputs)
        if self.teacher_ids is not None:
            ids = self.teacher_ids.to(inputs["input_ids"].device)
            teacher_inputs["input_ids"] = ids[inputs["input_ids"]]
        with torch.no_grad():
            teacher_outputs = self.teacher(
                **teacher_inputs,
                output_hidden_states=True,
                output_attentions=self.attention_weight > 0,
            )
        mask = inputs["attention_mask"]
        total = student_outputs.logits.new_zeros(())
        parts: dict[str, float] = {}
        if self.hidden_weight > 0:
            projections = getattr(model, "module", model).projections
            # hidden_states[0] is the embedding output; layer i's output is [i + 1].
            hidden = hidden_state_loss(
                list(student_outputs.hidden_states[1:]),
                list(teacher_outputs.hidden_states[1:]),
                projections,
                self.layer_map,
                mask,
            )
            total = total + self.hidden_weight * hidden
            parts["hidden"] = float(hidden.detach())
        if self.attention_weight > 0:
            attention = attention_loss(
                list(student_outputs.attentions),
                list(teacher_outputs.attentions),
                self.layer_map,
                mask,
            )
            total = total + self.attention_weight * attention
            parts["attention"] = float(attention.detach())
        return total, parts


def unwrap_student(model: nn.Module) -> nn.Module:
    """The student inside a :class:`StudentWithProjections` (or the model itself)."""
    return model.student if isinstance(model, StudentWithProjections) else model


def layer_distillation(
    config: StudentConfig,
    model: nn.Module,
    tokenizer: Any,
    teacher: nn.Module,
    teacher_tokenizer: Any,
    teacher_name: str,
    built: dict[str, Any],
    seed: int,
) -> tuple[nn.Module, LayerDistillation]:
    """The layer losses of a student (``config``: its [student] table) against ``teacher``
    run online: the layer map (the recipe's or uniform, checked), eager attention when maps
    are compared, and the student wrapped with its projections (the model to train). The
    map and projection shape are recorded in ``built``."""
    check_same_vocabulary(
        teacher_tokenizer, tokenizer, teacher_name, built.get("model", built["init"])
    )
    student_layers, teacher_layers = (
        len(transformer_layers(model)),
        len(transformer_layers(teacher)),
    )
    layer_map = (
        [tuple(pair) for pair in config.layer_map]
        if config.layer_map
        else uniform_layer_map(student_layers, teacher_layers)
    )
    check_layer_map(layer_map, student_layers, teacher_layers)  # type: ignore[arg-type]
    attention = model.config._attn_implementation
    if config.attention_weight > 0:  # the fused kernels do not return attention maps
        teacher.set_attn_implementation("eager")
        model.set_attn_implementation("eager")
    projections = projections_for(
        model.config.hidden_size,
        teacher.config.hidden_size,
        layer_map,
        seed,  # type: ignore[arg-type]
    )
    built["layer_map"] = [list(pair) for pair in layer_map]
    built["projection"] = (
        None
        if model.config.hidden_size == teacher.config.hidden_size
        else [model.config.hidden_size, teacher.config.hidden_size]
    )
    wrapped = StudentWithProjections(model, projections, attentions=config.attention_weight > 0)
    return wrapped, LayerDistillation(
        teacher=teacher,
        layer_map=layer_map,  # type: ignore[arg-type]
        hidden_weight=config.hidden_weight,
        attention_weight=config.attention_weight,
        student_attention=attention,
    )
