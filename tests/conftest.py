"""Shared fixtures: tiny models built from configs and small synthetic data. No network."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from task_projects import Project

# The export stage's timing of its graphs against each other, cut short: tests check what is
# recorded and chosen, never the speed. Lines for a recipe's [export] table (classification
# and NER; causal-lm times no candidates) and the same as ExportConfig keyword arguments.
SHORT_TIMING = {"latency_runs": 6, "latency_rounds": 2, "latency_warmup": 1}
SHORT_EXPORT_TIMING = "".join(f"{key} = {value}\n" for key, value in SHORT_TIMING.items())

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

POSITIVE = ["good", "great", "love", "happy", "excellent", "nice", "wonderful", "fun"]
NEGATIVE = ["bad", "awful", "hate", "sad", "terrible", "poor", "horrible", "boring"]
NEUTRAL = ["the", "a", "flight", "today", "is", "was", "my", "this", "movie", "food", "service"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def synthetic_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(text, label) pairs whose label is learnable from the words (positive/negative)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        cue = POSITIVE if label == "positive" else NEGATIVE
        words = rng.sample(NEUTRAL, 3) + rng.sample(cue, 2)
        rng.shuffle(words)
        rows.append((" ".join(words) + f" {i}", label))
    return rows


# Five topics for the small-data budget checks: each text has one or two cue words of its
# topic among shared filler, and one text in four also a cue word of another topic.
TOPICS = {
    "sport": ["match", "goal", "team", "coach", "league", "score"],
    "politics": ["vote", "senate", "party", "minister", "election", "law"],
    "tech": ["software", "chip", "app", "laptop", "code", "robot"],
    "food": ["recipe", "bread", "cheese", "soup", "dinner", "spice"],
    "travel": ["airport", "hotel", "beach", "visa", "train", "trip"],
}
FILLER = ["news", "report", "people", "week", "big", "new", "story", "city", "year", "talk"]


def topic_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(text, topic) pairs over 5 balanced classes, learnable from the cue words but noisy."""
    rng = random.Random(seed)
    names = sorted(TOPICS)
    rows = []
    for i in range(n):
        label = names[i % len(names)]
        words = rng.sample(FILLER, 4) + rng.sample(TOPICS[label], rng.choice([1, 2]))
        if rng.random() < 0.25:
            other = rng.choice([name for name in names if name != label])
            words.append(rng.choice(TOPICS[other]))
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


TOPIC_WORDS = [word for cues in TOPICS.values() for word in cues] + FILLER


def write_vocab(folder: Path, extra_words: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    digits = [str(d) for d in range(10)] + [f"##{d}" for d in range(10)]
    vocab = SPECIAL + POSITIVE + NEGATIVE + NEUTRAL + digits + (extra_words or [])
    path = folder / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return path


def build_tiny_classifier(
    folder: Path,
    num_labels: int = 2,
    layers: int = 4,
    seed: int = 0,
    extra_words: list[str] | None = None,
) -> Path:
    """A randomly initialised tiny BERT classifier + WordPiece tokenizer, saved like a hub model."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(seed)
    vocab = write_vocab(folder, extra_words)
    tokenizer = BertTokenizerFast(vocab=str(vocab), do_lower_case=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=num_labels,
    )
    model = BertForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("tiny-bert"))


def write_csv(path: Path, header: list[str], rows: Any) -> Path:
    """A UTF-8 CSV file with a header row."""
    import csv

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def sentiment_csv(tmp_path: Path) -> Path:
    """A small two-class CSV with columns text,label."""
    return write_csv(tmp_path / "reviews.csv", ["text", "label"], synthetic_rows(120))


ROOT = Path(__file__).parent.parent


def run_command(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a real process offline with this checkout importable (the CLI as a user runs it)."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, check=False, timeout=600
    )


def run_distill(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m distill ARGS` in ``cwd``."""
    return run_command([sys.executable, "-m", "distill", *args], cwd)


# What a bundle runner must never import (the edge path is onnxruntime, tokenizers, numpy).
HEAVY_MODULES = ("torch", "transformers", "optimum", "datasets", "accelerate", "sklearn")


def run_cli_watching_imports(
    argv: list[str], heavy: tuple[str, ...] = HEAVY_MODULES
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``distill.cli.main(argv)`` in a fresh interpreter; with the process, what it reported:
    ``{"rc": exit status, "loaded": [the modules of heavy it imported]}``."""
    code = (
        "import json, sys\n"
        "import distill.cli\n"
        f"rc = distill.cli.main({argv!r})\n"
        f"print(json.dumps({{'rc': rc, 'loaded': [m for m in {heavy!r} if m in sys.modules]}}),"
        " file=sys.stderr)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    lines = result.stderr.strip().splitlines()
    return result, json.loads(lines[-1]) if result.returncode == 0 and lines else {}


LABELS = ["negative", "positive"]


def make_data_stage(folder: Path) -> Path:
    """A finished data-stage folder (train/validation/test JSONL, labels.json): 64/16/40
    synthetic rows with ids ``<split>-<i>``."""
    import numpy as np

    from distill.data.files import write_label_names
    from distill.tasks.classification.files import Split, write_split

    folder.mkdir(parents=True)
    rows = synthetic_rows(120, seed=3)
    for name, part in {"train": rows[:64], "validation": rows[64:80], "test": rows[80:]}.items():
        split = Split(
            ids=[f"{name}-{i}" for i in range(len(part))],
            texts=[text for text, _ in part],
            labels=np.asarray([LABELS.index(label) for _, label in part], dtype=np.int64),
        )
        write_split(folder / f"{name}.jsonl", split)
    write_label_names(folder, LABELS)
    return folder


def set_label_maps(model_dir: Path) -> None:
    """Give a saved model real id2label/label2id, as the student stage does."""
    import json

    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    config["id2label"] = {str(i): name for i, name in enumerate(LABELS)}
    config["label2id"] = {name: i for i, name in enumerate(LABELS)}
    path.write_text(json.dumps(config, indent=2))


@pytest.fixture(scope="session")
def finished_project(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Project]:
    """``finished_project(task)``: that task's project (tests/task_projects.py) after one
    `distill run`, run on first use and shared for the session by every module that reads
    it (the task contract, the task's own pipeline tests). Readers only: a test that
    changes a project works on a ``shutil.copytree`` of it."""
    from task_projects import PROJECTS

    finished: dict[str, tuple[Project, subprocess.CompletedProcess[str]]] = {}

    def get(task: str) -> Project:
        if task not in finished:  # a failed run is kept too: asked again, it fails again
            project = PROJECTS[task](tmp_path_factory.mktemp(task))
            finished[task] = (
                project,
                run_command(
                    [sys.executable, "-m", "distill", "run", "recipe.toml"],
                    project.root,
                    **project.env,
                ),
            )
            (project.root / "run.out").write_text(finished[task][1].stdout, encoding="utf-8")
        project, result = finished[task]
        assert result.returncode == 0, result.stderr[-3000:]
        return project

    return get


@pytest.fixture(scope="session")
def report_upstream(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The fake upstream stage folders of tests/test_report.py (tiny real models, real ONNX
    files, known logits), built once for the report tests and the browser tests: read only."""
    from test_report import build_upstream

    return build_upstream(tmp_path_factory.mktemp("report-upstream"))


@pytest.fixture(scope="session")
def unit_report(report_upstream: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report stage's folder over :func:`report_upstream` (default settings), with the
    metrics it returned in ``returned_metrics.json``: read only."""
    from test_report import run_report

    out = tmp_path_factory.mktemp("report") / "out"
    metrics = run_report(report_upstream, out)
    (out / "returned_metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return out
