"""On-policy distillation for causal LMs (GKD: Agarwal et al. 2024, "On-Policy Distillation
of Language Models: Learning from Self-Generated Mistakes").

Off-policy KD scores the student on the training text only (teacher-forced), so it never sees
the prefixes its own generations lead to. Here a fraction of the training batches
(``student.on_policy_fraction``, GKD's lambda) is replaced by continuations the student
samples itself from prompts cut from those batches' texts; the teacher, run online, scores
every sampled token, and the loss is the divergence between their next-token distributions
over the sampled tokens alone (prompt, padding and anything after the first EOS masked),
averaged per token. The other batches keep the off-policy loss of
:class:`~distill.tasks.causal_lm.training.TokenObjective`.

Which batches are on-policy is drawn from Python's ``random`` and the samples from torch's
generator: the Trainer seeds both with the run's seed and restores both from a checkpoint on
resume, so a run and a resumed run draw the same batches and tokens. The counts for the
manifest survive a resume too (:class:`OnPolicyCheckpoint`).

TRL's ``GKDTrainer`` was tried and not used: see the README (causal LMs, on-policy).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig, TrainerCallback

from distill.pipeline.artifacts import write_json_atomic
from distill.tasks.causal_lm.losses import IGNORE_INDEX, Divergence, token_distillation_loss

# Written into every checkpoint (before it is sealed) and read back on resume.
STATE_FILE = "on_policy.json"


@dataclass(frozen=True)
class OnPolicyConfig:
    """What an on-policy batch is made of and how it is scored (from ``[student]``)."""

    fraction: float  # GKD's lambda: the probability that a training batch is on-policy
    divergence: Divergence
    jsd_beta: float
    temperature: float  # the KD temperature of the loss (student.temperature)
    sample_temperature: float  # the student's sampling temperature
    max_new_tokens: int
    prompt_tokens: int
    pad_id: int
    eos_ids: tuple[int, ...]


@dataclass
class OnPolicyCounts:
    """Training batches by kind and what the on-policy ones held, for the manifest."""

    batches: int = 0  # on-policy batches
    off_policy_batches: int = 0
    sequences: int = 0  # continuations sampled
    sampled_tokens: int = 0  # scored tokens of those continuations (through the first EOS)
    ended_with_eos: int = 0  # continuations that ended with EOS (the others ran out of tokens)

    def add(self, other: OnPolicyCounts) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class OnPolicyBatch:
    """Prompt + sampled continuation per row, right-padded like any training batch; labels
    are the ids at the sampled positions and -100 on the prompt, after the first EOS and on
    padding (the loss scores exactly the sampled tokens)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    prompt_lengths: list[int] = field(default_factory=list)
    sampled_lengths: list[int] = field(default_factory=list)
    ended_with_eos: list[bool] = field(default_factory=list)


def eos_token_ids(model: nn.Module, tokenizer: Any) -> tuple[int, ...]:
    """Every id that ends a continuation: the model's generation config may list several
    (chat models), beside the tokenizer's EOS."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return tuple(sorted({int(i) for i in [*ids, tokenizer.eos_token_id] if i is not None}))


def cut_prompts(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_tokens: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts (ids, mask) from a right-padded batch: the first
    ``min(prompt_tokens, length - 1)`` tokens of each row, so every prompt leaves at least
    its text's last token unseen. Left padding lets one ``generate`` call continue them all."""
    lengths = attention_mask.sum(dim=1).tolist()
    cuts = [max(1, min(prompt_tokens, int(n) - 1)) for n in lengths]
    width = max(cuts)
    prompts = torch.full((len(cuts), width), pad_id, dtype=input_ids.dtype, device=input_ids.device)
    mask = torch.zeros_like(prompts)
    for row, cut in enumerate(cuts):
        prompts[row, width - cut :] = input_ids[row, :cut]
        mask[row, width - cut :] = 1
    return prompts, mask


