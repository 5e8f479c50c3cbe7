"""Serve an extractive question-answering bundle with onnxruntime, tokenizers and numpy only:
no torch, no transformers.

The bundle contract (``manifest.json``, written by the export stage with
:func:`distill.export.bundle.write_bundle_manifest`; the bundle format's own fields and the
sha256 of every file are checked by :func:`distill.export.bundle.read_bundle` first):

- ``task``: ``"question-answering"``;
- ``model``: the ONNX file (default ``model.onnx``): inputs among input_ids, attention_mask,
  token_type_ids; outputs ``start_logits`` and ``end_logits``, both [batch, tokens] (what
  transformers' ``*ForQuestionAnswering`` models return, named so by the exporter);
- ``max_length``, ``doc_stride``, ``max_question_length``: positive ints, how a question and
  its context are cut into windows (:class:`~distill.tasks.question_answering.windows.
  Windowing`; the stride must be less than the context room of a window);
- ``max_answer_length``: a positive int, the longest span (in tokens) an answer may be;
- ``no_answer``: a bool, whether the model learnt to say "no answer" (SQuAD 2.0);
- ``files`` lists (at least) the model, ``tokenizer.json`` (a fast tokenizer: its offsets
  place the answer in the context) and ``config.json``;
- optional ``input_names``: when present, checked against the graph's inputs.

A question is cut into windows exactly as training cut it (one implementation,
:func:`~distill.tasks.question_answering.windows.make_windows`), its windows are run in
padded batches, and its answer is the best span over all of them
(:func:`~distill.tasks.question_answering.spans.best_answer`): characters of the context,
``context[start:end] == answer``.

``distill predict`` input: with ``--context TEXT`` every line is a question about TEXT;
without it every line is a JSON object with non-empty string fields ``question`` and
``context``. A line that is not one is that line's error (an :class:`AnswerPrediction` with
``error``, which :func:`distill.serving.lines.write_predictions` turns into an error line),
never the run's.

Like the other runners, this module must stay importable without torch or transformers
(``tests/test_qa_runner.py`` checks it in a fresh interpreter).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import ArtifactError, DataError
from distill.export.bundle import MANIFEST_FILE, Bundle, problems_error, read_bundle, unlisted
from distill.export.bundle_checks import is_int
from distill.serving.encoder_graph import EncoderGraph, input_names_problems, max_length_problems
from distill.serving.lines import batches
from distill.serving.tokenizer import (
    DEFAULT_BATCH_SIZE,
    TOKENIZER_FILE,
    bundle_pad_token,
    read_tokenizer,
)
from distill.tasks.question_answering.examples import Answer
from distill.tasks.question_answering.spans import best_answer
from distill.tasks.question_answering.task import PAIR_SPECIAL_TOKENS, QuestionAnswering
from distill.tasks.question_answering.windows import (
    Window,
    Windowing,
    by_example,
    make_windows,
    padded,
    windowing_tokenizer,
)

__all__ = [
    "OUTPUTS",
    "AnswerPrediction",
    "QAModel",
    "QAPredictor",
    "check_bundle",
    "graph_answerer",
    "load_bundle",
]

CONFIG_FILE = "config.json"
OUTPUTS = ("start_logits", "end_logits")
# The manifest's positive-int settings beyond max_length (checked by max_length_problems).
INT_SETTINGS = ("doc_stride", "max_question_length", "max_answer_length")
# What a TSV answer may not hold: its field separator and every line boundary str.splitlines
# knows (an answer is shown on one line, its fields split by tabs).
_ONE_LINE = str.maketrans({c: " " for c in "\t\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"})


@dataclass(frozen=True)
class AnswerPrediction:
    """One question's answer (``answer.text`` empty and ``start``/``end`` None: the model says
    the context does not answer it); ``error``: why the input line was not a question (the
    answer is then empty and unused)."""

    question: str
    answer: Answer
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, **self.answer.to_dict()}

    def to_tsv(self) -> str:
        """answer, start, end, score (4 decimals), tab-separated; the answer's tabs and line
        breaks shown as spaces; no answer: empty answer, start and end."""
        answer = self.answer
        if not answer.is_answer:
            return f"\t\t\t{answer.score:.4f}"
        text = answer.text.translate(_ONE_LINE)
        return f"{text}\t{answer.start}\t{answer.end}\t{answer.score:.4f}"


def _refused(text: str, why: str) -> AnswerPrediction:
    return AnswerPrediction(text, Answer("", None, None, 0.0), error=why)


# --------------------------------------------------------------------------- checking


def settings_problems(path: Path, settings: dict[str, Any]) -> list[str]:
    """The windowing and answer settings (of the manifest at ``path``, or given to
    :func:`graph_answerer`): one message per problem, naming the key."""
    problems = max_length_problems(path, settings)
    for key in INT_SETTINGS:
        value = settings.get(key)
        if not is_int(value) or value < 1:
            problems.append(f"{path}: {key!r} must be a positive integer, not {value!r}")
    if not isinstance(settings.get("no_answer"), bool):
        problems.append(
            f"{path}: 'no_answer' must be true or false (whether the model may answer "
            f"'no answer'), not {settings.get('no_answer')!r}"
        )
    if problems:
        return problems
    room = settings["max_length"] - settings["max_question_length"] - PAIR_SPECIAL_TOKENS
    if settings["doc_stride"] >= room:
        problems.append(
            f"{path}: 'doc_stride' = {settings['doc_stride']} must be less than the context "
            f"room of a window, 'max_length' - 'max_question_length' - {PAIR_SPECIAL_TOKENS} "
            f"= {room}"
        )
    return problems


def _manifest_problems(bundle: Bundle) -> list[str]:
    """What question answering reads from the manifest beyond the bundle format."""
    path, manifest = bundle.manifest_path, bundle.manifest
    problems = settings_problems(path, manifest)
    problems += input_names_problems(path, manifest, required=False)
    return problems + unlisted(path, manifest["files"], [TOKENIZER_FILE, CONFIG_FILE])


def check_bundle(bundle: Path | Bundle) -> Bundle:
    """A bundle verified by :func:`~distill.export.bundle.read_bundle`, then checked for
    question answering (windowing and answer settings, the tokenizer and config listed).
    Raises :class:`ArtifactError`."""
    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle, command=QuestionAnswering.command)
    problems = _manifest_problems(bundle)
    if problems:
        raise problems_error(bundle.path, problems)
    return bundle


# --------------------------------------------------------------------------- loading


class QAModel:
    """An ONNX question-answering graph and the fast tokenizer beside it, answering as a
    bundle serves; :class:`QAPredictor` is one read from a verified bundle,
    :func:`graph_answerer` one for a graph that is not (yet) a bundle's."""

    def __init__(
        self,
        model_path: Path,
        folder: Path,
        manifest: dict[str, Any],
        *,
        threads: int | None = None,
    ) -> None:
        self.path, self.manifest, self.model_path = folder, manifest, model_path
        self.windowing = Windowing(
            manifest["max_length"], manifest["doc_stride"], manifest["max_question_length"]
        )
        self.max_answer_length: int = manifest["max_answer_length"]
        self.no_answer: bool = manifest["no_answer"]
        tokenizer = read_tokenizer(folder / TOKENIZER_FILE)
        self.pad_id, _ = bundle_pad_token(folder, tokenizer, manifest)
        self.tokenizer = windowing_tokenizer(tokenizer, self.windowing)
        self.graph = EncoderGraph(model_path, threads)
        self.session = self.graph.session
        self.graph.check_input_names(folder / MANIFEST_FILE, manifest.get("input_names"))
        self._check_outputs()

    def _check_outputs(self) -> None:
        """Both outputs present, each [batch, tokens] where the graph declares its shape."""
        outputs = {o.name: o for o in self.session.get_outputs()}
        missing = [name for name in OUTPUTS if name not in outputs]
        if missing:
            raise ArtifactError(
                f"{self.model_path}: no output {' or '.join(map(repr, missing))}; a "
                f"question-answering graph outputs {' and '.join(OUTPUTS)} (it has "
                f"{sorted(outputs)})"
            )
        for name in OUTPUTS:
            shape = outputs[name].shape
            if shape and len(shape) != 2:
                raise ArtifactError(
                    f"{self.model_path}: output {name!r} has {len(shape)} dimensions, "
                    "expected (batch, tokens) of a question-answering graph"
                )

    @property
    def input_names(self) -> list[str]:
        return self.graph.input_names

    def _logits(self, windows: list[Window]) -> tuple[np.ndarray, np.ndarray]:
        """Start and end logits of one padded batch of windows: (windows, tokens) each."""
        feeds = self.graph.array_feeds(padded(windows, self.pad_id))
        start, end = (np.asarray(a) for a in self.session.run(list(OUTPUTS), feeds))
        expected = (len(windows), max(len(w) for w in windows))
        for name, array in zip(OUTPUTS, (start, end), strict=True):
            if array.shape != expected:
                raise ArtifactError(
                    f"{self.model_path}: output {name!r} has shape {array.shape}, expected "
                    f"{expected} (windows, tokens)"
                )
        return start, end

    def _window_logits(
        self, windows: list[Window], batch_size: int
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Every window's start and end logits (its tokens, padding cut), run in padded
        batches of at most ``batch_size`` windows."""
        starts: list[np.ndarray] = []
        ends: list[np.ndarray] = []
        for batch in batches(windows, batch_size):
            start, end = self._logits(batch)
            for row, window in enumerate(batch):
                starts.append(start[row, : len(window)])
                ends.append(end[row, : len(window)])
        return starts, ends

    def answer_pairs(
        self,
        questions: Sequence[str],
        contexts: Sequence[str],
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> Iterator[tuple[Answer, list[Window], list[np.ndarray], list[np.ndarray]]]:
        """Each question's answer about its context, with its windows and their start and end
        logits (padding cut), in input order; ``batch_size`` questions are windowed at a time
        and their windows run in padded batches of at most ``batch_size`` windows."""
        if len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
        for offset in range(0, len(questions), max(batch_size, 1)):
            part = slice(offset, offset + batch_size)
            chunk_contexts = contexts[part]
            windows, _ = make_windows(
                self.tokenizer, questions[part], chunk_contexts, self.windowing
            )
            starts, ends = self._window_logits(windows, batch_size)
            for positions, context in zip(
                by_example(windows, len(chunk_contexts)), chunk_contexts, strict=True
            ):
                mine = [windows[i] for i in positions]
                start, end = [starts[i] for i in positions], [ends[i] for i in positions]
                answer = best_answer(
                    mine,
                    start,
                    end,
                    context,
                    max_answer_length=self.max_answer_length,
                    no_answer=self.no_answer,
                )
                yield answer, mine, start, end

    def answers(
        self,
        questions: Sequence[str],
        contexts: Sequence[str],
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> list[Answer]:
        return [answer for answer, *_ in self.answer_pairs(questions, contexts, batch_size)]


def _json_question(text: str) -> tuple[str, str] | str:
    """``(question, context)`` of one JSON input line, else why it is not one."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        return (
            f"not a JSON object with 'question' and 'context' ({exc.msg} at character "
            f"{exc.pos + 1}); give --context TEXT to ask plain-text questions"
        )
    if not isinstance(row, dict):
        return f"expected a JSON object with 'question' and 'context', found {type(row).__name__}"
    found = []
    for key in ("question", "context"):
        value = row.get(key)
        if not isinstance(value, str) or not value.strip():
            return f"{key!r} must be a non-empty string, not {value!r}"
        found.append(value)
    return found[0], found[1]


