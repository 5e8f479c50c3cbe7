"""`distill predict` streams (#27.13): input is read, predicted and written one batch at a
time, so the first results come out while the input is still being read, in input order,
and memory stays bounded however long the input is.

The bundle is made by hand in a second (streaming does not care what the model is): a
bag-of-embeddings ONNX graph behind the tiny BERT WordPiece tokenizer, with a manifest the
bundle reader verifies. stdin is a lazily generated stream that counts what was read.
"""

from __future__ import annotations

import io
import json
import os
import select
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LABELS, synthetic_rows, write_vocab

from distill.cli import main
from distill.export.bundle import write_bundle_manifest
from distill.tasks.classification.runner import load_bundle

REPO = Path(__file__).resolve().parents[1]
BATCH = 32


def _bag_of_embeddings(path: Path, vocab_size: int) -> None:
    """logits = sum over unmasked tokens of a random 2-wide embedding: a real classifier
    graph (input_ids, attention_mask -> logits (batch, 2)) for onnxruntime."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(0).normal(size=(vocab_size, len(LABELS))).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["vectors"]),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask", "last"], ["mask3"]),
        helper.make_node("Mul", ["vectors", "mask3"], ["kept"]),
        helper.make_node("ReduceSum", ["kept", "tokens"], ["logits"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "bag",
        [
            helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
            for name in ("input_ids", "attention_mask")
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(LABELS)])],
        [
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.asarray([-1], dtype=np.int64), "last"),
            numpy_helper.from_array(np.asarray([1], dtype=np.int64), "tokens"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    onnx.save(model, path)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import BertTokenizerFast

    root = tmp_path_factory.mktemp("predict-stream")
    tokenizer = BertTokenizerFast(vocab=str(write_vocab(root / "vocab")), do_lower_case=True)
    folder = root / "bundle"
    roles = {
        Path(written).name: "tokenizer"
        for written in tokenizer.save_pretrained(folder)
        if Path(written).is_file()
    }
    _bag_of_embeddings(folder / "model.onnx", tokenizer.vocab_size)
    roles["model.onnx"] = "fp32"
    info = {
        "task": "text-classification",
        "model": "model.onnx",
        "labels": LABELS,
        "max_length": 16,
        "input_names": ["input_ids", "attention_mask"],
    }
    write_bundle_manifest(folder, roles, info)
    return folder


class _LazyRaw(io.RawIOBase):
    """A binary stream that makes its lines only when they are read, one per read call
    (as a pipe hands over what has been written so far); ``produced`` counts them."""

    def __init__(self, lines: Iterator[bytes]) -> None:
        self._lines = lines
        self._pending = b""
        self.produced = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        while not self._pending:
            line = next(self._lines, None)
            if line is None:
                return 0
            self._pending = line
            self.produced += 1
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _lazy_stdin(monkeypatch: pytest.MonkeyPatch, lines: Iterator[bytes]) -> _LazyRaw:
    raw = _LazyRaw(lines)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8"))
    return raw


class _Stdout(io.TextIOBase):
    """Records each line written and how much input had been read by then; raises
    BrokenPipeError once ``stop_after`` lines are in (``head`` closing the pipe)."""

    def __init__(self, raw: _LazyRaw, fd: int, stop_after: int | None = None) -> None:
        self.raw, self.fd, self.stop_after = raw, fd, stop_after
        self.lines: list[str] = []
        self.read_when_written: list[int] = []

    def write(self, text: str) -> int:
        if self.stop_after is not None and len(self.lines) >= self.stop_after:
            raise BrokenPipeError(32, "Broken pipe")
        new = text.splitlines()
        self.lines += new
        self.read_when_written += [self.raw.produced] * len(new)
        return len(text)

    def fileno(self) -> int:
        return self.fd


def test_output_comes_before_the_input_ends_in_input_order(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """An endless stdin (10**12 lines, made as they are read): `predict | head` style."""

    def endless() -> Iterator[bytes]:
        for i in range(10**12):
            assert i < 100 * BATCH, "read 100 batches without writing enough: not streaming"
            yield f"text number {i}\n".encode()

    raw = _lazy_stdin(monkeypatch, endless())
    fd = os.open(tmp_path / "stdout", os.O_WRONLY | os.O_CREAT)
    out = _Stdout(raw, fd, stop_after=3 * BATCH)
    monkeypatch.setattr(sys, "stdout", out)
    code = main(["predict", str(bundle), "--json", "--batch-size", str(BATCH), "--threads", "1"])
    os.close(fd)
    assert code == 0, capsys.readouterr().err  # the closed pipe ends it quietly
    # the first batch was written after reading one batch (and at most the next line)
    assert out.read_when_written[0] <= BATCH + 1
    assert out.read_when_written[BATCH] <= 2 * BATCH + 1
    assert raw.produced <= 4 * BATCH + 1  # it stopped reading when the pipe closed
    rows = [json.loads(line) for line in out.lines]
    assert [row["text"] for row in rows] == [f"text number {i}" for i in range(3 * BATCH)]
    assert all(row["label"] in LABELS for row in rows)
    assert "Traceback" not in capsys.readouterr().err


def test_error_lines_keep_their_place_in_the_stream(
    bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Blank and undecodable lines interleave with predictions across batch edges."""
    lines = [b"\xef\xbb\xbfgood", b"", b"bad \xff", b"fine\r"] * 20  # 80 lines, 3 batches
    _lazy_stdin(monkeypatch, (line + b"\n" for line in lines))
    code = main(["predict", str(bundle), "--batch-size", "7", "--threads", "1"])
    out, err = capsys.readouterr()
    assert code == 2
    rows = out.splitlines()
    assert len(rows) == 80
    for number, row in enumerate(rows, start=1):
        kind = (number - 1) % 4
        if kind == 1:
            assert row == f"error\tstdin line {number}: blank text: nothing to classify"
        elif kind == 2:
            assert row.startswith(f"error\tstdin line {number}: not UTF-8 text: byte 0xff")
        else:
            assert row.split("\t")[0] in LABELS
    assert err.startswith("error: 40 of 80 input line(s) could not be predicted")
    assert "stdin line 2: blank text" in err and "; and 35 more" in err


