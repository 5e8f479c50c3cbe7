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
from distill.serving.lines import batches
from distill.serving.session import onnx_session
from distill.serving.tokenizer import (
    DEFAULT_BATCH_SIZE,
    ENCODING_FIELDS,
    TOKENIZER_FILE,
    load_tokenizer,
    softmax,
)
from distill.tasks.classification.fast_tokens import (
    WORDS_FILE,
    UnsupportedTokenizer,
    WordCacheEncoder,
    read_words,
)
from distill.tasks.classification.task import SequenceClassification

_INPUT_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
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
    max_length = manifest.get("max_length")
    if not is_int(max_length) or max_length < 1:
        problems.append(f"{path}: 'max_length' must be a positive integer, not {max_length!r}")
    input_names = manifest.get("input_names")
    if not isinstance(input_names, list) or not all(isinstance(n, str) for n in input_names):
        problems.append(f"{path}: 'input_names' must be a list of graph input names")
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
        self.session = onnx_session(self.model_path, self.threads)
        self._inputs = self._graph_inputs()
        self._output = self._logits_output()

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
        return [name for name, _ in self._inputs]

    def _graph_inputs(self) -> list[tuple[str, Any]]:
        inputs = []
        for graph_input in self.session.get_inputs():
            if graph_input.name not in ENCODING_FIELDS:
                raise ArtifactError(
                    f"{self.model_path}: the graph needs input {graph_input.name!r}, which a "
                    f"tokenizer does not produce (known: {sorted(ENCODING_FIELDS)})"
                )
            dtype = _INPUT_DTYPES.get(graph_input.type)
            if dtype is None:
                raise ArtifactError(
                    f"{self.model_path}: input {graph_input.name!r} has type "
                    f"{graph_input.type}, expected an integer tensor"
                )
            inputs.append((graph_input.name, dtype))
        declared = self.manifest["input_names"]
        if sorted(declared) != sorted(name for name, _ in inputs):
            raise ArtifactError(
                f"{self.path / MANIFEST_FILE}: 'input_names' {declared} differ from the inputs "
                f"of {self.model_path.name} {[name for name, _ in inputs]}"
            )
        return inputs

    def _logits_output(self) -> str:
        outputs = self.session.get_outputs()
        output = next((o for o in outputs if o.name == "logits"), outputs[0])
        width = output.shape[-1] if output.shape else None
        if is_int(width) and width != len(self.labels):
            raise ArtifactError(
                f"{self.path / MANIFEST_FILE}: lists {len(self.labels)} labels but "
                f"{self.model_path.name} outputs {width} scores per text"
            )
        return output.name

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The graph's feeds for ``texts``: exactly its declared inputs, in their dtypes."""
        if self.fast_tokens is not None:
            arrays = self.fast_tokens.encode_batch(list(texts))
            return {name: arrays[name].astype(dtype, copy=False) for name, dtype in self._inputs}
        encodings = self.tokenizer.encode_batch(list(texts))
        return {
            name: np.asarray([getattr(e, ENCODING_FIELDS[name]) for e in encodings], dtype=dtype)
            for name, dtype in self._inputs
        }

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
        logits = np.asarray(self.session.run([self._output], self.encode(texts))[0])
        if logits.ndim != 2 or logits.shape[1] != len(self.labels):
            raise ArtifactError(
                f"{self.model_path}: output {self._output!r} has shape {logits.shape}, "
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
