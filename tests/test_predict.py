"""Serving a bundle without torch: distill.tasks.classification.runner, `distill predict` and export/README.md.

One real bundle is built by the export stage from a tiny BERT (trained for a few steps
so that it predicts both labels) and is copied before any test tampers with it.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import (
    LABELS,
    SHORT_TIMING,
    build_tiny_classifier,
    make_data_stage,
    set_label_maps,
    synthetic_rows,
    write_vocab,
)

from distill.cli import main
from distill.config import DataConfig, ExportConfig
from distill.data.files import load_logits
from distill.errors import ArtifactError
from distill.export import onnx as onnx_utils
from distill.pipeline.artifacts import RunContext
from distill.tasks.classification.files import read_split
from distill.tasks.classification.runner import load_bundle, softmax
from distill.tasks.classification.stages import export as export_stage

REPO = Path(__file__).resolve().parents[1]
MAX_LENGTH = 12  # short enough that some texts below are truncated
EXTRA_TEXTS = [
    "GOOD fun, Great service!!",
    "terrible " * 30 + "but good",  # truncated to MAX_LENGTH tokens
    "unknownword zzz qqq",
    "",
    "café naïve 😀",
    "bad",
]


def _train_briefly(model_dir: Path, steps: int = 40) -> None:
    """A few full-batch steps on the training texts: a random tiny BERT gives every text
    nearly the same logits; this one predicts both labels, with varied margins."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = synthetic_rows(120, seed=3)[:64]
    encoded = tokenizer(
        [text for text, _ in rows],
        truncation=True,
        max_length=MAX_LENGTH,
        padding=True,
        return_tensors="pt",
    )
    labels = torch.tensor([LABELS.index(label) for _, label in rows])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**encoded, labels=labels).loss.backward()
        optimizer.step()
    model.eval().save_pretrained(model_dir)


def _export(root: Path, student: Path, **export_settings: Any) -> Path:
    """Run the export stage; returns its output folder (bundle/, predictions/)."""
    data_dir = root / "data"
    if not data_dir.exists():
        make_data_stage(data_dir)
    out = root / "stage"
    out.mkdir()
    ctx = RunContext(
        name="tiny", seed=13, task="sequence-classification", workdir=root, recipe_dir=root
    )
    export_stage.run(
        ctx,
        {"data": data_dir, "student": student},
        out,
        data=DataConfig(path="unused.csv", max_length=MAX_LENGTH),
        export=ExportConfig(max_accuracy_drop=1.0, **{**SHORT_TIMING, **export_settings}),
    )
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The export stage's output folder for a dynamic-int8 BERT bundle (do not modify)."""
    root = tmp_path_factory.mktemp("predict")
    model_dir = build_tiny_classifier(root / "student" / "model", num_labels=2, layers=2, seed=1)
    set_label_maps(model_dir)
    _train_briefly(model_dir)
    return _export(root, root / "student", quantization="dynamic")


@pytest.fixture(scope="module")
def bundle(exported: Path) -> Path:
    return exported / "bundle"


