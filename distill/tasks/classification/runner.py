"""Serve an exported bundle with onnxruntime, tokenizers and numpy only: no torch, no
transformers.

:func:`load_bundle` reads and verifies ``export/<name>/`` with the one bundle reader
(:func:`distill.export.bundle.read_bundle`: the manifest, the task, every listed file's size
and sha256), checks what prediction needs beyond that (labels, ``max_length``, input names,
the tokenizer listed, labels against ``config.json``), loads ``tokenizer.json`` with the
``tokenizers`` library and ``model.onnx`` with an onnxruntime CPU session.
:meth:`BundlePredictor.predict` then tokenizes the way the export stage evaluated the model (truncation to the manifest's
``max_length``, each batch padded to its longest text), feeds the graph exactly the inputs
it declares with the integer type it declares, and turns the logits into probabilities.
For a WordPiece tokenizer of the usual BERT specification the texts go through
:class:`.fast_tokens.WordCacheEncoder` (a cache of each space-separated word's ids,
identical to the tokenizer's own output); any other tokenizer encodes them itself.

Everything wrong with a bundle (a missing folder, an unreadable or inconsistent manifest, a
missing, resized or modified file, a file the manifest does not list but the bundle needs)
raises :class:`distill.errors.ArtifactError` naming the file and the problem.

This module must stay importable without torch or transformers (``tests/test_predict.py``
checks it in a fresh interpreter): import only the standard library, numpy, onnxruntime,
tokenizers and light distill modules here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import ArtifactError
from distill.export.bundle import (
    MANIFEST_FILE,
    Bundle,
    is_int,
    problems_error,
    read_bundle,
    unlisted,
)
from distill.serving.encoder_graph import EncoderGraph, input_names_problems, max_length_problems
from distill.serving.lines import batches
from distill.serving.tokenizer import DEFAULT_BATCH_SIZE, TOKENIZER_FILE, load_tokenizer, softmax
from distill.tasks.classification.fast_tokens import (
    WORDS_FILE,
    UnsupportedTokenizer,
    WordCacheEncoder,
    read_words,
)
from distill.tasks.classification.task import SequenceClassification

_GENERIC_LABEL = re.compile(r"^LABEL_\d+$")


@dataclass(frozen=True)
class Prediction:
    """The most probable label of one text, and every label's probability."""

    text: str
    label: str
    probability: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "label": self.label,
            "probability": self.probability,
            "probabilities": dict(self.probabilities),
        }

    def to_tsv(self) -> str:
        """``distill predict``'s output line: ``label<TAB>probability<TAB>label=probability
        ...`` (every label, 4 decimals)."""
        scores = " ".join(f"{k}={v:.4f}" for k, v in self.probabilities.items())
        return f"{self.label}\t{self.probability:.4f}\t{scores}"


# --------------------------------------------------------------------------- checking


def _manifest_problems(bundle: Bundle) -> list[str]:
    """What prediction reads from the manifest beyond the bundle format."""
    path, manifest = bundle.manifest_path, bundle.manifest
    problems: list[str] = []
    labels = manifest.get("labels")
    if (
        not isinstance(labels, list)
        or not labels
        or not all(isinstance(name, str) and name for name in labels)
    ):
        problems.append(f"{path}: 'labels' must be a non-empty list of label names")
    elif len(set(labels)) != len(labels):
        problems.append(f"{path}: 'labels' repeats a name: {labels}")
    problems += max_length_problems(path, manifest)
    problems += input_names_problems(path, manifest, required=True)
    return problems + unlisted(path, manifest["files"], [TOKENIZER_FILE])


def check_bundle(bundle: Path | Bundle) -> Bundle:
    """A bundle verified by :func:`distill.export.bundle.read_bundle` (every file's size and
    sha256), then checked for prediction: labels, max_length, input names, the tokenizer
    listed, and the labels against ``config.json``. Raises :class:`ArtifactError`."""
    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle, command=SequenceClassification.command)
    problems = _manifest_problems(bundle)
    if problems:
        raise problems_error(bundle.path, problems)
    _check_config_labels(bundle.path, bundle.manifest)
    return bundle


def _check_config_labels(bundle: Path, manifest: dict[str, Any]) -> None:
    """The manifest's label names against ``config.json``'s ``id2label`` (a verified file)."""
    if "config.json" not in manifest["files"]:
        return
    path = bundle / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        id2label = config.get("id2label") if isinstance(config, dict) else None
        names = [id2label[key] for key in sorted(id2label, key=int)] if id2label else None
    except (OSError, ValueError, TypeError, AttributeError):
        raise ArtifactError(f"{path}: not a readable model config") from None
    if names is None:
        return
    labels = manifest["labels"]
    generic = all(isinstance(n, str) and _GENERIC_LABEL.match(n) for n in names)
    if len(names) != len(labels) or (not generic and names != labels):
        raise ArtifactError(
            f"{bundle / MANIFEST_FILE}: 'labels' {labels} do not match the model's "
            f"id2label {names} in {path}; was manifest.json edited?"
        )


# --------------------------------------------------------------------------- loading


