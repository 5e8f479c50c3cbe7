"""On-policy distillation (GKD) for causal LMs: the batches hold the student's own samples,
the loss scores exactly the sampled tokens, its divergences equal a hand computation and
TRL's published definition, the recipe keys and their errors, and the student stage (counts,
lambda = 0, resume) on tiny Llamas."""

from __future__ import annotations

import json
import math
import random
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from generation_helpers import (
    EOS_ID,
    PAD_ID,
    WORDS,
    tiny_llama,
    tiny_tokenizer,
    write_tiny_lm_run,
)

from distill.config import DataConfig, StudentTable, validate_recipe
from distill.errors import RecipeError
from distill.pipeline.artifacts import RunContext
from distill.tasks.causal_lm.losses import IGNORE_INDEX
from distill.tasks.causal_lm.on_policy import (
    STATE_FILE,
    OnPolicyConfig,
    OnPolicyDistillation,
    cut_prompts,
    on_policy_loss,
    repack,
    sample_batch,
    sampling_config,
)
from distill.tasks.causal_lm.training import CausalCollator, TokenObjective

CONFIG = OnPolicyConfig(
    fraction=1.0,
    divergence="forward_kl",
    jsd_beta=0.5,
    temperature=1.0,
    sample_temperature=1.0,
    max_new_tokens=6,
    prompt_tokens=3,
    pad_id=PAD_ID,
    eos_ids=(EOS_ID,),
)


def right_padded(rows: list[list[int]]) -> dict[str, torch.Tensor]:
    return CausalCollator(PAD_ID)([{"input_ids": row} for row in rows])


# --------------------------------------------------------------------------- the batches


def test_prompts_are_the_first_tokens_left_padded() -> None:
    batch = right_padded([[1, 10, 11, 12, 13, 2], [1, 20, 2], [1, 30, 31, 2]])
    prompts, mask = cut_prompts(batch["input_ids"], batch["attention_mask"], 3, PAD_ID)
    # At most 3 tokens, and never the text's last one: the 3-token text keeps 2.
    assert prompts.tolist() == [[1, 10, 11], [PAD_ID, 1, 20], [1, 30, 31]]
    assert mask.tolist() == [[1, 1, 1], [0, 1, 1], [1, 1, 1]]


def test_repack_keeps_prompt_and_sampled_tokens_through_the_first_eos() -> None:
    """generate's layout (left-padded prompts, continuations padded after EOS) becomes
    right-padded rows; labels keep exactly the sampled tokens."""
    prompt_mask = torch.tensor([[1, 1, 1], [0, 1, 1], [1, 1, 1]])
    sequences = torch.tensor(
        [
            [1, 10, 11, 40, 41, 42, 43],  # no EOS: all 4 sampled tokens
            [PAD_ID, 1, 20, 50, EOS_ID, PAD_ID, PAD_ID],  # EOS second: kept, padding after
            [1, 30, 31, EOS_ID, 60, EOS_ID, 61],  # EOS first: what follows is not scored
        ]
    )
    batch = repack(sequences, prompt_mask, CONFIG)
    assert batch.input_ids.tolist() == [
        [1, 10, 11, 40, 41, 42, 43],
        [1, 20, 50, EOS_ID, PAD_ID, PAD_ID, PAD_ID],
        [1, 30, 31, EOS_ID, PAD_ID, PAD_ID, PAD_ID],
    ]
    assert batch.attention_mask.tolist() == [
        [1] * 7,
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
    ]
    x = IGNORE_INDEX
    assert batch.labels.tolist() == [
        [x, x, x, 40, 41, 42, 43],
        [x, x, 50, EOS_ID, x, x, x],
        [x, x, x, EOS_ID, x, x, x],
    ]
    assert batch.prompt_lengths == [3, 2, 3] and batch.sampled_lengths == [4, 2, 1]
    assert batch.ended_with_eos == [False, True, True]


def _training_batch() -> dict[str, torch.Tensor]:
    tokenizer = tiny_tokenizer()
    texts = ["the cat run up the tree", "a dog", "the king and the queen see the sea"]
    return right_padded([tokenizer(t)["input_ids"] + [EOS_ID] for t in texts])


