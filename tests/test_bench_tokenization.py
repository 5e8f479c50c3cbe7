"""The tokenization bench (bench/tokenization.py): both paths timed on the same texts, the
feeds compared batch by batch."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import write_csv

SPEC = importlib.util.spec_from_file_location(
    "bench_tokenization", Path(__file__).parent.parent / "bench" / "tokenization.py"
)
bench = importlib.util.module_from_spec(SPEC)  # type: ignore[arg-type]
SPEC.loader.exec_module(bench)  # type: ignore[union-attr]

TEXTS = ["good fun", "  sad\tday  ", "café 😀 [MASK]", "", "word " * 80, "@bob https://x.y/z"]


def _argv(tmp_path: Path, out: Path) -> list[str]:
    rows = [(f"{text} {i}", "positive") for i in range(10) for text in TEXTS]
    data = write_csv(tmp_path / "texts.csv", ["text", "sentiment"], rows)
    return [
        f"--data={data}",
        "--encoding=utf-8",
        "--examples=50",
        "--max-length=16",
        "--batch-sizes",
        "1",
        "4",
        "--passes=2",
        f"--out={out}",
    ]


def test_bench_times_both_paths_and_finds_them_identical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "result.json"
    assert bench.main(_argv(tmp_path, out)) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["setup"]["texts"] == 50 and result["setup"]["passes"] == 2
    rows = {row["batch_size"]: row for row in result["batch_sizes"]}
    assert sorted(rows) == [1, 4]
    assert (rows[1]["batches_compared"], rows[4]["batches_compared"]) == (100, 26)
    for row in rows.values():
        assert row["batches_differing"] == 0
        assert set(row["us_per_text"]) == {"reference", "encode_batch_only", "cold", "warm"}
        assert row["us_per_text"]["encode_batch_only"] <= row["us_per_text"]["reference"]
        assert len(row["seconds_per_pass"]["reference"]) == 2
        assert len(row["seconds_per_pass"]["cold"]) == len(row["seconds_per_pass"]["warm"]) == 1
        assert row["cache_entries"] == result["prefill"]["entries"] > 10
    printed = capsys.readouterr().out
    assert "| 4 | word cache, warm |" in printed and "identical feeds on 26 batches" in printed


def test_bench_fails_when_the_feeds_differ(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(bench, "same", lambda a, b: False)
    assert bench.main(_argv(tmp_path, tmp_path / "result.json")) == 1
    assert "DIFFERENT feeds on 100 batches (100 differing)" in capsys.readouterr().out
