"""Stage `labels`: the teacher's soft targets for every example, cached once, keyed by id.

The student reads these instead of rerunning the teacher (torchdistill's cache). Under
`accelerate launch` / `torchrun` the pass is sharded over the processes and gathered back
in dataset order, so the cache is the same whatever the process count.

Outputs: ``logits/<split>.npz`` (ids and float32 logits) for train, validation and test.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from transformers import AutoModelForSequenceClassification

from distill.artifacts import RunContext
from distill.config import DataConfig
from distill.dataset_files import SPLITS, read_label_names, read_split, save_logits
from distill.distributed import current
from distill.models import ATTENTION, load_tokenizer
from distill.tasks import get_task
from distill.training import predict_logits, predictor


def run(ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig) -> dict[str, Any]:
    task = get_task(ctx.task)
    teacher_dir = inputs["teacher"] / "model"
    label_names = read_label_names(inputs["data"])
    model = AutoModelForSequenceClassification.from_pretrained(
        teacher_dir, use_safetensors=True, attn_implementation=ATTENTION
    )
    tokenizer = load_tokenizer(str(teacher_dir), "teacher model")
    (out / "logits").mkdir()
    with tempfile.TemporaryDirectory(prefix="distill-labels-") as scratch:
        return _label_splits(
            task,
            predictor(model, tokenizer, Path(scratch)),
            tokenizer,
            inputs,
            out,
            data,
            label_names,
        )


def _label_splits(
    task: Any,
    trainer: Any,
    tokenizer: Any,
    inputs: dict[str, Path],
    out: Path,
    data: DataConfig,
    label_names: list[str],
) -> dict[str, Any]:
    metrics: dict[str, Any] = {"processes": current().world_size, "examples": {}, "seconds": {}}
    for name in SPLITS:
        split = read_split(inputs["data"], name)
        started = time.perf_counter()
        logits = predict_logits(trainer, task.encode(tokenizer, split, data.max_length))
        if logits.shape[0] != len(split):  # a lost or doubled example would misalign every id
            raise RuntimeError(f"labels: {logits.shape[0]} logits for {len(split)} {name} examples")
        save_logits(out / "logits" / f"{name}.npz", split.ids, logits)
        metrics["examples"][name] = len(split)
        metrics["seconds"][name] = round(time.perf_counter() - started, 3)
        metrics[f"{name}_accuracy"] = task.metrics(logits, split.labels, len(label_names))[
            "accuracy"
        ]
    return metrics
