"""A teacher's next-token distribution cached as its top-k logits, and the divergence taken
from such a cache (shared by the causal-LM and seq2seq tasks, moved here from
``distill.tasks.causal_lm.losses``).

What is cached per scored token: the ``k`` largest logits, their token ids and the
log-normalizer of the full distribution at the distillation temperature,
``logsumexp(logits / T)``. With it the k ids keep their true probabilities and the rest of
the vocabulary becomes one "tail" bucket (:func:`top_k_tail_log_probs`), so a student that
moves mass off the teacher's top k pays for it; with k = V the tail is empty and the
divergence is the full-vocabulary one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
# Smallest probability given to a tail bucket, so that log 0 never reaches a KL.
_TAIL_FLOOR = 1e-12


def top_k_logits(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest logits of each position and their token ids (int64), largest first."""
    if not 1 <= k <= logits.shape[-1]:
        raise ValueError(f"k must be in 1..{logits.shape[-1]} (the vocabulary size), not {k}")
    values, indices = torch.topk(logits, k, dim=-1, sorted=True)
    return values, indices.to(torch.int64)


def kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(P || Q)`` summed over the last axis, with 0 * log 0 = 0 (no NaN for p = 0)."""
    p = log_p.exp()
    # Where p == 0 the difference may be -inf - (-inf); zeroing it first keeps the gradient finite.
    diff = torch.where(p > 0, log_p - log_q, torch.zeros_like(log_p))
    return (p * diff).sum(dim=-1)


def with_tail(top_log_probs: torch.Tensor) -> torch.Tensor:
    """Top-k log-probabilities plus a last entry: the log of the mass left to the other ids."""
    tail = (1 - top_log_probs.exp().sum(dim=-1, keepdim=True)).clamp_min(_TAIL_FLOOR)
    return torch.cat([top_log_probs, tail.log()], dim=-1)


def top_k_tail_log_probs(
    student_logits: torch.Tensor,
    values: torch.Tensor,
    indices: torch.Tensor,
    log_normalizer: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student log-probabilities at ``temperature`` over k + 1 buckets: the
    teacher's top-k ids (``values`` and int64 ``indices`` [..., k], its true probabilities from
    the cached ``log_normalizer`` [...]) and one bucket for the rest of the vocabulary; the
    student's full distribution (``student_logits`` [..., V]) is folded the same way."""
    teacher_top = values.to(student_logits.dtype) / temperature - log_normalizer.unsqueeze(-1)
    student_top = F.log_softmax(student_logits / temperature, dim=-1).gather(-1, indices)
    return with_tail(teacher_top), with_tail(student_top)
