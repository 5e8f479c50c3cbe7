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
            0.80, [("main", 0.80, 0.74, 0.80, 7_000_000), ("big", 0.80, 0.80, 0.80, 20_000_000)]
        ),
        report(
            0.80, [("main", 0.79, 0.75, 0.79, 7_000_000), ("big", 0.79, 0.79, 0.80, 20_000_000)]
        ),
    ]
    for rep in reports:
        rep["rows"].append({"key": "tfidf", "accuracy": 0.70, "bytes": 1, "parameters": 1})
    lines = bench.check_targets(bench.summarise(reports))
    # main: 0.795 / 0.80 = 99.4%, lowest seed 98.8%; 7 MB of 80 MB; +9.5 points over TF-IDF.
    assert lines[0].startswith("met: main deployed keeps 99.4% of the teacher's accuracy")
    assert "lowest seed 98.8%" in lines[0]
    assert lines[1].startswith("met: main distilled beats its no-KD twin by +5.00 points")
    assert lines[2].startswith("met: main deployed file is 0.087 of the teacher's fp32 bytes")
    assert lines[3].startswith("met: main deployed is +9.50 points vs TF-IDF")
    assert lines[5].startswith("MISSED: big distilled beats its no-KD twin by +0.00 points")
    assert lines[6].startswith("MISSED: big deployed file is 0.250")
    low_seed = [
        report(0.80, [("main", 0.82, 0.70, 0.82, 7_000_000)]),
        report(0.80, [("main", 0.77, 0.70, 0.77, 7_000_000)]),
    ]
    # mean share 99.4%, but one seed keeps 96.2% (< 97%); no TF-IDF row: n/a.
    lines = bench.check_targets(bench.summarise(low_seed))
    assert lines[0].startswith("MISSED: main deployed keeps 99.4%")
    assert "lowest seed 96.2%" in lines[0]
    assert lines[3].startswith("n/a: main: no TF-IDF floor")


def test_per_seed_table_lists_every_seed() -> None:
    reports = [
        report(0.80, [("main", 0.78, 0.74, 0.78, 9_000_000)]),
        report(0.82, [("main", 0.80, 0.76, 0.79, 9_000_000)]),
    ]
    seeds = []
    for seed, rep in zip([13, 14], reports, strict=True):
        rep["wall_time_s"] = {"data": 1.0, "teacher": 100.0, "student": 50.0}
        seeds.append(bench.per_seed(rep, seed, Path("/nonexistent")))
    text = bench.table(bench.summarise(reports, seeds))
    assert "| 13 | 80.00 | – | 78.00 / 74.00 / 78.00 |" in text
    assert "| 14 | 1 | 100 | – | 50 | – | – | 151 |" in text
