"""Exact, faster batch tokenization for WordPiece bundles: a word-level cache.

:class:`WordCacheEncoder` turns a batch of texts into the ``input_ids``, ``attention_mask``
and ``token_type_ids`` arrays (numpy int64) that ``tokenizer.encode_batch(texts)`` gives
(the ids, the mask and the type ids of every encoding, padded as the tokenizer pads them),
without running the reference tokenizer on text it has seen before. Each text is split on
the ASCII space U+0020 only; each chunk's ids are looked up in a dict (chunk -> tuple of
ids) and, on a miss, computed once and stored while the cache holds fewer than
``max_entries`` chunks: normalized and pre-tokenized by the reference tokenizer's own
normalizer and pre-tokenizer (for printable ASCII under BERT's normalizer and
pre-tokenizer, by the equivalent lowercase and split in Python), each piece's WordPiece ids
looked up in a second cache or computed by the tokenizer's model; a chunk that may hold an
added token is encoded by a private copy of the tokenizer (no special tokens, truncation
or padding) instead.
The chunks' ids are concatenated, truncated to ``max_length`` minus
the post-processor's special tokens (keeping the start or the end, as the tokenizer's
truncation direction says), wrapped in the special tokens and padded.

Why it is exact. ``Tokenizer.encode`` runs, in order: added-token extraction, the
normalizer, the pre-tokenizer, the model (per pre-token), then truncation, special tokens
and padding. Splitting the text at a U+0020 and encoding the two sides separately gives the
same ids as long as each step maps a U+0020 to a boundary and never looks across it:

* added tokens: matched (leftmost-longest) on the raw text, or on the normalized text for
  ``normalized`` ones; a match cannot span a space when no added token's content (nor, for
  normalized ones, its normalized content) holds whitespace, and when ``lstrip``,
  ``rstrip`` and ``single_word`` are all off (the three look at neighbouring characters);
* normalizers ``BertNormalizer`` (clean text, CJK padding, lowercase, strip accents),
  ``Lowercase``, ``StripAccents``, ``NFD``, ``NFKD``, ``NFC``, ``NFKC`` and ``Sequence``s of
  them: the first four act on each character alone (tokenizers lowercases character by
  character, with no final-sigma rule) and map U+0020 to itself; the Unicode normalization
  forms can be applied independently to the segments between stable code points (UAX #15),
  and U+0020 is one (canonical combining class 0, decomposes to nothing else, composes with
  no neighbour), so ``N(a + " " + b) == N(a) + " " + N(b)``;
* pre-tokenizers ``BertPreTokenizer``, ``Whitespace`` (``\\w+|[^\\w\\s]+``),
  ``WhitespaceSplit`` and ``Sequence``s of them: each drops whitespace and splits there,
  and a later step of a Sequence only splits the pieces it is given;
* model ``WordPiece``: each pre-token is encoded on its own (``max_input_chars_per_word``
  counts the characters of one pre-token);
* post-processor ``BertProcessing``, ``TemplateProcessing`` whose single-sequence template
  is special tokens, ``$A``, special tokens (``[CLS] $A [SEP]``), or none; truncation
  ``LongestFirst`` / ``OnlyFirst`` (the same for one sequence) with stride 0, either
  direction, ``max_length`` at least the number of special tokens (below it tokenizers
  skips truncation altogether), or no truncation; padding enabled, batch-longest or fixed at
  no less than ``max_length``, either side, any ``pad_to_multiple_of``.

Every other character (tab, newline, NBSP, U+2028, U+3000, control characters, emoji) stays
inside its chunk and is handled by the reference tokenizer on that chunk. For any other
specification :func:`supports` names the reason and callers use ``encode_batch``.

Torch-free: the standard library, numpy and tokenizers only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from itertools import chain, islice
from typing import Any

import numpy as np

from distill.errors import ArtifactError

DEFAULT_MAX_ENTRIES = 500_000
_SPACE = " "  # U+0020 only: str.split() would also split at characters tokenizers keeps
_NORMALIZERS = {"BertNormalizer", "Lowercase", "StripAccents", "NFD", "NFKD", "NFC", "NFKC"}
_PRE_TOKENIZERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}
_TRUNCATION_STRATEGIES = {"LongestFirst", "OnlyFirst"}


def _normalizer_problem(spec: dict[str, Any] | None) -> str | None:
    if spec is None:
        return None
    kind = spec.get("type")
    if kind == "Sequence":
        for inner in spec.get("normalizers") or []:
            problem = _normalizer_problem(inner)
            if problem:
                return problem
        return None
    if kind not in _NORMALIZERS:
        return f"normalizer {kind} (supported: {', '.join(sorted(_NORMALIZERS))}, Sequence)"
    return None


def _pre_tokenizer_problem(spec: dict[str, Any] | None) -> str | None:
    if spec is None:
        return "no pre-tokenizer (the model would see whole texts)"
    kind = spec.get("type")
    inner = spec.get("pretokenizers") if kind == "Sequence" else [spec]
    if not inner:
        return "an empty pre-tokenizer Sequence"
    for step in inner:
        if step.get("type") not in _PRE_TOKENIZERS:
            return (
                f"pre-tokenizer {step.get('type')} (supported: "
                f"{', '.join(sorted(_PRE_TOKENIZERS))} and Sequences of them)"
            )
    return None


def _special_pieces(spec: dict[str, Any] | None) -> tuple[list[tuple[int, int]], int, list]:
    """(prefix, type id of the text, suffix) of the single-sequence template, each special
    piece as (id, type id). Raises ValueError for a template this module cannot follow."""
    if spec is None:
        return [], 0, []
    kind = spec.get("type")
    if kind == "BertProcessing":
        return [(int(spec["cls"][1]), 0)], 0, [(int(spec["sep"][1]), 0)]
    if kind != "TemplateProcessing":
        raise ValueError(f"post-processor {kind} (supported: BertProcessing, TemplateProcessing)")
    specials = spec.get("special_tokens") or {}
    prefix: list[tuple[int, int]] = []
    suffix: list[tuple[int, int]] = []
    sequence_type: int | None = None
    for piece in spec.get("single") or []:
        if "Sequence" in piece:
            if sequence_type is not None or piece["Sequence"].get("id") != "A":
                raise ValueError("a single-sequence template other than specials, $A, specials")
            sequence_type = int(piece["Sequence"].get("type_id", 0))
        elif "SpecialToken" in piece:
            token = specials.get(piece["SpecialToken"]["id"])
            if token is None:
                raise ValueError(f"template token {piece['SpecialToken']['id']!r} has no ids")
            type_id = int(piece["SpecialToken"].get("type_id", 0))
            side = prefix if sequence_type is None else suffix
            side.extend((int(i), type_id) for i in token["ids"])
        else:
            raise ValueError(f"a template piece {sorted(piece)}")
    if sequence_type is None:
        raise ValueError("a single-sequence template without $A")
    return prefix, sequence_type, suffix


def _added_token_problem(tokenizer: Any, spec: dict[str, Any]) -> str | None:
    for token in spec.get("added_tokens") or []:
        content = token.get("content", "")
        if token.get("lstrip") or token.get("rstrip") or token.get("single_word"):
            return f"added token {content!r} has lstrip, rstrip or single_word set"
        if not content or any(c.isspace() for c in content):
            return f"added token {content!r} is empty or holds whitespace"
        if token.get("normalized") and tokenizer.normalizer is not None:
            normalized = tokenizer.normalizer.normalize_str(content)
            if not normalized or any(c.isspace() for c in normalized):
                return f"added token {content!r} normalizes to {normalized!r}"
    return None


class UnsupportedTokenizer(ValueError):
    """The word cache cannot encode exactly like this tokenizer; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the word cache cannot encode exactly like this tokenizer: {reason}")
        self.reason = reason