def test_an_on_policy_batch_holds_the_students_own_samples() -> None:
    """The same tokens as a direct ``student.generate`` of the same prompts under the same
    seed; the labels cover exactly those sampled tokens (prompt and padding excluded)."""
    student = tiny_llama(seed=4)
    batch = _training_batch()
    config = replace(CONFIG, prompt_tokens=4, max_new_tokens=8, sample_temperature=0.7)
    torch.manual_seed(123)
    on_policy = sample_batch(student, batch["input_ids"], batch["attention_mask"], config)
    prompts, prompt_mask = cut_prompts(batch["input_ids"], batch["attention_mask"], 4, PAD_ID)
    torch.manual_seed(123)
    direct = student.generate(
        input_ids=prompts,
        attention_mask=prompt_mask,
        do_sample=True,
        temperature=0.7,
        top_k=0,
        max_new_tokens=8,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
    )
    width = prompts.shape[1]
    for row in range(3):
        prompt = prompts[row][prompt_mask[row].bool()].tolist()
        sampled = direct[row, width:].tolist()
        if EOS_ID in sampled:
            sampled = sampled[: sampled.index(EOS_ID) + 1]
        ids = on_policy.input_ids[row].tolist()
        assert ids[: len(prompt) + len(sampled)] == prompt + sampled
        assert prompt == batch["input_ids"][row, : len(prompt)].tolist()  # cut from the text
        scored = (on_policy.labels[row] != IGNORE_INDEX).nonzero().flatten().tolist()
        assert scored == list(range(len(prompt), len(prompt) + len(sampled)))
        assert on_policy.labels[row, scored].tolist() == sampled
        assert on_policy.attention_mask[row].sum() == len(prompt) + len(sampled)
    assert on_policy.prompt_lengths == [4, 3, 4]  # "<s> a dog </s>": all but its last token
    # Not the training text: the student wrote its own continuation.
    assert on_policy.input_ids[0, 4:6].tolist() != batch["input_ids"][0, 4:6].tolist()
    assert student.training is False  # eval mode kept as it was (tiny_llama is in eval)


def test_sampling_keeps_the_students_distribution_and_its_mode() -> None:
    generation = sampling_config(CONFIG)
    assert generation.do_sample and generation.top_k == 0 and generation.top_p == 1.0
    student = tiny_llama(seed=4).train()
    batch = _training_batch()
    sample_batch(student, batch["input_ids"], batch["attention_mask"], CONFIG)
    assert student.training  # sampled in eval mode, then back to training


# --------------------------------------------------------------------------- the loss


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q, strict=True) if a > 0)


def _softmax(logits: list[float], temperature: float) -> list[float]:
    scaled = [v / temperature for v in logits]
    top = max(scaled)
    exps = [math.exp(v - top) for v in scaled]
    return [e / sum(exps) for e in exps]


def _by_hand(student: list[float], teacher: list[float], kind: str, beta: float, t: float) -> float:
    """One position's divergence, from the definitions (GKD eq. 1 for the JSD)."""
    q, p = _softmax(student, t), _softmax(teacher, t)
    if kind == "forward_kl":
        return _kl(p, q)
    if kind == "reverse_kl":
        return _kl(q, p)
    m = [beta * a + (1 - beta) * b for a, b in zip(p, q, strict=True)]
    return beta * _kl(p, m) + (1 - beta) * _kl(q, m)


# Sequence of 5 over a 4-token vocabulary: a 2-token prompt, 2 sampled tokens, one padding.
STUDENT = [
    [0.2, -1.0, 0.5, 0.0],
    [1.5, 0.3, -0.2, 0.1],
    [0.0, 2.0, -1.0, 0.4],
    [9, 9, 9, 9],
    [0.0] * 4,
]
TEACHER = [
    [1.0, 0.0, 0.0, 0.0],
    [0.4, 1.2, -0.5, 0.0],
    [-0.3, 0.8, 0.9, -1.1],
    [7, -7, 7, -7],
    [5.0, 0, 0, 0],
]
# Predictions at 1 and 2 score the sampled tokens at 2 and 3 (logits at t predict t + 1).
LABELS = [IGNORE_INDEX, IGNORE_INDEX, 1, 2, IGNORE_INDEX]


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_on_policy_loss_is_the_divergence_over_the_sampled_tokens(
    kind: str, temperature: float
) -> None:
    config = replace(CONFIG, divergence=kind, jsd_beta=0.3, temperature=temperature)
    loss = on_policy_loss(
        torch.tensor([STUDENT], dtype=torch.float64),
        torch.tensor([TEACHER], dtype=torch.float64),
        torch.tensor([LABELS]),
        config,
    )
    per_token = [_by_hand(STUDENT[t], TEACHER[t], kind, 0.3, temperature) for t in (1, 2)]
    assert float(loss) == pytest.approx(temperature**2 * sum(per_token) / 2, rel=1e-12)


