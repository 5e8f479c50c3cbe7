"""Split the questions of a recipe by their contexts: every question about one context lands
in one split, so that no split is scored on a passage the model was trained on (SQuAD asks
five questions of each paragraph: a split by question would leak every paragraph).

``data.max_examples`` samples whole contexts (seeded) until it holds that many questions; the
rest are ``unused`` (the transfer text ``student.transfer.path = "unused"`` reads). Validation
and test take their shares of the questions as closely as whole contexts allow, unless given
as files; training (and ``unused``) then lose every question whose context they hold.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from distill.config import DataConfig
from distill.errors import DataError
from distill.tasks.question_answering.examples import ALL_SPLITS, SPLITS, QAExample
from distill.tasks.question_answering.squad import read_questions


def by_context(examples: list[QAExample]) -> dict[str, list[int]]:
    """The indices of each context's questions, contexts in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        groups.setdefault(example.context, []).append(index)
    return groups


def shuffled_contexts(examples: list[QAExample], seed: int) -> list[list[int]]:
    """The contexts' groups of question indices, in a seeded random order."""
    groups = list(by_context(examples).values())
    random.Random(seed).shuffle(groups)
    return groups


def take_share(groups: list[list[int]], target: float) -> tuple[list[list[int]], list[list[int]]]:
    """``(taken, rest)``: whole groups whose questions come close to ``target``: every group,
    in order, that still fits, then the smallest of the rest if it brings the count closer
    (or if nothing was taken, ``target > 0`` and another group is left). Both keep the
    groups' order."""
    chosen: set[int] = set()
    count = 0
    for index, group in enumerate(groups):
        if count + len(group) <= target:
            chosen.add(index)
            count += len(group)
    left = [i for i in range(len(groups)) if i not in chosen]
    if left and count < target:
        smallest = min(left, key=lambda i: len(groups[i]))
        closer = abs(count + len(groups[smallest]) - target) < abs(count - target)
        if closer or (not chosen and len(left) > 1):
            chosen.add(smallest)
    taken = [group for i, group in enumerate(groups) if i in chosen]
    return taken, [group for i, group in enumerate(groups) if i not in chosen]


def _examples(examples: list[QAExample], groups: list[list[int]]) -> list[QAExample]:
    """The questions of ``groups``, in their input order."""
    return [examples[i] for i in sorted(i for group in groups for i in group)]


def sample_contexts(
    examples: list[QAExample], count: int, seed: int
) -> tuple[list[QAExample], list[QAExample]]:
    """``(kept, unused)``: whole contexts, in a seeded random order, until ``kept`` holds at
    least ``count`` questions."""
    kept: list[list[int]] = []
    unused: list[list[int]] = []
    held = 0
    for group in shuffled_contexts(examples, seed):
        if held < count:
            kept.append(group)
            held += len(group)
        else:
            unused.append(group)
    return _examples(examples, kept), _examples(examples, unused)


def _outside(examples: list[QAExample], contexts: set[str]) -> tuple[list[QAExample], int]:
    """The questions whose context is not in ``contexts``, and how many were dropped."""
    kept = [e for e in examples if e.context not in contexts]
    return kept, len(examples) - len(kept)


def _evaluation_splits(
    pool: list[QAExample], data: DataConfig, base_dir: Path, seed: int, report: dict[str, Any]
) -> dict[str, list[QAExample]]:
    """train/validation/test: the separate files where given, else shares of ``pool``."""
    parts: dict[str, list[QAExample]] = {}
    for name, reference in (("validation", data.validation_path), ("test", data.test_path)):
        if reference is not None:
            key = f"data.{name}_path"
            parts[name], report["read"][key] = read_questions(reference, data, base_dir, key)
    groups = shuffled_contexts(pool, seed + 1)
    for name in ("test", "validation"):
        if name not in parts:
            share = data.test_fraction if name == "test" else data.validation_fraction
            taken, groups = take_share(groups, share * len(pool))
            parts[name] = _examples(pool, taken)
    held_out = {e.context for name in ("validation", "test") for e in parts[name]}
    parts["train"], report["train_overlap_dropped"] = _outside(_examples(pool, groups), held_out)
    for name in SPLITS:
        if not parts[name]:
            change = "data.path" if name == "train" else f"data.{name}_fraction"
            raise DataError(
                f"the {name} split is empty; add data (more contexts) or change {change}"
            )
    return parts


def build_qa_splits(
    data: DataConfig, base_dir: Path, seed: int
) -> tuple[dict[str, list[QAExample]], dict[str, Any]]:
    """Read, check and split the questions: train, validation, test and unused (what
    ``data.max_examples`` left out, less any question whose context validation or test
    hold), and a report of what was read and cleaned. Same seed, same splits."""
    pool, counts = read_questions(data.path, data, base_dir, "data.path")
    report: dict[str, Any] = {
        "read": {"data.path": counts},
        "subsampled_from": None,
        "train_overlap_dropped": 0,
        "unused_overlap_dropped": 0,
    }
    unused: list[QAExample] = []
    if data.max_examples is not None and len(pool) > data.max_examples:
        report["subsampled_from"] = len(pool)
        pool, unused = sample_contexts(pool, data.max_examples, seed)
    parts = _evaluation_splits(pool, data, base_dir, seed, report)
    held_out = {e.context for name in ("validation", "test") for e in parts[name]}
    parts["unused"], report["unused_overlap_dropped"] = _outside(unused, held_out)
    report["repeats_dropped"] = sum(c["repeats_dropped"] for c in report["read"].values())
    return {name: parts[name] for name in ALL_SPLITS}, report
