"""Token-level distillation losses for causal language models.

Logits at position ``t`` predict the token at ``t + 1`` (the shift transformers applies in
its causal-LM loss); ``labels`` are the input ids with -100 wherever no prediction should be
scored (padding, prompt tokens). Every term is averaged over the scored tokens, not over
sequences, so a long sequence weighs more than a short one, as in the cross-entropy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from distill.train.topk import IGNORE_INDEX, kl, top_k_tail_log_probs

Divergence = Literal["forward_kl", "reverse_kl", "jsd"]
DIVERGENCES: tuple[str, ...] = ("forward_kl", "reverse_kl", "jsd")


@dataclass(frozen=True)
class SampledTeacher:
    """Token ids drawn per position from the teacher's softened distribution, with
    replacement (int64 [B, T, n]), and the teacher's log-probability of each at the
    distillation temperature ([B, T, n]); see :func:`sample_teacher_tokens`."""

    ids: torch.Tensor
    log_probs: torch.Tensor


# The teacher as full logits [B, T, V], or as a cached top-k: (values [B, T, k], ids [B, T, k]),
# optionally with the log-normalizer of its full distribution at the distillation temperature,
# logsumexp(logits / T) [B, T], which gives the top-k tokens their true probabilities and the
# rest of the vocabulary one "tail" bucket (see _teacher_and_student_log_probs), or as tokens
# sampled from its distribution (SampledTeacher: forward KL only, estimated without bias).
Teacher = (
    torch.Tensor
    | tuple[torch.Tensor, torch.Tensor]
    | tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    | SampledTeacher
)


def sample_teacher_tokens(
    logits: torch.Tensor, n: int, temperature: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` token ids per position drawn with replacement from ``softmax(logits / T)``
    (int64 [..., n]) and their log-probabilities there ([..., n], the dtype of ``logits``).

    The sample mean of ``log p(x_i) - log q(x_i)`` over them is an unbiased estimate of
    ``KL(p || q)`` for any student ``q``, and that of ``-grad log q(x_i)`` of its gradient:
    the cache that :class:`SampledTeacher` holds (random-sampling KD)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, not {n}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, not {temperature}")
    log_probs = F.log_softmax(logits / temperature, dim=-1)
    flat = log_probs.reshape(-1, logits.shape[-1])
    ids = torch.multinomial(flat.exp().float(), n, replacement=True, generator=generator)
    drawn = flat.gather(-1, ids)
    shape = (*logits.shape[:-1], n)
    return ids.reshape(shape), drawn.reshape(shape)


def divergence_per_token(
    teacher_log_probs: torch.Tensor,
    student_log_probs: torch.Tensor,
    divergence: Divergence,
    jsd_beta: float = 0.5,
) -> torch.Tensor:
    """Divergence between teacher P and student Q at each position (last axis: the vocabulary).

    - ``forward_kl``: KL(P || Q), mean-seeking (Hinton et al.).
    - ``reverse_kl``: KL(Q || P), mode-seeking.
    - ``jsd``: the generalized Jensen-Shannon divergence of GKD (Agarwal et al., 2024),
      ``beta * KL(P || M) + (1 - beta) * KL(Q || M)`` with ``M = beta * P + (1 - beta) * Q``.
      ``beta`` must lie strictly between 0 and 1: at either end it is identically zero (the
      scaled limits are the two KLs, available as ``forward_kl`` and ``reverse_kl``).
    """
    if divergence == "forward_kl":
        return kl(teacher_log_probs, student_log_probs)
    if divergence == "reverse_kl":
        return kl(student_log_probs, teacher_log_probs)
    if divergence == "jsd":
        if not 0.0 < jsd_beta < 1.0:
            raise ValueError(f"jsd_beta must be strictly between 0 and 1, not {jsd_beta}")
        # log M computed as a log-sum-exp: the mixture of two tiny probabilities stays exact.
        mixture = torch.logsumexp(
            torch.stack(
                [teacher_log_probs + math.log(jsd_beta), student_log_probs + math.log1p(-jsd_beta)]
            ),
            dim=0,
        )
        return jsd_beta * kl(teacher_log_probs, mixture) + (1 - jsd_beta) * kl(
            student_log_probs, mixture
        )
    raise ValueError(f"divergence must be one of {list(DIVERGENCES)}, not {divergence!r}")


def _shift(tensor: torch.Tensor) -> torch.Tensor:
    """Positions 0..T-2 (the predictions that have a next token)."""
    return tensor[:, :-1]


def mean_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """Summed next-token negative log-likelihood (nats) and the number of scored tokens.

    Perplexity over a data set is ``exp(sum of nll / sum of counts)`` over its batches.
    """
    _check_shapes(logits, labels)
    targets = labels[:, 1:]
    with torch.no_grad():
        nll = F.cross_entropy(
            _shift(logits).float().reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
    return float(nll), int((targets != IGNORE_INDEX).sum())


def _check_shapes(student_logits: torch.Tensor, labels: torch.Tensor) -> None:
    if student_logits.dim() != 3 or labels.shape != student_logits.shape[:2]:
        raise ValueError(
            f"expected logits [B, T, V] and labels [B, T]; got {tuple(student_logits.shape)} "
            f"and {tuple(labels.shape)}"
        )


def _check_teacher(student_logits: torch.Tensor, teacher: Teacher) -> None:
    if isinstance(teacher, torch.Tensor):
        if teacher.shape != student_logits.shape:
            raise ValueError(
                f"teacher logits {tuple(teacher.shape)} and student logits "
                f"{tuple(student_logits.shape)} differ in shape (token-level KD needs one vocabulary)"
            )
        return
    if isinstance(teacher, SampledTeacher):
        ids, log_probs = teacher.ids, teacher.log_probs
        if ids.shape != log_probs.shape or ids.shape[:2] != student_logits.shape[:2]:
            raise ValueError(
                f"sampled teacher ids {tuple(ids.shape)} and log-probabilities "
                f"{tuple(log_probs.shape)} do not match student logits "
                f"{tuple(student_logits.shape)} on [B, T, n]"
            )
        if ids.dtype != torch.int64:
            raise ValueError(f"sampled teacher ids must be int64, not {ids.dtype}")
        return
    values, indices = teacher[0], teacher[1]
    if len(teacher) == 3 and teacher[2].shape != values.shape[:2]:
        raise ValueError(
            f"top-k teacher log-normalizer {tuple(teacher[2].shape)} must be [B, T] = "
            f"{tuple(values.shape[:2])}"
        )
    if values.shape != indices.shape or values.shape[:2] != student_logits.shape[:2]:
        raise ValueError(
            f"top-k teacher values {tuple(values.shape)} and ids {tuple(indices.shape)} "
            f"do not match student logits {tuple(student_logits.shape)} on [B, T, k]"
        )
    if indices.dtype != torch.int64:
        raise ValueError(f"top-k teacher ids must be int64, not {indices.dtype}")


def _select(teacher: Teacher, index: torch.Tensor | slice) -> Teacher:
    """The same positions of full logits or of both halves of a top-k cache."""
    if isinstance(teacher, torch.Tensor):
        return teacher[index]
    if isinstance(teacher, SampledTeacher):
        return SampledTeacher(teacher.ids[index], teacher.log_probs[index])
    return tuple(part[index] for part in teacher)  # type: ignore[return-value]


def _teacher_and_student_log_probs(
    student_logits: torch.Tensor, teacher: Teacher, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Temperature-softened log-probabilities of teacher and student over the same support
    (the last axis: the vocabulary, or the teacher's top-k ids)."""
    if isinstance(teacher, torch.Tensor):
        teacher_scores, student_scores = teacher, student_logits
    elif len(teacher) == 3:
        # k + 1 buckets: the teacher's top-k tokens with their true probabilities (from the
        # cached full log-normalizer) and one bucket for the rest of the vocabulary; the
        # student's full distribution is folded the same way. Mass the student puts outside
        # the teacher's top k is then paid for; with k = V the tail is empty and this is the
        # full-vocabulary divergence.
        return top_k_tail_log_probs(student_logits, *teacher, temperature)
    else:
        teacher_scores, indices = teacher
        # The student is restricted to the teacher's k ids and renormalised there.
        student_scores = student_logits.gather(-1, indices)
    teacher_log_probs = F.log_softmax(teacher_scores.to(student_logits.dtype) / temperature, dim=-1)
    student_log_probs = F.log_softmax(student_scores / temperature, dim=-1)
    return teacher_log_probs, student_log_probs


