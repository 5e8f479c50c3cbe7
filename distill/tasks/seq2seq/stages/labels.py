"""Stage `labels` for seq2seq: what the students learn from the teacher, made once.

- The teacher's beam outputs (``student.sequence_beams``), sequence-level KD's targets: for
  the training sources whenever ``student.distillation`` is 'sequence' or 'word+sequence'
  or the sequence-level twin is trained (``student.sequence_twin``) ->
  ``sequence/train.jsonl``; and for the transfer sources (``student.transfer``: 'unused' =
  the pairs data.max_examples left out, or a file's ``data.source_column``) ->
  ``sequence/transfer.jsonl`` ({"id", "source", "target"}: the teacher's text as target).
- Word-level KD's soft targets (not for 'sequence'): the teacher's ``student.kd_top_k``
  logits per target token under teacher forcing, on the gold training targets ('word') or
  its own outputs ('word+sequence'), and on its outputs for the transfer sources ->
  ``topk/train.npz``, ``topk/transfer.npz``.

A top-k file is ragged, keyed by example id: ``ids`` (str), ``offsets`` (int64, examples + 1),
``values`` (float16, [tokens, k]), ``indices`` (int32, [tokens, k]) and ``log_normalizer``
(float32, [tokens]: ``logsumexp(logits / T)`` over the whole vocabulary at
``student.temperature``, which gives the k ids their true probabilities and the rest of the
vocabulary one tail bucket in the loss); example ``i`` is rows ``offsets[i]:offsets[i+1]``,
one per target token (EOS included).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.config import DataConfig, StudentTable, TransferConfig
from distill.data.problems import Problems
from distill.data.readers import text_key
from distill.errors import ArtifactError, DataError
from distill.pipeline.artifacts import RunContext
from distill.pipeline.distributed import current
from distill.pipeline.progress import track
from distill.tasks.seq2seq.encoding import Seq2SeqCollator, encode_pairs
from distill.tasks.seq2seq.files import UNUSED, PairSplit, read_split, write_split
from distill.tasks.seq2seq.generation import generate_texts
from distill.tasks.seq2seq.models import load_seq2seq
from distill.tasks.seq2seq.pairs import source_text, table_column
from distill.train.models import load_tokenizer
from distill.train.topk import top_k_logits

BATCH_SIZE = 16
LABELLED = ("train", "validation", "test")


def needs_outputs(student: Any) -> bool:
    """Whether a student learns from the teacher's outputs on the training sources."""
    return student.distillation in ("sequence", "word+sequence") or bool(student.sequence_twin)


# What this stage reads of [student] (the task's stage_sections name the same keys): a change
# of the students' budget or build does not label again.
LABELLING_FIELDS = (
    "transfer",
    "distillation",
    "kd_top_k",
    "sequence_beams",
    "sequence_twin",
    "temperature",
)


@dataclass(frozen=True)
class Labelling:
    """The [student] keys that say what the teacher makes for the students."""

    distillation: str
    kd_top_k: int
    sequence_beams: int
    sequence_twin: bool
    temperature: float
    transfer: TransferConfig | None = None


def labelling_of(student: StudentTable) -> dict[str, Any]:
    """The keyword arguments :func:`run` takes, read from a whole [student] table."""
    return {name: getattr(student, name) for name in LABELLING_FIELDS}


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig, **keys: Any
) -> dict[str, Any]:
    """The teacher's outputs and top-k caches for ``keys`` (:data:`LABELLING_FIELDS`)."""
    return label(ctx, inputs, out, data, Labelling(**keys))


