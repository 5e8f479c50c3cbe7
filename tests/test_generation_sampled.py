"""The sampled-token teacher cache (random-sampling KD): its estimator of forward KL is
unbiased (value and gradient, a statistical test with a fixed seed) where top-k + tail is
biased; the recipe keys; the labels and student stages on tiny Llamas."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from generation_helpers import tiny_llama, tiny_tokenizer, write_tiny_lm_run

from distill.config import DataConfig, StudentTable, validate_recipe
from distill.errors import ArtifactError, RecipeError
from distill.pipeline.artifacts import RunContext
from distill.tasks.causal_lm.files import read_split
from distill.tasks.causal_lm.losses import (
    SampledTeacher,
    sample_teacher_tokens,
    sampled_forward_kl,
    token_distillation_loss,
)
from distill.tasks.causal_lm.training import encode_texts
from distill.train.topk import top_k_logits

V = 50
TEMPERATURE = 2.0
DRAWS = 4000  # independent caches of one position
SAMPLES = 8  # tokens drawn per position, as student.samples_per_token
# Two-sided normal tail beyond 4.5 standard errors: 7e-6 per component, so all V + 1 checks
# of a correct estimator pass together with probability above 0.9996.
Z = 4.5


def heavy_tailed_teacher() -> torch.Tensor:
    """Logits whose softened distribution (T = 2) puts 64% of its mass on the 46 tokens
    outside its top 4: what a top-4 cache folds into one bucket."""
    generator = torch.Generator().manual_seed(11)
    logits = torch.randn(V, generator=generator, dtype=torch.float64) * 0.8
    logits[:4] += torch.tensor([4.0, 3.6, 3.3, 3.0], dtype=torch.float64)
    return logits


def student_logits() -> torch.Tensor:
    generator = torch.Generator().manual_seed(12)
    return torch.randn(V, generator=generator, dtype=torch.float64) * 1.5


def exact(teacher: torch.Tensor, student: torch.Tensor, cache: Any = None) -> tuple[float, Any]:
    """Value and gradient (w.r.t. the student's logits) of the KD term at one position:
    against the full teacher logits, or against ``cache`` built from them."""
    logits = student.reshape(1, 1, V).repeat(1, 2, 1).requires_grad_(True)
    labels = torch.zeros((1, 2), dtype=torch.long)
    full = teacher.reshape(1, 1, V).repeat(1, 2, 1)
    loss, _ = token_distillation_loss(
        logits, full if cache is None else cache, labels, TEMPERATURE, 1.0
    )
    loss.backward()
    return float(loss.detach()), logits.grad[0, 0].clone()


@pytest.fixture(scope="module")
def draws() -> dict[str, Any]:
    """DRAWS independent sampled caches of the same position, each scored through the loss:
    per draw, the KD estimate and its gradient w.r.t. the student's logits."""
    teacher, student = heavy_tailed_teacher(), student_logits()
    generator = torch.Generator().manual_seed(0)
    ids, log_probs = sample_teacher_tokens(
        teacher.expand(1, DRAWS + 1, V), SAMPLES, TEMPERATURE, generator
    )
    logits = student.expand(1, DRAWS + 1, V).clone().requires_grad_(True)
    labels = torch.zeros((1, DRAWS + 1), dtype=torch.long)
    loss, parts = token_distillation_loss(
        logits, SampledTeacher(ids, log_probs), labels, TEMPERATURE, 1.0
    )
    loss.backward()
    # Each draw is its own position: the loss is their mean, so row gradients times DRAWS
    # are the per-draw gradients.
    values = (
        sampled_forward_kl(
            student.expand(DRAWS, V),
            SampledTeacher(ids[0, :DRAWS], log_probs[0, :DRAWS]),
            TEMPERATURE,
        ).detach()
        * TEMPERATURE**2
    )
    return {
        "teacher": teacher,
        "student": student,
        "values": values,
        "gradients": logits.grad[0, :DRAWS] * DRAWS,
        "kd": parts["kd"],
        "ids": ids,
    }


def _mean_and_error(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return samples.mean(dim=0), samples.std(dim=0) / math.sqrt(samples.shape[0])


def test_the_sampled_estimate_of_forward_kl_is_unbiased(draws) -> None:
    value, _ = exact(draws["teacher"], draws["student"])
    mean, error = _mean_and_error(draws["values"])
    assert draws["kd"] == pytest.approx(float(mean), rel=1e-9)  # what the loss logs
    assert float(error) > 0
    assert abs(float(mean) - value) <= Z * float(error), (float(mean), value, float(error))


def test_the_gradient_of_the_sampled_estimate_is_unbiased(draws) -> None:
    _, gradient = exact(draws["teacher"], draws["student"])
    mean, error = _mean_and_error(draws["gradients"])
    assert bool((error > 0).all())  # every token was drawn (and missed) in some draw
    z = (mean - gradient).abs() / error
    assert float(z.max()) <= Z, z
    # The closed form: T * (q_T - p_T) per logit, times T^2 / T from the loss's scaling.
    p = torch.softmax(draws["teacher"] / TEMPERATURE, -1)
    q = torch.softmax(draws["student"] / TEMPERATURE, -1)
    assert torch.allclose(gradient, TEMPERATURE * (q - p), atol=1e-12)


def test_top_k_with_a_tail_bucket_is_biased_on_a_heavy_tail(draws) -> None:
    """Folding the tail into one bucket loses how the student spreads mass inside it: the
    top-4 value and gradient are many of the sampled estimator's standard errors off."""
    teacher, student = draws["teacher"], draws["student"]
    value, gradient = exact(teacher, student)
    full = teacher.reshape(1, 1, V).repeat(1, 2, 1)
    values, indices = top_k_logits(full, 4)
    cache = (values, indices, torch.logsumexp(full / TEMPERATURE, dim=-1))
    top_value, top_gradient = exact(teacher, student, cache)
    _, error = _mean_and_error(draws["values"])
    assert top_value < value  # a coarser partition never increases KL
    assert (value - top_value) > 20 * float(error)
    _, gradient_error = _mean_and_error(draws["gradients"])
    assert float(((top_gradient - gradient).abs() / gradient_error).max()) > 20


def test_draws_follow_the_teacher_distribution(draws) -> None:
    counts = torch.bincount(draws["ids"].reshape(-1), minlength=V).double()
    p = torch.softmax(draws["teacher"] / TEMPERATURE, -1)
    total = counts.sum()
    expected = total * p
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # chi-square with V - 1 = 49 degrees of freedom: mean 49, sd ~9.9.
    assert chi2 < 49 + Z * math.sqrt(2 * 49), chi2


def test_a_student_equal_to_the_teacher_scores_zero() -> None:
    teacher = heavy_tailed_teacher().expand(2, 6, V).clone()
    ids, log_probs = sample_teacher_tokens(teacher, 4, 1.5, torch.Generator().manual_seed(1))
    labels = torch.zeros((2, 6), dtype=torch.long)
    _, parts = token_distillation_loss(teacher, SampledTeacher(ids, log_probs), labels, 1.5, 0.5)
    assert parts["kd"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("divergence", ["reverse_kl", "jsd"])
def test_other_divergences_are_refused_with_a_sampled_teacher(divergence: str) -> None:
    logits = torch.zeros((1, 3, V))
    ids, log_probs = sample_teacher_tokens(logits, 2, 1.0)
    with pytest.raises(ValueError, match="estimate forward_kl only"):
        token_distillation_loss(
            logits,
            SampledTeacher(ids, log_probs),
            torch.zeros((1, 3), dtype=torch.long),
            1.0,
            0.5,
            divergence,  # type: ignore[arg-type]
        )


def test_sampled_shapes_are_checked() -> None:
    logits = torch.zeros((1, 3, V))
    ids, log_probs = sample_teacher_tokens(logits, 2, 1.0)
    labels = torch.zeros((1, 3), dtype=torch.long)
    with pytest.raises(ValueError, match="sampled teacher ids"):
        token_distillation_loss(logits, SampledTeacher(ids[:, :2], log_probs), labels, 1.0, 0.5)
    with pytest.raises(ValueError, match="must be int64"):
        token_distillation_loss(logits, SampledTeacher(ids.int(), log_probs), labels, 1.0, 0.5)
    with pytest.raises(ValueError, match="n must be >= 1"):
        sample_teacher_tokens(logits, 0, 1.0)


# --------------------------------------------------------------------------- recipe keys

CAUSAL = {
    "name": "t",
    "task": "causal-lm",
    "data": {"path": "x.csv"},
    "teacher": {"model": "some/model"},
    "student": {"num_layers": 2},
}


def _problems(**student: Any) -> list[str]:
    with pytest.raises(RecipeError) as info:
        validate_recipe({**CAUSAL, "student": {"num_layers": 2, **student}})
    return info.value.problems


def test_sampled_keys_validate_with_their_default() -> None:
    student = validate_recipe(
        {**CAUSAL, "student": {"num_layers": 2, "teacher_outputs": "sampled"}}
    ).student
    assert student.teacher_outputs == "sampled" and student.samples_per_token == 8
    chosen = validate_recipe(
        {
            **CAUSAL,
            "student": {"num_layers": 2, "teacher_outputs": "sampled", "samples_per_token": 3},
        }
    )
    assert chosen.student.samples_per_token == 3


@pytest.mark.parametrize("outputs", ["top-k", "online"])
def test_samples_per_token_is_refused_for_other_teacher_outputs(outputs: str) -> None:
    assert _problems(teacher_outputs=outputs, samples_per_token=4) == [
        "(top level): student.samples_per_token is used only with student.teacher_outputs = "
        f"'sampled' (not {outputs!r})"
    ]


@pytest.mark.parametrize("divergence", ["reverse_kl", "jsd"])
def test_sampled_refuses_divergences_that_need_the_full_distribution(divergence: str) -> None:
    assert _problems(teacher_outputs="sampled", divergence=divergence) == [
        f"(top level): student.divergence = {divergence!r} needs the teacher's full "
        "distribution: student.teacher_outputs = 'sampled' estimates forward_kl only (use "
        "divergence 'forward_kl', or teacher_outputs 'top-k' or 'online')"
    ]


def test_sampled_with_top_k_and_bad_counts_are_errors() -> None:
    assert _problems(teacher_outputs="sampled", top_k=16) == [
        "(top level): student.top_k is not used with student.teacher_outputs = 'sampled' "
        "(student.samples_per_token sets the cache's size)"
    ]
    (problem,) = _problems(teacher_outputs="sampled", samples_per_token=0)
    assert problem.startswith("student.samples_per_token: Input should be greater than")


def test_samples_per_token_is_refused_by_other_tasks() -> None:
    with pytest.raises(RecipeError) as info:
        validate_recipe(
            {
                **CAUSAL,
                "task": "sequence-classification",
                "student": {"num_layers": 2, "samples_per_token": 4},
            }
        )
    assert info.value.problems == [
        "(top level): student.samples_per_token is read by task 'causal-lm' only, not by "
        "this recipe's task 'sequence-classification'"
    ]


# --------------------------------------------------------------------------- the stages


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The labels stage caching 4 sampled tokens (and, for comparison, a top-8 cache) for a
    tiny 4-layer teacher, then the student stage learning from the sampled cache (4 steps)."""
    from distill.tasks.causal_lm.stages import labels as labels_stage
    from distill.tasks.causal_lm.stages import student as student_stage

    root = tmp_path_factory.mktemp("lm-sampled")
    write_tiny_lm_run(root, tiny_llama(seed=7, layers=4), max_words=12)
    ctx = RunContext(name="s", seed=3, task="causal-lm", workdir=root, recipe_dir=root)
    data = DataConfig(path="unused", max_length=16)
    inputs = {"data": root / "data", "teacher": root / "teacher"}
    labels = {}
    for mode, folder in (("sampled", "labels"), ("top-k", "labels-topk")):
        (root / folder).mkdir()
        labels[mode] = labels_stage.run(
            ctx,
            inputs,
            root / folder,
            data=data,
            teacher_outputs=mode,
            top_k=8,
            temperature=2.0,
            samples_per_token=4,
        )
    student = StudentTable(
        num_layers=2,
        max_steps=4,
        batch_size=8,
        learning_rate=1e-2,
        alpha=0.7,
        temperature=2.0,
        teacher_outputs="sampled",
        samples_per_token=4,
        baselines=[],
    )
    out = root / "student"
    out.mkdir()
    metrics = student_stage.run(
        ctx, {**inputs, "labels": root / "labels"}, out, data=data, student=student
    )
    return {"root": root, "labels": labels, "student": metrics, "ctx": ctx, "data": data}


def test_the_labels_stage_writes_the_sampled_cache(stages) -> None:
    labels = stages["labels"]["sampled"]
    assert labels["mode"] == "sampled" and labels["samples_per_token"] == 4
    with np.load(stages["root"] / "labels" / "sampled" / "train.npz") as cache:
        assert cache["sample_ids"].shape == (labels["tokens"], 4)
        assert cache["sample_ids"].dtype == np.int32
        assert cache["sample_log_probs"].dtype == np.float16
        assert int(cache["lengths"].sum()) == labels["tokens"]
        log_probs = cache["sample_log_probs"].astype(np.float64)
        ids = cache["sample_ids"]
    assert (log_probs <= 0).all() and np.isfinite(log_probs).all()
    assert 0 <= ids.min() and ids.max() < len(tiny_tokenizer())
    # The same token at the same position has the same log-probability (a real lookup).
    first = ids[:, 0] == ids[:, 1]
    assert np.allclose(log_probs[first, 0], log_probs[first, 1])


def test_the_sampled_cache_is_smaller_per_token_than_top_k(stages) -> None:
    sampled, top_k = stages["labels"]["sampled"], stages["labels"]["top-k"]
    assert sampled["tokens"] == top_k["tokens"]
    assert sampled["array_bytes_per_token"] == {"top-k": 8 * 6 + 4, "sampled": 4 * 6}
    assert sampled["bytes_per_token"] < top_k["bytes_per_token"]
    # The file is its arrays plus the ids, lengths and npz headers.
    assert sampled["bytes_per_token"] >= sampled["array_bytes_per_token"]["sampled"]


def test_the_labels_stage_draws_reproducibly_with_the_seed(stages, tmp_path: Path) -> None:
    from distill.tasks.causal_lm.stages import labels as labels_stage

    root = stages["root"]
    inputs = {"data": root / "data", "teacher": root / "teacher"}
    labels_stage.run(
        stages["ctx"],
        inputs,
        tmp_path,
        data=stages["data"],
        teacher_outputs="sampled",
        top_k=8,
        temperature=2.0,
        samples_per_token=4,
    )
    with (
        np.load(tmp_path / "sampled" / "train.npz") as again,
        np.load(root / "labels" / "sampled" / "train.npz") as first,
    ):
        assert np.array_equal(again["sample_ids"], first["sample_ids"])


def test_the_student_trains_on_the_sampled_cache(stages) -> None:
    metrics = stages["student"]
    assert metrics["teacher_outputs"] == "sampled" and metrics["samples_per_token"] == 4
    assert metrics["top_k"] is None
    for split in ("validation", "test"):
        assert math.isfinite(metrics[split]["perplexity"]) and metrics[split]["tokens"] > 0
    assert metrics[split]["perplexity"] != metrics["before_training"][split]["perplexity"]
    assert metrics["steps"] == 4
    history = json.loads((stages["root"] / "student" / "log_history.json").read_text())
    losses = [row[key] for row in history for key in ("loss", "train_loss") if key in row]
    assert losses and all(math.isfinite(loss) for loss in losses)


def test_a_batch_of_the_sampled_cache_gives_a_finite_kd_term(stages) -> None:
    """Through the collator and the objective's columns: KD > 0 for a student unlike the
    teacher, and the loss backpropagates."""
    from distill.tasks.causal_lm.stages.labels import load_sampled
    from distill.tasks.causal_lm.training import CausalCollator, as_dataset

    root = stages["root"]
    tokenizer = tiny_tokenizer()
    split = read_split(root / "data", "train")
    sequences = encode_texts(tokenizer, split, 16)
    cache = load_sampled(root / "labels" / "sampled" / "train.npz", split.ids, sequences)
    rows = as_dataset(sequences, cache, "sampled")
    batch = CausalCollator(tokenizer.pad_token_id)([rows[i] for i in range(6)])
    assert batch["sampled_ids"].shape == (*batch["input_ids"].shape, 4)
    student = tiny_llama(seed=8, layers=2)
    outputs = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    teacher = SampledTeacher(batch["sampled_ids"], batch["sampled_log_probs"])
    loss, parts = token_distillation_loss(outputs.logits, teacher, batch["labels"], 2.0, 0.7)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and parts["kd"] > 0


def test_a_missing_or_foreign_sampled_cache_is_refused(stages, tmp_path: Path) -> None:
    from distill.tasks.causal_lm.stages.labels import load_sampled

    with pytest.raises(ArtifactError, match="sampled-token cache is missing"):
        load_sampled(tmp_path / "train.npz", ["a"], [[1, 2]])
    path = stages["root"] / "labels" / "sampled" / "train.npz"
    with pytest.raises(ArtifactError, match="other examples"):
        load_sampled(path, ["x"], [[1, 2]])
