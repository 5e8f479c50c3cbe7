"""CPU latency measurement, the one timing module: warm-up excluded, pinned thread counts,
percentiles, several models timed against each other interleaved.

Used by the reports (:class:`TimingPlan`), the export stages, ``distill bench`` and the
scripts under ``bench/``. Task-neutral: a model is timed on a batch of named arrays that
its task builds from its own test data (a :data:`BatchBuilder`); :func:`text_batch` is the
builder for tasks that read one text. Timings cover the model call only: inputs are built
once, up front, at a fixed shape, so the numbers compare models rather than tokenizers.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from distill.pipeline.progress import track
from distill.serving.session import onnx_session

# Rounds an interleaved timing spreads its runs over (fewer when there are fewer runs).
DEFAULT_ROUNDS = 10
# Untimed sleep between two models' blocks (see interleaved_latency).
PAUSE_S = 0.02
# Untimed calls at the start of each model's block in every round: the first calls after
# another model ran refill the caches and wake the thread pool (measured on the quick
# start at batch 1: int8 student 1.26 / 0.85 ms for calls 1 / 2 of a block vs 0.72 ms
# from the third; PyTorch teacher 32 / 23 vs 14 ms), which a model serving alone never pays.
ROUND_WARMUP = 2

log = logging.getLogger("distill")

# A model's timing inputs, built through its own preprocessor (a tokenizer, say) from the
# task's test data: every model then sees the same examples at the same shape.
BatchBuilder = Callable[[Any], Mapping[str, np.ndarray]]


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


def interleaved_latency(
    calls: Mapping[str, Callable[[], Any]],
    *,
    runs: int,
    warmup: int,
    rounds: int = DEFAULT_ROUNDS,
    pause_s: float = PAUSE_S,
    round_warmup: int = ROUND_WARMUP,
    desc: str = "timing",
) -> dict[str, LatencyStats]:
    """Time several callables against each other, interleaved.

    Each callable is first called ``warmup`` times (untimed), then gets ``runs`` timed calls
    spread over ``rounds`` rounds; within a round every callable runs its share back to
    back, and the order of the callables rotates from round to round, so a burst of load
    from elsewhere hits them all. Between two callables the thread sleeps ``pause_s``
    (untimed) so that the previous runtime's spinning worker threads (OpenMP,
    onnxruntime's pool) are parked before the next one is timed, then calls it
    ``round_warmup`` times untimed, so that what is timed is the model in steady state, not
    the cost of switching models (:data:`ROUND_WARMUP`). The garbage collector is
    run before each round and paused during it. Percentiles come from :func:`summarize`
    over all the samples. Progress (``desc``) counts rounds, between which nothing is timed.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1 (got {runs})")
    if warmup < 0 or round_warmup < 0:
        raise ValueError(f"warmup and round_warmup must be >= 0 (got {warmup}, {round_warmup})")
    keys = list(calls)
    rounds = max(1, min(rounds, runs))
    shares = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
    for key in keys:
        for _ in range(warmup):
            calls[key]()
    if rounds and pause_s > 0:
        time.sleep(pause_s)
    samples: dict[str, list[float]] = {key: [] for key in keys}
    was_enabled = gc.isenabled()
    try:
        for r, share in track(enumerate(shares), len(shares), desc, unit="round"):
            gc.collect()
            gc.disable()
            shift = r % len(keys) if keys else 0
            for key in keys[shift:] + keys[:shift]:
                fn = calls[key]
                bucket = samples[key]
                if pause_s > 0:
                    time.sleep(pause_s)
                for _ in range(round_warmup):
                    fn()
                for _ in range(share):
                    start = time.perf_counter_ns()
                    fn()
                    bucket.append((time.perf_counter_ns() - start) / 1e6)
    finally:
        if was_enabled:
            gc.enable()
    return {key: summarize(values, warmup=warmup) for key, values in samples.items()}


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


def text_batch(texts: Sequence[str], *, batch_size: int, max_length: int) -> BatchBuilder:
    """The :data:`BatchBuilder` of a task that reads one text: :func:`fixed_length_batch`
    of ``texts`` through each model's own tokenizer."""
    return lambda tokenizer: fixed_length_batch(
        tokenizer, texts, batch_size=batch_size, max_length=max_length
    )


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


def onnx_call(session: Any, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
    """``session.run`` on the inputs the session declares (:func:`onnx_feed`)."""
    feed = onnx_feed(session, inputs)
    return lambda: session.run(None, feed)


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
    session = onnx_session(model_path, threads)
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


# --------------------------------------------------------------------------- a report's plan


class TimingSettings(Protocol):
    """How a plan times (a report's ``[report]`` table has these keys)."""

    latency_batch_size: int
    latency_threads: int
    latency_runs: int
    latency_warmup: int


class TimingPlan:
    """Models registered one by one (a PyTorch module or an ONNX file), then timed together.

    Rows of a report register their model while they are built; :meth:`run` then times them
    all with :func:`interleaved_latency` (round by round, the order rotating), so a burst of
    load from elsewhere lands on every row alike and the ratios between rows (deployed vs
    teacher, vs teacher int8) compare like with like. Each model gets its inputs from
    ``batch`` through its own preprocessor, at the same shape.
    """

    def __init__(
        self,
        settings: TimingSettings,
        batch: BatchBuilder,
        sequence_length: int | None = None,
        *,
        desc: str = "report: timing",
    ) -> None:
        self.settings = settings
        self.batch = batch
        self.sequence_length = sequence_length
        self.desc = desc
        self.calls: dict[str, Callable[[], Any]] = {}

    @classmethod
    def for_texts(
        cls, settings: TimingSettings, texts: Sequence[str], max_length: int
    ) -> TimingPlan:
        """A plan timing ``texts`` padded to ``max_length`` (:func:`text_batch`)."""
        batch = text_batch(texts, batch_size=settings.latency_batch_size, max_length=max_length)
        return cls(settings, batch, max_length)

    def add_torch(self, key: str, model: Any, preprocessor: Any) -> None:
        """Time ``model`` (kept alive by the plan until it has run)."""
        self.calls[key] = torch_call(model, self.batch(preprocessor))

    def add_onnx(self, key: str, path: Path, preprocessor: Any) -> None:
        """Time a pinned onnxruntime session of ``path``."""
        session = onnx_session(path, self.settings.latency_threads)
        self.calls[key] = onnx_call(session, self.batch(preprocessor))

    @property
    def rounds(self) -> int:
        return max(1, min(DEFAULT_ROUNDS, self.settings.latency_runs))

    def run(self) -> dict[str, dict[str, Any]]:
        """Every registered model timed, interleaved; latency dicts keyed like the calls."""
        if not self.calls:
            return {}
        log.info("%s %s, interleaved", self.desc, ", ".join(self.calls))
        settings = self.settings
        with torch_threads(settings.latency_threads):
            stats = interleaved_latency(
                self.calls,
                runs=settings.latency_runs,
                warmup=settings.latency_warmup,
                rounds=self.rounds,
                desc=self.desc,
            )
        self.calls.clear()  # releases the models and sessions
        return {
            key: s.with_setup(
                threads=settings.latency_threads,
                batch_size=settings.latency_batch_size,
                sequence_length=self.sequence_length,
            ).to_dict()
            for key, s in stats.items()
        }


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