class QAPredictor(QAModel):
    """A verified QA bundle, ready to answer. Build it with :func:`load_bundle`; ``context``:
    every input text is a question about it (else each is a JSON object with ``question`` and
    ``context``)."""

    def __init__(
        self, bundle: Path | Bundle, *, threads: int | None = None, context: str | None = None
    ) -> None:
        if context is not None and not context.strip():
            raise DataError("--context is blank: there is nothing to answer questions about")
        checked = check_bundle(bundle)
        super().__init__(checked.model_path, checked.path, checked.manifest, threads=threads)
        self.context = context

    def _read(self, text: str) -> tuple[str, str] | str:
        return (text, self.context) if self.context is not None else _json_question(text)

    def iter_predict(
        self, texts: Iterable[str], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> Iterator[AnswerPrediction]:
        """Answers in input order, computed one batch of ``batch_size`` texts at a time (a
        stream of any length in bounded memory); a text that is not a question is its own
        error, the others are answered."""
        for batch in batches(texts, batch_size):
            read = [self._read(text) for text in batch]
            pairs = [r for r in read if isinstance(r, tuple)]
            answers = iter(
                self.answers([q for q, _ in pairs], [c for _, c in pairs], batch_size)
                if pairs
                else []
            )
            for text, item in zip(batch, read, strict=True):
                if isinstance(item, str):
                    yield _refused(text, item)
                else:
                    yield AnswerPrediction(item[0], next(answers))

    def predict(
        self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> list[AnswerPrediction]:
        return list(self.iter_predict(texts, batch_size))


def graph_answerer(
    model_path: Path, folder: Path, settings: dict[str, Any], *, threads: int | None = None
) -> QAModel:
    """``model_path`` with the fast tokenizer saved in ``folder`` (a model's folder), served
    as a bundle of theirs would be, ``settings`` holding the manifest's ``max_length``,
    ``doc_stride``, ``max_question_length``, ``max_answer_length`` and ``no_answer``: how the
    export and report stages score the graphs they weigh."""
    problems = settings_problems(folder, settings)
    if problems:
        raise problems_error(folder, problems)
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    return QAModel(model_path, folder, {**settings, "files": files}, threads=threads)


def load_bundle(
    bundle: str | Path | Bundle, *, threads: int | None = None, context: str | None = None
) -> QAPredictor:
    """Verify and load a QA ``bundle`` (an ``export/<name>/`` folder, or one
    :func:`~distill.export.bundle.read_bundle` verified); ``context``: the context every
    input question is asked about (``distill predict --context``)."""
    path = bundle if isinstance(bundle, Bundle) else Path(bundle)
    return QAPredictor(path, threads=threads, context=context)
