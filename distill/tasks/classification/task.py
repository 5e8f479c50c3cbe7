"""Sequence classification (sentiment, topics, spam): what the registry knows of it.

Imports nothing heavy: the registry (and so `distill validate`) reads this class without torch.
The model, encoding, metric and loss choices its stages share live beside it (``encoding``,
``metrics``, ``losses``), imported by the stages directly.
"""

from __future__ import annotations

from typing import Any, ClassVar

from distill.tasks.base import ENCODER_STUDENT_KEYS, PredictHelp, StudentKind, Task
from distill.tasks.classification.keys import CLS_PRUNING, LABELS_TABLE, STATIC, STATIC_KEYS


class SequenceClassification(Task):
    name = "sequence-classification"
    bundle_task = "text-classification"
    package = "distill.tasks.classification"
    command = "predict"
    runner = "runner"
    predict_help = PredictHelp(
        does="classify texts",
        line="label<TAB>probability<TAB>every label=probability for a classifier",
        json="text, label, probability, probabilities per label",
    )
    architecture_suffixes = ("ForSequenceClassification",)
    own_keys: ClassVar[tuple[str, ...]] = (
        "student.variants",
        *ENCODER_STUDENT_KEYS,
        "export.max_accuracy_drop",
        "export.calibration_samples",
        "export.optimization_level",
        "export.candidates",
        "export.per_channel",
        "export.reduce_range",
        "export.teacher_baseline",
        "export.latency_runs",
        "export.latency_rounds",
        "export.latency_warmup",
        "export.fp32_reference",
        "report.tfidf_baseline",
    )
    # Its own keys (keys.py): static students' (student.init = "static") and CLS pruning.
    recipe_keys: ClassVar[dict[str, dict[str, Any]]] = {
        "student": STATIC_KEYS,
        "export": {"cls_pruning": CLS_PRUNING},
    }
    recipe_tables: ClassVar[dict[str, tuple[type, Any]]] = {"labels": LABELS_TABLE}
    about = "a label per text (classification.md)"
    key_notes: ClassVar[dict[str, str]] = {
        "export.quantization": "not 'weight-only'",
        "export.candidates": "gate: export.max_accuracy_drop",
    }
    student_inits = ("teacher-layers", "pretrained", "config", "static")
    student_kinds: ClassVar[dict[str, StudentKind]] = {"static": STATIC}
    data_column_keys = ("text_column", "label_column")
    # Small labelled sets: a few epochs of a few hundred examples are too few steps to move
    # a pre-trained encoder (see distill.train.budget).
    default_min_steps = 200
    # Static students save a config of their own model type (distill-static).
    model_modules = ("static.model",)
    bench = "bench_models"
    compare = "compare"

    def check_recipe(self, recipe: Any) -> list[str]:
        if recipe.export.quantization == "weight-only":
            return [f"export.quantization = 'weight-only' is not supported for task {self.name!r}"]
        return []

    def summary_lines(self, report: dict[str, Any]) -> list[str]:
        lines = [f"  {'model':<34} {'accuracy':>8} {'macro-F1':>8} {'MB':>7} {'p50 ms':>7}"]
        for row in report.get("rows", []):
            latency = (row.get("latency") or {}).get("p50_ms")
            size = row.get("bytes")
            lines.append(
                f"  {row.get('name', row.get('key', '?'))[:34]:<34} {row.get('accuracy', 0):8.4f} "
                f"{row.get('macro_f1', 0):8.4f} {(size or 0) / 1e6:7.1f} "
                f"{'' if latency is None else f'{latency:.2f}':>7}"
            )
        # The report's conclusions in words: the KD verdict and any floor warning.
        verdict = ((report.get("distillation") or {}).get("significance") or {}).get("verdict")
        warnings = (report.get("headline") or {}).get("floor_warnings") or []
        lines += [f"  {sentence}" for sentence in ([verdict] if verdict else []) + warnings]
        return [*lines, ""]