def test_prompt_and_padding_logits_do_not_reach_the_loss() -> None:
    student, teacher = torch.tensor([STUDENT]), torch.tensor([TEACHER])
    before = on_policy_loss(student, teacher, torch.tensor([LABELS]), CONFIG)
    for t in (0, 3, 4):  # the prompt's first prediction, the last sampled token's, padding
        student[0, t] = torch.randn(4) * 50
        teacher[0, t] = torch.randn(4) * 50
    assert float(on_policy_loss(student, teacher, torch.tensor([LABELS]), CONFIG)) == float(before)


def trl_generalized_jsd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """TRL's ``GKDTrainer.generalized_jsd_loss`` (trl/experimental/gkd/gkd_trainer.py,
    Apache-2.0), transcribed: the published reference the loss is checked against. Its
    ``labels`` are already shifted (TRL's compute_loss slices logits[:, :-1], labels[:, 1:])."""
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits / temperature, dim=-1)
    if beta == 0:
        jsd = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True)
    elif beta == 1:
        jsd = F.kl_div(teacher_log_probs, student_log_probs, reduction="none", log_target=True)
    else:
        b = torch.tensor(beta, dtype=student_log_probs.dtype)
        mixture = torch.logsumexp(
            torch.stack([student_log_probs + torch.log1p(-b), teacher_log_probs + torch.log(b)]),
            dim=0,
        )
        kl_teacher = F.kl_div(mixture, teacher_log_probs, reduction="none", log_target=True)
        kl_student = F.kl_div(mixture, student_log_probs, reduction="none", log_target=True)
        jsd = b * kl_teacher + (1 - b) * kl_student
    mask = labels != -100
    return jsd[mask].sum() / mask.sum()


def _trl(beta: float) -> float:
    student = torch.tensor([STUDENT], dtype=torch.float64)
    teacher = torch.tensor([TEACHER], dtype=torch.float64)
    labels = torch.tensor([LABELS])
    return float(trl_generalized_jsd_loss(student[:, :-1], teacher[:, :-1], labels[:, 1:], beta))


def _ours(kind: str, beta: float = 0.5) -> float:
    config = replace(CONFIG, divergence=kind, jsd_beta=beta)
    student = torch.tensor([STUDENT], dtype=torch.float64)
    teacher = torch.tensor([TEACHER], dtype=torch.float64)
    return float(on_policy_loss(student, teacher, torch.tensor([LABELS]), config))


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_jsd_equals_trls_generalized_jsd(beta: float) -> None:
    assert _ours("jsd", beta) == pytest.approx(_trl(beta), rel=1e-12)


def test_jsd_at_beta_0_and_1_is_trls_forward_and_reverse_kl() -> None:
    """TRL documents beta = 0 as forward KL and beta = 1 as reverse KL; those are our two
    KLs, and the JSD tends to them once scaled by beta (or 1 - beta) at either end."""
    assert _ours("forward_kl") == pytest.approx(_trl(0.0), rel=1e-12)
    assert _ours("reverse_kl") == pytest.approx(_trl(1.0), rel=1e-12)
    assert _ours("forward_kl") != pytest.approx(_ours("reverse_kl"), rel=1e-3)
    eps = 1e-6
    assert _ours("jsd", eps) / eps == pytest.approx(_ours("forward_kl"), rel=1e-4)
    assert _ours("jsd", 1 - eps) / eps == pytest.approx(_ours("reverse_kl"), rel=1e-4)


# --------------------------------------------------------------------------- the objective


