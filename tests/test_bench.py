"""The latency bench (distill/timing/bench.py, bench/latency.py) on a tiny exported run."""

from __future__ import annotations

import json
import runpy
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SHORT_TIMING, build_tiny_classifier, synthetic_rows

from distill.config import DataConfig, ExportConfig
from distill.data.files import write_label_names
from distill.errors import ArtifactError
from distill.pipeline.artifacts import RunContext
from distill.tasks.classification.files import Split, write_split
from distill.tasks.classification.stages import export as export_stage
from distill.timing import bench, latency

LABELS = ["negative", "positive"]
MAX_LENGTH = 24
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<workdir>/runs/t/{data,teacher,student,export} and the published export/t bundle."""
    root = tmp_path_factory.mktemp("bench")
    run = root / "runs" / "t"
    data = run / "data"
    data.mkdir(parents=True)
    rows = synthetic_rows(80, seed=5)
    for name, part in {"train": rows[:40], "validation": rows[40:50], "test": rows[50:]}.items():
        write_split(
            data / f"{name}.jsonl",
            Split(
                ids=[f"{name}-{i}" for i in range(len(part))],
                texts=[text for text, _ in part],
                labels=np.asarray([LABELS.index(label) for _, label in part], dtype=np.int64),
            ),
        )
    write_label_names(data, LABELS)
    build_tiny_classifier(run / "teacher" / "model", num_labels=2, layers=3, seed=1)
    build_tiny_classifier(run / "student" / "model", num_labels=2, layers=1, seed=2)
    stage = run / "export"
    stage.mkdir()
    ctx = RunContext(
        name="t", seed=13, task="sequence-classification", workdir=root, recipe_dir=root
    )
    export_stage.run(  # the stage's own timing cut short: SHORT_TIMING
        ctx,
        {"data": data, "student": run / "student"},
        stage,
        data=DataConfig(path="unused.csv", max_length=MAX_LENGTH),
        export=ExportConfig(
            candidates=["dynamic", "dynamic-optimized"], max_accuracy_drop=1.0, **SHORT_TIMING
        ),
    )
    shutil.copytree(stage / "bundle", root / "export" / "t")
    return root


MODEL_KEYS = [
    bench.TEACHER,
    bench.STUDENT,
    bench.ONNX_FP32,
    bench.ONNX_FP32_OPTIMIZED,
    bench.DEPLOYED,
]


def test_bench_prints_every_row_and_the_ratios(
    workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "bench.json"
    code = bench.main(
        [
            str(workdir / "export" / "t"),
            "--runs",
            "4",
            "--warmup",
            "1",
            "--rounds",
            "2",
            "--threads",
            "1",
            "--json",
            str(out_json),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    result = json.loads(out_json.read_text())

    # the models, the cells and the setup
    assert [m["key"] for m in result["models"]] == MODEL_KEYS
    assert result["threads"] == 1 and result["runs"] == 4 and result["warmup"] == 1
    typical = result["typical_lengths"]
    assert set(typical) == {"median", "p95", "max_length"} and typical["max_length"] == MAX_LENGTH
    assert 1 <= typical["median"] <= typical["p95"] <= MAX_LENGTH
    lengths = sorted(set(typical.values()))
    assert [(c["batch_size"], c["sequence_length"]) for c in result["cells"]] == [
        (b, s) for b in (1, 32) for s in lengths
    ]
    for cell in result["cells"]:
        assert list(cell["latency"]) == MODEL_KEYS
        for stats in cell["latency"].values():
            assert stats["runs"] == 4 and stats["warmup"] == 1 and stats["threads"] == 1
            assert stats["batch_size"] == cell["batch_size"]
            assert stats["sequence_length"] == cell["sequence_length"]
            assert 0 < stats["p50_ms"] <= stats["p95_ms"]

    # every row and every column of the Markdown table
    for model in result["models"]:
        row = next(
            line for line in printed.splitlines() if line.startswith(f"| {model['label']} |")
        )
        assert row.count("/") == len(result["cells"])
    for cell in result["cells"]:
        assert f"b{cell['batch_size']} s{cell['sequence_length']} p50 / p95 ms" in printed
    assert "1 thread(s)" in printed and "warm-up" in printed

    # the ratios are the quotients of the medians
    ratios = result["ratios"]
    for row, cell in zip(ratios["per_cell"], result["cells"], strict=True):
        p50 = {key: stats["p50_ms"] for key, stats in cell["latency"].items()}
        assert row["int8_vs_fp32_onnx"] == pytest.approx(p50[bench.ONNX_FP32] / p50[bench.DEPLOYED])
        assert row["int8_vs_fp32_onnx_optimized"] == pytest.approx(
            p50[bench.ONNX_FP32_OPTIMIZED] / p50[bench.DEPLOYED]
        )
        assert row["deployed_vs_teacher"] == pytest.approx(p50[bench.TEACHER] / p50[bench.DEPLOYED])
    at_max = {c["batch_size"]: c for c in result["cells"] if c["sequence_length"] == MAX_LENGTH}

    def quotient(batch: int, over: str) -> float:
        latency = at_max[batch]["latency"]
        return latency[over]["p50_ms"] / latency[bench.DEPLOYED]["p50_ms"]

    assert ratios["int8_vs_fp32_onnx_b1"] == pytest.approx(quotient(1, bench.ONNX_FP32))
    assert ratios["int8_vs_fp32_onnx_b32"] == pytest.approx(quotient(32, bench.ONNX_FP32))
    assert ratios["deployed_vs_teacher_b1"] == pytest.approx(quotient(1, bench.TEACHER))
    sizes = {m["key"]: m["bytes"] for m in result["models"]}
    assert ratios["size_deployed_vs_fp32_onnx"] == pytest.approx(
        sizes[bench.DEPLOYED] / sizes[bench.ONNX_FP32]
    )
    assert sizes[bench.DEPLOYED] < sizes[bench.ONNX_FP32]
    for ratio in (
        ratios["int8_vs_fp32_onnx_b1"],
        ratios["int8_vs_fp32_onnx_b32"],
        ratios["deployed_vs_teacher_b1"],
        ratios["size_deployed_vs_fp32_onnx"],
    ):
        assert f"{ratio:.2f}x" in printed or f"{ratio:.3f}x" in printed


def test_bench_script_runs_from_the_command_line(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = workdir / "runs" / "t" / "export" / "bundle"  # the stage's copy: workdir inferred
    argv = [str(bundle), "--runs", "2", "--warmup", "0", "--batch-sizes", "1", "--seq-lengths", "8"]
    monkeypatch.setattr(sys, "argv", ["bench/latency.py", *argv])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(REPO / "bench" / "latency.py"), run_name="__main__")
    assert exited.value.code == 0
    printed = capsys.readouterr().out
    assert "| Teacher (PyTorch fp32) |" in printed
    assert "b1 s8 p50 / p95 ms" in printed
    assert "int8 vs fp32 ONNX (plain export), batch 1, seq 8: " in printed
    assert "batch 32, seq 8: n/a" in printed  # not measured


def test_locate_needs_the_run_folders(workdir: Path, tmp_path: Path) -> None:
    paths = bench.locate(workdir / "export" / "t")
    assert paths.name == "t" and paths.workdir == workdir
    assert paths.teacher == workdir / "runs" / "t" / "teacher" / "model"
    elsewhere = tmp_path / "copy"
    shutil.copytree(workdir / "export" / "t", elsewhere)
    with pytest.raises(ArtifactError, match="--workdir"):
        bench.locate(elsewhere)
    with pytest.raises(ArtifactError, match="teacher model"):
        bench.locate(elsewhere, workdir=tmp_path)
    assert bench.main([str(tmp_path / "nothing")]) == 2


def test_a_damaged_bundle_is_refused_before_timing(workdir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "export" / "t"
    shutil.copytree(workdir / "export" / "t", copy)
    model = copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=f"{model}: sha256 differs from manifest.json"):
        bench.locate(copy, workdir=workdir)


def test_interleaved_latency_spreads_runs_over_rounds() -> None:
    calls: list[str] = []

    def make(name: str) -> Any:
        return lambda: calls.append(name)

    stats = latency.interleaved_latency(
        {"a": make("a"), "b": make("b"), "c": make("c")},
        runs=5,
        warmup=2,
        rounds=2,
        round_warmup=1,
    )
    assert {k: (s.runs, s.warmup) for k, s in stats.items()} == {
        "a": (5, 2),
        "b": (5, 2),
        "c": (5, 2),
    }
    # warm-up first, then round 1 (a, b, c: 1 untimed + 3 timed calls each), round 2
    # rotated (b, c, a: 1 untimed + 2 timed each)
    assert (
        calls
        == ["a"] * 2
        + ["b"] * 2
        + ["c"] * 2
        + ["a"] * 4
        + ["b"] * 4
        + ["c"] * 4
        + ["b"] * 3
        + ["c"] * 3
        + ["a"] * 3
    )
    with pytest.raises(ValueError):
        latency.interleaved_latency({"a": make("a")}, runs=0, warmup=0)
    with pytest.raises(ValueError, match="round_warmup"):
        latency.interleaved_latency({"a": make("a")}, runs=1, warmup=0, round_warmup=-1)


def test_ratios_without_an_int8_model_are_not_computed() -> None:
    """An fp32 fallback bundle: no int8 ratios, the teacher ratio still."""

    def stats(p50: float) -> dict[str, float]:
        return {"p50_ms": p50, "p95_ms": p50}

    result = {
        "deployed_precision": "fp32",
        "typical_lengths": {"median": 8, "max_length": 16},
        "models": [
            {"key": bench.TEACHER, "bytes": 40},
            {"key": bench.ONNX_FP32, "bytes": 10},
            {"key": bench.DEPLOYED, "bytes": 10},
        ],
        "cells": [
            {
                "batch_size": 1,
                "sequence_length": 16,
                "latency": {
                    bench.TEACHER: stats(8.0),
                    bench.ONNX_FP32: stats(2.0),
                    bench.DEPLOYED: stats(2.0),
                },
            }
        ],
    }
    ratios = bench.compute_ratios(result)
    assert ratios["int8_vs_fp32_onnx_b1"] is None and ratios["int8_vs_fp32_onnx_b32"] is None
    assert ratios["deployed_vs_teacher_b1"] == 4.0
    assert ratios["size_deployed_vs_fp32_onnx"] == 1.0