def label(
    ctx: RunContext, inputs: dict[str, Path], out: Path, data: DataConfig, student: Labelling
) -> dict[str, Any]:
    if not current().is_main:  # one pass is enough; the others wait at the stage barrier
        return {}
    started = time.perf_counter()
    teacher_dir = inputs["teacher"] / "model"
    tokenizer = load_tokenizer(str(teacher_dir), "teacher model")
    model = load_seq2seq(teacher_dir, "teacher model").eval()
    splits = {"train": read_split(inputs["data"], "train")}
    metrics: dict[str, Any] = {"distillation": student.distillation}
    if student.transfer is not None:
        splits["transfer"], metrics["transfer"] = transfer_sources(
            student.transfer, data, ctx, inputs["data"]
        )
    outputs: dict[str, PairSplit] = {}
    for name, split in splits.items():
        if name == "transfer" or needs_outputs(student):
            texts = generate_texts(
                model,
                tokenizer,
                split.sources,
                prefix=data.source_prefix,
                max_length=data.max_length,
                max_new_tokens=data.max_target_length,
                num_beams=student.sequence_beams,
                desc=f"labels: teacher outputs ({name})",
            )
            outputs[name] = PairSplit(split.ids, split.sources, texts)
            write_split(out / "sequence" / f"{name}.jsonl", outputs[name])
            metrics[f"sequence_{name}"] = {"examples": len(split)}
    if student.distillation != "sequence":
        gold = student.distillation == "word"
        for name, split in splits.items():
            targets = split if name == "train" and gold else outputs[name]
            path = out / "topk" / f"{name}.npz"
            metrics[f"topk_{name}"] = _cache_split(model, tokenizer, targets, data, student, path)
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    return metrics


def _cache_split(
    model: Any, tokenizer: Any, split: PairSplit, data: DataConfig, student: Any, path: Path
) -> dict[str, Any]:
    examples = encode_pairs(
        tokenizer,
        split,
        prefix=data.source_prefix,
        max_length=data.max_length,
        max_target_length=data.max_target_length,
    )
    rows = top_k_cache(
        model, examples, tokenizer.pad_token_id, student.kd_top_k, student.temperature
    )
    save_top_k(path, split.ids, *rows)
    tokens = sum(len(e["labels"]) for e in examples)
    return {
        "examples": len(examples),
        "tokens": tokens,
        "k": int(rows[0][0].shape[-1]) if rows[0] else student.kd_top_k,
        "bytes": path.stat().st_size,
    }


