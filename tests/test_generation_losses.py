"""Token-level KD losses against references written as explicit loops in float64."""

from __future__ import annotations

import math

import pytest
import torch

from distill.tasks.causal_lm.losses import (
    IGNORE_INDEX,
    mean_token_nll,
    token_distillation_loss,
)
from distill.train.topk import top_k_logits

B, T, V = 2, 5, 7


def _log_softmax(row: list[float], temperature: float = 1.0) -> list[float]:
    scaled = [x / temperature for x in row]
    top = max(scaled)
    log_z = top + math.log(sum(math.exp(x - top) for x in scaled))
    return [x - log_z for x in scaled]


def _kl(log_p: list[float], log_q: list[float]) -> float:
    return sum(math.exp(a) * (a - b) for a, b in zip(log_p, log_q, strict=True))


def _divergence(log_p: list[float], log_q: list[float], kind: str, beta: float) -> float:
    if kind == "forward_kl":
        return _kl(log_p, log_q)
    if kind == "reverse_kl":
        return _kl(log_q, log_p)
    mixture = [
        math.log(beta * math.exp(a) + (1 - beta) * math.exp(b))
        for a, b in zip(log_p, log_q, strict=True)
    ]
    return beta * _kl(log_p, mixture) + (1 - beta) * _kl(log_q, mixture)


def reference_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
    kind: str,
    beta: float = 0.5,
    top_k: int | None = None,
) -> float:
    """The loss of the docstring, one position at a time."""
    s, t, y = student.double().tolist(), teacher.double().tolist(), labels.tolist()
    kd_sum = ce_sum = 0.0
    count = 0
    for b in range(len(y)):
        for pos in range(len(y[b]) - 1):
            target = y[b][pos + 1]
            if target == IGNORE_INDEX:
                continue
            count += 1
            ce_sum -= _log_softmax(s[b][pos])[target]
            ids = list(range(V))
            if top_k is not None:
                ids = sorted(ids, key=lambda i, row=t[b][pos]: -row[i])[:top_k]
            log_p = _log_softmax([t[b][pos][i] for i in ids], temperature)
            log_q = _log_softmax([s[b][pos][i] for i in ids], temperature)
            kd_sum += _divergence(log_p, log_q, kind, beta)
    return alpha * temperature**2 * kd_sum / count + (1 - alpha) * ce_sum / count


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(B, T, V, generator=generator, dtype=torch.float64) * 2
    teacher = torch.randn(B, T, V, generator=generator, dtype=torch.float64) * 2
    labels = torch.randint(0, V, (B, T), generator=generator)
    labels[0, :2] = IGNORE_INDEX  # a prompt
    labels[1, -2:] = IGNORE_INDEX  # padding
    return student, teacher, labels


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_each_divergence_matches_the_loop_reference(batch, kind: str, temperature: float) -> None:
    student, teacher, labels = batch
    loss, parts = token_distillation_loss(
        student, teacher, labels, temperature, alpha=0.7, divergence=kind
    )
    expected = reference_loss(student, teacher, labels, temperature, 0.7, kind)
    assert float(loss) == pytest.approx(expected, rel=1e-10)
    assert 0.7 * parts["kd"] + 0.3 * parts["ce"] == pytest.approx(expected, rel=1e-10)


def test_jsd_beta_is_the_mixture_weight(batch) -> None:
    student, teacher, labels = batch
    loss, _ = token_distillation_loss(
        student, teacher, labels, 1.5, alpha=1.0, divergence="jsd", jsd_beta=0.1
    )
    assert float(loss) == pytest.approx(
        reference_loss(student, teacher, labels, 1.5, 1.0, "jsd", beta=0.1), rel=1e-10
    )
    with pytest.raises(ValueError, match="jsd_beta"):
        token_distillation_loss(student, teacher, labels, 1.0, 1.0, "jsd", jsd_beta=1.0)


