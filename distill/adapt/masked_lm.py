"""The masked-LM side of adaptation: the teacher loaded with a masked-LM head (a new one tied
to its input embeddings when the checkpoint has none), BERT's masking (transformers'
collator; whole-word masking as an option), the loss scored on the masked tokens only, and
the adapted encoder saved in the teacher's own layout for the teacher stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers import DataCollatorForLanguageModeling

from distill.errors import ModelLoadError
from distill.train.models import load_failure, with_supported_attention

IGNORED = -100  # the label of a token the loss skips (transformers' convention)


def load_masked_lm(
    source: str, key: str, revision: str | None, trust_remote_code: bool
) -> tuple[nn.Module, bool]:
    """The model at ``source`` with a masked-LM head, and whether that head is new (the
    checkpoint had none); a new head's output matrix is the input embedding matrix (tied)."""
    from transformers import AutoModelForMaskedLM

    try:
        model, info = with_supported_attention(
            AutoModelForMaskedLM.from_pretrained,
            source,
            revision=revision,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            output_loading_info=True,
        )
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise ModelLoadError(
                f"{key}: {source!r} has no masked-LM form in transformers; [adapt] needs an "
                "encoder such as BERT, RoBERTa, MPNet or DistilBERT"
            ) from None
        raise ModelLoadError(load_failure(key, source, exc)) from None
    except OSError as exc:
        raise ModelLoadError(load_failure(key, source, exc)) from None
    prefix = f"{model.base_model_prefix}."
    new_head = any(not name.startswith(prefix) for name in info["missing_keys"])
    if new_head:
        tie_head(model, key)
    return model, new_head


def tie_head(model: nn.Module, key: str) -> None:
    """Make the head's output matrix the input embedding matrix (BERT's tying): a new head
    then starts from the encoder's own token vectors instead of noise."""
    output, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    if output is None or output.weight.shape != embeddings.weight.shape:
        raise ModelLoadError(f"{key}: its masked-LM head cannot share the input embeddings")
    output.weight = embeddings.weight
    model.config.tie_word_embeddings = True


def prediction_head(model: nn.Module) -> nn.Module | None:
    """The head that turns hidden states into vocabulary scores, when it is one module
    beside the encoder (BERT's ``cls``, RoBERTa's and MPNet's ``lm_head``); else None."""
    base = model.base_model
    heads = [
        module
        for module in model.children()
        if module is not base and any(True for _ in module.parameters())
    ]
    return heads[0] if len(heads) == 1 else None


def masked_lm_loss(
    model: nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy over the masked tokens. The head runs on those tokens only (about
    one in seven): its vocabulary-wide matrix costs as much as the encoder per token."""
    head = prediction_head(model)
    picked = labels != IGNORED
    # A batch of texts too short to mask (short ones are batched together): a zero loss
    # that still reaches the trained weights (backward needs a graph; NaN would stop).
    if head is None:  # a head spread over several modules: the model's own loss
        if not bool(picked.any()):
            return model(**inputs).logits.sum() * 0.0
        return model(**inputs, labels=labels).loss
    hidden = model.base_model(**inputs).last_hidden_state
    if not bool(picked.any()):
        return head(hidden[:, :1]).sum() * 0.0
    return F.cross_entropy(head(hidden[picked]), labels[picked])


class MaskedLMObjective:
    """The adapt stage's objective for the shared Trainer (:class:`distill.train.trainer.Objective`)."""

    def prepare(self, device: Any) -> None:
        """Nothing runs beside the model."""

    def __call__(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], training: bool
    ) -> tuple[torch.Tensor, Any]:
        labels = inputs.pop("labels")
        loss = masked_lm_loss(model, inputs, labels)
        return loss, {"loss": loss}