def supports(tokenizer: Any) -> str | None:
    """None when :class:`WordCacheEncoder` encodes exactly like ``tokenizer.encode_batch``;
    otherwise why not (callers then use the tokenizer itself)."""
    try:
        spec = json.loads(tokenizer.to_str())
    except Exception as exc:  # tokenizers raises a bare Exception
        return f"the tokenizer cannot be serialized: {exc}"
    return _spec_problem(tokenizer, spec)


def _spec_problem(tokenizer: Any, spec: dict[str, Any]) -> str | None:
    model = spec.get("model") or {}
    if model.get("type") != "WordPiece":
        return f"model {model.get('type')} (supported: WordPiece)"
    for problem in (
        _normalizer_problem(spec.get("normalizer")),
        _pre_tokenizer_problem(spec.get("pre_tokenizer")),
        _added_token_problem(tokenizer, spec),
    ):
        if problem:
            return problem
    try:
        prefix, _, suffix = _special_pieces(spec.get("post_processor"))
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return f"post-processor: {exc}"
    specials = len(prefix) + len(suffix)
    truncation = spec.get("truncation")
    if truncation is not None:
        if truncation.get("strategy") not in _TRUNCATION_STRATEGIES:
            return f"truncation strategy {truncation.get('strategy')}"
        if truncation.get("stride", 0) != 0:
            return f"truncation stride {truncation.get('stride')}"
        if truncation.get("direction", "Right") not in ("Right", "Left"):
            return f"truncation direction {truncation.get('direction')}"
        if int(truncation["max_length"]) < specials:
            return (
                f"truncation max_length {truncation['max_length']} below the {specials} "
                "special tokens"
            )
    padding = spec.get("padding")
    if padding is None:
        return "padding disabled (a batch of texts of different lengths would be ragged)"
    if padding.get("direction", "Right") not in ("Right", "Left"):
        return f"padding direction {padding.get('direction')}"
    strategy = padding.get("strategy")
    if strategy != "BatchLongest":
        fixed = strategy.get("Fixed") if isinstance(strategy, dict) else None
        if fixed is None:
            return f"padding strategy {strategy}"
        if truncation is None or int(truncation["max_length"]) > int(fixed):
            return f"fixed padding to {fixed} with texts that can be longer"
    return None


