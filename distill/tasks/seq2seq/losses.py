"""Word-level knowledge distillation for encoder-decoder models (Kim & Rush 2016).

Under teacher forcing the decoder's logits at target position ``t`` predict ``labels[t]``
(no shift: the model shifts the labels right into its decoder inputs). The teacher is its
cached top-k per target token with the log-normalizer of its full distribution at the
temperature (:mod:`distill.train.topk`): the KL is taken over the k ids and one tail bucket
for the rest of the vocabulary. Sequence-level KD needs no loss of its own: it is the
cross-entropy on the teacher's outputs.

Both terms are averaged over scored tokens (labels not -100), not sequences. Examples whose
``hard`` flag is off (transfer sources under word-level KD) are scored by the KD term only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.train.topk import IGNORE_INDEX, kl, top_k_tail_log_probs

# The teacher's top-k per target token: values [B, T, k], ids (int64) [B, T, k] and the
# log-normalizer logsumexp(logits / T) of its full distribution [B, T].
TopK = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _check(student_logits: torch.Tensor, labels: torch.Tensor, teacher: TopK | None) -> None:
    if student_logits.dim() != 3 or labels.shape != student_logits.shape[:2]:
        raise ValueError(
            f"expected logits [B, T, V] and labels [B, T]; got {tuple(student_logits.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if teacher is None:
        return
    values, indices, normalizer = teacher
    if values.shape != indices.shape or values.shape[:2] != labels.shape:
        raise ValueError(
            f"top-k teacher values {tuple(values.shape)} and ids {tuple(indices.shape)} do "
            f"not match labels {tuple(labels.shape)} on [B, T, k]"
        )
    if normalizer.shape != labels.shape:
        raise ValueError(
            f"top-k teacher log-normalizer {tuple(normalizer.shape)} must be [B, T] = "
            f"{tuple(labels.shape)}"
        )


def cross_entropy(
    student_logits: torch.Tensor, labels: torch.Tensor, hard: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean token cross-entropy over the scored labels of the ``hard`` examples (all when
    None); a zero in the graph when nothing is scored."""
    if hard is not None:
        labels = labels.masked_fill(~hard.bool().unsqueeze(-1), IGNORE_INDEX)
    count = int((labels != IGNORE_INDEX).sum())
    if count == 0:
        return student_logits.sum() * 0.0
    total = F.cross_entropy(
        student_logits.reshape(-1, student_logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return total / count


def word_distillation_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher: TopK | None,
    temperature: float,
    alpha: float,
    hard: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE``.

    ``student_logits`` [B, T, V] at target position t are scored against ``labels[:, t]``
    (-100: padding, never scored). The KL (top-k + tail, :func:`top_k_tail_log_probs`) is
    averaged over every scored token, the cross-entropy (temperature 1) over those of the
    ``hard`` examples ([B] bool; all when None). With ``alpha = 0`` this is the plain
    cross-entropy and ``teacher`` may be None. Returns the loss and its parts as floats."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, not {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], not {alpha}")
    _check(student_logits, labels, teacher)
    ce = cross_entropy(student_logits, labels, hard)
    if alpha == 0:
        return ce, {"ce": float(ce.detach())}
    if teacher is None:
        raise ValueError("alpha > 0 needs the teacher's top-k cache")
    scored = labels != IGNORE_INDEX
    count = int(scored.sum())
    if count == 0:
        zero = student_logits.sum() * 0.0
        return zero, {"kd": 0.0, "ce": 0.0}
    values, indices, normalizer = (part[scored] for part in teacher)
    teacher_log_probs, student_log_probs = top_k_tail_log_probs(
        student_logits[scored].float(), values, indices.long(), normalizer.float(), temperature
    )
    kd = kl(teacher_log_probs, student_log_probs).sum() / count * temperature**2
    loss = alpha * kd + (1 - alpha) * ce
    return loss, {"kd": float(kd.detach()), "ce": float(ce.detach())}