def test_kd_part_is_scaled_by_t_squared(batch) -> None:
    student, teacher, labels = batch
    _, parts = token_distillation_loss(student, teacher, labels, 3.0, alpha=1.0)
    unscaled = reference_loss(student, teacher, labels, 3.0, 1.0, "forward_kl") / 9.0
    assert parts["kd"] == pytest.approx(9.0 * unscaled, rel=1e-10)


def test_masked_positions_do_not_change_the_loss(batch) -> None:
    student, teacher, labels = batch
    before, _ = token_distillation_loss(student, teacher, labels, 2.0, alpha=0.5, divergence="jsd")
    # Logits at t are scored against labels[t + 1]: change the logits that predict masked
    # labels (and the labels themselves) and nothing may move.
    student2, teacher2, labels2 = student.clone(), teacher.clone(), labels.clone()
    student2[0, 0:1] = 1e4
    teacher2[0, 0:1] = -1e4
    student2[1, -3:] = float("nan")  # predicts the padding (and the last logit predicts nothing)
    teacher2[1, -3:] = float("nan")
    labels2[0, :2] = IGNORE_INDEX
    after, _ = token_distillation_loss(
        student2, teacher2, labels2, 2.0, alpha=0.5, divergence="jsd"
    )
    assert float(after) == pytest.approx(float(before), rel=1e-12)


def test_gradients_stay_finite_when_masked_positions_hold_nan(batch) -> None:
    student, teacher, labels = batch
    student = student.clone()
    student[1, -2:] = float("nan")
    student.requires_grad_(True)
    loss, _ = token_distillation_loss(student, teacher, labels, 2.0, alpha=0.5)
    loss.backward()
    assert torch.isfinite(student.grad[labels[:, 1:].ne(IGNORE_INDEX).nonzero(as_tuple=True)]).all()


