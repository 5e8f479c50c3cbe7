"""Causal-LM training and evaluation shared by the teacher and student stages.

The Trainer does the loop (early stopping on validation loss, sealed checkpoints and
resumption, data-parallel runs under `accelerate launch` / `torchrun`); this module gives it
the token-level loss, a collator that masks padding, and exact perplexity.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from distill.errors import ModelLoadError
from distill.pipeline.progress import track
from distill.sources.paths import resolve_local
from distill.tasks.causal_lm.files import TextSplit
from distill.tasks.causal_lm.losses import (
    IGNORE_INDEX,
    SampledTeacher,
    mean_token_nll,
    token_distillation_loss,
)
from distill.tasks.causal_lm.on_policy import OnPolicyCheckpoint, OnPolicyDistillation
from distill.tasks.causal_lm.task import CausalLM
from distill.train import trainer as shared
from distill.train.models import resolve_model, with_supported_attention
from distill.train.topk import pad_cached_column

log = logging.getLogger("distill")

TOP_K_COLUMNS = ("topk_values", "topk_indices", "topk_log_normalizer")
SAMPLED_COLUMNS = ("sampled_ids", "sampled_log_probs")
# Each cache layout's batch columns, in the order labels.load_top_k / load_sampled return them.
_CACHE_COLUMNS = {
    "top-k": TOP_K_COLUMNS,
    "sampled": SAMPLED_COLUMNS,
}


def cache_root() -> Path:
    """Where models made once from other formats (GGUF) are kept between runs."""
    import os

    base = os.environ.get("DISTILL_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "distill") / "gguf"


def resolve_causal_lm(
    reference: str, base_dir: Path, key: str, trust_remote_code: bool, archive: list[str] | None
) -> str:
    """A folder or hub id for ``from_pretrained``; a ``.gguf`` file is turned into a normal
    folder once (dequantized to float32, cached) instead of being re-read every run."""
    local = None if archive else resolve_local(reference, base_dir, key)
    if local is not None and local.is_file() and local.suffix.lower() == ".gguf":
        from distill.tasks.causal_lm.models import materialize_gguf

        return str(materialize_gguf(local, cache_root()))
    return resolve_model(reference, base_dir, key, trust_remote_code, archive=archive)


def load_causal_lm(
    source: str | Path, key: str, revision: str | None = None, trust: bool = False
) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        return with_supported_attention(
            AutoModelForCausalLM.from_pretrained,
            str(source),
            revision=revision,
            use_safetensors=True,
            trust_remote_code=trust,
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{key}: cannot load {source!r} as a causal LM: {exc}") from None


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Padding needs a pad token; causal LMs often have none, and EOS serves (the collator
    masks padding by the attention mask, so a real EOS is still learnt)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def encode_texts(tokenizer: Any, split: TextSplit, max_length: int) -> list[list[int]]:
    """Token ids of each text, truncated, ending with EOS (so the model learns where text
    ends and generation can stop there)."""
    eos = tokenizer.eos_token_id
    room = max_length - (1 if eos is not None else 0)
    encoded = tokenizer(split.texts, truncation=True, max_length=room, add_special_tokens=True)
    return [ids + ([eos] if eos is not None else []) for ids in encoded["input_ids"]]


def as_dataset(
    sequences: list[list[int]],
    cache: tuple[list[Any], ...] | None = None,
    layout: str = "top-k",
) -> Any:
    """The token ids, with the teacher's cached targets per example as extra columns:
    ``layout`` 'top-k' (values, ids, log-normalizer; labels.load_top_k) or 'sampled'
    (sample ids, log-probabilities; labels.load_sampled)."""
    import datasets

    columns: dict[str, Any] = {"input_ids": sequences}
    if cache is not None:
        columns.update(zip(_CACHE_COLUMNS[layout], cache, strict=True))
    return datasets.Dataset.from_dict(columns)


class CausalCollator:
    """Pads to the longest sequence of the batch; labels are the ids with padding at -100.
    Cached teacher targets (top-k logits and their log-normalizers, or sampled token ids and
    their log-probabilities) are padded alongside (padding is never scored)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(features), length), dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            ids[row, :n] = torch.as_tensor(feature["input_ids"])
            mask[row, :n] = 1
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": ids.masked_fill(mask == 0, IGNORE_INDEX),
        }
        for column in (*TOP_K_COLUMNS, *SAMPLED_COLUMNS):
            if column in features[0]:
                batch[column] = pad_cached_column(features, column, length)
        return batch


