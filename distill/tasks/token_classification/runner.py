"""Serve a named-entity (token-classification) bundle with onnxruntime, tokenizers and numpy
only: no torch, no transformers.

The bundle contract (``manifest.json``, written by the export stage with
:func:`distill.export.bundle.write_bundle_manifest`; the bundle format's own fields and the
sha256 of every file are checked by :func:`distill.export.bundle.read_bundle` first):

- ``task``: ``"token-classification"``;
- ``labels``: the tag names in id order, IOB2 (``"O"``, ``"B-<type>"``, ``"I-<type>"``,
  every ``I-`` type with its ``B-``); a type holds no whitespace and no ``:`` (the TSV
  output stays parseable; :func:`~distill.tasks.token_classification.files.is_entity_type`,
  the rule the data stage applies too). They must equal ``config.json``'s ``id2label``;
- ``max_length``: a positive int; longer texts are truncated to that many tokens (special
  tokens included), as classification does: words past it get no tag, hence no entity;
- ``model``: the ONNX file (default ``model.onnx``), the token-classification graph (output ``logits``)
  (inputs among input_ids, attention_mask, token_type_ids; output ``logits`` of shape
  [batch, sequence, labels]);
- ``files`` lists (at least) the model, ``tokenizer.json`` (a fast tokenizer: its offsets
  and word ids place the entities) and ``config.json``;
- optional ``aggregation``: ``"first"`` (default), ``"average"``, ``"max"`` or ``"simple"``,
  as the transformers token-classification pipeline's ``aggregation_strategy`` (bundles
  exported before whole-word entities recorded ``"simple"``, and still serve it);
- optional ``input_names``: when present, checked against the graph's inputs.

Aggregation (:mod:`distill.tasks.token_classification.aggregation`): ``first``, ``average``
and ``max`` give each whitespace-separated word one tag, so every entity is whole words;
``simple`` keeps each sub-token's own tag (entities may split words), on request only
(``load_bundle(..., aggregation="simple")``, ``distill predict --aggregation simple``).
Entity offsets are character offsets into the original text (``text[start:end] ==
entity.text``).

Like the classification runner, this module must stay importable without torch or
transformers (``tests/test_ner_runner.py`` checks it in a fresh interpreter).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import ArtifactError
from distill.export.bundle import (
    MANIFEST_FILE,
    Bundle,
    problems_error,
    read_bundle,
    unlisted,
)
from distill.serving.encoder_graph import EncoderGraph, input_names_problems, max_length_problems
from distill.serving.lines import batches
from distill.serving.tokenizer import DEFAULT_BATCH_SIZE, TOKENIZER_FILE, load_tokenizer, softmax
from distill.tasks.token_classification.aggregation import (
    DEFAULT_AGGREGATION,
    Entity,
    aggregate,
    seen_characters,
)
from distill.tasks.token_classification.files import ENTITY_TYPE_RULE, is_iob2_tag
from distill.tasks.token_classification.task import AGGREGATIONS, TokenClassification

__all__ = [
    "AGGREGATIONS",
    "Entity",
    "EntityPrediction",
    "EntityPredictor",
    "EntityTagger",
    "graph_tagger",
    "load_bundle",
]

CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class EntityPrediction:
    """The entities found in one text, in text order; ``seen``: how many of its characters
    the model read (less than the text's length when truncation cut it)."""

    text: str
    entities: list[Entity] = field(default_factory=list)
    seen: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "entities": [e.to_dict() for e in self.entities]}

    def to_tsv(self) -> str:
        """``type:start-end:text`` per entity, tab-separated; empty when there are none."""
        return "\t".join(e.to_tsv() for e in self.entities)


# --------------------------------------------------------------------------- checking