def sampling_config(config: OnPolicyConfig) -> GenerationConfig:
    """Plain ancestral sampling at the chosen temperature: no top-k (transformers' default
    is 50) or top-p cut, so the samples follow the student's own distribution."""
    return GenerationConfig(
        do_sample=True,
        temperature=config.sample_temperature,
        top_k=0,
        top_p=1.0,
        # Set outright: transformers 5 fills whatever is left unset from the model's own
        # generation config, whose settings would change the policy.
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        max_new_tokens=config.max_new_tokens,
        pad_token_id=config.pad_id,
        eos_token_id=list(config.eos_ids),
    )


def eos_positions(completions: torch.Tensor, eos_ids: tuple[int, ...]) -> torch.Tensor:
    """Bool [B, G]: where the continuations hold an EOS id."""
    if not eos_ids:
        return torch.zeros_like(completions, dtype=torch.bool)
    return torch.isin(completions, torch.tensor(eos_ids, device=completions.device))


def through_first_eos(completions: torch.Tensor, eos_ids: tuple[int, ...]) -> torch.Tensor:
    """Bool [B, G]: the sampled positions up to and including the first EOS of each row (all
    of them when a row has none); what ``generate`` writes after it is padding."""
    is_eos = eos_positions(completions, eos_ids).long()
    return (is_eos.cumsum(dim=1) - is_eos) == 0  # no EOS strictly before


def repack(
    sequences: torch.Tensor, prompt_mask: torch.Tensor, config: OnPolicyConfig
) -> OnPolicyBatch:
    """``generate``'s output (left-padded prompts, then continuations padded after EOS)
    rewritten as right-padded rows ``prompt + continuation``: the positions the student
    sampled at (0, 1, ... from each prompt's first token) are then those of an ordinary
    forward pass, for any model, without position ids."""
    width = prompt_mask.shape[1]
    completions = sequences[:, width:]
    kept = through_first_eos(completions, config.eos_ids)
    rows = [
        (sequences[row, :width][prompt_mask[row].bool()], completions[row][kept[row]])
        for row in range(sequences.shape[0])
    ]
    length = max(len(prompt) + len(sampled) for prompt, sampled in rows)
    ids = sequences.new_full((len(rows), length), config.pad_id)
    labels = torch.full_like(ids, IGNORE_INDEX)
    mask = torch.zeros_like(ids)
    for row, (prompt, sampled) in enumerate(rows):
        end = len(prompt) + len(sampled)
        ids[row, :end] = torch.cat([prompt, sampled])
        labels[row, len(prompt) : end] = sampled
        mask[row, :end] = 1
    return OnPolicyBatch(
        ids,
        mask,
        labels,
        prompt_lengths=[len(prompt) for prompt, _ in rows],
        sampled_lengths=[len(sampled) for _, sampled in rows],
        ended_with_eos=eos_positions(completions, config.eos_ids).any(dim=1).tolist(),
    )


@torch.no_grad()
def sample_batch(
    student: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    config: OnPolicyConfig,
) -> OnPolicyBatch:
    """The student's continuations of prompts cut from a training batch, in eval mode (no
    dropout: the policy itself), from torch's global generator."""
    prompts, prompt_mask = cut_prompts(
        input_ids, attention_mask, config.prompt_tokens, config.pad_id
    )
    was_training = student.training
    student.eval()
    try:
        sequences = student.generate(  # type: ignore[operator]
            input_ids=prompts,
            attention_mask=prompt_mask,
            generation_config=sampling_config(config),
        )
    finally:
        student.train(was_training)
    return repack(sequences, prompt_mask, config)


