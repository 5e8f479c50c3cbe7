"""Stage `labels`: the teacher's soft targets for every example, cached once, keyed by id.

The student reads these instead of rerunning the teacher (torchdistill's cache). With
`[student.transfer]`, unlabelled domain text is labelled here too: the student learns
from it through the teacher alone. Under `accelerate launch` / `torchrun` the pass is
sharded over the processes and gathered back in dataset order, so the cache is the same
whatever the process count.

Outputs: ``logits/<split>.npz`` (ids and float32 logits) for train, validation, test and,
with transfer text, ``transfer``; ``transfer.jsonl`` (the transfer texts, label -1).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from distill.artifacts import RunContext
from distill.config import DataConfig, TransferConfig
from distill.data import load_transfer
from distill.dataset_files import (
    SPLITS,
    Split,
    read_label_names,
    read_split,
    save_logits,
    write_split,
)
from distill.distributed import current
from distill.models import load_saved_classifier, load_tokenizer
from distill.tasks import get_task
from distill.training import predict_logits, predictor

log = logging.getLogger("distill")


def run(
    ctx: RunContext,
    inputs: dict[str, Path],
    out: Path,
    *,
    data: DataConfig,
    transfer: TransferConfig | None = None,
) -> dict[str, Any]:
    task = get_task(ctx.task)
    teacher_dir = inputs["teacher"] / "model"
    num_labels = len(read_label_names(inputs["data"]))
    model = load_saved_classifier(teacher_dir)
    tokenizer = load_tokenizer(str(teacher_dir), "teacher model")
    splits = {name: read_split(inputs["data"], name) for name in SPLITS}
    metrics: dict[str, Any] = {"processes": current().world_size, "examples": {}, "seconds": {}}
    if transfer is not None:
        splits["transfer"], metrics["transfer"] = load_transfer(
            transfer, data, ctx.recipe_dir, inputs["data"], ctx.seed
        )
        write_split(out / "transfer.jsonl", splits["transfer"])

    (out / "logits").mkdir()
    with tempfile.TemporaryDirectory(prefix="distill-labels-") as scratch:
        trainer = predictor(model, tokenizer, Path(scratch))
        for name, split in splits.items():
            started = time.perf_counter()
            encoded = task.encode(tokenizer, split, data.max_length, with_labels=False)
            logits = predict_logits(trainer, encoded)
            _check_count(logits.shape[0], split, name)
            save_logits(out / "logits" / f"{name}.npz", split.ids, logits)
            metrics["examples"][name] = len(split)
            metrics["seconds"][name] = round(time.perf_counter() - started, 3)
            log.info(
                "labels: %s, %d examples in %.1f s", name, len(split), metrics["seconds"][name]
            )
            if name in SPLITS:
                metrics[f"{name}_accuracy"] = task.metrics(logits, split.labels, num_labels)[
                    "accuracy"
                ]
    return metrics


def _check_count(count: int, split: Split, name: str) -> None:
    if count != len(split):  # a lost or doubled example would misalign every id after it
        raise RuntimeError(f"labels: {count} logits for {len(split)} {name} examples")