def _label_problems(path: Path, labels: Any) -> list[str]:
    """``labels`` as IOB2 tag names: "O" once, B-/I- tags, every I- type with its B-."""
    if (
        not isinstance(labels, list)
        or not labels
        or not all(isinstance(name, str) and name for name in labels)
    ):
        return [f"{path}: 'labels' must be a non-empty list of tag names"]
    if len(set(labels)) != len(labels):
        return [f"{path}: 'labels' repeats a name: {labels}"]
    bad = [name for name in labels if not is_iob2_tag(name)]
    if bad:
        return [
            f"{path}: 'labels' {bad} are not IOB2 tags ('O', 'B-<type>', 'I-<type>'; "
            f"{ENTITY_TYPE_RULE})"
        ]
    if "O" not in labels:
        return [f"{path}: 'labels' has no 'O' tag"]
    orphans = [name for name in labels if name.startswith("I-") and f"B-{name[2:]}" not in labels]
    if orphans:
        return [f"{path}: 'labels' {orphans} have no B- tag of their type"]
    return []


def _manifest_problems(bundle: Bundle) -> list[str]:
    """What entity prediction reads from the manifest beyond the bundle format."""
    path, manifest = bundle.manifest_path, bundle.manifest
    problems = _label_problems(path, manifest.get("labels"))
    problems += max_length_problems(path, manifest)
    aggregation = manifest.get("aggregation", DEFAULT_AGGREGATION)
    if aggregation not in AGGREGATIONS:
        problems.append(
            f"{path}: 'aggregation' must be one of {', '.join(AGGREGATIONS)}, not {aggregation!r}"
        )
    problems += input_names_problems(path, manifest, required=False)
    return problems + unlisted(path, manifest["files"], [TOKENIZER_FILE, CONFIG_FILE])


