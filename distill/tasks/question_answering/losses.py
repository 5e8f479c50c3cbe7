"""The span distillation loss for extractive question answering.

A QA model gives each window two distributions over its tokens: where the answer starts and
where it ends. The hard loss is transformers' QA examples' one, the mean of the two
cross-entropies on the gold first and last token (both at the first token, 0, when the window
holds no answer). Distillation matches each of the student's two distributions to the
teacher's, as Hinton et al. (2015) do for a label distribution (:func:`~distill.tasks.
classification.losses.soft_target_kl`): ``T^2 * KL(teacher_T || student_T)``, averaged over
windows, then over start and end.

Padding is no token a span may start or end at: its logits are set to the dtype's lowest value
(finite, so no ``-inf * 0`` NaN) before every softmax, so it takes no probability in any.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.tasks.classification.losses import soft_target_kl
from distill.tasks.token_classification.losses import IGNORE_INDEX


def masked_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``logits`` with the positions ``mask`` marks 0 (padding) set to the dtype's lowest
    value: a softmax gives them no probability and their gradient is zero."""
    return logits.masked_fill(~mask.bool(), torch.finfo(logits.dtype).min)


def span_cross_entropy(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    start_positions: torch.Tensor,
    end_positions: torch.Tensor,
) -> torch.Tensor:
    """``(CE(start) + CE(end)) / 2`` averaged over the windows whose positions are not -100
    (a window of transfer text has no gold span); 0 when there are none. Logits already
    masked."""
    scored = start_positions != IGNORE_INDEX
    if not bool(scored.any()):
        return (start_logits * 0.0).sum()  # a zero in the graph (a sum of lowests: -inf)
    start = F.cross_entropy(start_logits[scored], start_positions[scored])
    end = F.cross_entropy(end_logits[scored], end_positions[scored])
    return (start + end) / 2


def span_distillation_loss(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    teacher_start: torch.Tensor | None,
    teacher_end: torch.Tensor | None,
    start_positions: torch.Tensor,
    end_positions: torch.Tensor,
    mask: torch.Tensor,
    temperature: float,
    alpha: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The student's loss and its parts. Logits and ``mask`` [windows, tokens] (``mask``: the
    attention mask, 1 = a real token); positions [windows]: the gold first and last token
    (0: no answer in the window; -100: not scored). ``teacher_*`` None (the no-KD twin,
    evaluation): the hard loss alone, parts ``{"hard"}``; else ``alpha * KD + (1 - alpha) *
    hard``, parts ``{"kd", "hard"}``."""
    if (teacher_start is None) != (teacher_end is None):
        raise ValueError("teacher start and end logits come together (or neither)")
    start, end = masked_logits(start_logits, mask), masked_logits(end_logits, mask)
    hard = span_cross_entropy(start, end, start_positions, end_positions)
    if teacher_start is None or teacher_end is None:
        return hard, {"hard": float(hard.detach())}
    kd = (
        _soft_kl(start_logits, teacher_start, mask, temperature)
        + _soft_kl(end_logits, teacher_end, mask, temperature)
    ) / 2
    loss = alpha * kd + (1 - alpha) * hard
    return loss, {"kd": float(kd.detach()), "hard": float(hard.detach())}


def _soft_kl(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T^2 * KL(teacher_T || student_T)`` over a window's real tokens, batchmean over
    windows. Masked after dividing by T, so the lowest value stays finite for T < 1."""
    student = masked_logits(student / temperature, mask)
    teacher = masked_logits(teacher.to(student.dtype) / temperature, mask)
    return soft_target_kl(student, teacher, 1.0) * temperature**2
