"""The report's latency columns: every timed model registered, then timed in one run.

Rows register their model (a PyTorch module or an ONNX file) while they are built; the
plan then times them all together with :func:`distill.bench.interleaved_latency` (round by
round, the order rotating), so a burst of load from elsewhere lands on every row alike and
the ratios between rows (deployed vs teacher, vs teacher int8) compare like with like.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill import latency as lat
from distill.config import ReportConfig

log = logging.getLogger("distill")

# Rounds the timed runs are spread over (fewer when there are fewer runs).
ROUNDS = 10


class TimingPlan:
    """Models to time at the report's batch size, sequence length and thread count."""

    def __init__(self, config: ReportConfig, texts: list[str], max_length: int) -> None:
        self.config = config
        self.texts = texts
        self.max_length = max_length
        self.calls: dict[str, Callable[[], Any]] = {}

    def _batch(self, tokenizer: Any) -> dict[str, Any]:
        # Each model gets the same texts through its own tokenizer, at the same fixed shape.
        return lat.fixed_length_batch(
            tokenizer,
            self.texts,
            batch_size=self.config.latency_batch_size,
            max_length=self.max_length,
        )

    def add_torch(self, key: str, model: Any, tokenizer: Any) -> None:
        """Time ``model`` (kept alive by the plan until it has run)."""
        self.calls[key] = lat.torch_call(model, self._batch(tokenizer))

    def add_onnx(self, key: str, path: Path, tokenizer: Any) -> None:
        """Time a pinned onnxruntime session of ``path``."""
        from distill.bench import onnx_call

        session = lat.ort_session(path, self.config.latency_threads)
        self.calls[key] = onnx_call(session, self._batch(tokenizer))

    @property
    def rounds(self) -> int:
        return max(1, min(ROUNDS, self.config.latency_runs))

    def run(self) -> dict[str, dict[str, Any]]:
        """Every registered model timed, interleaved; latency dicts keyed like the calls."""
        from distill.bench import interleaved_latency

        if not self.calls:
            return {}
        log.info("report: timing %s, interleaved", ", ".join(self.calls))
        with lat.torch_threads(self.config.latency_threads):
            stats = interleaved_latency(
                self.calls,
                runs=self.config.latency_runs,
                warmup=self.config.latency_warmup,
                rounds=self.rounds,
                desc="report: timing",
            )
        self.calls.clear()  # releases the models and sessions
        return {
            key: s.with_setup(
                threads=self.config.latency_threads,
                batch_size=self.config.latency_batch_size,
                sequence_length=self.max_length,
            ).to_dict()
            for key, s in stats.items()
        }