def _config_tags(path: Path) -> list[str]:
    """``config.json``'s ``id2label`` names in id order (a file the manifest verified)."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        id2label = config["id2label"]
        return [id2label[key] for key in sorted(id2label, key=int)]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        raise ArtifactError(f"{path}: not a model config with an 'id2label' map") from None


def check_bundle(bundle: Path | Bundle) -> Bundle:
    """A bundle verified by :func:`~distill.export.bundle.read_bundle`, then checked for entity
    prediction: IOB2 labels equal to ``config.json``'s ``id2label``, ``max_length``,
    ``aggregation``, the tokenizer and config listed. Raises :class:`ArtifactError`."""
    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle, command=TokenClassification.command)
    problems = _manifest_problems(bundle)
    if problems:
        raise problems_error(bundle.path, problems)
    config = bundle.path / CONFIG_FILE
    tags, labels = _config_tags(config), bundle.manifest["labels"]
    if tags != labels:
        raise ArtifactError(
            f"{bundle.manifest_path}: 'labels' {labels} do not match the model's id2label "
            f"{tags} in {config}; was manifest.json edited?"
        )
    return bundle


# --------------------------------------------------------------------------- loading


class EntityTagger:
    """An ONNX token-classification graph and the fast tokenizer beside it, finding entities
    as a bundle serves them; :class:`EntityPredictor` is one read from a verified bundle,
    :func:`graph_tagger` one for a graph that is not (yet) a bundle's."""

    def __init__(
        self,
        model_path: Path,
        folder: Path,
        manifest: dict[str, Any],
        *,
        threads: int | None = None,
        aggregation: str | None = None,
    ) -> None:
        self.path, self.manifest, self.model_path = folder, manifest, model_path
        self.labels: list[str] = list(manifest["labels"])
        self.max_length: int = manifest["max_length"]
        self.aggregation: str = aggregation or manifest.get("aggregation", DEFAULT_AGGREGATION)
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(
                f"aggregation must be one of {', '.join(AGGREGATIONS)}, not {self.aggregation!r}"
            )
        self.tokenizer = load_tokenizer(folder, manifest)
        self.graph = EncoderGraph(model_path, threads)
        self.session = self.graph.session
        manifest_path = folder / MANIFEST_FILE
        self.graph.check_input_names(manifest_path, manifest.get("input_names"))
        shape = self.graph.output_shape
        if shape and len(shape) != 3:
            raise ArtifactError(
                f"{self.model_path}: output {self.graph.output!r} has {len(shape)} dimensions, "
                "expected (batch, sequence, labels) of a token-classification graph"
            )
        self.graph.check_label_count(manifest_path, len(self.labels), per="token")

    @property
    def input_names(self) -> list[str]:
        return self.graph.input_names

    def _logits(self, encodings: list[Any]) -> np.ndarray:
        """Per-token tag logits of one padded batch: (texts, tokens, labels)."""
        logits = self.graph.run(self.graph.feeds(encodings))
        expected = (len(encodings), len(encodings[0].ids), len(self.labels))
        if logits.shape != expected:
            raise ArtifactError(
                f"{self.model_path}: output {self.graph.output!r} has shape {logits.shape}, "
                f"expected {expected} (batch, tokens, the labels in manifest.json)"
            )
        return logits

    def _probabilities(self, encodings: list[Any]) -> np.ndarray:
        """Per-token tag probabilities of one padded batch: (texts, tokens, labels)."""
        return softmax(self._logits(encodings))

    def iter_outputs(
        self, texts: Iterable[str], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> Iterator[tuple[EntityPrediction, np.ndarray]]:
        """Each text's prediction with its logits (its tokens, padding cut), in input order,
        computed one batch at a time: ``texts`` (any iterable, a generator included) is read
        ``batch_size`` texts ahead of the outputs, never further."""
        for batch in batches(texts, batch_size):
            encodings = self.tokenizer.encode_batch(batch)
            logits = self._logits(encodings)
            for text, encoding, rows in zip(batch, encodings, logits, strict=True):
                entities = aggregate(text, encoding, softmax(rows), self.labels, self.aggregation)
                kept = np.asarray(encoding.attention_mask, dtype=bool)
                yield EntityPrediction(text, entities, seen_characters(encoding)), rows[kept]

    def iter_predict(
        self, texts: Iterable[str], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> Iterator[EntityPrediction]:
        """Predictions in input order, computed one batch at a time: a stream of any length
        is predicted in bounded memory."""
        for prediction, _ in self.iter_outputs(texts, batch_size):
            yield prediction

    def predict(
        self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> list[EntityPrediction]:
        return list(self.iter_predict(texts, batch_size))


class EntityPredictor(EntityTagger):
    """A verified NER bundle, ready to find entities. Build it with :func:`load_bundle`."""

    def __init__(
        self, bundle: Path | Bundle, *, threads: int | None = None, aggregation: str | None = None
    ) -> None:
        checked = check_bundle(bundle)
        super().__init__(
            checked.model_path,
            checked.path,
            checked.manifest,
            threads=threads,
            aggregation=aggregation,
        )


def graph_tagger(
    model_path: Path,
    folder: Path,
    labels: list[str],
    max_length: int,
    aggregation: str = DEFAULT_AGGREGATION,
    threads: int | None = None,
) -> EntityTagger:
    """``model_path`` with the fast tokenizer saved in ``folder`` (a model's folder), served as
    a bundle of theirs would be: how the export and report stages score the graphs they
    weigh, so that what they record is what the bundle serves."""
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    manifest = {"labels": labels, "max_length": max_length, "files": files}
    return EntityTagger(model_path, folder, manifest, threads=threads, aggregation=aggregation)


def load_bundle(
    bundle: str | Path | Bundle, *, threads: int | None = None, aggregation: str | None = None
) -> EntityPredictor:
    """Verify and load an NER ``bundle`` (an ``export/<name>/`` folder, or one
    :func:`~distill.export.bundle.read_bundle` verified) for entity prediction;
    ``aggregation`` overrides the manifest's (one of :data:`AGGREGATIONS`)."""
    path = bundle if isinstance(bundle, Bundle) else Path(bundle)
    return EntityPredictor(path, threads=threads, aggregation=aggregation)