class TokenObjective:
    """Next-token CE mixed with a per-token divergence from the teacher: its cached top-k
    logits or sampled tokens (batch columns) or the teacher run online. With ``on_policy``,
    the training batches it picks are replaced by the student's own samples, scored by the
    teacher (:mod:`distill.tasks.causal_lm.on_policy`). Evaluation scores CE only, so early
    stopping follows validation perplexity for the distilled student and its twin alike."""

    def __init__(
        self,
        temperature: float = 1.0,
        alpha: float = 0.0,
        divergence: str = "forward_kl",
        jsd_beta: float = 0.5,
        teacher: nn.Module | None = None,
        on_policy: OnPolicyDistillation | None = None,
    ) -> None:
        self.temperature, self.alpha = temperature, alpha
        self.divergence, self.jsd_beta = divergence, jsd_beta
        self.teacher = teacher
        self.on_policy = on_policy

    def prepare(self, device: Any) -> None:
        if self.teacher is not None:
            self.teacher.to(device).eval().requires_grad_(False)
        if self.on_policy is not None:
            self.on_policy.prepare(device)

    def __call__(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], training: bool
    ) -> tuple[torch.Tensor, Any]:
        if training and self.on_policy is not None and self.on_policy.takes_batch():
            return self.on_policy(model, inputs)
        labels = inputs.pop("labels")
        cached = tuple(inputs.pop(c, None) for c in TOP_K_COLUMNS)
        sampled = tuple(inputs.pop(c, None) for c in SAMPLED_COLUMNS)
        outputs = model(**inputs)
        alpha = self.alpha if training else 0.0
        teacher: Any = None
        if alpha > 0:
            if cached[0] is not None:
                teacher = cached
            elif sampled[0] is not None:
                teacher = SampledTeacher(*sampled)
            elif self.teacher is not None:
                with torch.no_grad():
                    teacher = self.teacher(**inputs).logits
        loss, _ = token_distillation_loss(
            outputs.logits,
            teacher,
            labels,
            self.temperature,
            alpha,
            self.divergence,  # type: ignore[arg-type]
            self.jsd_beta,
        )
        return loss, outputs


def train_causal(
    run: shared.TrainingRun,
    *,
    on_policy: OnPolicyDistillation | None = None,
    **loss: Any,
) -> tuple[Trainer, list[dict[str, Any]]]:
    """Train ``run`` with early stopping on validation loss; the best checkpoint is loaded at the end.
    ``loss`` configures :class:`TokenObjective`; ``on_policy`` adds on-policy batches (and keeps
    their counts across a resume)."""
    return shared.train(
        run,
        objective=TokenObjective(**loss, on_policy=on_policy),
        collator=CausalCollator(run.tokenizer.pad_token_id),
        default_min_steps=CausalLM.default_min_steps,
        has_extra_columns=True,  # input_ids only; the collator builds the rest
        metric="eval_loss",
        callbacks=[OnPolicyCheckpoint(on_policy)] if on_policy is not None else (),
    )


@torch.no_grad()
def perplexity(
    model: nn.Module,
    sequences: list[list[int]],
    pad_id: int,
    batch_size: int = 16,
    desc: str = "perplexity",
) -> dict[str, Any]:
    """``exp(summed next-token NLL / scored tokens)`` over ``sequences``, exactly (token-weighted,
    padding excluded), in PyTorch; progress shown as ``desc``."""
    model.eval()
    collate = CausalCollator(pad_id)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in track(range(0, len(sequences), batch_size), desc=desc, unit="batch"):
        batch = collate([{"input_ids": s} for s in sequences[start : start + batch_size]])
        logits = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
        ).logits
        nll, tokens = mean_token_nll(logits.float(), batch["labels"].to(device))
        total, count = total + nll, count + tokens
    return {
        "nll": total,
        "tokens": count,
        "perplexity": math.exp(total / count) if count else float("nan"),
    }
