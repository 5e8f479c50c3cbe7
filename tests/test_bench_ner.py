"""The NER bench's arithmetic and target checks (bench/ner.py), on hand-made seeds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "bench"
sys.path.insert(0, str(BENCH))
SPEC = importlib.util.spec_from_file_location("bench_ner", BENCH / "ner.py")
bench = importlib.util.module_from_spec(SPEC)  # type: ignore[arg-type]
SPEC.loader.exec_module(bench)  # type: ignore[union-attr]


def seed(number: int, teacher: float, student: float, no_kd: float, deployed: float) -> dict:
    return {
        "seed": number,
        "f1": {
            "teacher": teacher,
            "student": student,
            "student_no_kd": no_kd,
            "deployed": deployed,
            "memorization": 0.2,
        },
        "size_ratio": 0.1,
        "speedup": 12.0,
        "wall_time_s": {"data": 1.0, "teacher": 100.0},
    }


def test_summary_means_gains_and_the_targets_it_meets() -> None:
    seeds = [seed(13, 0.40, 0.39, 0.35, 0.385), seed(14, 0.42, 0.40, 0.36, 0.40)]
    summary = bench.summarise(seeds)
    assert summary["f1"]["teacher"]["mean"] == pytest.approx(0.41)
    assert summary["kd_gain"]["mean"] == pytest.approx(0.04)
    assert summary["kept"]["mean"] == pytest.approx((0.385 / 0.40 + 0.40 / 0.42) / 2)
    assert summary["pipeline_s"]["mean"] == pytest.approx(101.0)
    assert all(line.startswith("met") for line in summary["checks"]), summary["checks"]


def test_a_gain_within_the_seeds_noise_and_a_weak_bundle_are_missed() -> None:
    seeds = [seed(13, 0.40, 0.36, 0.30, 0.30), seed(14, 0.42, 0.37, 0.40, 0.32)]
    checks = bench.summarise(seeds)["checks"]
    missed = [line for line in checks if line.startswith("MISSED")]
    assert any("keeps >= 95%" in line for line in missed)
    assert any("beats no-KD" in line for line in missed)
    assert "| teacher | 40.00 | 42.00 | 41.00 ± 1.41 |" in bench.table(bench.summarise(seeds))
