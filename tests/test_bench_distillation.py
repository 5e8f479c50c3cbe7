"""The multi-seed distillation bench's arithmetic and target checks (bench/distillation.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "bench_distillation", Path(__file__).parent.parent / "bench" / "distillation.py"
)
bench = importlib.util.module_from_spec(SPEC)  # type: ignore[arg-type]
SPEC.loader.exec_module(bench)  # type: ignore[union-attr]


def report(teacher: float, students: list[tuple[str, float, float, float, int]]) -> dict:
    """A report.json with a teacher row (80 MB, 20M params) and per-student entries:
    (name, distilled PyTorch accuracy, no-KD accuracy, deployed accuracy, deployed bytes)."""
    return {
        "rows": [
            {"key": "teacher", "accuracy": teacher, "bytes": 80_000_000, "parameters": 20_000_000}
        ],
        "students": [
            {
                "name": name,
                "pytorch_accuracy": distilled,
                "no_kd_accuracy": no_kd,
                "accuracy": deployed,
                "bytes": size,
                "parameters": 5_000_000,
            }
            for name, distilled, no_kd, deployed, size in students
        ],
    }


def test_summary_means_and_standard_deviations() -> None:
    reports = [
        report(0.80, [("main", 0.78, 0.74, 0.78, 9_000_000)]),
        report(0.82, [("main", 0.80, 0.76, 0.79, 9_000_000)]),
    ]
    summary = bench.summarise(reports)
    assert summary["teacher"]["accuracy"] == pytest.approx((0.81, 0.0141421356))
    (main,) = summary["students"]
    assert main["distilled"] == pytest.approx((0.79, 0.0141421356))
    assert main["no_kd"] == pytest.approx((0.75, 0.0141421356))
    assert main["accuracy_share"] == pytest.approx(0.785 / 0.81)
    assert main["size_share"] == pytest.approx(9 / 80)
    assert main["parameter_share"] == pytest.approx(0.25)


def test_targets_are_met_or_missed_with_numbers() -> None:
    reports = [
        report(
            0.80, [("main", 0.79, 0.74, 0.79, 9_000_000), ("big", 0.80, 0.80, 0.80, 20_000_000)]
        ),
        report(
            0.80, [("main", 0.79, 0.75, 0.78, 9_000_000), ("big", 0.79, 0.79, 0.80, 20_000_000)]
        ),
    ]
    lines = bench.check_targets(bench.summarise(reports))
    # main: 0.785 / 0.80 = 98.1% within 1/8 of the size; big is larger than 1/8.
    assert lines[0].startswith("met: best student within 1/8") and "(main, 0.113" in lines[0]
    assert "98.1%" in lines[0]
    assert lines[1].startswith("met: main distilled beats its no-KD twin by +4.50 points")
    assert lines[2].startswith("MISSED: big distilled beats its no-KD twin by +0.00 points")
    too_big = [report(0.80, [("main", 0.79, 0.70, 0.79, 11_000_000)])] * 2
    assert bench.check_targets(bench.summarise(too_big))[0].startswith("MISSED: no student")