class Recorder(torch.nn.Module):
    """A teacher that remembers the batches it scored."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: list[torch.Tensor] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        self.seen.append(input_ids)
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


def test_the_objective_scores_student_samples_with_the_teacher_online() -> None:
    teacher = Recorder(tiny_llama(seed=5, layers=3))
    on_policy = OnPolicyDistillation(replace(CONFIG, divergence="reverse_kl"), teacher)
    objective = TokenObjective(temperature=1.0, alpha=0.5, on_policy=on_policy)
    student = tiny_llama(seed=4).train()
    batch = _training_batch()
    torch.manual_seed(0)
    loss, _ = objective(student, dict(batch), training=True)
    loss.backward()
    assert len(teacher.seen) == 1 and teacher.seen[0].shape[0] == 3
    assert not torch.equal(teacher.seen[0][:, 3:6], batch["input_ids"][:, 3:6])
    assert on_policy.counts.batches == 1 and on_policy.counts.off_policy_batches == 0
    summary = on_policy.summary()
    assert summary["sequences"] == 3 and 3 <= summary["sampled_tokens"] <= 18
    assert summary["mean_sampled_tokens"] == summary["sampled_tokens"] / 3
    assert math.isfinite(float(loss.detach())) and float(loss.detach()) > 0
    # Evaluation never samples: cross-entropy on the text, as for every student.
    objective(student, dict(batch), training=False)
    assert on_policy.counts.batches == 1 and len(teacher.seen) == 1


def test_the_fraction_picks_batches_with_pythons_seeded_random() -> None:
    on_policy = OnPolicyDistillation(replace(CONFIG, fraction=0.25), tiny_llama())
    random.seed(7)
    picks = [on_policy.takes_batch() for _ in range(400)]
    random.seed(7)
    assert picks == [random.random() < 0.25 for _ in range(400)]
    assert 70 < sum(picks) < 130 and on_policy.counts.off_policy_batches == 400 - sum(picks)
    with pytest.raises(ValueError, match="fraction"):
        OnPolicyDistillation(replace(CONFIG, fraction=0.0), tiny_llama())


# --------------------------------------------------------------------------- recipe keys

CAUSAL = {
    "name": "t",
    "task": "causal-lm",
    "data": {"path": "x.csv", "max_length": 32},
    "teacher": {"model": "some/model"},
}


def _student(**keys: Any) -> Any:
    return validate_recipe({**CAUSAL, "student": {"num_layers": 2, **keys}}).student


def _problems(**keys: Any) -> list[str]:
    with pytest.raises(RecipeError) as info:
        _student(**keys)
    return info.value.problems


def test_on_policy_is_off_by_default_and_takes_its_keys() -> None:
    assert _student().on_policy_fraction == 0.0
    student = _student(
        on_policy_fraction=0.5,
        on_policy_divergence="reverse_kl",
        on_policy_prompt_tokens=4,
        on_policy_max_new_tokens=16,
        on_policy_temperature=0.8,
    )
    assert (student.on_policy_fraction, student.on_policy_divergence) == (0.5, "reverse_kl")
    # On-policy batches run the teacher online: any divergence, whatever the cache estimates.
    assert (
        _student(
            teacher_outputs="sampled", on_policy_fraction=0.5, on_policy_divergence="jsd"
        ).teacher_outputs
        == "sampled"
    )
    assert _student(on_policy_fraction=1.0, teacher_outputs="online").on_policy_fraction == 1.0


@pytest.mark.parametrize(
    "key, value",
    [
        ("on_policy_divergence", "jsd"),
        ("on_policy_prompt_tokens", 4),
        ("on_policy_max_new_tokens", 8),
        ("on_policy_temperature", 0.7),
    ],
)
def test_on_policy_keys_without_on_policy_are_refused(key: str, value: Any) -> None:
    assert _problems(**{key: value}) == [
        f"(top level): student.{key} is used only with student.on_policy_fraction > 0 "
        "(on-policy distillation is off)"
    ]


def test_incoherent_on_policy_settings_are_refused() -> None:
    assert _problems(on_policy_fraction=1.0) == [
        "(top level): student.on_policy_fraction = 1 trains on the student's own samples "
        "only: the teacher outputs cached for student.teacher_outputs = 'top-k' would never "
        "be read (set teacher_outputs = 'online', or a fraction below 1)"
    ]
    assert _problems(on_policy_fraction=0.5, on_policy_prompt_tokens=32) == [
        "(top level): student.on_policy_prompt_tokens = 32 must be below data.max_length = "
        "32: prompts are cut from the training texts, which are at most that long"
    ]
    (problem,) = _problems(on_policy_fraction=1.5)
    assert problem.startswith("student.on_policy_fraction: Input should be less than or equal")
    (problem,) = _problems(on_policy_fraction=0.5, on_policy_divergence="kl")
    assert problem.startswith("student.on_policy_divergence: Input should be")


def test_on_policy_keys_are_refused_by_other_tasks() -> None:
    with pytest.raises(RecipeError) as info:
        validate_recipe(
            {
                **CAUSAL,
                "task": "sequence-classification",
                "student": {"num_layers": 2, "on_policy_fraction": 0.5},
            }
        )
    assert info.value.problems == [
        "(top level): student.on_policy_fraction is read by task 'causal-lm' only, not by "
        "this recipe's task 'sequence-classification'"
    ]


def test_jsd_beta_without_a_jsd_is_refused() -> None:
    assert _problems(jsd_beta=0.2) == [
        "(top level): student.jsd_beta is used only with student.divergence = 'jsd' or "
        "student.on_policy_divergence = 'jsd' (this recipe uses forward_kl)"
    ]
    assert _problems(jsd_beta=0.2, on_policy_fraction=0.5, on_policy_divergence="reverse_kl") == [
        "(top level): student.jsd_beta is used only with student.divergence = 'jsd' or "
        "student.on_policy_divergence = 'jsd' (this recipe uses forward_kl, reverse_kl)"
    ]
    assert _student(jsd_beta=0.2, divergence="jsd").jsd_beta == 0.2
    both = _student(jsd_beta=0.2, on_policy_fraction=0.5, on_policy_divergence="jsd")
    assert both.jsd_beta == 0.2


# --------------------------------------------------------------------------- the stage


DATA = DataConfig(path="unused", max_length=16)


def _student_table(**keys: Any) -> StudentTable:
    settings = dict(
        num_layers=2,
        max_steps=6,
        batch_size=8,
        learning_rate=1e-2,
        alpha=0.5,
        temperature=1.0,
        top_k=8,
        baselines=["no-kd"],
    )
    return StudentTable(**{**settings, **keys})


def _run_student(root: Path, name: str, student: StudentTable) -> dict[str, Any]:
    from distill.tasks.causal_lm.stages import student as student_stage

    out = root / name
    out.mkdir()
    ctx = RunContext(name="op", seed=3, task="causal-lm", workdir=root, recipe_dir=root)
    inputs = {"data": root / "data", "teacher": root / "teacher", "labels": root / "labels"}
    return student_stage.run(ctx, inputs, out, data=DATA, student=student)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny teacher's top-8 cache, then three student stages of 6 steps: without the
    on-policy keys, with on_policy_fraction = 0 said outright, and with half the batches
    on-policy (reverse KL, prompts of 4 tokens, 6 new tokens)."""
    from distill.tasks.causal_lm.stages import labels as labels_stage

    root = tmp_path_factory.mktemp("lm-on-policy")
    write_tiny_lm_run(root, tiny_llama(seed=7, layers=4), max_words=12)
    ctx = RunContext(name="op", seed=3, task="causal-lm", workdir=root, recipe_dir=root)
    (root / "labels").mkdir()
    labels_stage.run(
        ctx,
        {"data": root / "data", "teacher": root / "teacher"},
        root / "labels",
        data=DATA,
        teacher_outputs="top-k",
        top_k=8,
        temperature=1.0,
    )
    on_policy = dict(
        on_policy_fraction=0.5,
        on_policy_divergence="reverse_kl",
        on_policy_prompt_tokens=4,
        on_policy_max_new_tokens=6,
    )
    return {
        "root": root,
        "plain": _run_student(root, "plain", _student_table()),
        "zero": _run_student(root, "zero", _student_table(on_policy_fraction=0.0)),
        "on": _run_student(root, "on", _student_table(**on_policy)),
    }


