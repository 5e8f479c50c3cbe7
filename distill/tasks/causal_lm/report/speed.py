"""Generation speed in the causal-LM report: greedy decoding of ``max_new_tokens`` tokens at
batch 1 with a pinned thread count, EOS ignored so every model generates the same number of
tokens, the models interleaved run by run; the runs capped (each generates a whole
continuation) and how it was measured, stated beside the numbers."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from distill.config import ReportConfig
from distill.pipeline.progress import track
from distill.report.document import threads_note
from distill.tasks.causal_lm.report.samples import MAX_PROMPT_WORDS
from distill.timing.latency import summarize

# Prompts for the speed runs: a few, cycled run by run, so no single prompt decides.
SPEED_PROMPTS = 3
# A run generates max_new_tokens tokens (seconds for a real teacher, not milliseconds as a
# classification forward pass), so the recipe's latency_runs / latency_warmup are capped.
MAX_SPEED_RUNS = 20
MAX_SPEED_WARMUP = 2


def tokens_per_s(row: dict[str, Any]) -> float | None:
    """A report row's generation speed (median tokens/s), when it was timed."""
    return (row.get("speed") or {}).get("tokens_per_s")


def speed_budget(
    config: ReportConfig, hardware: dict[str, Any], notes: list[str]
) -> tuple[int, int]:
    """Timed and warm-up generation runs per model (capped: each generates max_new_tokens);
    what limits them is said in ``notes``."""
    if note := threads_note(config.latency_threads, hardware, "tokens/s are pessimistic."):
        notes.append(note)
    runs = min(config.latency_runs, MAX_SPEED_RUNS)
    warmup = min(config.latency_warmup, MAX_SPEED_WARMUP)
    if runs < config.latency_runs or warmup < config.latency_warmup:
        notes.append(
            f"Generation speed: {runs} timed runs after {warmup} warm-up runs per model "
            f"(latency_runs = {config.latency_runs}, latency_warmup = {config.latency_warmup} "
            f"capped at {MAX_SPEED_RUNS} and {MAX_SPEED_WARMUP}: each run generates "
            f"{config.max_new_tokens} tokens)."
        )
    return runs, warmup


def speed_setup(
    threads: int, n_new: int, runs: int, warmup: int, speed_ids: list[list[int]]
) -> dict[str, Any]:
    """How generation speed was measured, for the report to state beside the numbers."""
    return {
        "threads": threads,
        "batch_size": 1,
        "max_new_tokens": n_new,
        "runs": runs,
        "warmup": warmup,
        "prompts": len(speed_ids),
        "prompt_tokens": [len(ids) for ids in speed_ids],
        "inputs": (
            f"the first {len(speed_ids)} test prompt(s) (first half of the text, at most "
            f"{MAX_PROMPT_WORDS} words), cycled run by run; greedy, KV cache, batch 1, "
            f"EOS ignored so that every run generates {n_new} tokens; tokens/s = new "
            "tokens / wall time of the generate call (prompt included), median of the runs; "
            "the models are interleaved run by run"
        ),
        "torch": (
            "torch.set_num_threads(threads); model.generate(do_sample=False, use_cache=True, "
            "min_new_tokens = max_new_tokens)"
        ),
        "onnxruntime": (
            "distill.tasks.causal_lm.generate (onnxruntime, numpy; intra_op_num_threads = threads, "
            "inter_op_num_threads = 1), eos_token_ids = ()"
        ),
    }


def time_generation(
    callers: dict[str, Callable[[list[int]], int]],
    prompts: Sequence[list[int]],
    *,
    runs: int,
    warmup: int,
) -> dict[str, dict[str, Any]]:
    """Tokens/s of each caller (``ids -> new tokens generated``), interleaved: run ``r`` feeds
    prompt ``r mod len(prompts)`` to every model, the order rotated each run so that no model
    always goes first (or always follows the same neighbour)."""
    if not prompts:
        raise ValueError("no prompts to time generation with")
    keys = list(callers)
    for i in range(warmup):
        for key in keys:
            callers[key](prompts[i % len(prompts)])
    seconds: dict[str, list[float]] = {key: [] for key in keys}
    tokens: dict[str, list[int]] = {key: [] for key in keys}
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()  # a collection of someone else's garbage must not land in one run
    try:
        for r in track(range(runs), desc="report: timing generation", unit="run"):
            ids = prompts[r % len(prompts)]
            shift = r % len(keys)
            for key in keys[shift:] + keys[:shift]:
                start = time.perf_counter_ns()
                count = callers[key](ids)
                seconds[key].append((time.perf_counter_ns() - start) / 1e9)
                tokens[key].append(count)
    finally:
        if was_enabled:
            gc.enable()
    result = {}
    for key in keys:
        rates = [n / s for n, s in zip(tokens[key], seconds[key], strict=True)]
        per_token_ms = [1e3 * s / max(n, 1) for n, s in zip(tokens[key], seconds[key], strict=True)]
        result[key] = {
            "tokens_per_s": float(np.median(rates)),
            "tokens_per_s_min": float(min(rates)),
            "tokens_per_s_max": float(max(rates)),
            "ms_per_token": summarize(per_token_ms, warmup=warmup).to_dict(),
            "new_tokens_per_run": int(np.median(tokens[key])),
            "runs": runs,
        }
    return result
