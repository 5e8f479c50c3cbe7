"""How many tokens a model of a given ``config.json`` can take, read from the config alone:
torch-free, for preflight (before a run) and the bundle reader (before serving)."""

from __future__ import annotations

from typing import Any

# Families whose position ids start after the padding id (``padding_idx + 1``, see
# transformers' ``create_position_ids_from_input_ids``): a table of max_position_embeddings
# rows holds max_position_embeddings - padding_idx - 1 tokens (514 -> 512 for RoBERTa).
_PADDING_OFFSET_POSITIONS = {
    "camembert",
    "data2vec-text",
    "ibert",
    "longformer",
    "luke",
    "mpnet",
    "roberta",
    "roberta-prelayernorm",
    "xlm-roberta",
    "xlm-roberta-xl",
    "xmod",
}
_POSITION_KEYS = ("max_position_embeddings", "n_positions")  # n_positions: GPT-2 style


def usable_positions(config: dict[str, Any]) -> tuple[int, str] | None:
    """How many tokens a model of this config.json can take, and why; None if unbounded."""
    key = next((k for k in _POSITION_KEYS if isinstance(config.get(k), int)), None)
    if key is None:
        return None
    table = config[key]
    if config.get("model_type") not in _PADDING_OFFSET_POSITIONS:
        return table, f"{key} = {table}"
    # MPNet hard-codes padding_idx = 1; the others take it from pad_token_id.
    pad = 1 if config.get("model_type") == "mpnet" else config.get("pad_token_id", 1)
    offset = (pad if isinstance(pad, int) and pad >= 0 else 1) + 1
    return table - offset, (
        f"{key} = {table}, less {offset} because {config['model_type']} position ids "
        "start after the padding id"
    )
