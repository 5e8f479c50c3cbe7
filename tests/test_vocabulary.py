"""Vocabulary trimming: ids round-trip for text in the data, the model shrinks and computes
the same logits, and the trimmed tokenizer saves and reloads (also without transformers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic_rows
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distill.errors import ModelLoadError
from distill.train.vocabulary import trim_tokenizer, trim_vocabulary, used_token_ids

TEXTS = [text for text, _ in synthetic_rows(40)]


def _load(model_dir: Path) -> tuple[object, object]:
    return (
        AutoModelForSequenceClassification.from_pretrained(model_dir).eval(),
        AutoTokenizer.from_pretrained(model_dir),
    )


def test_trimmed_ids_round_trip_for_text_in_the_data(tiny_model_dir: Path, tmp_path: Path) -> None:
    model, tokenizer = _load(tiny_model_dir)
    original = [tokenizer(t)["input_ids"] for t in TEXTS]
    model, trimmed, kept, sizes = trim_vocabulary(model, tokenizer, TEXTS[:6], max_length=24)
    assert sizes["vocabulary_before"] == len(tokenizer) == 52
    assert sizes["vocabulary_after"] == len(kept) == len(trimmed) < 52
    assert sizes["embedding_parameters_saved"] == (52 - len(kept)) * 32
    assert list(kept) == sorted(kept) and kept[0] == 0  # order kept, [PAD] stays 0
    # Every text the vocabulary was built from maps back to the original ids exactly.
    for text, ids in zip(TEXTS[:6], original[:6], strict=True):
        new_ids = trimmed(text)["input_ids"]
        assert kept[new_ids].tolist() == ids
        assert trimmed.convert_ids_to_tokens(new_ids) == tokenizer.convert_ids_to_tokens(ids)
    # Special tokens keep their roles under their new ids.
    for name in ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"):
        assert kept[getattr(trimmed, f"{name}_id")] == getattr(tokenizer, f"{name}_id")
    assert model.config.vocab_size == len(kept)
    assert model.get_input_embeddings().weight.shape == (len(kept), 32)


def test_trimmed_model_computes_the_same_logits(tiny_model_dir: Path, tmp_path: Path) -> None:
    full, tokenizer = _load(tiny_model_dir)
    with torch.no_grad():
        before = full(**tokenizer(TEXTS[:8], padding=True, return_tensors="pt")).logits
    model, trimmed, _, _ = trim_vocabulary(*_load(tiny_model_dir), TEXTS, max_length=24)
    model.save_pretrained(tmp_path / "trimmed")
    trimmed.save_pretrained(tmp_path / "trimmed")
    reloaded, reloaded_tokenizer = _load(tmp_path / "trimmed")
    with torch.no_grad():
        after = reloaded(**reloaded_tokenizer(TEXTS[:8], padding=True, return_tensors="pt")).logits
    assert torch.allclose(before, after, atol=1e-5)
    # tokenizer.json alone (transformers 5 writes no vocab.txt) gives `tokenizers` the same ids.
    from tokenizers import Tokenizer

    plain = Tokenizer.from_file(str(tmp_path / "trimmed" / "tokenizer.json"))
    assert plain.encode(TEXTS[0]).ids == reloaded_tokenizer(TEXTS[0])["input_ids"]
    assert plain.get_vocab_size() == len(reloaded_tokenizer)


def test_unseen_tokens_fall_back_to_unknown(tiny_model_dir: Path) -> None:
    _, tokenizer = _load(tiny_model_dir)
    keep = sorted(used_token_ids(tokenizer, ["good flight"], max_length=24))
    trimmed = trim_tokenizer(tokenizer, keep)
    assert trimmed.convert_ids_to_tokens(trimmed("good bad flight")["input_ids"]) == [
        "[CLS]",
        "good",
        "[UNK]",
        "flight",
        "[SEP]",
    ]


def test_non_wordpiece_tokenizers_are_refused(tiny_model_dir: Path) -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    bpe = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
    )
    with pytest.raises(ModelLoadError, match="supports WordPiece tokenizers.*BPE"):
        trim_tokenizer(bpe, [0])


def test_used_ids_respect_truncation(tiny_model_dir: Path) -> None:
    _, tokenizer = _load(tiny_model_dir)
    long_text = " ".join(["good"] * 10 + ["bad"])
    assert tokenizer.convert_tokens_to_ids("bad") not in used_token_ids(
        tokenizer, [long_text], max_length=6
    )
    assert np.isin(tokenizer.all_special_ids, list(used_token_ids(tokenizer, [], 6))).all()