class BundlePredictor:
    """A verified bundle, ready to classify texts. Build it with :func:`load_bundle`.

    With ``fast_tokenization`` (the default) texts are encoded by a
    :class:`~.fast_tokens.WordCacheEncoder` when it supports the bundle's tokenizer
    (``tokenization`` says which path is used, ``tokenization_fallback`` why not the fast
    one: ``off`` when it was turned off); the feeds are the same either way.
    """

    def __init__(
        self,
        bundle: Path | Bundle,
        *,
        threads: int | None = None,
        fast_tokenization: bool = True,
        default_threads: int | None = None,
    ) -> None:
        checked = check_bundle(bundle)
        self.path = checked.path
        self.manifest = checked.manifest
        self.labels: list[str] = list(self.manifest["labels"])
        self.max_length: int = self.manifest["max_length"]
        self.model_path = self.path / self.manifest["model"]
        self.tokenizer = load_tokenizer(self.path, self.manifest)
        self.fast_tokens: WordCacheEncoder | None = None
        self.tokenization_fallback: str | None = "off"
        if fast_tokenization:
            try:
                self.fast_tokens = WordCacheEncoder(self.tokenizer)
                self.tokenization_fallback = None
            except UnsupportedTokenizer as exc:
                self.tokenization_fallback = exc.reason
        if self.fast_tokens is not None and WORDS_FILE in self.manifest["files"]:
            # The domain's words the export listed (verified by the manifest): a warm cache.
            self.fast_tokens.prefill(read_words(self.path / WORDS_FILE))
        # ``threads`` when given, else the bundle's measured hint, else ``default_threads``
        # (None: onnxruntime's default).
        self.threads = (
            threads if threads is not None else self._serving_threads() or default_threads
        )
        self.graph = EncoderGraph(self.model_path, self.threads)
        self.graph.check_input_names(checked.manifest_path, self.manifest["input_names"])
        self.graph.check_label_count(checked.manifest_path, len(self.labels), per="text")
        self.session = self.graph.session

    def _serving_threads(self) -> int | None:
        """The thread count the export measured fastest (manifest ``serving.threads``), or
        None (onnxruntime's default) when the bundle has no such hint."""
        hint = (self.manifest.get("serving") or {}).get("threads")
        return hint if is_int(hint) and hint >= 1 else None

    @property
    def tokenization(self) -> str:
        """``word-cache`` (:mod:`~distill.tasks.classification.fast_tokens`) or ``reference``
        (``encode_batch``)."""
        return "word-cache" if self.fast_tokens is not None else "reference"

    @property
    def input_names(self) -> list[str]:
        return self.graph.input_names

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The graph's feeds for ``texts``: exactly its declared inputs, in their dtypes."""
        if self.fast_tokens is not None:
            return self.graph.array_feeds(self.fast_tokens.encode_batch(list(texts)))
        return self.graph.feeds(self.tokenizer.encode_batch(list(texts)))

    def logits(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Logits of ``texts``, run ``batch_size`` texts at a time; shape (len(texts), labels)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        chunks = [
            self._run(texts[start : start + batch_size])
            for start in range(0, len(texts), batch_size)
        ]
        if not chunks:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.concatenate(chunks)

    def _run(self, texts: Sequence[str]) -> np.ndarray:
        logits = self.graph.run(self.encode(texts))
        if logits.ndim != 2 or logits.shape[1] != len(self.labels):
            raise ArtifactError(
                f"{self.model_path}: output {self.graph.output!r} has shape {logits.shape}, "
                f"expected (batch, {len(self.labels)}) for the labels in manifest.json"
            )
        return logits.astype(np.float32, copy=False)

    def probabilities(
        self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> np.ndarray:
        """Softmax of :meth:`logits` (float64), one row per text, columns in label order."""
        return softmax(self.logits(texts, batch_size))

    def iter_predict(
        self, texts: Iterable[str], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> Iterator[Prediction]:
        """Predictions in input order, computed one batch at a time: ``texts`` (any iterable,
        a generator included) is read ``batch_size`` texts ahead of the predictions, never
        further, so a stream of any length is predicted in bounded memory."""
        for batch in batches(texts, batch_size):
            for text, row in zip(batch, softmax(self._run(batch)), strict=True):
                best = int(np.argmax(row))
                yield Prediction(
                    text=text,
                    label=self.labels[best],
                    probability=float(row[best]),
                    probabilities={
                        name: float(p) for name, p in zip(self.labels, row, strict=True)
                    },
                )

    def predict(
        self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> list[Prediction]:
        return list(self.iter_predict(texts, batch_size))


def load_bundle(
    bundle: str | Path | Bundle,
    *,
    threads: int | None = None,
    fast_tokenization: bool = True,
    default_threads: int | None = None,
) -> BundlePredictor:
    """Verify and load ``bundle`` (an ``export/<name>/`` folder, or one
    :func:`~distill.export.bundle.read_bundle` verified) for prediction."""
    return BundlePredictor(
        bundle if isinstance(bundle, Bundle) else Path(bundle),
        threads=threads,
        fast_tokenization=fast_tokenization,
        default_threads=default_threads,
    )