def sampled_forward_kl(
    student_logits: torch.Tensor, teacher: SampledTeacher, temperature: float
) -> torch.Tensor:
    """Per position, the Monte-Carlo estimate of ``KL(p_T || q_T)`` from tokens drawn from the
    teacher's ``p_T``: ``mean_i [log p_T(x_i) - log q_T(x_i)]``. Its expectation is the exact
    KL and that of its gradient the exact gradient (``(q_T - p_T) / T`` per logit): the
    student's part, ``-mean_i log q_T(x_i)``, estimates the cross-entropy ``-E_p[log q_T]``;
    the teacher's part (its entropy, constant for the student) only makes the value a KL."""
    student = F.log_softmax(student_logits / temperature, dim=-1).gather(-1, teacher.ids)
    return (teacher.log_probs.to(student.dtype) - student).mean(dim=-1)


def token_distillation_loss(
    student_logits: torch.Tensor,
    teacher: Teacher | None,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
    divergence: Divergence = "forward_kl",
    jsd_beta: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``alpha * T^2 * D(teacher_T, student_T) + (1 - alpha) * CE`` over the scored tokens.

    ``student_logits`` is [B, T, V]; ``labels`` [B, T] are the input ids with -100 at the
    positions to ignore; logits at ``t`` are scored against ``labels[:, t + 1]``, and both the
    divergence and the cross-entropy (at temperature 1) are averaged over the positions whose
    next label is not -100. ``D`` is chosen by ``divergence`` (see
    :func:`divergence_per_token`); T^2 keeps its gradients on the cross-entropy's scale.

    ``teacher`` is either full logits [B, T, V] or a top-k cache ``(values, ids)``, both
    [B, T, k] (ids int64, from :func:`top_k_logits`), optionally with a third part, the
    teacher's full log-normalizer ``logsumexp(logits / T)`` [B, T]. With it (what distill
    caches) the divergence is taken over k + 1 buckets: the k ids with their true
    probabilities, and the rest of the vocabulary as one bucket, for the teacher and for the
    student's full distribution alike, so a student that moves mass off the teacher's top k
    pays for it. Without it the teacher distribution is the softmax of its k values and the
    student's is restricted to the same k ids and renormalised; that version cannot see mass
    the student puts elsewhere (a student trained that way may match the top-k shape with a
    poor overall distribution). With k = V both equal the full-logit loss.

    ``teacher`` may also be a :class:`SampledTeacher` (tokens drawn from the teacher's
    softened distribution): the divergence is then the unbiased Monte-Carlo estimate of
    forward KL (:func:`sampled_forward_kl`); reverse KL and JSD need the whole teacher
    distribution and are refused with it.

    With ``alpha = 0`` this is the plain next-token cross-entropy and ``teacher`` may be None.
    Returns the loss and its parts (``kd``: the divergence times T^2; ``ce``) as floats.
    """
    _check_shapes(student_logits, labels)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, not {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], not {alpha}")
    targets = labels[:, 1:]
    scored = targets != IGNORE_INDEX
    count = int(scored.sum())
    logits = _shift(student_logits)
    if count == 0:
        # Nothing to score (every label masked): a zero that still belongs to the graph.
        zero = student_logits.sum() * 0.0
        return zero, {"kd": 0.0, "ce": 0.0}
    ce = (
        F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        / count
    )
    if alpha == 0:
        return ce, {"ce": float(ce.detach())}
    if teacher is None:
        raise ValueError("alpha > 0 needs the teacher's logits or its top-k cache")
    _check_teacher(student_logits, teacher)
    # Only scored positions take part: masked ones may hold anything (padding logits).
    scored_teacher = _select(_select(teacher, (slice(None), slice(None, -1))), scored)
    if isinstance(scored_teacher, SampledTeacher):
        if divergence != "forward_kl":
            raise ValueError(
                f"divergence {divergence!r} needs the teacher's full distribution; tokens "
                "sampled from it estimate forward_kl only"
            )
        per_token = sampled_forward_kl(logits[scored], scored_teacher, temperature)
    else:
        teacher_log_probs, student_log_probs = _teacher_and_student_log_probs(
            logits[scored], scored_teacher, temperature
        )
        per_token = divergence_per_token(teacher_log_probs, student_log_probs, divergence, jsd_beta)
    kd = per_token.sum() / count * temperature**2
    loss = alpha * kd + (1 - alpha) * ce
    return loss, {"kd": float(kd.detach()), "ce": float(ce.detach())}
