"""Latency measurement: warm-up excluded, percentiles ordered, thread counts pinned and restored."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from distill.serving.session import onnx_session
from distill.timing import latency


def test_measure_excludes_warmup() -> None:
    calls = []

    def fn() -> None:
        calls.append(1)
        # The first calls are slow (think: lazy initialisation); the rest are fast.
        time.sleep(0.05 if len(calls) <= 3 else 0.001)

    stats = latency.measure(fn, warmup=3, runs=6)
    assert len(calls) == 9
    assert stats.runs == 6 and stats.warmup == 3
    assert stats.max_ms < 40, stats  # no slow warm-up call leaked into the samples
    assert stats.min_ms >= 1.0
    assert stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p95_ms <= stats.max_ms


def test_measure_without_warmup_sees_the_slow_call() -> None:
    calls = []

    def fn() -> None:
        calls.append(1)
        time.sleep(0.05 if len(calls) == 1 else 0.001)

    stats = latency.measure(fn, warmup=0, runs=4)
    assert stats.max_ms >= 45


def test_summarize_matches_numpy_percentiles() -> None:
    samples = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0, 7.0, 6.0, 9.0, 8.0]
    stats = latency.summarize(samples, warmup=2)
    assert stats.p50_ms == pytest.approx(np.percentile(samples, 50))
    assert stats.p95_ms == pytest.approx(np.percentile(samples, 95))
    assert stats.mean_ms == pytest.approx(5.5)
    assert (stats.min_ms, stats.max_ms, stats.runs, stats.warmup) == (1.0, 10.0, 10, 2)
    assert stats.to_dict()["p90_ms"] == pytest.approx(np.percentile(samples, 90))


def test_measure_rejects_bad_counts() -> None:
    with pytest.raises(ValueError):
        latency.measure(lambda: None, warmup=0, runs=0)
    with pytest.raises(ValueError):
        latency.measure(lambda: None, warmup=-1, runs=3)


def test_torch_threads_restored_even_on_error() -> None:
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with latency.torch_threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), latency.torch_threads(target):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_time_torch_model_pins_and_restores_threads(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch = latency.fixed_length_batch(
        tokenizer, ["good movie", "bad"], batch_size=3, max_length=16
    )
    assert batch["input_ids"].shape == (3, 16) and batch["input_ids"].dtype == np.int64

    seen = []
    original_forward = model.forward

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original_forward(*args, **kwargs)

    model.forward = spy  # type: ignore[method-assign]
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    stats = latency.time_torch_model(model, batch, threads=target, warmup=1, runs=3)
    assert torch.get_num_threads() == before
    assert seen == [target] * 4  # warm-up + runs, all under the pinned count
    assert (stats.threads, stats.batch_size, stats.sequence_length) == (target, 3, 16)
    assert stats.runs == 3 and 0 < stats.p50_ms <= stats.p95_ms


def _tiny_onnx(path: Path) -> Path:
    """A graph with the inputs of a BERT classifier: logits = sum of ids, as float."""
    import onnx
    from onnx import TensorProto, helper

    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
        for name in ("input_ids", "attention_mask")
    ]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])
    nodes = [
        helper.make_node("Add", ["input_ids", "attention_mask"], ["summed"]),
        helper.make_node("ReduceSum", ["summed"], ["reduced"], keepdims=1),
        helper.make_node("Cast", ["reduced"], ["logits"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(nodes, "tiny", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_onnx_session_threads_and_feed(tmp_path: Path) -> None:
    path = _tiny_onnx(tmp_path / "model.onnx")
    session = onnx_session(path, threads=1)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1

    batch = {
        "input_ids": np.ones((2, 8), dtype=np.int32),
        "attention_mask": np.ones((2, 8), dtype=np.int64),
        "token_type_ids": np.zeros((2, 8), dtype=np.int64),  # not declared: dropped
    }
    feed = latency.onnx_feed(session, batch)
    assert set(feed) == {"input_ids", "attention_mask"}
    assert all(v.dtype == np.int64 for v in feed.values())
    with pytest.raises(ValueError, match="attention_mask"):
        latency.onnx_feed(session, {"input_ids": batch["input_ids"]})

    stats = latency.time_onnx_model(path, batch, threads=1, warmup=2, runs=5)
    assert (stats.threads, stats.batch_size, stats.sequence_length) == (1, 2, 8)
    assert stats.runs == 5 and stats.warmup == 2 and 0 < stats.p50_ms <= stats.p95_ms


def test_hardware_info_names_the_cpu() -> None:
    info = latency.hardware_info()
    assert isinstance(info["cpu"], str) and info["cpu"]
    assert info["logical_cores"] >= 1 and info["available_cores"] >= 1


def test_onnx_session_names_the_file_it_cannot_load(tmp_path: Path) -> None:
    from distill.errors import ArtifactError

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    with pytest.raises(ArtifactError, match="broken.onnx: onnxruntime cannot load it"):
        onnx_session(broken, threads=1)


def test_timing_plan_takes_the_task_s_own_batch(tmp_path: Path) -> None:
    """A plan is task-neutral: the batch builder, not the plan, says what a model is fed."""
    from types import SimpleNamespace

    path = _tiny_onnx(tmp_path / "model.onnx")
    settings = SimpleNamespace(
        latency_batch_size=2, latency_threads=1, latency_runs=3, latency_warmup=1
    )
    seen = []

    def batch(preprocessor: Any) -> dict[str, np.ndarray]:
        seen.append(preprocessor)
        ones = np.ones((2, 5), dtype=np.int64)
        return {"input_ids": ones, "attention_mask": ones}

    plan = latency.TimingPlan(settings, batch, 5, desc="test: timing")
    plan.add_onnx("a", path, "first")
    plan.add_onnx("b", path, "second")
    assert plan.rounds == 3
    timed = plan.run()
    assert seen == ["first", "second"] and set(timed) == {"a", "b"} and not plan.calls
    assert {
        (t["threads"], t["batch_size"], t["sequence_length"], t["runs"]) for t in timed.values()
    } == {(1, 2, 5, 3)}
