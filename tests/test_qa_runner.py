"""Serving a question-answering bundle without torch: distill.tasks.question_answering.runner,
onnx_answers and `distill predict` on a question-answering bundle.

One tiny seeded BertForQuestionAnswering is exported with torch's dynamo exporter and
assembled into a bundle once; tests that tamper with it work on a copy. Its answers are
compared with the PyTorch model's logits read through the same windows and best_answer.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SPECIAL, run_cli_watching_imports

from distill.cli import main
from distill.errors import ArtifactError
from distill.export.bundle import MANIFEST_FILE, write_bundle_manifest
from distill.export.exporter import export_onnx
from distill.tasks.question_answering.examples import Answer, QAExample
from distill.tasks.question_answering.onnx_answers import onnx_answers
from distill.tasks.question_answering.runner import AnswerPrediction, load_bundle
from distill.tasks.question_answering.spans import answers_of
from distill.tasks.question_answering.windows import (
    Windowing,
    make_windows,
    windowing_tokenizer,
)

WORDS = ["who", "what", "wrote", "was", "born", "in", "the", "book", "emile", "zola", "paris"]
CHARACTERS = list("abcdefghijklmnopqrstuvwxyz0123456789")
VOCAB = SPECIAL + WORDS + CHARACTERS + [f"##{c}" for c in CHARACTERS] + list(".,?!'")
SETTINGS = {
    "max_length": 32,
    "doc_stride": 6,
    "max_question_length": 8,
    "max_answer_length": 6,
    "no_answer": False,
}
LONG = " ".join(["the book was born in paris and emile zola wrote it."] * 12)  # many windows
QUESTIONS = [
    ("who wrote the book?", "Émile Zola wrote the book in Paris."),
    ("where was zola born?", LONG),
    ("what? 😀", "a   book\t\tof  paris 😀 by zola"),
    ("who was born in the book of paris and who wrote what in zola?", "Zola."),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seeded BertForQuestionAnswering + WordPiece BertTokenizerFast, saved."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-qa")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model = BertForQuestionAnswering(config).eval()
    with torch.no_grad():  # wide head weights: clear margins between spans
        model.qa_outputs.weight.normal_(0.0, 1.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _write_manifest(bundle: Path, **extra: Any) -> None:
    roles = {
        p.relative_to(bundle).as_posix(): "model" if p.suffix == ".onnx" else "tokenizer"
        for p in bundle.rglob("*")
        if p.is_file() and p.name != MANIFEST_FILE
    }
    roles["config.json"] = "config"
    info = {
        "task": "question-answering",
        "model": "model.onnx",
        "input_names": ["input_ids", "attention_mask", "token_type_ids"],
        **SETTINGS,
        **extra,
    }
    write_bundle_manifest(bundle, roles, info)


@pytest.fixture(scope="module")
def bundle(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("qa-bundle") / "bundle"
    export_onnx(model_dir, folder, model_class="AutoModelForQuestionAnswering")
    _write_manifest(folder)
    return folder


@pytest.fixture
def bundle_copy(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    return copy


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _pytorch_answers(model_dir: Path, no_answer: bool) -> list[Answer]:
    """The PyTorch model's answers, its logits read through the same windows and spans."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    model = AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    windowing = Windowing(
        SETTINGS["max_length"], SETTINGS["doc_stride"], SETTINGS["max_question_length"]
    )
    tokenizer = windowing_tokenizer(AutoTokenizer.from_pretrained(model_dir), windowing)
    questions, contexts = zip(*QUESTIONS, strict=True)
    windows, counts = make_windows(tokenizer, questions, contexts, windowing)
    assert counts.questions_cut == 2 and counts.windows == 15  # "where": w ##h ##e ##r ##e
    starts, ends = [], []
    with torch.inference_mode():
        for window in windows:  # one at a time: no padding at all
            output = model(
                input_ids=torch.tensor([window.ids]),
                token_type_ids=torch.tensor([window.type_ids]),
                attention_mask=torch.ones(1, len(window), dtype=torch.long),
            )
            starts.append(output.start_logits[0].numpy())
            ends.append(output.end_logits[0].numpy())
    return answers_of(
        windows,
        starts,
        ends,
        contexts,
        max_answer_length=SETTINGS["max_answer_length"],
        no_answer=no_answer,
    )


def _same(ours: list[Answer], theirs: list[Answer]) -> None:
    assert [(a.text, a.start, a.end) for a in ours] == [(a.text, a.start, a.end) for a in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-4)


# --------------------------------------------------------------------------- results


