"""The files seq2seq stages hand to each other.

- ``<data stage>/train.jsonl``, ``validation.jsonl``, ``test.jsonl`` and ``unused.jsonl`` (the
  pairs ``data.max_examples`` left out: transfer sources for ``student.transfer.path =
  'unused'``): one object per line, ``{"id": str, "source": str, "target": str}``; sources
  as read, without ``data.source_prefix`` (the encoders put it in front).
- ``<labels stage>/sequence/<split>.jsonl``: the teacher's beam output for every source the
  students learn from, ``{"id", "source", "target"}`` with the teacher's text as target
  (``train`` and, with student.transfer, ``transfer``).
- ``<labels stage>/topk/<split>.npz``: word-level soft targets (see stages/labels.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distill.data.files import read_rows, write_rows

UNUSED = "unused"


@dataclass(frozen=True)
class PairSplit:
    """Source-target pairs in a fixed order."""

    ids: list[str]
    sources: list[str]
    targets: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: list[int]) -> PairSplit:
        return PairSplit(
            ids=[self.ids[i] for i in keep],
            sources=[self.sources[i] for i in keep],
            targets=[self.targets[i] for i in keep],
        )


def write_split(path: Path, split: PairSplit) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_rows(
        path,
        (
            {"id": example_id, "source": source, "target": target}
            for example_id, source, target in zip(
                split.ids, split.sources, split.targets, strict=True
            )
        ),
        ensure_ascii=False,
    )


def read_split(folder: Path, name: str) -> PairSplit:
    """``<folder>/<name>.jsonl`` (an empty split when the file does not exist: ``unused``)."""
    ids, sources, targets = [], [], []
    if (folder / f"{name}.jsonl").exists():
        for row in read_rows(folder, name):
            ids.append(row["id"])
            sources.append(row["source"])
            targets.append(row["target"])
    return PairSplit(ids=ids, sources=sources, targets=targets)


def with_prefix(prefix: str, sources: list[str]) -> list[str]:
    """The sources as the models read them: ``data.source_prefix`` in front of each."""
    return [prefix + source for source in sources] if prefix else list(sources)