class MaskingCollator:
    """Pads a batch and masks it as BERT did (``mlm_probability`` of the tokens; of those 80%
    become the mask token, 10% a random token, 10% stay), through transformers' collator;
    whole-word masking reads each example's ``offset_mapping``. Examples that already carry
    ``labels`` (the held-out slice, masked once) are only padded."""

    def __init__(
        self,
        tokenizer: Any,
        mlm_probability: float,
        whole_word_mask: bool,
        seed: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.masker = DataCollatorForLanguageModeling(
            tokenizer,
            mlm_probability=mlm_probability,
            whole_word_mask=whole_word_mask,
            # transformers masks whole words with the mask token only (and warns otherwise)
            mask_replace_prob=1.0 if whole_word_mask else 0.8,
            random_replace_prob=0.0 if whole_word_mask else 0.1,
            seed=seed,
        )
        if seed is not None:  # the generator torch_call would make (we call the masking direct)
            self.masker.create_rng("pt")

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [dict(example) for example in examples]
        offsets = [row.pop("offset_mapping", None) for row in rows]
        labels = [row.pop("labels", None) for row in rows]
        batch = self.tokenizer.pad(rows, return_tensors="pt")
        special = batch.pop("special_tokens_mask", None)
        if labels[0] is not None:  # masked already: pad the labels to the batch's length
            batch["labels"] = _padded(labels, batch["input_ids"].shape[1], IGNORED)
            return dict(batch)
        width = batch["input_ids"].shape[1]
        padded_offsets = _padded_offsets(offsets, width) if self.masker.whole_word_mask else None
        batch["input_ids"], batch["labels"] = self.masker.torch_mask_tokens(
            batch["input_ids"], special_tokens_mask=special, offset_mapping=padded_offsets
        )
        return dict(batch)


def _padded(rows: list[list[int]], width: int, value: int) -> torch.Tensor:
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def _padded_offsets(offsets: list[Any], width: int) -> np.ndarray:
    """Character offsets per token, padded with (0, 0) (what special tokens have)."""
    out = np.zeros((len(offsets), width, 2), dtype=np.int64)
    for i, row in enumerate(offsets):
        if row is not None and len(row):
            out[i, : len(row)] = np.asarray(row, dtype=np.int64)
    return out


def mask_once(examples: list[dict[str, Any]], collator: MaskingCollator) -> list[dict[str, Any]]:
    """The examples with their masks drawn now (seeded by the collator): the held-out slice
    is scored on the same masked tokens before and after adapting, and at every evaluation."""
    batch = collator(examples)
    masked = []
    for i, example in enumerate(examples):
        length = len(example["input_ids"])
        row = {"input_ids": batch["input_ids"][i, :length].tolist()}
        row["attention_mask"] = [1] * length
        if "token_type_ids" in example:
            row["token_type_ids"] = list(example["token_type_ids"])
        row["labels"] = batch["labels"][i, :length].tolist()
        masked.append(row)
    return masked


@torch.inference_mode()
def held_out_loss(model: nn.Module, examples: list[dict[str, Any]], tokenizer: Any) -> float:
    """Mean cross-entropy over every masked token of the held-out slice (each token weighs
    the same, whatever batch it falls in)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    collator = MaskingCollator(tokenizer, 0.15, whole_word_mask=False)
    for start in range(0, len(examples), 64):
        batch = collator(examples[start : start + 64])
        labels = batch.pop("labels")
        tokens = int((labels != IGNORED).sum())
        if tokens:
            total += float(masked_lm_loss(model, batch, labels)) * tokens
            count += tokens
    model.train(was_training)
    return total / count if count else float("nan")


def save_encoder(
    model: nn.Module, source: str, folder: Path, revision: str | None, trust_remote_code: bool
) -> None:
    """The adapted encoder in the teacher's own layout (``AutoModel``): the original
    checkpoint's weights that the masked-LM model has no place for (BERT's pooler, which a
    classification head reads) are kept, every other weight is the adapted one."""
    from transformers import AutoModel

    encoder = with_supported_attention(
        AutoModel.from_pretrained,
        source,
        revision=revision,
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
    )
    adapted = model.base_model.state_dict()
    result = encoder.load_state_dict(adapted, strict=False)
    if result.unexpected_keys:
        raise ModelLoadError(
            f"stage adapt: the adapted encoder's weights {result.unexpected_keys[:3]} have no "
            "place in the teacher's own model"
        )
    encoder.save_pretrained(folder)
