"""The causal-LM bench's arithmetic and target checks (bench/generation.py), on hand-made seeds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "bench"
sys.path.insert(0, str(BENCH))
SPEC = importlib.util.spec_from_file_location("bench_generation", BENCH / "generation.py")
bench = importlib.util.module_from_spec(SPEC)  # type: ignore[arg-type]
SPEC.loader.exec_module(bench)  # type: ignore[union-attr]


def seed(number: int, teacher: float, student: float, no_kd: float, **over: object) -> dict:
    record = {
        "seed": number,
        "perplexity": {
            "teacher": teacher,
            "student": student,
            "student_no_kd": no_kd,
            "deployed": student * 1.02,
        },
        "before_training": student * 3,
        "layers": 20,
        "teacher_layers": 30,
        "int8_drift": 0.02,
        "speedup": {"teacher": 9.0, "teacher_onnx_int8": 1.5, "teacher_onnx_fp32": 3.0},
        "continuation_tokens": [24, 12, 9],
        "wall_time_s": {"data": 2.0, "teacher": 100.0, "report": 200.0},
    }
    return {**record, **over}


def test_summary_ratios_gains_and_the_targets_it_meets() -> None:
    seeds = [seed(13, 20.0, 26.0, 40.0), seed(14, 22.0, 30.0, 44.0)]
    summary = bench.summarise(seeds)
    assert summary["ratio_to_teacher"]["mean"] == pytest.approx((26 / 20 + 30 / 22) / 2)
    assert summary["kd_gain"]["mean"] == pytest.approx(14.0)
    assert summary["perplexity"]["student_no_kd"]["mean"] == pytest.approx(42)
    assert summary["pipeline_s"]["mean"] == pytest.approx(302.0)
    assert all(line.startswith("met") for line in summary["checks"]), summary["checks"]


def test_each_missed_target_is_named() -> None:
    seeds = [
        seed(13, 20.0, 40.0, 38.0, layers=25, continuation_tokens=[24, 1]),
        seed(14, 22.0, 50.0, 52.0, int8_drift=0.08, wall_time_s={"teacher": 2000.0}),
    ]
    seeds[1]["speedup"] = {"teacher": 9.0, "teacher_onnx_int8": 1.2}
    missed = [line for line in bench.summarise(seeds)["checks"] if line.startswith("MISSED")]
    expected = ["2/3", "1.5x", "beats no-KD", ">= 8 tokens", "within 5%", "1.4x", "15 min"]
    assert len(missed) == len(expected), missed
    for what, line in zip(expected, missed, strict=True):
        assert what in line, (what, line)
    assert "(shortest 1)" in missed[3]
    assert "(1.50x, 1.20x)" in missed[5]


def test_table_lists_every_model_and_the_perplexity_before_training() -> None:
    text = bench.table(bench.summarise([seed(13, 20.0, 26.0, 40.0), seed(14, 22.0, 30.0, 44.0)]))
    assert "| teacher | 20.0 | 22.0 | 21.0 ± 1.4 |" in text
    assert "| student before training | 78.0 | 90.0 | |" in text
    assert "| no-KD minus distilled | 14.0 | 14.0 | 14.0 ± 0.0 |" in text
    assert "seed 14: stages (s) data 2, teacher 100, report 200; int8 drift +2.00%" in text
