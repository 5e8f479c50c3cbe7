"""The text the adapt stage trains on: a table's text column (DAPT), the rows the data stage
left out (``adapt.path = "unused"``), or the run's own training and transfer text (TAPT);
never a text of the validation or test split, each text once, sampled, a slice held out."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.config import AdaptConfig, DataConfig
from distill.data.readers import read_table, text_key
from distill.errors import DataError

# A text longer than this is cut before tokenizing (truncation keeps max_length tokens).
MAX_TEXT_CHARS = 20_000


@dataclass(frozen=True)
class OwnText:
    """What a task hands the adapt stage: its training texts, its [student.transfer] texts,
    the rows data.max_examples left out (None: the task keeps none), and its validation and
    test texts, which are never adapted on."""

    train: list[str]
    transfer: list[str]
    unused: list[str] | None
    evaluation: list[str]


@dataclass(frozen=True)
class DomainText:
    """The texts to adapt on, the held-out slice that measures the masked-LM loss, and what
    was read and dropped (for the manifest)."""

    train: list[str]
    held_out: list[str]
    record: dict[str, Any]


def _table_texts(adapt: AdaptConfig, data: DataConfig, base_dir: Path) -> tuple[str, list[str]]:
    """The text column of ``adapt.path`` (a file or hub dataset), blank cells skipped; the
    source is named by its key (the record keeps the reference, not this machine's path)."""
    config = data.model_copy(update={"format": "auto", "encoding": adapt.encoding or data.encoding})
    name, columns, rows = read_table(str(adapt.path), config, base_dir, "adapt.path")
    if adapt.text_column not in columns:
        raise DataError(
            f"{name}: no column {adapt.text_column!r} (adapt.text_column); the columns are "
            f"{columns}"
        )
    cells = (record.get(adapt.text_column) for _, record in rows)
    return "adapt.path", [str(cell).strip()[:MAX_TEXT_CHARS] for cell in cells if cell is not None]


def _candidates(
    adapt: AdaptConfig, data: DataConfig, base_dir: Path, own: OwnText
) -> tuple[str, list[str]]:
    """Where the texts come from (in words) and all of them, in order."""
    if adapt.path is None:
        return "task text", own.train + own.transfer
    if adapt.path == "unused":
        if own.unused is None:
            raise DataError("adapt.path = 'unused': this task's data stage keeps no unused rows")
        if not own.unused:
            raise DataError(
                "adapt.path = 'unused': no rows were left out of data.path (set "
                "data.max_examples below its size, or name a file)"
            )
        return "unused rows of data.path", list(own.unused)
    return _table_texts(adapt, data, base_dir)


def domain_text(
    adapt: AdaptConfig, data: DataConfig, base_dir: Path, own: OwnText, seed: int
) -> DomainText:
    """The adaptation texts: deduplicated, without evaluation texts, sampled to
    ``adapt.max_examples``, and ``adapt.held_out_fraction`` of them held out (seeded)."""
    source, candidates = _candidates(adapt, data, base_dir, own)
    evaluation = {text_key(text) for text in own.evaluation}
    seen: set[str] = set()
    unique, dropped_evaluation, blank = [], 0, 0
    for text in candidates:
        key = text_key(text)
        if not text.strip():
            blank += 1
            continue
        if key in seen:
            continue
        seen.add(key)
        if key in evaluation:
            dropped_evaluation += 1
            continue
        unique.append(text)
    usable = len(unique)
    rng = random.Random(seed)
    if adapt.max_examples is not None and usable > adapt.max_examples:
        unique = [unique[i] for i in sorted(rng.sample(range(usable), adapt.max_examples))]
    if len(unique) < 2:
        where = f"adapt.path = {adapt.path!r}" if adapt.path else "the run's own text"
        raise DataError(
            f"{where}: {len(unique)} usable text(s) after dropping blanks, repeats and the "
            "validation and test texts; adaptation needs at least 2 (one to hold out)"
        )
    order = list(range(len(unique)))
    rng.shuffle(order)
    held = max(1, round(len(unique) * adapt.held_out_fraction))
    return DomainText(
        train=[unique[i] for i in sorted(order[held:])],
        held_out=[unique[i] for i in sorted(order[:held])],
        record={
            "source": source,
            "path": adapt.path,
            "read": len(candidates),
            "dropped_blank": blank,
            "dropped_duplicates": len(candidates) - blank - len(seen),
            "dropped_evaluation": dropped_evaluation,
            "usable": usable,
            "texts": len(unique) - held,
            "held_out": held,
        },
    )