@torch.no_grad()
def top_k_cache(
    model: Any, examples: list[dict[str, Any]], pad_id: int, k: int, temperature: float
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per example, under teacher forcing on its labels: the top-k logits of every target
    token (float16), their ids (int32) and the log-normalizer ``logsumexp(logits / T)``
    (float32)."""
    collate = Seq2SeqCollator(pad_id)
    device = next(model.parameters()).device
    values, indices, normalizers = [], [], []
    for start in track(range(0, len(examples), BATCH_SIZE), desc="labels (top-k)", unit="batch"):
        chunk = examples[start : start + BATCH_SIZE]
        batch = {key: tensor.to(device) for key, tensor in collate(chunk).items()}
        logits = model(**batch).logits.float()
        top_values, top_indices = top_k_logits(logits, min(k, logits.shape[-1]))
        normalizer = torch.logsumexp(logits / temperature, dim=-1)
        for row, example in enumerate(chunk):
            n = len(example["labels"])
            values.append(top_values[row, :n].to(torch.float16).cpu().numpy())
            indices.append(top_indices[row, :n].to(torch.int32).cpu().numpy())
            normalizers.append(normalizer[row, :n].cpu().numpy().astype(np.float32))
    return values, indices, normalizers


def save_top_k(
    path: Path,
    ids: list[str],
    values: list[np.ndarray],
    indices: list[np.ndarray],
    normalizers: list[np.ndarray],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in values])]).astype(np.int64)
    width = values[0].shape[-1] if values else 0
    with path.open("wb") as handle:
        np.savez(
            handle,
            ids=np.asarray(ids),
            offsets=offsets,
            values=np.concatenate(values) if values else np.zeros((0, width), np.float16),
            indices=np.concatenate(indices) if indices else np.zeros((0, width), np.int32),
            log_normalizer=np.concatenate(normalizers) if normalizers else np.zeros(0, np.float32),
        )


def load_top_k(
    path: Path, ids: list[str], lengths: list[int]
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per-example (values float32, ids int64, log-normalizers) in the order of ``ids``;
    refuses a cache missing an example or made from another tokenization of its targets
    (``lengths``: the target tokens of each)."""
    if not path.is_file():
        raise ArtifactError(f"{path}: the teacher's top-k cache is missing; rerun --from labels")
    with np.load(path) as cache:
        stored = [str(i) for i in cache["ids"]]
        offsets, values, indices = cache["offsets"], cache["values"], cache["indices"]
        normalizers = cache["log_normalizer"]
    where = {example: i for i, example in enumerate(stored)}
    missing = [example for example in ids if example not in where]
    if missing:
        raise ArtifactError(f"{path}: no top-k for {len(missing)} example(s), e.g. {missing[0]!r}")
    rows: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for example, length in zip(ids, lengths, strict=True):
        i = where[example]
        a, b = int(offsets[i]), int(offsets[i + 1])
        if b - a != length:
            raise ArtifactError(
                f"{path}: example {example!r} was cached for {b - a} target tokens, not "
                f"{length} (another tokenization or data.max_target_length); rerun --from labels"
            )
        rows[0].append(values[a:b].astype(np.float32))
        rows[1].append(indices[a:b].astype(np.int64))
        rows[2].append(normalizers[a:b].astype(np.float32))
    return rows


def transfer_sources(
    transfer: TransferConfig, data: DataConfig, ctx: RunContext, data_dir: Path
) -> tuple[PairSplit, dict[str, int]]:
    """Unlabelled sources: those data.max_examples left out, or a file's data.source_column;
    never a source of the labelled splits, each once, at most transfer.max_examples
    (sampled with the run's seed). Their targets are empty until the teacher translates them."""
    if transfer.path == UNUSED:
        unused = read_split(data_dir, UNUSED)
        candidates = list(zip(unused.ids, unused.sources, strict=True))
    else:
        candidates = _file_sources(transfer, data, ctx.recipe_dir)
    # The data stage's notion of the same source (case and runs of whitespace ignored).
    seen = {text_key(s) for name in LABELLED for s in read_split(data_dir, name).sources}
    unique = []
    for example_id, source in candidates:
        key = text_key(source) if source.strip() else ""
        if key and key not in seen:
            seen.add(key)
            unique.append((example_id, source))
    if transfer.max_examples is not None and len(unique) > transfer.max_examples:
        picked = sorted(random.Random(ctx.seed).sample(range(len(unique)), transfer.max_examples))
        unique = [unique[i] for i in picked]
    if not unique:
        raise DataError(
            f"student.transfer.path: {transfer.path!r} holds no source that is not already "
            "in a labelled split"
        )
    ids = [example_id for example_id, _ in unique]
    sources = [source for _, source in unique]
    split = PairSplit(ids, sources, [""] * len(ids))
    return split, {"read": len(candidates), "used": len(unique)}


def _file_sources(
    transfer: TransferConfig, data: DataConfig, base_dir: Path
) -> list[tuple[str, str]]:
    """A table's data.source_column, in any format distill reads, ids ``transfer:FILE:LINE``."""
    from distill.data.readers import read_table

    config = data.model_copy(
        update={"format": "auto", "encoding": transfer.encoding or data.encoding}
    )
    name, columns, rows = read_table(transfer.path, config, base_dir, "student.transfer.path")
    if table_column(data.source_column, columns) not in columns:
        raise DataError(
            f"{name}: no column {data.source_column!r} (data.source_column) for "
            f"student.transfer.path; the columns are {columns}"
        )
    stem = Path(name).name
    problems = Problems(name, "student.transfer.path", "bad row")
    sources = []
    for line, row in rows:
        found: list[str] = []
        text = source_text(row, data.source_column, found)
        for problem in found:
            problems.add(f"{stem}: line {line}", problem)
        if text is not None:
            sources.append((f"transfer:{stem}:{line}", text))
    problems.raise_any()
    return sources
