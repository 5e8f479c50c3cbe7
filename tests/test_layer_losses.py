"""Layer-level losses: the layer map, the projection, the losses against hand computations,
and the refusal of a teacher/student pair whose tokenizers differ."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertTokenizerFast

from distill.errors import ModelLoadError
from distill.train.layer_losses import (
    LayerDistillation,
    StudentWithProjections,
    attention_loss,
    check_layer_map,
    check_same_vocabulary,
    hidden_state_loss,
    projections_for,
    uniform_layer_map,
)


@pytest.mark.parametrize(
    ("student", "teacher", "expected"),
    [
        (2, 6, [(0, 2), (1, 5)]),  # student layer 1 <- teacher layer 3, counted from 1
        (3, 6, [(0, 1), (1, 3), (2, 5)]),
        (4, 12, [(0, 2), (1, 5), (2, 8), (3, 11)]),
        (1, 4, [(0, 3)]),
        (3, 3, [(0, 0), (1, 1), (2, 2)]),
    ],
)
def test_uniform_map_ends_on_the_last_teacher_layer(
    student: int, teacher: int, expected: list[tuple[int, int]]
) -> None:
    assert uniform_layer_map(student, teacher) == expected


def test_layer_map_out_of_range_names_both_sides() -> None:
    check_layer_map([(0, 2), (1, 5)], 2, 6)
    with pytest.raises(ModelLoadError) as err:
        check_layer_map([(0, 6), (2, 1)], 2, 6)
    message = str(err.value)
    assert "student.layer_map" in message
    assert "teacher layer 6 (the teacher has 6)" in message
    assert "student layer 2 (the student has 2)" in message
    with pytest.raises(ModelLoadError, match="mapped twice"):
        check_layer_map([(0, 1), (0, 2)], 2, 6)


def test_projection_maps_student_width_to_teacher_width() -> None:
    projections = projections_for(32, 48, [(0, 1), (1, 3)], seed=0)
    assert [tuple(p.weight.shape) for p in projections] == [(48, 32), (48, 32)]
    assert all(p.bias is None for p in projections)
    assert projections[0](torch.zeros(2, 5, 32)).shape == (2, 5, 48)
    same = projections_for(32, 32, [(0, 1)], seed=0)
    assert isinstance(same[0], nn.Identity) and not list(same.parameters())
    # Seeded, and without disturbing the global generator.
    torch.manual_seed(3)
    before = torch.rand(1)
    torch.manual_seed(3)
    again = projections_for(32, 48, [(0, 1)], seed=5)
    assert torch.equal(again[0].weight, projections_for(32, 48, [(0, 1)], seed=5)[0].weight)
    assert torch.equal(torch.rand(1), before)


def test_hidden_loss_is_masked_mse_through_the_projection() -> None:
    torch.manual_seed(0)
    student = [torch.randn(2, 3, 4), torch.randn(2, 3, 4)]
    teacher = [torch.randn(2, 3, 6) for _ in range(3)]
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    layer_map = [(0, 1), (1, 2)]
    projections = projections_for(4, 6, layer_map, seed=1)
    got = hidden_state_loss(student, teacher, projections, layer_map, mask).item()
    expected = 0.0
    for projection, (s, t) in zip(projections, layer_map, strict=True):
        errors = []
        for b in range(2):
            for position in range(3):
                if mask[b, position]:
                    diff = projection(student[s][b, position]) - teacher[t][b, position]
                    errors.extend((diff**2).tolist())
        expected += sum(errors) / len(errors) / len(layer_map)
    assert got == pytest.approx(expected, rel=1e-5)
    # Padding positions do not count.
    student[0][1, 2] += 100.0
    assert hidden_state_loss(
        student, teacher, projections, layer_map, mask
    ).item() == pytest.approx(got, rel=1e-6)


def _attention(batch: int, heads: int, length: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(batch, heads, length, length, generator=generator), dim=-1)


def test_attention_loss_is_kl_per_real_query_row() -> None:
    student = [_attention(1, 2, 3, 0)]
    teacher = [_attention(1, 2, 3, 1), _attention(1, 2, 3, 2)]
    mask = torch.tensor([[1, 1, 0]])
    got = attention_loss(student, teacher, [(0, 1)], mask).item()
    rows = []
    for query in range(2):  # query 2 is padding
        per_head = []
        for head in range(2):
            p, q = teacher[1][0, head, query], student[0][0, head, query]
            per_head.append(float((p * (p / q).log()).sum()))
        rows.append(sum(per_head) / 2)
    assert got == pytest.approx(sum(rows) / 2, rel=1e-5)
    assert attention_loss(teacher, teacher, [(1, 1)], mask).item() == pytest.approx(0.0, abs=1e-6)


def test_attention_loss_averages_heads_when_counts_differ() -> None:
    student, teacher = [_attention(1, 2, 3, 0)], [_attention(1, 4, 3, 1)]
    mask = torch.ones(1, 3, dtype=torch.long)
    got = attention_loss(student, teacher, [(0, 0)], mask).item()
    p, q = teacher[0].mean(dim=1), student[0].mean(dim=1)
    assert got == pytest.approx(float((p * (p / q).log()).sum(-1).mean()), rel=1e-5)


def test_mismatched_tokenizers_are_refused_naming_both(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    teacher = AutoTokenizer.from_pretrained(tiny_model_dir)
    check_same_vocabulary(teacher, AutoTokenizer.from_pretrained(tiny_model_dir), "t", "s")
    other_vocab = tmp_path / "vocab.txt"
    other_vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad"]) + "\n")
    other = BertTokenizerFast(vocab=str(other_vocab))
    with pytest.raises(ModelLoadError) as err:
        check_same_vocabulary(teacher, other, "teacher model T", "student model S")
    message = str(err.value)
    assert "teacher model T" in message and "student model S" in message
    assert "student.hidden_weight" in message and "7 tokens" in message  # [MASK] is added


def test_layer_distillation_adds_weighted_losses_and_trains_the_projection(
    tiny_model_dir: Path,
) -> None:
    from distill.train.models import student_from_teacher_layers

    teacher = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, attn_implementation="eager"
    ).eval()
    student = student_from_teacher_layers(teacher, [0, 3])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    inputs = dict(tokenizer(["good flight", "bad movie today"], padding=True, return_tensors="pt"))
    layer_map = [(0, 1), (1, 3)]
    wrapped = StudentWithProjections(student, projections_for(32, 32, layer_map, 0), True).train()
    layers = LayerDistillation(teacher, layer_map, hidden_weight=2.0, attention_weight=0.5)
    outputs = wrapped(**inputs)
    total, parts = layers.loss(wrapped, outputs, inputs)
    with torch.no_grad():
        reference = teacher(**inputs, output_hidden_states=True, output_attentions=True)
    hidden = hidden_state_loss(
        list(outputs.hidden_states[1:]),
        list(reference.hidden_states[1:]),
        wrapped.projections,
        layer_map,
        inputs["attention_mask"],
    )
    attention = attention_loss(
        list(outputs.attentions), list(reference.attentions), layer_map, inputs["attention_mask"]
    )
    assert parts == pytest.approx({"hidden": hidden.item(), "attention": attention.item()})
    assert total.item() == pytest.approx(2.0 * hidden.item() + 0.5 * attention.item(), rel=1e-5)
    assert hidden.item() > 0 and attention.item() > 0  # the student's layers see other inputs
    total.backward()
    assert student.base_model.encoder.layer[0].attention.self.query.weight.grad is not None
    # In eval mode the wrapper is the plain student (logits only).
    assert wrapped.eval()(**inputs).hidden_states is None
