"""The KD loss against hand-computed references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill.tasks.classification.losses import distillation_loss, soft_target_kl


def reference_kl(student: list[float], teacher: list[float], temperature: float) -> float:
    """KL(p_teacher || p_student) on softened distributions, by hand, times T^2."""

    def softmax(xs: list[float]) -> list[float]:
        exps = [math.exp(x / temperature) for x in xs]
        total = sum(exps)
        return [e / total for e in exps]

    p, q = softmax(teacher), softmax(student)
    return temperature**2 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def test_kl_is_zero_for_equal_logits() -> None:
    logits = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    assert soft_target_kl(logits, logits.clone(), temperature=3.0).item() == pytest.approx(
        0.0, abs=1e-7
    )


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kl_matches_hand_computation_with_t_squared(temperature: float) -> None:
    student = [[0.2, 1.5, -0.3], [2.0, 0.0, -1.0]]
    teacher = [[1.0, 0.1, 0.0], [-0.5, 2.5, 0.3]]
    expected = (
        sum(reference_kl(s, t, temperature) for s, t in zip(student, teacher, strict=True)) / 2
    )
    got = soft_target_kl(torch.tensor(student), torch.tensor(teacher), temperature).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_t_squared_scaling_keeps_gradient_scale() -> None:
    # For large T the gradient of T^2 * KL w.r.t. student logits tends to (s - t) / N (Hinton et al.):
    # without the T^2 factor it would shrink as 1/T^2.
    student = torch.tensor([[0.3, -0.2, 0.1]], requires_grad=True)
    teacher = torch.tensor([[0.1, 0.2, -0.1]])
    soft_target_kl(student, teacher, temperature=50.0).backward()
    centred = (student - teacher) - (student - teacher).mean()
    assert torch.allclose(student.grad, centred.detach() / 3, atol=1e-3)


def test_mixture_weights_kd_and_cross_entropy() -> None:
    student = torch.tensor([[0.2, 1.5, -0.3], [2.0, 0.0, -1.0]])
    teacher = torch.tensor([[1.0, 0.1, 0.0], [-0.5, 2.5, 0.3]])
    labels = torch.tensor([1, 0])
    loss, parts = distillation_loss(student, teacher, labels, temperature=2.0, alpha=0.3)
    ce = F.cross_entropy(student, labels).item()
    kd = soft_target_kl(student, teacher, 2.0).item()
    assert loss.item() == pytest.approx(0.3 * kd + 0.7 * ce, rel=1e-6)
    assert parts == pytest.approx({"kd": kd, "ce": ce})


def test_alpha_zero_is_plain_cross_entropy_without_teacher() -> None:
    student = torch.tensor([[0.2, 1.5, -0.3]])
    labels = torch.tensor([2])
    loss, parts = distillation_loss(student, None, labels, temperature=2.0, alpha=0.0)
    assert loss.item() == pytest.approx(F.cross_entropy(student, labels).item())
    assert "kd" not in parts


def test_alpha_positive_requires_teacher_logits() -> None:
    with pytest.raises(ValueError, match="teacher logits"):
        distillation_loss(torch.zeros(1, 2), None, torch.tensor([0]), temperature=2.0, alpha=0.5)


def test_unlabelled_examples_teach_only_through_the_teacher() -> None:
    student = torch.tensor([[0.2, 1.5, -0.3], [2.0, 0.0, -1.0], [0.1, 0.1, 0.4]])
    teacher = torch.tensor([[1.0, 0.1, 0.0], [-0.5, 2.5, 0.3], [0.0, 1.0, 0.0]])
    labels = torch.tensor([1, -1, -1])  # -1: transfer text with no gold label
    loss, parts = distillation_loss(student, teacher, labels, temperature=2.0, alpha=0.6)
    ce = F.cross_entropy(student[:1], labels[:1]).item()
    kd = soft_target_kl(student, teacher, 2.0).item()  # KD over every example
    assert parts == pytest.approx({"kd": kd, "ce": ce})
    assert loss.item() == pytest.approx(0.6 * kd + 0.4 * ce, rel=1e-6)
    only_transfer, parts = distillation_loss(student[1:], teacher[1:], labels[1:], 2.0, 0.6)
    assert parts["ce"] == 0.0  # no NaN from an empty cross-entropy
    assert only_transfer.item() == pytest.approx(
        0.6 * soft_target_kl(student[1:], teacher[1:], 2.0).item(), rel=1e-6
    )