def test_the_stage_records_the_on_policy_batches(runs) -> None:
    metrics = runs["on"]
    record = metrics["on_policy"]
    assert record["fraction"] == 0.5 and record["divergence"] == "reverse_kl"
    assert (record["prompt_tokens"], record["max_new_tokens"]) == (4, 6)
    assert "jsd_beta" not in record
    # 40 texts in batches of 8, 6 steps: every training batch is one kind or the other.
    assert record["batches"] + record["off_policy_batches"] == metrics["steps"] == 6
    assert 1 <= record["batches"] <= 5
    assert record["sequences"] == 8 * record["batches"]
    assert 1 <= record["mean_sampled_tokens"] <= 6
    assert record["mean_sampled_tokens"] == record["sampled_tokens"] / record["sequences"]
    assert 0 <= record["ended_with_eos"] <= record["sequences"]
    assert metrics["teacher_outputs"] == "top-k"  # the off-policy batches' teacher
    # The no-KD twin is untouched: no on-policy batches, the same as without them.
    assert "on_policy" not in metrics["baseline"]
    assert metrics["baseline"]["test"] == runs["plain"]["baseline"]["test"]
    assert metrics["test"]["perplexity"] != runs["plain"]["test"]["perplexity"]


def test_fraction_zero_is_exactly_the_off_policy_run(runs) -> None:
    plain, zero = runs["plain"], runs["zero"]
    assert "on_policy" not in plain and "on_policy" not in zero
    assert zero["test"] == plain["test"] and zero["validation"] == plain["validation"]
    root = runs["root"]
    weights = (root / "plain" / "model" / "model.safetensors").read_bytes()
    assert (root / "zero" / "model" / "model.safetensors").read_bytes() == weights


