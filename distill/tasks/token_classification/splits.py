"""Split the tagged sentences of a recipe: duplicates dropped, ``max_examples`` sampled,
validation and test split off (stratified on each sentence's rarest entity type, one
sentence per type anchored in training) unless given as files, training kept free of
held-out sentences, tags indexed by the training split's types."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

from distill.config import DataConfig
from distill.data.readers import without_evaluation_items
from distill.errors import DataError
from distill.tasks.token_classification.data import TagReport, load_sentences
from distill.tasks.token_classification.files import OUTSIDE, SPLITS, TaggedSplit, tag_names_for
from distill.tasks.token_classification.sentences import Sentence

# Sentences of a stratum this small cannot be stratified alone: they share one stratum.
RARE = "(rare)"


def _token_key(sentence: Sentence) -> tuple[str, ...]:
    return tuple(sentence.tokens)


def _deduplicate(sentences: list[Sentence]) -> tuple[list[Sentence], int]:
    """The first of each token sequence (a repeated tweet is one sentence, whatever its tags)."""
    seen: set[tuple[str, ...]] = set()
    kept = []
    for sentence in sentences:
        if _token_key(sentence) not in seen:
            seen.add(_token_key(sentence))
            kept.append(sentence)
    return kept, len(sentences) - len(kept)


def strata(sentences: list[Sentence]) -> list[str]:
    """Each sentence's rarest entity type (``O`` for none): stratifying on it spreads the rare
    types first. Strata under two sentences share one (a stratum of one cannot be split)."""
    types = [s.entity_types() for s in sentences]
    counts = Counter(kind for kinds in types for kind in kinds)
    labels = [min(kinds, key=lambda k: (counts[k], k), default=OUTSIDE) for kinds in types]
    sizes = Counter(labels)
    labels = [label if sizes[label] >= 2 else RARE for label in labels]
    if labels.count(RARE) == 1:  # still alone: it joins the largest stratum
        largest = Counter(labels).most_common(1)[0][0]
        labels = [largest if label == RARE else label for label in labels]
    return labels


def _anchors(sentences: list[Sentence], seed: int) -> set[int]:
    """One sentence per entity type that a split never takes, so no type leaves training
    (rarest types first; a sentence holding several types anchors them all)."""
    types = [s.entity_types() for s in sentences]
    counts = Counter(kind for kinds in types for kind in kinds)
    rng = random.Random(seed)
    covered: set[str] = set()
    anchors: set[int] = set()
    for kind in sorted(counts, key=lambda k: (counts[k], k)):
        if kind not in covered:
            pick = rng.choice([i for i, kinds in enumerate(types) if kind in kinds])
            anchors.add(pick)
            covered |= types[pick]
    return anchors


def split_off(
    sentences: list[Sentence], count: int, seed: int, report: TagReport
) -> tuple[list[Sentence], list[Sentence]]:
    """``(kept, taken)``: ``count`` sentences taken (fewer if anchors leave fewer), stratified
    on the rarest entity type, else at random; both keep the input order."""
    anchors = _anchors(sentences, seed)
    free = [i for i in range(len(sentences)) if i not in anchors]
    count = min(count, len(free))
    if count == 0:
        return list(sentences), []
    taken = set(_sample(free, [sentences[i] for i in free], count, seed, report))
    kept = [s for i, s in enumerate(sentences) if i not in taken]
    return kept, [sentences[i] for i in sorted(taken)]


def _sample(
    indices: list[int], sentences: list[Sentence], count: int, seed: int, report: TagReport
) -> list[int]:
    from sklearn.model_selection import train_test_split

    if count >= len(indices):
        return indices
    try:
        _, taken = train_test_split(
            indices, test_size=count, random_state=seed, stratify=strata(sentences)
        )
    except ValueError:  # too many strata for the sizes asked: a plain random sample
        report.stratified = False
        taken = random.Random(seed).sample(indices, count)
    return [int(i) for i in taken]


def _evaluation_splits(
    pool: list[Sentence], config: DataConfig, base_dir: Path, seed: int, report: TagReport
) -> dict[str, list[Sentence]]:
    """train/validation/test: the separate files where given, else shares of ``pool``."""
    parts: dict[str, list[Sentence]] = {}
    for name, reference in (("validation", config.validation_path), ("test", config.test_path)):
        if reference is not None:
            parts[name] = load_sentences(reference, config, base_dir, f"data.{name}_path", report)
    train = pool
    if "test" not in parts:
        count = math.ceil(config.test_fraction * len(pool))
        train, parts["test"] = split_off(train, count, seed, report)
    if "validation" not in parts:
        count = math.ceil(config.validation_fraction * len(pool))
        train, parts["validation"] = split_off(train, count, seed + 1, report)
    parts["train"], report.train_overlap_dropped = without_evaluation_items(
        train, parts, _token_key, "sentence", config.deduplicate
    )
    for name in SPLITS:
        if not parts[name]:
            raise DataError(f"the {name} split is empty; add data or change data.{name}_fraction")
    return parts


def _training_types(parts: dict[str, list[Sentence]]) -> set[str]:
    """The training split's entity types; a type only validation or test has is an error."""
    train_types = set().union(*(s.entity_types() for s in parts["train"]))
    if not train_types:
        raise DataError(f"the training split holds no entity (every tag is {OUTSIDE!r})")
    for name in ("validation", "test"):
        unseen = [
            (s, position)
            for s in parts[name]
            for position, tag in enumerate(s.tags)
            if tag.startswith("B-") and tag[2:] not in train_types
        ]
        if unseen:
            first, position = unseen[0]
            kind = first.tags[position][2:]
            count = sum(1 for s, p in unseen if s.tags[p][2:] == kind)
            raise DataError(
                f"{first.at(position)}: entity type {kind!r} in the {name} split never occurs "
                f"in training ({count} entities); training types: {sorted(train_types)}"
            )
    return train_types