@pytest.mark.parametrize("no_answer", [False, True])
def test_answers_equal_the_pytorch_model(
    model_dir: Path, bundle_copy: Path, no_answer: bool
) -> None:
    manifest = json.loads((bundle_copy / MANIFEST_FILE).read_text())
    manifest["no_answer"] = no_answer
    (bundle_copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    predictor = load_bundle(bundle_copy, threads=1)
    texts = [json.dumps({"question": q, "context": c}) for q, c in QUESTIONS]
    # batch_size 3: padded batches of unequal windows, the long context over several batches
    predictions = predictor.predict(texts, batch_size=3)
    assert [p.question for p in predictions] == [q for q, _ in QUESTIONS]
    ours = [p.answer for p in predictions]
    _same(ours, _pytorch_answers(model_dir, no_answer))
    for answer, (_, context) in zip(ours, QUESTIONS, strict=True):
        if answer.is_answer:
            assert context[answer.start : answer.end] == answer.text
            assert answer.text == answer.text.strip() and 0 < answer.score <= 1
    if not no_answer:
        assert all(a.is_answer for a in ours)
        assert ours[1].start > len(LONG) // 4  # the best span of the long context: later on


def test_answer_pairs_batches_windows(bundle: Path) -> None:
    predictor = load_bundle(bundle)
    questions, contexts = zip(*QUESTIONS, strict=True)
    one = list(predictor.answer_pairs(questions, contexts, batch_size=1))
    many = list(predictor.answer_pairs(questions, contexts, batch_size=64))
    for (a, windows, starts, ends), (b, _, starts_b, ends_b) in zip(one, many, strict=True):
        assert a == b
        assert [len(s) for s in starts] == [len(w) for w in windows] == [len(e) for e in ends]
        for x, y in zip(starts + ends, starts_b + ends_b, strict=True):
            np.testing.assert_allclose(x, y, atol=1e-5)
    assert len(one[1][1]) == 12  # the long context's windows


def test_onnx_answers_serve_the_graph_as_the_bundle(bundle: Path) -> None:
    examples = [QAExample(str(i), q, c) for i, (q, c) in enumerate(QUESTIONS)]
    served = onnx_answers(bundle / "model.onnx", bundle, examples, SETTINGS, "test", 2)
    expected = list(load_bundle(bundle).answer_pairs(*zip(*QUESTIONS, strict=True)))
    assert served.answers == [answer for answer, *_ in expected]
    assert [len(s) for s in served.start_logits] == [len(w) for _, w, _, _ in expected]
    assert served.end_logits[1][0].dtype == np.float32
    with pytest.raises(ArtifactError, match=r"'doc_stride' = 30 must be less than"):
        onnx_answers(bundle / "model.onnx", bundle, examples, {**SETTINGS, "doc_stride": 30}, "x")


def test_to_dict_and_to_tsv() -> None:
    found = AnswerPrediction("who?", Answer("Zola\tand\nme", 3, 14, 0.123456))
    assert found.to_dict() == {
        "question": "who?",
        "answer": "Zola\tand\nme",
        "start": 3,
        "end": 14,
        "score": 0.123456,
    }
    assert found.to_tsv() == "Zola and me\t3\t14\t0.1235"
    none = AnswerPrediction("who?", Answer("", None, None, 0.5))
    assert none.to_tsv() == "\t\t\t0.5000"
    assert none.to_dict() == {
        "question": "who?",
        "answer": "",
        "start": None,
        "end": None,
        "score": 0.5,
    }


# --------------------------------------------------------------------------- command line


def test_predict_with_a_context(bundle: Path, capsys) -> None:
    context = QUESTIONS[0][1]
    questions = ["who wrote the book?", "where?", "what 😀"]
    expected = load_bundle(bundle, context=context).predict(questions)
    code, out, err = _cli(["predict", str(bundle), "--context", context, *questions], capsys)
    assert code == 0, err
    assert out.splitlines() == [p.to_tsv() for p in expected]
    for line in out.splitlines():
        text, start, end, score = line.split("\t")
        assert context[int(start) : int(end)] == text and 0 < float(score) <= 1
    code, out, err = _cli(
        ["predict", str(bundle), "--json", "--context", context, *questions], capsys
    )
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [p.to_dict() for p in expected]
    code, out, err = _cli(["predict", str(bundle), "--context", "  ", "who?"], capsys)
    assert code == 2 and out == "" and "--context is blank" in err


def test_predict_json_lines_and_bad_lines(bundle: Path, tmp_path: Path, capsys) -> None:
    good = [
        json.dumps({"question": q, "context": c, "id": i}) for i, (q, c) in enumerate(QUESTIONS)
    ]
    bad = {
        "who wrote it?": r"not a JSON object with 'question' and 'context' \(Expecting value at character 1\)",
        "[1, 2]": r"expected a JSON object with 'question' and 'context', found list",
        '{"question": "who?"}': r"'context' must be a non-empty string, not None",
        '{"question": " ", "context": "x"}': r"'question' must be a non-empty string, not ' '",
        '{"question": "who?", "context": 3}': r"'context' must be a non-empty string, not 3",
    }
    lines = [good[0], *bad, good[1], good[2]]
    path = tmp_path / "questions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    expected = load_bundle(bundle).predict([good[0], good[1], good[2]])
    code, out, err = _cli(["predict", str(bundle), "--file", str(path)], capsys)
    assert code == 2 and "5 of 8 input line(s) could not be predicted" in err
    rows = out.splitlines()
    assert [rows[0], rows[6], rows[7]] == [p.to_tsv() for p in expected]
    for number, (row, pattern) in enumerate(zip(rows[1:6], bad.values(), strict=True), start=2):
        assert row.startswith(f"error\t{path} line {number}: "), row
        assert re.search(pattern, row), row
    code, out, err = _cli(["predict", str(bundle), "--json", "--file", str(path)], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[0] == expected[0].to_dict() and rows[7] == expected[2].to_dict()
    assert rows[2] == {"line": 3, "source": str(path), "error": rows[2]["error"]}
    assert "found list" in rows[2]["error"]


def test_predict_loads_neither_torch_nor_transformers(bundle: Path) -> None:
    line = json.dumps({"question": QUESTIONS[0][0], "context": QUESTIONS[0][1]})
    result, report = run_cli_watching_imports(["predict", str(bundle), line, "--json"])
    assert result.returncode == 0, result.stderr
    assert report == {"rc": 0, "loaded": []}
    row = json.loads(result.stdout)
    assert row["question"] == QUESTIONS[0][0]
    assert QUESTIONS[0][1][row["start"] : row["end"]] == row["answer"]


# --------------------------------------------------------------------------- a bad bundle


def _set(key: str, value: Any) -> Any:
    def edit(manifest: dict[str, Any]) -> None:
        if value is _set:
            del manifest[key]
        else:
            manifest[key] = value

    edit.__name__ = f"_{key}_{value if value is not _set else 'missing'}"
    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_set("max_length", "32"), r"'max_length' must be a positive integer, not '32'"),
        (_set("max_length", 100), r"'max_length' is 100, but the model takes at most 64"),
        (_set("doc_stride", 0), r"'doc_stride' must be a positive integer, not 0"),
        (_set("doc_stride", _set), r"'doc_stride' must be a positive integer, not None"),
        (_set("doc_stride", 20), r"'doc_stride' = 20 must be less than the context room"),
        (_set("max_question_length", 2.5), r"'max_question_length' must be a positive integer"),
        (_set("max_answer_length", True), r"'max_answer_length' must be a positive integer"),
        (_set("no_answer", "yes"), r"'no_answer' must be true or false"),
        (_set("no_answer", _set), r"'no_answer' must be true or false .* not None"),
        (_set("input_names", ["input_ids"]), r"'input_names' \['input_ids'\] differ from"),
        (_set("input_names", "input_ids"), r"'input_names' must be a list of graph input"),
    ],
    ids=lambda value: getattr(value, "__name__", "")[1:] or None,
)
def test_an_edited_manifest_is_refused(bundle_copy: Path, capsys, edit: Any, expected: str) -> None:
    path = bundle_copy / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    code, out, err = _cli(["predict", str(bundle_copy), "--context", "zola", "who?"], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert re.search(expected, err), err
    assert str(path) in err
    with pytest.raises(ArtifactError, match=expected):
        load_bundle(bundle_copy)


def test_every_problem_is_named(bundle_copy: Path) -> None:
    path = bundle_copy / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.update(doc_stride=-1, max_answer_length=None, no_answer=1)
    del manifest["files"]["config.json"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="4 problems") as caught:
        load_bundle(bundle_copy)
    for key in ("'doc_stride'", "'max_answer_length'", "'no_answer'", "does not list config"):
        assert key in str(caught.value)


def test_a_graph_without_both_outputs_is_refused(bundle_copy: Path, model_dir: Path) -> None:
    """An NER-style graph (one ``logits`` output) in a QA bundle."""
    import onnx

    model = onnx.load(str(bundle_copy / "model.onnx"))
    model.graph.output[0].name = "logits"
    for node in model.graph.node:
        node.output[:] = ["logits" if o == "start_logits" else o for o in node.output]
    onnx.save(model, str(bundle_copy / "model.onnx"))
    _write_manifest(bundle_copy)
    with pytest.raises(ArtifactError, match=r"model\.onnx: no output 'start_logits'; a question"):
        load_bundle(bundle_copy)