class WordCacheEncoder:
    """``tokenizer.encode_batch`` for the specifications :func:`supports` accepts, through a
    cache of each space-separated chunk's ids (see the module's docstring for why the
    result is identical).

    ``tokenizer`` is read once, when the encoder is built: changing its truncation or
    padding afterwards does not change the encoder. At most ``max_entries`` chunks are
    cached; past that, chunks not in the cache are tokenized on each use and not stored.
    """

    def __init__(self, tokenizer: Any, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        from tokenizers import Tokenizer

        serialized = tokenizer.to_str()  # read once: loading a 30k vocabulary takes ms
        spec = json.loads(serialized)
        problem = _spec_problem(tokenizer, spec)
        if problem:
            raise UnsupportedTokenizer(problem)
        self.max_entries = max_entries
        # A private copy encodes the chunks: no special tokens, no truncation, no padding.
        self._chunk_tokenizer = Tokenizer.from_str(serialized)
        self._chunk_tokenizer.no_truncation()
        self._chunk_tokenizer.no_padding()
        self._chunk_tokenizer.encode_special_tokens = tokenizer.encode_special_tokens
        # A missing chunk's ids, piece by piece: the normalizer, the pre-tokenizer, then the
        # model per piece (what encode does after added-token extraction), with the pieces'
        # ids cached too, since a new chunk ("cool?", "SHIRTS") is mostly known pieces. A
        # chunk that may hold an added token goes through encode itself.
        self._normalizer = self._chunk_tokenizer.normalizer
        self._pre_tokenizer = self._chunk_tokenizer.pre_tokenizer
        self._model = self._chunk_tokenizer.model
        self._added = [a["content"] for a in spec.get("added_tokens") or [] if a.get("content")]
        self._pieces: dict[str, tuple[int, ...]] = {}
        self._ascii_lowercase = _ascii_bert(spec)
        prefix, self._sequence_type, suffix = _special_pieces(spec.get("post_processor"))
        self._prefix = [i for i, _ in prefix]
        self._suffix = [i for i, _ in suffix]
        self._prefix_types = [t for _, t in prefix]
        self._suffix_types = [t for _, t in suffix]
        truncation = spec.get("truncation")
        self._limit: int | None = None
        self._keep_end = False
        if truncation is not None:
            self._limit = int(truncation["max_length"]) - len(prefix) - len(suffix)
            self._keep_end = truncation.get("direction") == "Left"
        padding = spec["padding"]
        strategy = padding["strategy"]
        self._fixed: int | None = None if strategy == "BatchLongest" else int(strategy["Fixed"])
        self._multiple: int | None = padding.get("pad_to_multiple_of") or None
        self._pad_left = padding.get("direction") == "Left"
        self._pad_id = int(padding["pad_id"])
        self._pad_type_id = int(padding.get("pad_type_id", 0))
        self._all_types_zero = (
            self._pad_type_id == 0
            and self._sequence_type == 0
            and not any(self._prefix_types + self._suffix_types)
        )
        # The empty chunk (between two spaces, or at either end) is always there.
        self._cache: dict[str, tuple[int, ...]] = {"": ()}

    def __len__(self) -> int:
        """How many chunks the cache holds (at most ``max_entries``)."""
        return len(self._cache) - 1

    # ------------------------------------------------------------------ chunks

    def _tokenize_chunks(self, chunks: Iterable[str]) -> dict[str, tuple[int, ...]]:
        """The reference tokenizer's ids of each chunk not cached yet; stored while there is
        room, and returned (all of them) for the caller's own use."""
        missing = [c for c in dict.fromkeys(chunks) if c not in self._cache]
        if not missing:
            return {}
        # Piece by piece, each known piece looked up: cheaper than one pre-tokenized
        # encode call (measured: 26 us for two chunks), and it fills the piece cache.
        found = {c: self._chunk_ids(c) for c in missing}
        self._store(found)
        return found

    def _pieces_of(self, chunk: str) -> list[str] | None:
        """The pre-tokenized pieces of a chunk; None when it may hold an added token."""
        if self._ascii_lowercase is not None and _PLAIN_ASCII.fullmatch(chunk):
            # BERT's normalizer leaves printable ASCII as it is (lowercased when it
            # lowercases) and its pre-tokenizer splits it into runs of letters and digits
            # and single ASCII punctuation marks: no call into tokenizers needed.
            text = chunk.lower() if self._ascii_lowercase else chunk
            if any(a in chunk or a in text for a in self._added):
                return None
            return _BERT_ASCII_PIECES.findall(text)
        normalized = self._normalizer.normalize_str(chunk) if self._normalizer else chunk
        if any(a in chunk or a in normalized for a in self._added):  # extraction first
            return None
        return [piece for piece, _ in self._pre_tokenizer.pre_tokenize_str(normalized)]

    def _chunk_ids(self, chunk: str) -> tuple[int, ...]:
        """One chunk's ids, as ``encode(chunk)`` gives them without special tokens."""
        pieces = self._pieces_of(chunk)
        if pieces is None:
            return tuple(self._chunk_tokenizer.encode(chunk, add_special_tokens=False).ids)
        ids: list[int] = []
        for piece in pieces:
            known = self._pieces.get(piece)
            if known is None:
                known = tuple(token.id for token in self._model.tokenize(piece))
                if len(self._pieces) < self.max_entries:
                    self._pieces[piece] = known
            ids.extend(known)
        return tuple(ids)

    def _store(self, found: dict[str, tuple[int, ...]]) -> None:
        room = self.max_entries - len(self)
        if room > 0:
            self._cache.update(islice(found.items(), room))

    def prefill(self, texts: Iterable[str]) -> int:
        """Cache the chunks of ``texts`` (domain text: the training texts, say) ahead of
        use; returns how many chunks were added."""
        before = len(self)
        self._tokenize_chunks(chain.from_iterable(_checked(t).split(_SPACE) for t in texts))
        return len(self) - before

    def _row(self, text: str, lookup: Any) -> list[int]:
        """The text's ids, truncated, with special tokens; KeyError for a chunk ``lookup``
        does not know."""
        if not isinstance(text, str):
            raise TypeError(f"texts must be str, not {type(text).__name__}")
        pieces = chain.from_iterable(map(lookup, text.split(_SPACE)))
        limit = self._limit
        if limit is not None and not self._keep_end:  # islice stops at the limit
            return [*self._prefix, *islice(pieces, limit), *self._suffix]
        body = list(pieces)
        if limit is not None and len(body) > limit:
            body = body[len(body) - limit :]
        return [*self._prefix, *body, *self._suffix]

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's ids with special tokens, truncated, unpadded."""
        rows: list[list[int]] = []
        misses: list[int] = []
        lookup = self._cache.__getitem__
        for index, text in enumerate(texts):
            try:
                rows.append(self._row(text, lookup))
            except KeyError:
                rows.append([])
                misses.append(index)
        if misses:
            extra = self._tokenize_chunks(
                chain.from_iterable(texts[i].split(_SPACE) for i in misses)
            )
            lookup = _lookup(self._cache, extra)
            for index in misses:
                rows[index] = self._row(texts[index], lookup)
        return rows

    # ------------------------------------------------------------------ arrays

    def encode_batch(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, shape (batch,
        length)) equal to the ids, attention masks and type ids of
        ``tokenizer.encode_batch(texts)``."""
        texts = texts if isinstance(texts, list) else list(texts)
        rows = self.token_ids(texts)
        lengths = [len(row) for row in rows]
        width = self._fixed if self._fixed is not None else max(lengths, default=0)
        if self._multiple and width % self._multiple:
            width += self._multiple - width % self._multiple
        if len(rows) == 1 and lengths[0] == width:  # batch 1, nothing to pad
            ids = np.array(rows, dtype=np.int64)
            mask = np.empty_like(ids)
            mask.fill(1)  # np.ones costs several times more at this size
        else:
            ids = np.full((len(rows), width), self._pad_id, dtype=np.int64)
            for i, row in enumerate(rows):
                if self._pad_left:
                    ids[i, width - len(row) :] = row
                else:
                    ids[i, : len(row)] = row
            positions = np.arange(width)
            count = np.asarray(lengths, dtype=np.int64)[:, None]
            mask = (positions >= width - count) if self._pad_left else (positions < count)
            mask = mask.astype(np.int64)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "token_type_ids": self._type_ids(lengths, width),
        }

    def _type_ids(self, lengths: list[int], width: int) -> np.ndarray:
        if self._all_types_zero:
            return np.zeros((len(lengths), width), dtype=np.int64)
        types = np.full((len(lengths), width), self._pad_type_id, dtype=np.int64)
        for i, length in enumerate(lengths):
            body = length - len(self._prefix_types) - len(self._suffix_types)
            row = self._prefix_types + [self._sequence_type] * body + self._suffix_types
            if self._pad_left:
                types[i, width - length :] = row
            else:
                types[i, :length] = row
        return types


WORDS_FILE = "words.txt"


def frequent_chunks(texts: Iterable[str], min_count: int = 2, limit: int = 50_000) -> list[str]:
    """The space-separated chunks of ``texts`` seen at least ``min_count`` times, most
    frequent first: the domain's words, for a bundle to warm its cache with."""
    from collections import Counter

    counts = Counter(c for t in texts for c in _checked(t).split(_SPACE) if c)
    return [c for c, n in counts.most_common(limit) if n >= min_count]


def write_words(path: Any, chunks: Sequence[str]) -> None:
    """One chunk per line as a JSON string, every non-ASCII character escaped: no character
    of a chunk (tab, newline, U+2028, U+0085 ...) can end a line."""
    path.write_text("".join(json.dumps(c) + "\n" for c in chunks), encoding="utf-8")


def read_words(path: Any) -> list[str]:
    """The chunks :func:`write_words` wrote (lines split at ``\\n`` only). A file that is
    not UTF-8, or a line that is not one JSON string, is an :class:`ArtifactError` naming
    the file and the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    words = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        try:
            word = json.loads(line)
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep
            why = f"{exc.msg}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else exc
            raise ArtifactError(
                f"{path} line {number}: not a JSON string ({why}); {WORDS_FILE} holds one "
                "JSON string per line"
            ) from None
        if not isinstance(word, str):
            raise ArtifactError(
                f"{path} line {number}: a JSON {type(word).__name__}, not a string; "
                f"{WORDS_FILE} holds one JSON string per line"
            )
        words.append(word)
    return words


# Printable ASCII without a space (a chunk never holds one), and BERT's split of it: ASCII
# punctuation is every printable non-alphanumeric character (its is_punctuation).
_PLAIN_ASCII = re.compile(r"[!-~]+")
_BERT_ASCII_PIECES = re.compile(r"[A-Za-z0-9]+|[!-/:-@\[-`{-~]")


def _ascii_bert(spec: dict[str, Any]) -> bool | None:
    """Whether BERT's own normalizer lowercases (True / False) when the spec is exactly
    BertNormalizer + BertPreTokenizer; None for any other spec (no ASCII shortcut)."""
    normalizer, pre = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}
    if normalizer.get("type") != "BertNormalizer" or pre.get("type") != "BertPreTokenizer":
        return None
    return bool(normalizer.get("lowercase", True))


def _checked(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(f"texts must be str, not {type(text).__name__}")
    return text


def _lookup(cache: dict[str, tuple[int, ...]], extra: dict[str, tuple[int, ...]]) -> Any:
    def lookup(chunk: str) -> tuple[int, ...]:
        found = cache.get(chunk)
        return found if found is not None else extra[chunk]

    return lookup
