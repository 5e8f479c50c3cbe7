"""What the classification report reads from the upstream stages: their manifests and
folders, the label names and splits, the sequence length the models were exported with,
and the test logits each stage cached (the exact predictions it shipped)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.data.files import SPLITS, load_logits, read_label_names
from distill.errors import ArtifactError
from distill.export.bundle import FP32_REFERENCE
from distill.pipeline.artifacts import upstream_manifests
from distill.tasks.classification.files import Split, read_split
from distill.tasks.classification.report.scores import evaluate

UPSTREAM = ("data", "teacher", "student", "export")


@dataclass
class ReportInputs:
    """The upstream stages as the report reads them."""

    manifests: dict[str, dict[str, Any]]
    data_dir: Path
    teacher_dir: Path
    student_dir: Path
    export_dir: Path
    label_names: list[str]
    splits: dict[str, Split]
    max_length: int
    teacher_logits: np.ndarray
    student_logits: np.ndarray

    @property
    def test(self) -> Split:
        return self.splits["test"]

    def logits(self, path: Path) -> np.ndarray:
        """Cached test logits at ``path``, in test-split order."""
        return read_logits(path, self.test.ids)

    def score(self, logits: np.ndarray) -> dict[str, Any]:
        """Everything the report shows about one model's test logits, agreement included."""
        return evaluate(
            logits, self.test.labels, self.label_names, reference_logits=self.teacher_logits
        )


def read_inputs(inputs: dict[str, Path]) -> ReportInputs:
    """The upstream folders read; an empty test split is refused."""
    manifests = upstream_manifests(inputs, UPSTREAM)
    data_dir, teacher_dir, student_dir, export_dir = (inputs[name] for name in UPSTREAM)
    splits = {name: read_split(data_dir, name) for name in SPLITS}
    test = splits["test"]
    if len(test) == 0:
        raise ArtifactError(
            f"{data_dir / 'test.jsonl'}: the test split is empty; nothing to report"
        )
    return ReportInputs(
        manifests=manifests,
        data_dir=data_dir,
        teacher_dir=teacher_dir,
        student_dir=student_dir,
        export_dir=export_dir,
        label_names=read_label_names(data_dir),
        splits=splits,
        max_length=max_length(export_dir, manifests),
        teacher_logits=read_logits(teacher_dir / "logits" / "test.npz", test.ids),
        student_logits=read_logits(student_dir / "logits" / "test.npz", test.ids),
    )


def read_logits(path: Path, ids: list[str]) -> np.ndarray:
    """Cached logits of ``ids`` (float64), from a stage's ``.npz``."""
    if not path.is_file():
        raise ArtifactError(f"{path}: cached logits are missing")
    try:
        return np.asarray(load_logits(path, ids)[1], dtype=np.float64)
    except KeyError as exc:
        raise ArtifactError(str(exc.args[0] if exc.args else exc)) from None


def tokenizer(model_dir: Path) -> Any:
    """A saved model's tokenizer (transformers)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{model_dir}: cannot load the tokenizer: {exc}") from None


def max_length(export_dir: Path, manifests: dict[str, dict[str, Any]]) -> int:
    """The sequence length the models were trained and exported with."""
    bundle_manifest = export_dir / "bundle" / "manifest.json"
    if bundle_manifest.is_file():
        try:
            value = json.loads(bundle_manifest.read_text(encoding="utf-8")).get("max_length")
        except (OSError, ValueError):
            value = None
        if isinstance(value, int):
            return value
    for name in ("export", "student", "teacher", "data"):
        value = ((manifests[name].get("config") or {}).get("data") or {}).get("max_length")
        if isinstance(value, int):
            return value
    raise ArtifactError(f"{export_dir}: cannot tell the max_length the models were exported with")


def quantization(export_dir: Path, manifest: dict[str, Any]) -> str:
    """The int8 quantization of the deployed student ("none" when fp32 was deployed)."""
    # No int8 candidate passed the accuracy gate: fp32 was deployed whatever the recipe asked.
    if (manifest.get("metrics") or {}).get("deployed") == "fp32":
        return "none"
    value = ((manifest.get("config") or {}).get("export") or {}).get("quantization")
    if isinstance(value, str):
        return value
    return "dynamic" if (export_dir / "bundle" / FP32_REFERENCE).is_file() else "none"


def split_summary(split: Split, label_names: list[str]) -> dict[str, Any]:
    """A split's size and its examples per label."""
    counts = (
        np.bincount(split.labels, minlength=len(label_names))
        if len(split)
        else np.zeros(len(label_names))
    )
    return {
        "examples": len(split),
        "label_counts": {name: int(counts[i]) for i, name in enumerate(label_names)},
    }