def test_a_resumed_on_policy_run_matches_a_straight_one(runs, monkeypatch, tmp_path) -> None:
    """Killed (an exception) right after checkpoint 4 is sealed, then resumed: the same
    on-policy batches and samples (the Trainer restores Python's and torch's generators),
    so the same weights, and the counts carried over in the checkpoint."""
    from distill.train import trainer as shared

    root = runs["root"]
    stop = shared.MarkCompleteCheckpoints.on_save

    def stop_after_4(self: Any, args: Any, state: Any, control: Any, **kw: Any) -> None:
        stop(self, args, state, control, **kw)
        if state.global_step == 4:
            raise KeyboardInterrupt

    straight = _train_on_policy(root, tmp_path / "straight")
    monkeypatch.setattr(shared.MarkCompleteCheckpoints, "on_save", stop_after_4)
    with pytest.raises(KeyboardInterrupt):
        _train_on_policy(root, tmp_path / "resumed")
    saved = json.loads((tmp_path / "resumed" / "checkpoint-4" / STATE_FILE).read_text())
    assert saved["batches"] + saved["off_policy_batches"] == 4
    monkeypatch.undo()
    resumed = _train_on_policy(root, tmp_path / "resumed")
    assert (straight["batches_run"], resumed["batches_run"]) == (6, 2)  # it did resume
    assert resumed["summary"] == straight["summary"]
    assert resumed["summary"]["batches"] + resumed["summary"]["off_policy_batches"] == 6
    for name, tensor in straight["weights"].items():
        assert torch.equal(resumed["weights"][name], tensor), name


def _train_on_policy(root: Path, work_dir: Path) -> dict[str, Any]:
    """The distilled student's training alone (online teacher, half the batches on-policy,
    checkpoints every 2 steps), from ``work_dir``'s last sealed checkpoint if any."""
    from distill.tasks.causal_lm.files import read_split
    from distill.tasks.causal_lm.training import as_dataset, encode_texts, train_causal
    from distill.train.trainer import TrainingRun

    tokenizer = tiny_tokenizer()
    teacher = tiny_llama(seed=7, layers=4)
    sequences = {
        name: encode_texts(tokenizer, read_split(root / "data", name), 16)
        for name in ("train", "validation")
    }
    on_policy = OnPolicyDistillation(replace(CONFIG, fraction=0.5, max_new_tokens=4), teacher)
    draws = []  # the training batches this call ran (a resumed run runs only the rest)
    take = on_policy.takes_batch
    on_policy.takes_batch = lambda: draws.append(1) or take()  # type: ignore[method-assign]
    training_run = TrainingRun(
        stage="student (distilled)",
        model=tiny_llama(seed=8),
        tokenizer=tokenizer,
        config=_student_table(eval_steps=2),
        train_set=as_dataset(sequences["train"]),
        eval_set=as_dataset(sequences["validation"]),
        work_dir=work_dir,
        log_dir=work_dir / "logs",
        seed=3,
    )
    trainer, _ = train_causal(
        training_run,
        temperature=1.0,
        alpha=0.5,
        teacher=teacher,
        on_policy=on_policy,
    )
    weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    return {"summary": on_policy.summary(), "weights": weights, "batches_run": len(draws)}