def test_memory_stays_bounded_on_a_long_input(bundle: Path, monkeypatch, capsys) -> None:
    """100k lines from a generator: the old code, which read them all first, peaked at 35 MiB
    under tracemalloc (each line held as bytes, an InputLine and a str); streaming holds one
    batch plus the word cache of a small vocabulary, asserted under 12 MiB (onnxruntime's own
    arena, which tracemalloc does not see, apart)."""
    texts = [text.encode() for text, _ in synthetic_rows(50, seed=5)]
    total = 100_000
    raw = _lazy_stdin(monkeypatch, (texts[i % len(texts)] + b"\n" for i in range(total)))
    written = [0]

    class Counter(io.TextIOBase):
        def write(self, text: str) -> int:
            written[0] += text.count("\n")
            return len(text)

    monkeypatch.setattr(sys, "stdout", Counter())
    tracemalloc.start()
    try:
        code = main(["predict", str(bundle), "--batch-size", "256", "--threads", "1"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 0, capsys.readouterr().err
    assert raw.produced == total and written[0] == total
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_iter_predict_reads_a_generator_one_batch_ahead(bundle: Path) -> None:
    predictor = load_bundle(bundle, threads=1)
    consumed = [0]

    def texts() -> Iterator[str]:
        for i in range(10**12):
            consumed[0] += 1
            yield f"text {i}"

    predictions = predictor.iter_predict(texts(), batch_size=8)
    first = [next(predictions) for _ in range(9)]
    assert consumed[0] == 16  # two batches of 8 for nine predictions, nothing more
    expected = predictor.predict([f"text {i}" for i in range(16)], batch_size=8)[:9]
    assert first == expected and [p.text for p in first] == [f"text {i}" for i in range(9)]


def test_read_lines_splits_like_the_whole_input() -> None:
    """A BOM only at the start; LF and CRLF end lines; a final newline adds no line."""
    from distill.serving.lines import read_lines

    def texts(data: bytes) -> list[str | None]:
        return [item.text for item in read_lines(io.BytesIO(data), "f")]

    assert texts(b"\xef\xbb\xbfa\r\nb\rc\n\xef\xbb\xbfd") == ["a", "b\rc", "\ufeffd"]
    assert texts(b"") == [] and texts(b"\xef\xbb\xbf") == []
    assert texts(b"\n") == [None] and texts(b"a\n\n") == ["a", None]


def test_head_closing_a_real_pipe_mid_stream(bundle: Path) -> None:
    """A real process: results for the first lines come back while stdin is still open;
    once the reader closes the pipe the command exits 0 without a traceback."""
    process = subprocess.Popen(
        [sys.executable, "-m", "distill", "predict", str(bundle), "--batch-size", "4"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
    )
    assert process.stdin and process.stdout and process.stderr
    try:
        process.stdin.write(b"good fun\n" * 4)
        process.stdin.flush()  # stdin stays open: no end of input yet
        ready, _, _ = select.select([process.stdout], [], [], 60)
        assert ready, "no output while stdin was open: predict does not stream"
        first = process.stdout.readline().decode()
        assert first.split("\t")[0] in LABELS
        process.stdout.close()  # `head -1` exits
        process.stdin.write(b"more text\n" * 8)
        process.stdin.close()
        assert process.wait(timeout=120) == 0
        assert b"Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


class _Answer:
    """A prediction of a runner whose input is a JSON object per line (as a task with a
    question and a context reads it); ``error`` set when the line is not one."""

    def __init__(self, text: str) -> None:
        try:
            self.fields = json.loads(text)
            self.error = None if isinstance(self.fields, dict) else "not a JSON object"
        except json.JSONDecodeError as exc:
            self.fields, self.error = None, f"not JSON: {exc.msg}"

    def to_dict(self) -> dict:
        return {"keys": sorted(self.fields)}

    def to_tsv(self) -> str:
        return ",".join(sorted(self.fields))


def test_a_line_the_runner_refuses_is_a_failed_line_in_its_place() -> None:
    from distill.serving.lines import argument_lines, write_predictions

    texts = ['{"question": "q", "context": "c"}', "[1, 2]", '{"question": "x"}', "{oops"]
    out = io.StringIO()
    tally = write_predictions(
        argument_lines(texts), lambda batch: [_Answer(t) for t in batch], out, batch_size=3
    )
    assert out.getvalue().splitlines() == [
        "context,question",
        "error\targument 2: not a JSON object",
        "question",
        "error\targument 4: not JSON: Expecting property name enclosed in double quotes",
    ]
    assert (tally.total, tally.failed) == (4, 2)
    assert "2 of 4 input line(s) could not be predicted" in tally.summary()
    out = io.StringIO()
    write_predictions(
        argument_lines(texts[:2]),
        lambda b: [_Answer(t) for t in b],
        out,
        batch_size=8,
        as_json=True,
    )
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        {"keys": ["context", "question"]},
        {"line": 2, "source": "arguments", "error": "not a JSON object"},
    ]
