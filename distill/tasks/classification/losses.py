"""Distillation losses.

The logit loss follows Hinton et al. (2015): the KL divergence between the teacher's
and the student's temperature-softened distributions, multiplied by T^2 so that its
gradients keep the same scale as the cross-entropy term whatever the temperature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_target_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, averaged over examples."""
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    return kl * temperature**2


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``alpha * T^2 * KL + (1 - alpha) * CE(labels)``; returns the loss and its parts for logging.

    With ``alpha = 0`` this is plain cross-entropy and ``teacher_logits`` may be None
    (the no-distillation baseline).
    """
    # Transfer text carries no label (-1): it teaches only through the KD term.
    labelled = labels >= 0
    if bool(labelled.all()):
        ce = F.cross_entropy(student_logits, labels)
    elif bool(labelled.any()):
        ce = F.cross_entropy(student_logits[labelled], labels[labelled])
    else:
        ce = student_logits.sum() * 0.0
    if alpha == 0:
        return ce, {"ce": float(ce.detach())}
    if teacher_logits is None:
        raise ValueError("alpha > 0 needs teacher logits")
    kd = soft_target_kl(student_logits, teacher_logits.to(student_logits.dtype), temperature)
    loss = alpha * kd + (1 - alpha) * ce
    return loss, {"kd": float(kd.detach()), "ce": float(ce.detach())}
