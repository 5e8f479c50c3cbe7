"""What `distill bench` needs of a classification run: its saved models as sequence
classifiers, and the test texts its inputs are cut from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.tasks.classification.files import read_split


def load_model(folder: Path) -> Any:
    """A classifier an earlier stage saved (safetensors only), fp32, in eval mode."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        folder, dtype=torch.float32, use_safetensors=True
    )
    return model.eval()


def test_texts(data_dir: Path) -> list[str]:
    return list(read_split(data_dir, "test").texts)


def optimization_options(recorded: dict[str, Any]) -> dict[str, Any]:
    """The keywords of :func:`distill.export.fusion.optimize_graph` (beyond the level) that
    replay a bundle's recorded optimization: CLS pruning where its export applied it."""
    from distill.tasks.classification.export_steps import CLS_PRUNING

    applied = bool((recorded.get(CLS_PRUNING.key) or {}).get("applied"))
    return {"rewrites": [CLS_PRUNING] if applied else []}


def optimization_note(settings: dict[str, Any]) -> str:
    """What the optimized graph's row label adds: whether CLS pruning applied."""
    return ", CLS-pruned" if (settings.get("cls_pruning") or {}).get("applied") else ""
