"""CPU latency measurement: warm-up excluded, pinned thread counts, percentiles.

Independent of the report so that other commands (``distill bench``) can reuse it.
Timings cover the model call only: inputs are tokenized once, up front, at a fixed
shape, so the numbers compare models rather than tokenizers.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Summary of ``runs`` timed calls (warm-up calls are not included in any field)."""

    p50_ms: float
    p90_ms: float
    p95_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    runs: int
    warmup: int
    threads: int | None = None
    batch_size: int | None = None
    sequence_length: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_setup(
        self,
        *,
        threads: int | None = None,
        batch_size: int | None = None,
        sequence_length: int | None = None,
    ) -> LatencyStats:
        """A copy that also records how the inputs and threads were set up."""
        return LatencyStats(
            **{
                **asdict(self),
                "threads": threads if threads is not None else self.threads,
                "batch_size": batch_size if batch_size is not None else self.batch_size,
                "sequence_length": sequence_length
                if sequence_length is not None
                else self.sequence_length,
            }
        )


def summarize(samples_ms: Sequence[float], warmup: int = 0) -> LatencyStats:
    """Percentiles (linear interpolation) of timed samples in milliseconds."""
    if len(samples_ms) == 0:
        raise ValueError("no latency samples to summarize")
    values = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p95 = np.percentile(values, [50, 90, 95])
    return LatencyStats(
        p50_ms=float(p50),
        p90_ms=float(p90),
        p95_ms=float(p95),
        mean_ms=float(values.mean()),
        min_ms=float(values.min()),
        max_ms=float(values.max()),
        runs=int(values.size),
        warmup=int(warmup),
    )


def measure(fn: Callable[[], Any], warmup: int, runs: int) -> LatencyStats:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times timed, one call per sample.

    The garbage collector is run before timing and paused during it, so a collection
    triggered by someone else's garbage does not land in one sample.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1 (got {runs})")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0 (got {warmup})")
    for _ in range(warmup):
        fn()
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    samples: list[float] = []
    try:
        for _ in range(runs):
            start = time.perf_counter_ns()
            fn()
            samples.append((time.perf_counter_ns() - start) / 1e6)
    finally:
        if was_enabled:
            gc.enable()
    return summarize(samples, warmup=warmup)


# --------------------------------------------------------------------------- inputs


def fixed_length_batch(
    tokenizer: Any, texts: Sequence[str], *, batch_size: int, max_length: int
) -> dict[str, np.ndarray]:
    """Tokenize ``batch_size`` texts (cycling ``texts`` if there are fewer) padded to ``max_length``.

    Every model then sees the same shape, so latencies compare like with like.
    """
    if not texts:
        raise ValueError("no texts to build a latency batch from")
    chosen = [texts[i % len(texts)] for i in range(batch_size)]
    encoded = tokenizer(
        chosen, padding="max_length", truncation=True, max_length=max_length, return_tensors="np"
    )
    return {name: np.asarray(value, dtype=np.int64) for name, value in encoded.items()}


# --------------------------------------------------------------------------- PyTorch


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Pin ``torch.set_num_threads`` for the block; the previous value is restored after."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def time_torch_model(
    model: Any,
    inputs: Mapping[str, np.ndarray],
    *,
    threads: int,
    warmup: int,
    runs: int,
) -> LatencyStats:
    """Latency of ``model(**inputs)`` in eval mode under ``torch.inference_mode``."""
    call = torch_call(model, inputs)
    with torch_threads(threads):
        stats = measure(call, warmup=warmup, runs=runs)
    return stats.with_setup(threads=threads, **_shape(inputs))


def torch_call(model: Any, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
    """``model(**inputs)`` in eval mode under ``torch.inference_mode``, fed only the inputs
    its ``forward`` accepts (threads are pinned by the caller)."""
    import torch

    accepted = _torch_input_names(model)
    tensors = {
        name: torch.from_numpy(np.ascontiguousarray(value))
        for name, value in inputs.items()
        if accepted is None or name in accepted
    }
    model.eval()

    def call() -> None:
        with torch.inference_mode():
            model(**tensors)

    return call


def _torch_input_names(model: Any) -> set[str] | None:
    import inspect

    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError, AttributeError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return set(parameters)


# --------------------------------------------------------------------------- ONNX Runtime


def ort_session(model_path: Path | str, threads: int | None) -> Any:
    """A CPU ``InferenceSession`` with ``threads`` intra-op threads (None: onnxruntime's
    default) and one inter-op thread; the one way distill opens an ONNX model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: fusion notes would drown the progress log
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(
        str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def onnx_feed(session: Any, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The subset of ``inputs`` the session declares, cast to its integer type."""
    feed: dict[str, np.ndarray] = {}
    missing = []
    for declared in session.get_inputs():
        if declared.name not in inputs:
            missing.append(declared.name)
            continue
        dtype = np.int32 if declared.type == "tensor(int32)" else np.int64
        feed[declared.name] = np.ascontiguousarray(inputs[declared.name], dtype=dtype)
    if missing:
        raise ValueError(f"ONNX model needs input(s) {missing} that the tokenizer did not produce")
    return feed


def time_onnx_session(
    session: Any, inputs: Mapping[str, np.ndarray], *, warmup: int, runs: int
) -> LatencyStats:
    """Latency of ``session.run`` (threads are whatever the session was built with)."""
    feed = onnx_feed(session, inputs)
    stats = measure(lambda: session.run(None, feed), warmup=warmup, runs=runs)
    threads = session.get_session_options().intra_op_num_threads or None
    return stats.with_setup(threads=threads, **_shape(inputs))


def time_onnx_model(
    model_path: Path | str,
    inputs: Mapping[str, np.ndarray],
    *,
    threads: int,
    warmup: int,
    runs: int,
) -> LatencyStats:
    """Build a pinned session for ``model_path`` and time it."""
    session = ort_session(model_path, threads)
    try:
        return time_onnx_session(session, inputs, warmup=warmup, runs=runs)
    finally:
        del session


def _shape(inputs: Mapping[str, np.ndarray]) -> dict[str, int]:
    first = inputs.get("input_ids")
    if first is None:
        first = next(iter(inputs.values()), None)
    if first is None or np.ndim(first) < 2:
        return {}
    batch, length = np.shape(first)[:2]
    return {"batch_size": int(batch), "sequence_length": int(length)}


# --------------------------------------------------------------------------- hardware


def available_cores() -> int:
    """The logical cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def hardware_info() -> dict[str, Any]:
    """CPU model and core counts, to state next to any latency number."""
    import platform

    cpu = None
    physical: set[tuple[str, str]] = set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    physical_id = core_id = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("model name", "Hardware", "Processor", "cpu model") and value and cpu is None:
            cpu = value
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            core_id = value
        elif not line.strip():
            if physical_id is not None and core_id is not None:
                physical.add((physical_id, core_id))
            physical_id = core_id = None
    if physical_id is not None and core_id is not None:
        physical.add((physical_id, core_id))
    return {
        "cpu": cpu or platform.processor() or platform.machine() or "unknown",
        "logical_cores": os.cpu_count(),
        "physical_cores": len(physical) or None,
        "available_cores": available_cores(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}".strip(),
    }
