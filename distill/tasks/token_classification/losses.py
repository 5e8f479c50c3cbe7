"""Token-level distillation loss for tagging.

``alpha * T^2 * KL(teacher_T || student_T)`` averaged over the sub-tokens the KD mask marks
(every real sub-token by default, or each word's first), plus ``(1 - alpha) * CE`` on the
tags of each word's first sub-token (other sub-tokens, specials and padding carry label
-100 and are ignored, as transformers' token-classification examples do).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def masked_soft_target_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))`` averaged over masked positions."""
    selected = mask.bool()
    if not bool(selected.any()):
        return student_logits.sum() * 0.0
    student = F.log_softmax(student_logits[selected] / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits[selected].to(student.dtype) / temperature, dim=-1)
    kl = F.kl_div(student, teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def token_distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor,
    kd_mask: torch.Tensor | None,
    temperature: float,
    alpha: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The student's loss and its parts. ``labels`` [batch, seq] (-100 = not scored; a
    transfer sentence is all -100), logits [batch, seq, tags]; alpha = 0 is the no-KD twin."""
    scored = labels != IGNORE_INDEX
    if bool(scored.any()):
        ce = F.cross_entropy(student_logits[scored], labels[scored])
    else:
        ce = student_logits.sum() * 0.0
    if alpha == 0:
        return ce, {"ce": float(ce.detach())}
    if teacher_logits is None or kd_mask is None:
        raise ValueError("alpha > 0 needs teacher logits and a KD mask")
    kd = masked_soft_target_kl(student_logits, teacher_logits, kd_mask, temperature)
    return alpha * kd + (1 - alpha) * ce, {"kd": float(kd.detach()), "ce": float(ce.detach())}
