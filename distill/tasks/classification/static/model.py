"""The static student as a transformers model, so the shared Trainer, ``save_pretrained`` and
``AutoModelForSequenceClassification.from_pretrained`` handle it like any other student.

``logits = head(pool(table[input_ids], attention_mask))``: pooling is the mean over real
tokens ("mean"), or a mean weighted by a learned positive weight per vocabulary entry
("weighted": ``exp(w)``, starting at 1 so training starts from the plain mean). The head is
linear, or one hidden ReLU layer when ``hidden_size > 0``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from distill.tasks.classification.static import MODEL_TYPE


class StaticConfig(PretrainedConfig):
    model_type = MODEL_TYPE

    def __init__(
        self,
        vocab_size: int = 2,
        embedding_dim: int = 8,
        pooling: str = "mean",
        hidden_size: int = 0,
        pad_token_id: int = 0,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.pooling = pooling
        self.hidden_size = hidden_size
        super().__init__(pad_token_id=pad_token_id, **kwargs)


class StaticClassifier(PreTrainedModel):
    """Token table -> masked (weighted) mean -> head."""

    config_class = StaticConfig
    base_model_prefix = "static"
    _supports_sdpa = True  # no attention at all; lets the shared loaders ask for sdpa

    def __init__(self, config: StaticConfig) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(
            config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id
        )
        # exp(0) = 1: a weighted student starts as the plain mean.
        self.token_weights = (
            nn.Parameter(torch.zeros(config.vocab_size)) if config.pooling == "weighted" else None
        )
        width = config.embedding_dim
        if config.hidden_size:
            self.head: nn.Module = nn.Sequential(
                nn.Linear(width, config.hidden_size),
                nn.ReLU(),
                nn.Linear(config.hidden_size, config.num_labels),
            )
        else:
            self.head = nn.Linear(width, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        raise NotImplementedError("a static student's table is built with its tokenizer")

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The text vectors: the (weighted) mean of the real tokens' rows."""
        mask = (torch.ones_like(input_ids) if attention_mask is None else attention_mask).to(
            self.embeddings.weight.dtype
        )
        if self.token_weights is not None:
            mask = mask * torch.exp(self.token_weights[input_ids])
        summed = (self.embeddings(input_ids) * mask.unsqueeze(-1)).sum(dim=1)
        # An empty text (all padding) pools to zeros instead of dividing by zero.
        return summed / mask.sum(dim=1, keepdim=True).clamp(min=1e-6)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,  # accepted, unused: BERT tokenizers give it
        labels: torch.Tensor | None = None,
        **_: Any,
    ) -> SequenceClassifierOutput:
        logits = self.head(self.pooled(input_ids, attention_mask))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


# Saved students reload through AutoModelForSequenceClassification like every other student.
AutoConfig.register(MODEL_TYPE, StaticConfig, exist_ok=True)
AutoModelForSequenceClassification.register(StaticConfig, StaticClassifier, exist_ok=True)
