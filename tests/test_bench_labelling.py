"""The labelling bench (bench/labelling.py) on a tiny BERT: every backend timed, same logits."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import build_tiny_classifier, synthetic_rows, write_csv

SPEC = importlib.util.spec_from_file_location(
    "bench_labelling", Path(__file__).parent.parent / "bench" / "labelling.py"
)
bench = importlib.util.module_from_spec(SPEC)  # type: ignore[arg-type]
SPEC.loader.exec_module(bench)  # type: ignore[union-attr]


def test_bench_times_pytorch_and_onnxruntime_on_the_same_texts_and_agrees(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher = build_tiny_classifier(tmp_path / "teacher", layers=2, seed=1)
    data = write_csv(tmp_path / "tweets.csv", ["text", "sentiment"], synthetic_rows(90))
    out = tmp_path / "result.json"
    argv = [
        f"--teacher={teacher}",
        f"--data={data}",
        "--encoding=utf-8",
        "--examples=80",
        "--max-length=24",
        "--batch-size=16",
        "--repeats=2",
        "--data-order",
        f"--json={out}",
    ]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["setup"]["examples"] == 80
    assert (result["setup"]["batch_size"], result["setup"]["threads"]) == (16, 2)
    backends = result["backends"]
    assert set(backends) == {"pytorch", "onnxruntime", "pytorch_data_order"}
    for rate in backends.values():
        assert len(rate["seconds"]) == 2
        assert rate["examples_per_s_min"] <= rate["examples_per_s_median"] > 0
    expected = (
        backends["onnxruntime"]["examples_per_s_median"]
        / backends["pytorch"]["examples_per_s_median"]
    )
    assert result["ratio_onnxruntime_vs_pytorch"] == pytest.approx(expected, abs=0.01)
    assert result["max_abs_diff_onnxruntime_vs_pytorch"] <= 1e-3
    assert result["max_abs_diff_sorted_vs_data_order_pytorch"] <= 1e-5
    assert result["onnx"]["optimization"]["level"] == 2
    printed = capsys.readouterr().out
    assert "| onnxruntime |" in printed and "onnxruntime / pytorch:" in printed
