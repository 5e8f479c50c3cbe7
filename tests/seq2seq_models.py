"""Tiny encoder-decoder models for the seq2seq tests: a word-level tokenizer and T5 / BART
models built from configs with fixed seeds (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

# T5's layout of special tokens: padding is also the decoder's start token.
PAD, EOS, UNK, BOS = "<pad>", "</s>", "<unk>", "<s>"
SPECIALS = [PAD, EOS, UNK, BOS]


def build_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer whose encodings end with ``</s>``."""
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK, bos_token=BOS
    )


# A toy "translation" for the pipeline tests: each word becomes its partner (the word four
# places on in TOY_WORDS), in order. Source and target share the vocabulary, which tiny models
# align within a few hundred steps (separate target words take twice as many).
TOY_WORDS = ["red", "green", "blue", "cat", "dog", "sun", "moon", "tree", "king", "fish"]
DICTIONARY = dict(zip(TOY_WORDS, TOY_WORDS[4:] + TOY_WORDS[:4], strict=True))
WORDS = list(TOY_WORDS)


def translate_words(source: str) -> str:
    """The toy translation of ``source`` (words outside it kept as they are)."""
    return " ".join(DICTIONARY.get(word, word) for word in source.split())


def toy_pairs(n: int, seed: int = 0, *, words: int = 8) -> list[tuple[str, str]]:
    """``n`` (source, target) pairs of 2 to 4 of the first ``words`` toy words, seeded."""
    import random

    rng = random.Random(seed)
    vocabulary = TOY_WORDS[:words]
    pairs = []
    for _ in range(n):
        source = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(2, 4)))
        pairs.append((source, translate_words(source)))
    return pairs


def _ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    return {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def build_tiny_t5(folder: Path, words: list[str], *, layers: int = 2, seed: int = 0) -> Path:
    """A T5 with ``layers`` encoder and decoder layers, hidden 32, saved with its tokenizer."""
    tokenizer = build_tokenizer(words)
    config = T5Config(
        d_model=32,
        d_ff=64,
        d_kv=16,
        num_heads=2,
        num_layers=layers,
        num_decoder_layers=layers,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        decoder_start_token_id=tokenizer.pad_token_id,
        **_ids(tokenizer),
    )
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    return _save(model, tokenizer, folder)


def build_tiny_bart(folder: Path, words: list[str], *, layers: int = 2, seed: int = 0) -> Path:
    """A BART with ``layers`` encoder and decoder layers, hidden 32, saved with its
    tokenizer (decoding starts from EOS, as BART's does)."""
    tokenizer = build_tokenizer(words)
    config = BartConfig(
        d_model=32,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_layers=layers,
        decoder_layers=layers,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
        **_ids(tokenizer),
    )
    torch.manual_seed(seed)
    model = BartForConditionalGeneration(config)
    return _save(model, tokenizer, folder)


def _save(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