def _encode(sentences: list[Sentence], index: dict[str, int]) -> tuple[TaggedSplit, int]:
    """Tag names as indices; a tag not in ``index`` becomes O (counted, returned)."""
    tags, outside = [], 0
    for sentence in sentences:
        row = [index.get(tag, -1) for tag in sentence.tags]
        outside += row.count(-1)
        tags.append([0 if tag < 0 else tag for tag in row])
    split = TaggedSplit(
        ids=[s.example_id for s in sentences], tokens=[s.tokens for s in sentences], tags=tags
    )
    return split, outside


def build_tagged_splits(
    config: DataConfig, base_dir: Path, seed: int
) -> tuple[dict[str, TaggedSplit], list[str], TagReport]:
    """Read, check and split the data: the splits (train, validation, test, unused), the tag
    names and what cleaning did. ``unused`` holds what ``max_examples`` left out, minus any
    sentence validation or test hold; its tags of types training lacks are written as O."""
    report = TagReport(tag_scheme=config.tag_scheme, converted_to_iob2=config.tag_scheme != "iob2")
    pool = load_sentences(config.path, config, base_dir, "data.path", report)
    if config.deduplicate:
        pool, report.duplicates_dropped = _deduplicate(pool)
    unused: list[Sentence] = []
    if config.max_examples is not None and len(pool) > config.max_examples:
        report.subsampled_from = len(pool)
        pool, unused = split_off(pool, len(pool) - config.max_examples, seed, report)
    parts = _evaluation_splits(pool, config, base_dir, seed, report)
    names = tag_names_for(_training_types(parts))
    index = {name: i for i, name in enumerate(names)}
    splits = {name: _encode(parts[name], index)[0] for name in SPLITS}
    held_out = {_token_key(s) for name in ("validation", "test") for s in parts[name]}
    kept = [s for s in unused if _token_key(s) not in held_out]
    splits["unused"], report.unused_tags_outside_training = _encode(kept, index)
    return splits, names, report


def entity_counts(split: TaggedSplit, names: list[str]) -> dict[str, int]:
    """Entities per type (each B- tag opens one), every type of ``names`` listed."""
    counts = Counter(names[tag] for row in split.tags for tag in row)
    return {name[2:]: counts.get(name, 0) for name in names if name.startswith("B-")}


def token_count(split: TaggedSplit) -> int:
    return sum(len(tokens) for tokens in split.tokens)
