"""Decoding with PyTorch (transformers' ``generate``): the teacher's outputs that students
learn from (labels stage) and every model's outputs the report scores.

Sources are decoded in batches of similar length (longest first: less padding) and the
results put back in input order. ``max_new_tokens`` counts the tokens after the decoder's
start token, EOS included (``data.max_target_length``), so an output fits the targets the
students are trained on.
"""

from __future__ import annotations

from typing import Any

import torch

from distill.pipeline.progress import track
from distill.tasks.seq2seq.decoding import pad_sources
from distill.tasks.seq2seq.encoding import encode_sources
from distill.train.length_order import length_order


def _generation_settings(max_new_tokens: int, num_beams: int) -> dict[str, Any]:
    """What every call sets: the length and beam size, deterministic (no sampling), one
    output per source; the rest (length penalty, early stopping ...) is the model's own
    generation_config, which the bundle's decoder reads too: both search alike."""
    return {
        "max_new_tokens": max_new_tokens,
        "num_beams": num_beams,
        "do_sample": False,
        "num_return_sequences": 1,
    }


@torch.no_grad()
def generate_ids(
    model: Any,
    tokenizer: Any,
    sources: list[str],
    *,
    prefix: str,
    max_length: int,
    max_new_tokens: int,
    num_beams: int,
    batch_size: int = 16,
    desc: str = "generating",
) -> list[list[int]]:
    """The generated token ids of each source (the decoder's start token and padding
    removed, EOS kept when generated), in input order."""
    encoded = encode_sources(tokenizer, sources, prefix=prefix, max_length=max_length)
    order = length_order([len(ids) for ids in encoded])
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    start = model.generation_config.decoder_start_token_id
    model.eval()
    outputs: list[list[int]] = [[] for _ in encoded]
    settings = _generation_settings(max_new_tokens, num_beams)
    for first in track(range(0, len(order), batch_size), desc=desc, unit="batch"):
        rows = [int(i) for i in order[first : first + batch_size]]
        ids, mask = pad_sources([encoded[i] for i in rows], pad)  # as the bundle pads
        generated = model.generate(
            input_ids=torch.from_numpy(ids).to(device),
            attention_mask=torch.from_numpy(mask).to(device),
            **settings,
        )
        for row, index in enumerate(rows):
            outputs[index] = _strip(generated[row].tolist(), start, pad, tokenizer.eos_token_id)
    return outputs


def _strip(ids: list[int], start: int | None, pad: int | None, eos: int | None) -> list[int]:
    """One generated row without the decoder's start token and the padding after EOS."""
    if ids and start is not None and ids[0] == start:
        ids = ids[1:]
    if eos is not None and eos in ids:
        return ids[: ids.index(eos) + 1]
    while ids and pad is not None and ids[-1] == pad:
        ids = ids[:-1]
    return ids


def generate_texts(
    model: Any,
    tokenizer: Any,
    sources: list[str],
    *,
    prefix: str,
    max_length: int,
    max_new_tokens: int,
    num_beams: int,
    batch_size: int = 16,
    desc: str = "generating",
) -> list[str]:
    """Each source's output text (special tokens dropped, spaces cleaned as the tokenizer
    does), in input order."""
    ids = generate_ids(
        model,
        tokenizer,
        sources,
        prefix=prefix,
        max_length=max_length,
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
        batch_size=batch_size,
        desc=desc,
    )
    return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]
