"""The span distillation loss against a numpy computation by hand, padding left out of every
softmax, the no-KD forms, and gradients reaching the student."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.tasks.question_answering.losses import span_distillation_loss

# 2 windows of 5 tokens; the second has 2 padding tokens (mask 0).
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
START = np.array([[0.5, 2.0, -1.0, 0.3, 1.2], [1.0, -0.5, 0.8, 9.0, -9.0]])
END = np.array([[0.1, -0.4, 1.7, 2.2, 0.0], [0.6, 0.2, -1.3, 7.0, 3.0]])
TEACHER_START = np.array([[1.5, 3.0, -2.0, 0.0, 0.4], [2.0, -1.0, 0.5, -4.0, 5.0]])
TEACHER_END = np.array([[-0.3, 0.2, 2.5, 1.0, -1.0], [0.0, 1.1, -0.7, 6.0, 2.0]])
START_POSITIONS = np.array([1, 0])  # the second window holds no answer
END_POSITIONS = np.array([3, 0])
T, ALPHA = 2.0, 0.5


def _log_softmax(row: np.ndarray) -> np.ndarray:
    return row - np.log(np.exp(row - row.max()).sum()) - row.max()


def _hand_loss() -> tuple[float, float]:
    """(KD, hard) over each window's real tokens only, as the brief defines them."""
    hard = kd = 0.0
    for w in range(2):
        real = MASK[w] == 1
        for student, teacher, gold in (
            (START, TEACHER_START, START_POSITIONS),
            (END, TEACHER_END, END_POSITIONS),
        ):
            hard += -_log_softmax(student[w][real])[gold[w]] / 2
            log_q = _log_softmax(student[w][real] / T)
            log_p = _log_softmax(teacher[w][real] / T)
            kd += T**2 * float(np.sum(np.exp(log_p) * (log_p - log_q))) / 2
    return kd / 2, hard / 2  # batchmean over the 2 windows


def _tensors(**changes: np.ndarray) -> dict[str, torch.Tensor]:
    arrays = {
        "start_logits": START,
        "end_logits": END,
        "teacher_start": TEACHER_START,
        "teacher_end": TEACHER_END,
        **changes,
    }
    tensors = {k: torch.tensor(v, dtype=torch.float32) for k, v in arrays.items()}
    tensors["start_positions"] = torch.tensor(START_POSITIONS)
    tensors["end_positions"] = torch.tensor(END_POSITIONS)
    tensors["mask"] = torch.tensor(MASK)
    return tensors


def test_loss_matches_the_hand_computation() -> None:
    kd, hard = _hand_loss()
    loss, parts = span_distillation_loss(**_tensors(), temperature=T, alpha=ALPHA)
    assert parts["kd"] == pytest.approx(kd, rel=1e-5)
    assert parts["hard"] == pytest.approx(hard, rel=1e-5)
    assert float(loss) == pytest.approx(ALPHA * kd + (1 - ALPHA) * hard, rel=1e-5)
    assert kd > 0 and hard > 0


def test_padding_changes_nothing() -> None:
    loss, parts = span_distillation_loss(**_tensors(), temperature=T, alpha=ALPHA)
    start, teacher_end = START.copy(), TEACHER_END.copy()
    start[1, 3:] = [-50.0, 80.0]
    teacher_end[1, 4] = 1e4
    changed, changed_parts = span_distillation_loss(
        **_tensors(start_logits=start, teacher_end=teacher_end), temperature=T, alpha=ALPHA
    )
    assert float(changed) == pytest.approx(float(loss), rel=1e-6)
    assert changed_parts == pytest.approx(parts, rel=1e-6)


def test_alpha_zero_and_no_teacher_give_the_hard_loss() -> None:
    _, hard = _hand_loss()
    loss, parts = span_distillation_loss(**_tensors(), temperature=T, alpha=0.0)
    assert float(loss) == pytest.approx(hard, rel=1e-5)
    assert parts["hard"] == pytest.approx(hard, rel=1e-5)
    tensors = _tensors()
    tensors["teacher_start"] = tensors["teacher_end"] = None  # type: ignore[assignment]
    alone, alone_parts = span_distillation_loss(**tensors, temperature=T, alpha=ALPHA)
    assert float(alone) == pytest.approx(hard, rel=1e-5)
    assert alone_parts == {"hard": pytest.approx(hard, rel=1e-5)}
    tensors["teacher_start"] = torch.tensor(TEACHER_START, dtype=torch.float32)
    with pytest.raises(ValueError, match="together"):
        span_distillation_loss(**tensors, temperature=T, alpha=ALPHA)


def test_gradients_reach_the_student_but_not_its_padding() -> None:
    tensors = _tensors()
    for name in ("start_logits", "end_logits"):
        tensors[name].requires_grad_(True)
    loss, _ = span_distillation_loss(**tensors, temperature=T, alpha=ALPHA)
    loss.backward()
    for name in ("start_logits", "end_logits"):
        grad = tensors[name].grad
        assert grad is not None and bool(torch.isfinite(grad).all())
        assert float(grad[MASK == 1].abs().min()) > 0
        assert bool((grad[1, 3:] == 0).all())


def test_a_low_temperature_stays_finite() -> None:
    tensors = _tensors()
    tensors["start_logits"].requires_grad_(True)
    loss, parts = span_distillation_loss(**tensors, temperature=0.5, alpha=ALPHA)
    loss.backward()
    assert np.isfinite(parts["kd"]) and parts["kd"] > 0
    assert bool(torch.isfinite(tensors["start_logits"].grad).all())  # type: ignore[arg-type]


def test_windows_without_gold_positions_teach_through_kd_alone() -> None:
    tensors = _tensors()
    tensors["start_positions"] = tensors["end_positions"] = torch.tensor([-100, -100])
    loss, parts = span_distillation_loss(**tensors, temperature=T, alpha=ALPHA)
    kd, _ = _hand_loss()
    assert parts["hard"] == 0.0
    assert float(loss) == pytest.approx(ALPHA * kd, rel=1e-5)
    tensors["start_positions"] = torch.tensor([START_POSITIONS[0], -100])
    tensors["end_positions"] = torch.tensor([END_POSITIONS[0], -100])
    _, mixed = span_distillation_loss(**tensors, temperature=T, alpha=ALPHA)
    first = (
        -_log_softmax(START[0])[START_POSITIONS[0]] - _log_softmax(END[0])[END_POSITIONS[0]]
    ) / 2
    assert mixed["hard"] == pytest.approx(first, rel=1e-5)  # the scored window's alone
