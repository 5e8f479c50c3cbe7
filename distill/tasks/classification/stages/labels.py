"""Stage `labels`: the teacher's soft targets for every example, cached once, keyed by id.

The student reads these instead of rerunning the teacher (torchdistill's cache). With
`[student.transfer]`, unlabelled domain text is labelled here too: the student learns
from it through the teacher alone.

`[labels] backend` picks how the teacher runs (:mod:`distill.tasks.classification.labelling`): ONNX Runtime
(the default on CPU: the teacher exported in fp32 with fused kernels, the cached logits
checked against PyTorch on a seeded sample within `labels.parity_tolerance`) or PyTorch.
Either way the texts are batched by token length and the logits put back in split order.
Under `accelerate launch` / `torchrun` the PyTorch pass is sharded over the processes and
gathered back in dataset order; the ONNX Runtime pass runs on the main process alone (its
threads already use the machine's cores; the other processes wait at the pipeline's
barrier), so the cache is the same whatever the process count.

Outputs: ``logits/<split>.npz`` (ids and float32 logits) for train, validation, test and,
with transfer text, ``transfer``; ``transfer.jsonl`` (the transfer texts, label -1).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from distill.config import DataConfig, TransferConfig
from distill.data.files import SPLITS, read_label_names, save_logits
from distill.pipeline.artifacts import RunContext
from distill.pipeline.distributed import current
from distill.serving.session import onnx_session
from distill.tasks.classification.data import load_transfer
from distill.tasks.classification.files import Split, read_split, write_split
from distill.tasks.classification.keys import LabelsConfig
from distill.tasks.classification.labelling import (
    Labeller,
    check_cached_logits,
    export_teacher,
    onnx_labeller,
    resolve_backend,
    torch_labeller,
)
from distill.tasks.classification.metrics import classification_metrics
from distill.tasks.classification.models import load_saved_classifier
from distill.tasks.classification.training import predictor
from distill.train.models import load_tokenizer

log = logging.getLogger("distill")


def run(
    ctx: RunContext,
    inputs: dict[str, Path],
    out: Path,
    *,
    data: DataConfig,
    transfer: TransferConfig | None = None,
    labels: LabelsConfig | None = None,
) -> dict[str, Any]:
    """Cache the teacher's logits for every split (and the transfer text), keyed by id."""
    labels = labels or LabelsConfig()
    backend = resolve_backend(labels.backend)
    processes = current()
    metrics: dict[str, Any] = {"processes": processes.world_size, "backend": backend}
    if backend == "onnxruntime" and not processes.is_main:
        return metrics  # the main process labels everything (see the module docstring)
    teacher_dir = inputs["teacher"] / "model"
    num_labels = len(read_label_names(inputs["data"]))
    model = load_saved_classifier(teacher_dir)
    tokenizer = load_tokenizer(str(teacher_dir), "teacher model")
    splits = {name: read_split(inputs["data"], name) for name in SPLITS}
    metrics.update(examples={}, seconds={}, batch_size=labels.batch_size)
    if transfer is not None:
        splits["transfer"], metrics["transfer"] = load_transfer(
            transfer, data, ctx.recipe_dir, inputs["data"], ctx.seed
        )
        write_split(out / "transfer.jsonl", splits["transfer"])

    (out / "logits").mkdir()
    with tempfile.TemporaryDirectory(prefix="distill-labels-") as scratch:
        if backend == "pytorch":
            trainer = predictor(model, tokenizer, Path(scratch), batch_size=labels.batch_size)
            label = torch_labeller(trainer, tokenizer, max_length=data.max_length)
        else:
            label, metrics["onnx"] = _onnx_labeller(teacher_dir, tokenizer, labels, data, scratch)
        computed = _label_splits(label, splits, metrics)
    if backend == "onnxruntime":  # checked before anything is cached
        metrics["parity"] = _check_parity(computed, splits, model, tokenizer, labels, data, ctx)
        metrics["parity_max_abs_diff"] = metrics["parity"]["max_abs_diff"]
    for name, split in splits.items():
        save_logits(out / "logits" / f"{name}.npz", split.ids, computed[name])
        if name in SPLITS:
            accuracy = classification_metrics(computed[name], split.labels, num_labels)["accuracy"]
            metrics[f"{name}_accuracy"] = accuracy
    return metrics


def _onnx_labeller(
    teacher_dir: Path, tokenizer: Any, labels: LabelsConfig, data: DataConfig, scratch: str
) -> tuple[Labeller, dict[str, Any]]:
    """The teacher exported and optimized for ONNX Runtime, and what the manifest records."""
    started = time.perf_counter()
    path, optimization = export_teacher(teacher_dir, Path(scratch) / "onnx")
    session = onnx_session(path, labels.threads)
    info = {
        "export_s": round(time.perf_counter() - started, 3),
        "precision": "fp32",
        "optimization": optimization,
        "threads": labels.threads or "onnxruntime default",
    }
    label = onnx_labeller(
        session, tokenizer, max_length=data.max_length, batch_size=labels.batch_size
    )
    return label, info


def _label_splits(
    label: Labeller, splits: dict[str, Split], metrics: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Each split's logits in split order; counts, seconds and examples/s into ``metrics``."""
    computed = {}
    for name, split in splits.items():
        started = time.perf_counter()
        computed[name] = label(split, f"labels ({name})")
        _check_count(computed[name].shape[0], split, name)
        metrics["examples"][name] = len(split)
        metrics["seconds"][name] = round(time.perf_counter() - started, 3)
        log.info(
            "labels: %s, %d examples in %.1f s (%s)",
            name,
            len(split),
            metrics["seconds"][name],
            metrics["backend"],
        )
    seconds = sum(metrics["seconds"].values())
    metrics["examples_per_s"] = round(sum(metrics["examples"].values()) / max(seconds, 1e-9), 1)
    return computed


def _check_parity(
    computed: dict[str, np.ndarray],
    splits: dict[str, Split],
    model: Any,
    tokenizer: Any,
    labels: LabelsConfig,
    data: DataConfig,
    ctx: RunContext,
) -> dict[str, Any]:
    """ONNX Runtime's cached logits against PyTorch on one sample drawn over every split."""
    started = time.perf_counter()
    everything = Split(
        ids=[i for split in splits.values() for i in split.ids],
        texts=[t for split in splits.values() for t in split.texts],
        labels=np.concatenate([split.labels for split in splits.values()]),
    )
    parity = check_cached_logits(
        np.concatenate(list(computed.values())),
        everything,
        model,
        tokenizer,
        max_length=data.max_length,
        samples=labels.parity_samples,
        seed=ctx.seed,
        tolerance=labels.parity_tolerance,
    )
    parity["seconds"] = round(time.perf_counter() - started, 3)
    log.info(
        "labels: ONNX Runtime vs PyTorch on %d examples, max |diff| %.2g",
        parity["examples"],
        parity["max_abs_diff"],
    )
    return parity


def _check_count(count: int, split: Split, name: str) -> None:
    if count != len(split):  # a lost or doubled example would misalign every id after it
        raise RuntimeError(f"labels: {count} logits for {len(split)} {name} examples")