def test_alpha_zero_is_the_shifted_cross_entropy(batch) -> None:
    student, _, labels = batch
    loss, parts = token_distillation_loss(student, None, labels, 4.0, alpha=0.0)
    expected = reference_loss(student, student, labels, 4.0, 0.0, "forward_kl")
    assert float(loss) == pytest.approx(expected, rel=1e-12)
    assert set(parts) == {"ce"}
    # transformers' causal-LM loss shifts the same way.
    hf = torch.nn.functional.cross_entropy(
        student[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )
    assert float(loss) == pytest.approx(float(hf), rel=1e-12)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_top_k_with_k_equal_to_vocabulary_equals_full_logits(batch, kind: str) -> None:
    student, teacher, labels = batch
    full, _ = token_distillation_loss(student, teacher, labels, 2.0, 0.6, kind)
    cached, _ = token_distillation_loss(student, top_k_logits(teacher, V), labels, 2.0, 0.6, kind)
    assert float(cached) == pytest.approx(float(full), rel=1e-12)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_top_k_renormalises_the_student_on_the_teacher_ids(batch, kind: str) -> None:
    student, teacher, labels = batch
    values, indices = top_k_logits(teacher, 3)
    assert values.shape == indices.shape == (B, T, 3) and indices.dtype == torch.int64
    assert torch.equal(values, teacher.gather(-1, indices))
    loss, _ = token_distillation_loss(student, (values, indices), labels, 2.0, 0.6, kind)
    expected = reference_loss(student, teacher, labels, 2.0, 0.6, kind, top_k=3)
    assert float(loss) == pytest.approx(expected, rel=1e-10)


def test_everything_masked_gives_a_zero_in_the_graph(batch) -> None:
    student, teacher, _ = batch
    student = student.clone().requires_grad_(True)
    labels = torch.full((B, T), IGNORE_INDEX)
    loss, parts = token_distillation_loss(student, teacher, labels, 2.0, 0.5)
    assert float(loss.detach()) == 0.0 and parts == {"kd": 0.0, "ce": 0.0}
    loss.backward()


def test_shape_mismatches_are_named(batch) -> None:
    student, teacher, labels = batch
    with pytest.raises(ValueError, match="differ in shape"):
        token_distillation_loss(student, teacher[..., :-1], labels, 1.0, 0.5)
    with pytest.raises(ValueError, match="labels"):
        token_distillation_loss(student, teacher, labels[:, :-1], 1.0, 0.5)
    with pytest.raises(ValueError, match="needs the teacher"):
        token_distillation_loss(student, None, labels, 1.0, 0.5)


def test_mean_token_nll_sums_over_scored_tokens(batch) -> None:
    student, _, labels = batch
    nll, count = mean_token_nll(student, labels)
    expected = reference_loss(student, student, labels, 1.0, 0.0, "forward_kl")
    assert count == int(labels[:, 1:].ne(IGNORE_INDEX).sum()) == 5
    assert nll / count == pytest.approx(expected, rel=1e-6)
    # Perplexity over two batches pools tokens, not batch means.
    nll0, c0 = mean_token_nll(student[:1], labels[:1])
    nll1, c1 = mean_token_nll(student[1:], labels[1:])
    assert (nll0 + nll1, c0 + c1) == (pytest.approx(nll, rel=1e-6), count)


def tail_reference(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
    kind: str,
    top_k: int,
) -> float:
    """k + 1 buckets by hand: the teacher's top-k ids with their full-vocabulary probabilities
    (both models at temperature T), then one bucket with the rest."""
    s, t, y = student.double().tolist(), teacher.double().tolist(), labels.tolist()
    kd_sum = ce_sum = 0.0
    count = 0
    for b in range(len(y)):
        for pos in range(len(y[b]) - 1):
            target = y[b][pos + 1]
            if target == IGNORE_INDEX:
                continue
            count += 1
            ce_sum -= _log_softmax(s[b][pos])[target]
            ids = sorted(range(V), key=lambda i, row=t[b][pos]: -row[i])[:top_k]
            full_p = _log_softmax(t[b][pos], temperature)
            full_q = _log_softmax(s[b][pos], temperature)
            buckets = []
            for full in (full_p, full_q):
                top = [full[i] for i in ids]
                rest = max(1 - sum(math.exp(x) for x in top), 1e-12)
                buckets.append([*top, math.log(rest)])
            kd_sum += _divergence(buckets[0], buckets[1], kind, 0.5)
    return alpha * temperature**2 * kd_sum / count + (1 - alpha) * ce_sum / count


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("k", [2, V])
def test_top_k_with_the_full_normalizer_keeps_a_tail_bucket(batch, kind: str, k: int) -> None:
    student, teacher, labels = batch
    values, indices = top_k_logits(teacher, k)
    normalizer = torch.logsumexp(teacher / 2.0, dim=-1)
    loss, _ = token_distillation_loss(
        student, (values, indices, normalizer), labels, 2.0, 0.6, kind
    )
    assert float(loss) == pytest.approx(
        tail_reference(student, teacher, labels, 2.0, 0.6, kind, k), rel=1e-9
    )
    if k == V:  # nothing left for the tail: the full-vocabulary loss
        full, _ = token_distillation_loss(student, teacher, labels, 2.0, 0.6, kind)
        assert float(loss) == pytest.approx(float(full), rel=1e-9)


def test_mass_outside_the_top_k_is_paid_for_only_with_the_tail_bucket(batch) -> None:
    _, teacher, labels = batch
    values, indices = top_k_logits(teacher, 3)
    normalizer = torch.logsumexp(teacher, dim=-1)
    # A student equal to the teacher on its top 3 ids, but with far more mass elsewhere.
    student = teacher.clone()
    outside = torch.ones_like(teacher, dtype=torch.bool).scatter(-1, indices, False)
    student[outside] += 6.0

    def kd(cache: tuple) -> float:
        return token_distillation_loss(student, cache, labels, 1.0, 1.0)[1]["kd"]

    assert kd((values, indices)) == pytest.approx(0.0, abs=1e-9)  # blind to it
    assert kd((values, indices, normalizer)) > 0.5