# --------------------------------------------------------------------------- distill run

RECIPE = """
name = "op"
seed = 3
task = "causal-lm"
[data]
path = "text.csv"
max_length = 16
[teacher]
model = "teacher-base"
epochs = 1
learning_rate = 3e-3
batch_size = 16
[student]
num_layers = 2
max_steps = 6
learning_rate = 3e-3
batch_size = 16
alpha = 0.8
temperature = 1.0
top_k = 8
on_policy_fraction = 0.5
on_policy_divergence = "jsd"
jsd_beta = 0.3
on_policy_prompt_tokens = 3
on_policy_max_new_tokens = 5
[export]
parity_tolerance = 1e-3
max_perplexity_increase = 1.0
teacher_baseline = false
[report]
latency_runs = 3
latency_warmup = 1
samples = 1
max_new_tokens = 4
"""


def _write_project(root: Path) -> None:
    from conftest import write_csv

    tiny_llama(seed=1, layers=4).save_pretrained(root / "teacher-base")
    tiny_tokenizer().save_pretrained(root / "teacher-base")
    rng = random.Random(0)
    texts = [" ".join(rng.choices(WORDS[:40], k=rng.randint(3, 10))) for _ in range(80)]
    write_csv(root / "text.csv", ["text"], ([t] for t in texts))
    (root / "recipe.toml").write_text(RECIPE, encoding="utf-8")


def test_distill_run_with_on_policy_batches(tmp_path: Path) -> None:
    """The whole pipeline with half the student's batches on-policy: it finishes, the
    manifest counts the batches and sampled tokens, the report shows them."""
    from conftest import run_distill

    from distill.pipeline.artifacts import read_manifest

    _write_project(tmp_path)
    result = run_distill(["run", "recipe.toml"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    student = read_manifest(tmp_path / "runs" / "op" / "student")["metrics"]
    record = student["on_policy"]
    assert (record["fraction"], record["divergence"], record["jsd_beta"]) == (0.5, "jsd", 0.3)
    assert record["batches"] + record["off_policy_batches"] == student["steps"] == 6
    # 56 training texts in batches of 16: 16, 16, 16 and 8 per pass.
    assert record["batches"] >= 1
    assert 8 * record["batches"] <= record["sequences"] <= 16 * record["batches"]
    assert 1 <= record["mean_sampled_tokens"] <= 5
    assert "on_policy" not in student["baseline"]
    report = json.loads((tmp_path / "reports" / "op" / "report.json").read_text())
    settings = report["distillation"]["settings"]
    assert settings["on_policy_fraction"] == 0.5 and settings["on_policy_jsd_beta"] == 0.3
    assert settings["on_policy_batches"] == f"{record['batches']} of 6"
    assert "on_policy_batches" in (tmp_path / "reports" / "op" / "report.md").read_text()


def test_on_policy_under_two_processes(tmp_path: Path) -> None:
    """torchrun with 2 processes (gloo on CPU), checkpoints every 2 steps: each process
    samples outside DDP's hooks, and the manifest sums both processes' batches."""
    from conftest import run_command

    from distill.pipeline.artifacts import read_manifest

    _write_project(tmp_path)
    torchrun = Path(sys.executable).parent / "torchrun"
    args = ["run", "recipe.toml", "--only", "student", "--set", "student.eval_steps=2"]
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "distill", *args]
    result = run_command(command, tmp_path, OMP_NUM_THREADS="1")
    assert result.returncode == 0, result.stderr[-3000:]
    student = read_manifest(tmp_path / "runs" / "op" / "student")["metrics"]
    record = student["on_policy"]
    assert student["batch"]["processes"] == 2 and student["steps"] == 6
    assert record["batches"] + record["off_policy_batches"] == 2 * 6
    assert 4 * record["batches"] <= record["sequences"] <= 8 * record["batches"]