@pytest.fixture
def bundle_copy(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    return copy


def _texts(exported: Path) -> list[str]:
    """The test split's texts plus awkward ones: more than one batch of 32."""
    return read_split(exported.parent / "data", "test").texts + EXTRA_TEXTS


def _direct_probabilities(model: Path, tokenizer_dir: Path, texts: list[str]) -> np.ndarray:
    """transformers tokenizer + onnxruntime + softmax, batches of 32 as in the export stage."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    logits = onnx_utils.predict_logits(
        model, tokenizer, texts, max_length=MAX_LENGTH, batch_size=32, threads=1
    )
    return softmax(logits)


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------- results


def test_probabilities_equal_onnxruntime_softmax(exported: Path, bundle: Path) -> None:
    texts = _texts(exported)
    assert len(texts) > 32
    predictor = load_bundle(bundle, threads=1)
    assert predictor.labels == LABELS and predictor.max_length == MAX_LENGTH
    assert predictor.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    # the tokenizers-only encoding is the transformers one, input for input
    from transformers import AutoTokenizer

    reference = onnx_utils.session_feeds(
        predictor.session,
        AutoTokenizer.from_pretrained(bundle),
        texts[-8:],
        max_length=MAX_LENGTH,
        padding="longest",
    )
    feeds = predictor.encode(texts[-8:])
    assert list(feeds) == list(reference)
    for name in feeds:
        assert feeds[name].dtype == reference[name].dtype == np.int64, name
        np.testing.assert_array_equal(feeds[name], reference[name], err_msg=name)
    assert feeds["input_ids"].shape[1] == MAX_LENGTH  # the long text was truncated

    probabilities = predictor.probabilities(texts)
    expected = _direct_probabilities(bundle / "model.onnx", bundle, texts)
    assert probabilities.shape == (len(texts), len(LABELS))
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-6)
    predictions = predictor.predict(texts)
    assert [p.text for p in predictions] == texts
    for p, row in zip(predictions, expected, strict=True):
        assert p.label == LABELS[int(np.argmax(row))]
        assert p.probability == pytest.approx(float(row.max()), abs=1e-6)
        assert list(p.probabilities) == LABELS
        assert sum(p.probabilities.values()) == pytest.approx(1.0)
    assert predictor.predict([]) == []


def test_the_word_cache_feeds_the_graph_what_the_tokenizer_does(
    exported: Path, bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """classification's fast_tokens on the bundle's own tokenizer.json: the same feeds, batch by batch,
    hence the same logits; without it (or for a tokenizer it cannot follow) the reference."""
    from distill.tasks.classification import fast_tokens

    texts = [*_texts(exported), "good\tfun", " sad  bad ", "café\u00a0good [MASK] [SEP]", "😀"]
    fast = load_bundle(bundle, threads=1)
    reference = load_bundle(bundle, threads=1, fast_tokenization=False)
    assert (fast.tokenization, fast.tokenization_fallback) == ("word-cache", None)
    assert (reference.tokenization, reference.tokenization_fallback) == ("reference", "off")
    for size in (1, 32):
        for start in range(0, len(texts), size):
            batch = texts[start : start + size]
            got, expected = fast.encode(batch), reference.encode(batch)
            assert list(got) == list(expected) == fast.input_names
            for name in got:
                assert got[name].dtype == expected[name].dtype == np.int64, name
                np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert fast.fast_tokens is not None and len(fast.fast_tokens) > 20
    np.testing.assert_array_equal(fast.logits(texts), reference.logits(texts))

    monkeypatch.setattr(fast_tokens, "_spec_problem", lambda tokenizer, spec: "not this one")
    other = load_bundle(bundle, threads=1)
    assert (other.tokenization, other.tokenization_fallback) == ("reference", "not this one")
    np.testing.assert_array_equal(other.logits(texts), reference.logits(texts))


def test_labels_equal_the_export_stages_int8_predictions(exported: Path, bundle: Path) -> None:
    test = read_split(exported.parent / "data", "test")
    _, saved = load_logits(exported / "predictions" / "test_int8.npz", test.ids)
    predictions = load_bundle(bundle, threads=1).predict(test.texts)
    expected = [LABELS[i] for i in np.argmax(saved, axis=1)]
    assert [p.label for p in predictions] == expected
    assert set(expected) == set(LABELS), "the fixture model should predict both labels"
    got = np.array([[p.probabilities[name] for name in LABELS] for p in predictions])
    np.testing.assert_allclose(got, softmax(saved), rtol=0, atol=1e-5)


def test_fp32_bundle_feeds_only_the_declared_inputs(tmp_path: Path) -> None:
    """DistilBERT's graph takes no token_type_ids although its tokenizer makes them."""
    import torch
    from transformers import (
        BertTokenizerFast,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    folder = tmp_path / "student" / "model"
    torch.manual_seed(0)
    tokenizer = BertTokenizerFast(vocab=str(write_vocab(folder)), do_lower_case=True)
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size,
        dim=32,
        n_layers=1,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=64,
        num_labels=len(LABELS),
    )
    DistilBertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    set_label_maps(folder)
    bundle = _export(tmp_path, tmp_path / "student", quantization="none") / "bundle"
    predictor = load_bundle(bundle, threads=1)
    assert predictor.manifest["precision"] == "fp32"
    assert predictor.input_names == ["input_ids", "attention_mask"]
    assert list(predictor.encode(["good"])) == ["input_ids", "attention_mask"]
    texts = [text for text, _ in synthetic_rows(5, seed=2)] + EXTRA_TEXTS
    np.testing.assert_allclose(
        predictor.probabilities(texts),
        _direct_probabilities(bundle / "model.onnx", bundle, texts),
        rtol=0,
        atol=1e-6,
    )


# --------------------------------------------------------------------------- command line


def _parse_plain(line: str) -> tuple[str, float, dict[str, float]]:
    label, probability, scores = line.split("\t")
    pairs = dict(item.split("=") for item in scores.split(" "))
    return label, float(probability), {k: float(v) for k, v in pairs.items()}


def test_predict_prints_label_tab_probability(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = ["good fun today", "awful boring flight", "terrible " * 30]
    code, out, err = _cli(["predict", str(bundle), *texts, "--threads", "1"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == len(texts)
    expected = load_bundle(bundle, threads=1).predict(texts)
    for line, p in zip(lines, expected, strict=True):
        # byte for byte: classification's to_tsv() keeps this format
        scores_text = " ".join(f"{k}={v:.4f}" for k, v in p.probabilities.items())
        assert line == f"{p.label}\t{p.probability:.4f}\t{scores_text}"
        label, probability, scores = _parse_plain(line)
        assert label == p.label
        assert probability == pytest.approx(p.probability, abs=1e-4)
        assert list(scores) == LABELS
        for name in LABELS:
            assert scores[name] == pytest.approx(p.probabilities[name], abs=1e-4)


def test_predict_refuses_aggregation_for_a_classifier(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _cli(["predict", str(bundle), "--aggregation", "first", "good"], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert f"{bundle}: --aggregation applies to bundles that find entities" in err
    assert "task is 'sequence-classification'" in err


def test_predict_json_lines(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    texts = ["good fun today", "café naïve 😀", "sad"]
    code, out, err = _cli(["predict", str(bundle), "--json", *texts], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["text"] for row in rows] == texts
    expected = load_bundle(bundle).predict(texts)
    for row, p in zip(rows, expected, strict=True):
        assert set(row) == {"text", "label", "probability", "probabilities"}
        assert list(row["probabilities"]) == LABELS
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)
        assert row["label"] == p.label
        assert row["probability"] == pytest.approx(row["probabilities"][row["label"]])
        assert sum(row["probabilities"].values()) == pytest.approx(1.0)
        for name in LABELS:
            assert row["probabilities"][name] == pytest.approx(p.probabilities[name], abs=1e-6)


def test_predict_reads_a_file_and_stdin(
    bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = ["good fun today", "awful boring flight", "the flight was", "café 😀"]
    code, from_args, err = _cli(["predict", str(bundle), *texts], capsys)
    assert code == 0, err
    # one text per line; CRLF, a UTF-8 BOM and a missing final newline are fine
    path = tmp_path / "texts.txt"
    content = "\ufeff" + f"{texts[0]}\r\n{texts[1]}\r\n{texts[2]}\n{texts[3]}"
    path.write_bytes(content.encode("utf-8"))
    code, from_file, err = _cli(["predict", str(bundle), "--file", str(path)], capsys)
    assert code == 0, err
    assert from_file == from_args
    stdin_text = "\n".join(texts) + "\n"
    for argv in (
        ["predict", str(bundle)],
        ["predict", str(bundle), "-"],
        ["predict", str(bundle), "-f", "-"],
    ):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin_text))
        code, from_stdin, err = _cli(argv, capsys)
        assert code == 0, err
        assert from_stdin == from_args, argv
    # arguments first, then the file
    code, both, _ = _cli(["predict", str(bundle), "bad", "--file", str(path)], capsys)
    assert code == 0 and both.splitlines()[1:] == from_args.splitlines()
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert _cli(["predict", str(bundle)], capsys)[:2] == (0, "")


def _stdin_bytes(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    """A real binary-backed stdin, as a pipe gives (``sys.stdin.buffer`` holds the bytes)."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


@pytest.mark.parametrize("as_json", [False, True], ids=["tsv", "json"])
def test_predict_undecodable_stdin_line_errors_that_line_and_predicts_the_rest(
    bundle: Path, capsys, monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    json_flag = ["--json"] if as_json else []
    code, expected, err = _cli(["predict", str(bundle), *json_flag, "good", "sad"], capsys)
    assert code == 0, err
    _stdin_bytes(monkeypatch, b"good\n\xff bad\nsad\n")
    code, out, err = _cli(["predict", str(bundle), *json_flag], capsys)
    assert code == 2
    lines = out.splitlines()
    assert len(lines) == 3 and [lines[0], lines[2]] == expected.splitlines()
    if as_json:
        row = json.loads(lines[1])
        assert row["line"] == 2 and row["source"] == "stdin"
        assert "not UTF-8" in row["error"] and "0xff" in row["error"]
    else:
        assert lines[1].startswith("error\tstdin line 2: not UTF-8 text: byte 0xff at byte 1")
    assert err.startswith("error: 1 of 3 input line(s) could not be predicted")
    assert "stdin line 2: not UTF-8" in err and "Traceback" not in err


def test_predict_undecodable_argument_and_file_line_error_alone(
    bundle: Path, tmp_path: Path, capsys
) -> None:
    path = tmp_path / "texts.txt"
    path.write_bytes(b"good\nsad \xe9t\xe9\n")
    bad_argument = b"caf\xe9".decode("utf-8", "surrogateescape")  # how argv holds it
    code, out, err = _cli(
        ["predict", str(bundle), "--json", "bad", bad_argument, "--file", str(path)], capsys
    )
    assert code == 2
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row.get("text") for row in rows] == ["bad", None, "good", None]
    assert rows[1] == {"line": 2, "source": "arguments", "error": rows[1]["error"]}
    assert rows[3]["line"] == 2 and rows[3]["source"] == str(path)
    assert "argument 2: not UTF-8" in err and f"{path} line 2: not UTF-8" in err


def test_predict_blank_lines_keep_their_place_as_errors(bundle: Path, capsys, monkeypatch) -> None:
    code, expected, err = _cli(["predict", str(bundle), "good", "sad"], capsys)
    assert code == 0, err
    _stdin_bytes(monkeypatch, b"good\r\n\r\n  \nsad")
    code, out, err = _cli(["predict", str(bundle)], capsys)
    assert code == 2
    lines = out.splitlines()
    assert len(lines) == 4 and [lines[0], lines[3]] == expected.splitlines()
    assert lines[1] == "error\tstdin line 2: blank text: nothing to classify"
    assert lines[2] == "error\tstdin line 3: blank text: nothing to classify"
    assert "2 of 4 input line(s) could not be predicted" in err


def test_predict_undecodable_stdin_in_a_real_process(bundle: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "distill", "predict", str(bundle), "--threads", "1"],
        input=b"good\n\xff bad\n",
        capture_output=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert result.returncode == 2
    out, err = result.stdout.decode(), result.stderr.decode()
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].split("\t")[0] in LABELS
    assert lines[1].startswith("error\tstdin line 2: not UTF-8")
    assert "Traceback" not in err and "stdin line 2" in err


def test_predict_unreadable_text_file(bundle: Path, tmp_path: Path, capsys) -> None:
    code, out, err = _cli(["predict", str(bundle), "--file", str(tmp_path / "nope.txt")], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and "nope.txt" in err and "cannot read" in err


def test_predict_loads_neither_torch_nor_transformers(bundle: Path) -> None:
    """A fresh interpreter: import the serving path, predict, and list what got imported."""
    code = (
        "import json, sys\n"
        "import distill.tasks.classification.runner, distill.cli\n"
        f"rc = distill.cli.main(['predict', {str(bundle)!r}, 'good fun', '--json', '--threads', '1'])\n"
        "heavy = ('torch', 'transformers', 'optimum', 'datasets', 'accelerate', 'sklearn')\n"
        "print(json.dumps({'rc': rc, 'loaded': [m for m in heavy if m in sys.modules]}),"
        " file=sys.stderr)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stderr.strip().splitlines()[-1])
    assert report == {"rc": 0, "loaded": []}
    row = json.loads(result.stdout)
    assert row["text"] == "good fun" and row["label"] in LABELS


def test_errors_exit_2_without_traceback_in_a_real_process(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "distill", "predict", str(tmp_path / "missing"), "hello"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert "missing" in result.stderr and "no such bundle folder" in result.stderr


# --------------------------------------------------------------------------- a bad bundle


def _error(bundle: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run `distill predict` on a bad bundle: exit 2, nothing on stdout; returns the message."""
    code, out, err = _cli(["predict", str(bundle), "good fun"], capsys)
    assert code == 2 and out == "", (code, out, err)
    assert err.startswith("error: ") and "Traceback" not in err
    with pytest.raises(ArtifactError):
        load_bundle(bundle)
    return err


def test_a_flipped_byte_in_the_model_is_refused(bundle_copy: Path, capsys) -> None:
    model = bundle_copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    err = _error(bundle_copy, capsys)
    assert f"{model}: sha256 differs from manifest.json" in err


def test_a_resized_file_is_refused(bundle_copy: Path, capsys) -> None:
    with (bundle_copy / "tokenizer_config.json").open("a") as handle:
        handle.write("\n")
    err = _error(bundle_copy, capsys)
    assert "tokenizer_config.json" in err and "bytes" in err


def test_a_deleted_tokenizer_is_refused(bundle_copy: Path, capsys) -> None:
    (bundle_copy / "tokenizer.json").unlink()
    err = _error(bundle_copy, capsys)
    assert f"{bundle_copy / 'tokenizer.json'}: missing" in err


def test_several_problems_are_listed_together(bundle_copy: Path, capsys) -> None:
    (bundle_copy / "tokenizer.json").unlink()
    (bundle_copy / "fp32" / "model_fp32.onnx").write_bytes(b"not a model")
    err = _error(bundle_copy, capsys)
    assert "2 problems" in err and "tokenizer.json: missing" in err and "model_fp32.onnx" in err


def _edit_manifest(bundle: Path, edit: Any) -> None:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest, indent=2))


def _rename_labels(m: dict) -> None:
    m["labels"] = ["bad", "good"]


def _add_label(m: dict) -> None:
    m["labels"] = [*m["labels"], "neutral"]


def _unlist_tokenizer(m: dict) -> None:
    del m["files"]["tokenizer.json"]


def _change_a_hash(m: dict) -> None:
    m["files"]["config.json"]["sha256"] = "0" * 64


def _escape_the_folder(m: dict) -> None:
    m["files"]["../outside.txt"] = {"role": "config", "sha256": "0" * 64, "bytes": 1}


def _max_length_text(m: dict) -> None:
    m["max_length"] = "12"


def _newer_format(m: dict) -> None:
    m["format_version"] = 99


def _other_inputs(m: dict) -> None:
    m["input_names"] = ["input_ids", "attention_mask"]


def _other_task(m: dict) -> None:
    m["task"] = "token-classification"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_rename_labels, r"manifest\.json: 'labels' \['bad', 'good'\] do not match .*config\.json"),
        (_add_label, r"manifest\.json: 'labels' .*neutral.* do not match .*config\.json"),
        (_unlist_tokenizer, r"manifest\.json: 'files' does not list tokenizer\.json"),
        (_change_a_hash, r"config\.json: sha256 differs from manifest\.json"),
        (_escape_the_folder, r"manifest\.json: 'files' lists '\.\./outside\.txt', which is not"),
        (_max_length_text, r"manifest\.json: 'max_length' must be a positive integer"),
        (_newer_format, r"manifest\.json: format_version 99 is newer"),
        (_other_inputs, r"manifest\.json: 'input_names' .* differ from the inputs of model\.onnx"),
        (
            _other_task,
            r"manifest\.json: 'task' is 'token-classification', but 'architectures' "
            r"\['BertForSequenceClassification'\] in .*config\.json is a text-classification model",
        ),
    ],
    ids=lambda value: getattr(value, "__name__", "")[1:] or None,
)
def test_an_edited_manifest_is_refused(bundle_copy: Path, capsys, edit: Any, expected: str) -> None:
    _edit_manifest(bundle_copy, edit)
    err = _error(bundle_copy, capsys)
    assert re.search(expected, err), err


def test_a_max_length_past_the_position_table_is_refused_before_a_long_text_runs(
    bundle_copy: Path, capsys
) -> None:
    """max_length 1000 on a 64-position model: onnxruntime indexed past the table (a
    traceback); now the manifest's value is checked against config.json's."""
    _edit_manifest(bundle_copy, lambda m: m.update(max_length=1000))
    code, out, err = _cli(["predict", str(bundle_copy), "good " * 200], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err == (
        f"error: {bundle_copy / 'manifest.json'}: 'max_length' is 1000, but the model takes at "
        f"most 64 tokens (max_position_embeddings = 64 in {bundle_copy / 'config.json'}); "
        "was manifest.json edited?\n"
    )


def _rehash(bundle: Path, rel: str) -> None:
    """The manifest's entry of ``rel`` rewritten to match the file: only a check of the
    file's content can catch what was done to it."""
    from distill.pipeline.artifacts import sha256_file

    path = bundle / rel
    _edit_manifest(
        bundle,
        lambda m: m["files"][rel].update(sha256=sha256_file(path), bytes=path.stat().st_size),
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{bad", "line 2: not a JSON string (Expecting property name enclosed in double quotes"),
        ("3", "line 2: a JSON int, not a string; words.txt holds one JSON string per line"),
    ],
    ids=["not-json", "not-a-string"],
)
def test_a_malformed_words_file_is_refused_naming_its_line(
    bundle_copy: Path, capsys, line: str, expected: str
) -> None:
    words = bundle_copy / "words.txt"
    lines = words.read_text(encoding="utf-8").split("\n")
    assert len(lines) > 3, "the fixture bundle should list words"
    words.write_text("\n".join([lines[0], line, *lines[2:]]), encoding="utf-8")
    _rehash(bundle_copy, "words.txt")
    err = _error(bundle_copy, capsys)
    assert err.startswith(f"error: {words} {expected}"), err


def test_a_broken_or_missing_manifest_is_refused(bundle_copy: Path, capsys) -> None:
    path = bundle_copy / "manifest.json"
    path.write_text(path.read_text()[:-20])
    assert f"{path}: not valid JSON (line" in _error(bundle_copy, capsys)
    path.unlink()
    err = _error(bundle_copy, capsys)
    assert f"{path}: missing" in err and "not a complete distill bundle" in err


def test_generate_refuses_a_classification_bundle_with_a_hint(bundle: Path, capsys) -> None:
    code, out, err = _cli(["generate", str(bundle), "some text"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"{bundle / 'manifest.json'}: task is 'text-classification'" in err
    assert (
        "not a text-generation or text2text-generation bundle; use `distill predict` for it" in err
    )


def test_a_missing_bundle_folder(tmp_path: Path, capsys) -> None:
    err = _error(tmp_path / "export" / "nope", capsys)
    assert f"{tmp_path / 'export' / 'nope'}: no such bundle folder" in err
    (tmp_path / "file").write_text("x")
    assert "not a folder" in _error(tmp_path / "file", capsys)


# --------------------------------------------------------------------------- export/README.md


def _readme_snippet() -> str:
    text = (REPO / "export" / "README.md").read_text(encoding="utf-8")
    section = text.split("## Without distill", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "export/README.md: expected one python block under 'Without distill'"
    return blocks[0]


def test_readme_snippet_runs_and_matches(
    exported: Path,
    bundle: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    snippet = _readme_snippet()
    assert len(snippet.strip().splitlines()) <= 30
    imported = set()
    for node in ast.walk(ast.parse(snippet)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"json", "sys", "pathlib", "numpy", "onnxruntime", "tokenizers"}

    texts = _texts(exported)[:32]  # one batch, as distill predict would send it
    monkeypatch.setattr(sys, "argv", ["predict.py", str(bundle), *texts])
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(snippet, "export/README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()

    expected = load_bundle(bundle).predict(texts)
    np.testing.assert_allclose(
        namespace["probs"],
        [[p.probabilities[name] for name in LABELS] for p in expected],
        rtol=0,
        atol=1e-6,
    )
    assert [line.split("\t")[0] for line in printed] == [p.label for p in expected]
    assert [line.split("\t", 2)[2] for line in printed] == texts


def test_readme_documents_every_manifest_field(bundle: Path) -> None:
    text = (REPO / "export" / "README.md").read_text(encoding="utf-8")
    manifest = json.loads((bundle / "manifest.json").read_text())
    for key in [*manifest, *manifest["metrics"]]:
        assert f"`{key}`" in text, f"export/README.md does not describe manifest field {key!r}"
    assert "distill predict" in text and "--json" in text and "--threads" in text


def test_predict_rejects_unknown_options(bundle: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["predict", str(bundle), "good", "--bogus"])
    assert caught.value.code == 2
    with pytest.raises(SystemExit):
        main(["predict", str(bundle), "--threads", "0", "good"])


def test_threads_come_from_the_call_then_the_bundles_hint_then_the_default(
    bundle: Path, bundle_copy: Path
) -> None:
    hint = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))["serving"]
    assert load_bundle(bundle, threads=2, default_threads=1).threads == 2
    assert load_bundle(bundle, default_threads=7).threads == hint["threads"]
    manifest = json.loads((bundle_copy / "manifest.json").read_text(encoding="utf-8"))
    del manifest["serving"]  # a bundle exported before the hint existed
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert load_bundle(bundle_copy).threads is None  # onnxruntime's default
    assert load_bundle(bundle_copy, default_threads=1).threads == 1