def on_policy_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    config: OnPolicyConfig,
) -> torch.Tensor:
    """``T^2 * D(teacher_T, student_T)`` averaged over the tokens ``labels`` keeps (the
    sampled ones), ``T`` the KD temperature: the off-policy KD term at weight 1, without the
    cross-entropy (whose targets would be the student's own samples)."""
    loss, _ = token_distillation_loss(
        student_logits,
        teacher_logits,
        labels,
        config.temperature,
        1.0,
        config.divergence,
        config.jsd_beta,
    )
    return loss


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself under a data-parallel wrapper: generation runs outside DDP's hooks."""
    return getattr(model, "module", model)


class OnPolicyDistillation:
    """Decides which training batches are on-policy, builds them and scores them."""

    def __init__(self, config: OnPolicyConfig, teacher: nn.Module) -> None:
        if not 0.0 < config.fraction <= 1.0:
            raise ValueError(f"on-policy fraction must be in (0, 1], not {config.fraction}")
        self.config = config
        self.teacher = teacher
        self.counts = OnPolicyCounts()

    def prepare(self, device: Any) -> None:
        self.teacher.to(device).eval().requires_grad_(False)

    def takes_batch(self) -> bool:
        """One draw per training batch (none at fraction 1); counted either way."""
        chosen = self.config.fraction == 1.0 or random.random() < self.config.fraction
        if not chosen:
            self.counts.off_policy_batches += 1
        return chosen

    def __call__(
        self, model: nn.Module, inputs: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, Any]:
        """The on-policy loss of one batch: ``T^2 * D(teacher_T, student_T)`` averaged over the
        sampled tokens (no cross-entropy: the targets are the student's own samples)."""
        batch = sample_batch(
            unwrap(model), inputs["input_ids"], inputs["attention_mask"], self.config
        )
        outputs = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        with torch.no_grad():
            teacher = self.teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        loss = on_policy_loss(outputs.logits, teacher.logits, batch.labels, self.config)
        self.counts.add(
            OnPolicyCounts(
                batches=1,
                sequences=len(batch.sampled_lengths),
                sampled_tokens=sum(batch.sampled_lengths),
                ended_with_eos=sum(batch.ended_with_eos),
            )
        )
        return loss, outputs

    def summary(self, device: Any = None) -> dict[str, Any]:
        """What the manifest records: the settings and the counts of every process."""
        counts = total_counts(self.counts, device)
        settings = {
            "fraction": self.config.fraction,
            "divergence": self.config.divergence,
            "sample_temperature": self.config.sample_temperature,
            "max_new_tokens": self.config.max_new_tokens,
            "prompt_tokens": self.config.prompt_tokens,
        }
        if self.config.divergence == "jsd":
            settings["jsd_beta"] = self.config.jsd_beta
        mean = counts.sampled_tokens / counts.sequences if counts.sequences else None
        return {**settings, **asdict(counts), "mean_sampled_tokens": mean}


def total_counts(counts: OnPolicyCounts, device: Any = None) -> OnPolicyCounts:
    """``counts`` summed over the processes of a data-parallel run (itself otherwise). Every
    process must call it (a collective)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return OnPolicyCounts(**asdict(counts))
    values = torch.tensor(list(asdict(counts).values()), dtype=torch.int64, device=device)
    torch.distributed.all_reduce(values)
    return OnPolicyCounts(*(int(v) for v in values.tolist()))


class OnPolicyCheckpoint(TrainerCallback):
    """Keeps the counts across a resume: every checkpoint gets the totals so far (written
    before distill seals it, so the seal covers the file), and a resumed run starts from
    those of the checkpoint it resumes (on the main process; the others start at zero, so
    the sum over processes stays right)."""

    def __init__(self, on_policy: OnPolicyDistillation) -> None:
        self.on_policy = on_policy

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}" / STATE_FILE
        if state.global_step > 0 and state.is_world_process_zero and path.is_file():
            saved = json.loads(path.read_text(encoding="utf-8"))
            self.on_policy.counts = OnPolicyCounts(**saved)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        totals = total_counts(self.on_policy.counts, args.device)
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            write_json_atomic(folder / STATE_FILE, asdict(totals))
