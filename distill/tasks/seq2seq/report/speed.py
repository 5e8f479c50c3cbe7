"""Speed in the seq2seq report: latency per source at batch 1 and at batch 32, and generated
tokens/s, of each model decoding real test sources the way the report scores them (the same
beam size and new-token budget, end to end: tokenization, generation, detokenization).

A timed call decodes a fixed set of sources: at batch 1, the first :data:`BATCH_1_SOURCES`
test sources one after another; at batch 32, one batch of the first 32 (the test sources
cycled when there are fewer). Latency per source is the call's median time over the
sources it decodes; tokens/s is the tokens of the call's outputs (each model's own
tokenizer, EOS not counted) over the call's median time. Every model and batch size is timed
in one interleaved run (:func:`distill.timing.latency.interleaved_latency`, the order
rotating round by round), the PyTorch threads pinned to ``report.latency_threads`` as the
ONNX sessions are. A call decodes whole outputs (seconds for a real teacher, not the
milliseconds of one forward pass), so the recipe's runs and warm-up are capped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distill.config import ReportConfig
from distill.report.document import threads_note
from distill.tasks.seq2seq.report.models import Decoder, DecodeSettings
from distill.timing.latency import interleaved_latency, torch_threads

# Sources one timed call decodes at each batch size (batch 1: one after another).
BATCH_SIZES = (1, 32)
BATCH_1_SOURCES = 4
MAX_RUNS = 10
MAX_WARMUP = 1
ROUNDS = 5
ROUND_WARMUP = 1


def speed_budget(
    config: ReportConfig, hardware: dict[str, Any], notes: list[str]
) -> tuple[int, int]:
    """Timed and warm-up calls per model and batch size (capped); what limits them is said
    in ``notes``."""
    if note := threads_note(config.latency_threads, hardware, "latencies are pessimistic."):
        notes.append(note)
    runs = max(1, min(config.latency_runs, MAX_RUNS))
    warmup = min(config.latency_warmup, MAX_WARMUP)
    if runs < config.latency_runs or warmup < config.latency_warmup:
        notes.append(
            f"Speed: {runs} timed calls after {warmup} warm-up call(s) per model and batch "
            f"size (report.latency_runs = {config.latency_runs} and latency_warmup = "
            f"{config.latency_warmup} capped at {MAX_RUNS} and {MAX_WARMUP}: each call "
            "decodes whole outputs)."
        )
    return runs, warmup


def timed_sources(sources: Sequence[str], batch_size: int) -> list[str]:
    """The sources one timed call decodes at ``batch_size``."""
    if not sources:
        raise ValueError("no test sources to time decoding with")
    if batch_size == 1:
        return list(sources[:BATCH_1_SOURCES])
    return [sources[i % len(sources)] for i in range(batch_size)]


def time_decoders(
    decoders: Sequence[Decoder],
    sources: Sequence[str],
    config: ReportConfig,
    runs: int,
    warmup: int,
) -> dict[str, dict[str, Any]]:
    """Each decoder's ``latency`` entry, by row key: ``batch_<b>_ms`` (median ms per source)
    and ``batch_<b>`` (the call's latency summary, its sources and output tokens, tokens/s)
    for each of :data:`BATCH_SIZES`; ``tokens_per_s`` at batch 1 and ``batch_32_tokens_per_s``."""
    inputs = {b: timed_sources(sources, b) for b in BATCH_SIZES}
    last: dict[tuple[str, int], list[str]] = {}
    calls = {}
    for decoder in decoders:
        for b, chosen in inputs.items():
            calls[f"{decoder.key}@{b}"] = _call(decoder, chosen, b, last)
    with torch_threads(config.latency_threads):
        stats = interleaved_latency(
            calls,
            runs=runs,
            warmup=warmup,
            rounds=min(ROUNDS, runs),
            round_warmup=ROUND_WARMUP,
            desc="report: timing decoding",
        )
    result = {}
    for decoder in decoders:
        entry: dict[str, Any] = {}
        for b, chosen in inputs.items():
            summary = stats[f"{decoder.key}@{b}"].with_setup(
                threads=config.latency_threads, batch_size=b
            )
            tokens = sum(decoder.count_tokens(text) for text in last[(decoder.key, b)])
            seconds = summary.p50_ms / 1e3
            entry[f"batch_{b}_ms"] = summary.p50_ms / len(chosen)
            entry[f"batch_{b}"] = {
                **summary.to_dict(),
                "sources": len(chosen),
                "output_tokens": tokens,
                "tokens_per_s": tokens / seconds if seconds > 0 else None,
            }
        entry["tokens_per_s"] = entry["batch_1"]["tokens_per_s"]
        entry[f"batch_{BATCH_SIZES[-1]}_tokens_per_s"] = entry[f"batch_{BATCH_SIZES[-1]}"][
            "tokens_per_s"
        ]
        result[decoder.key] = entry
    return result


def _call(
    decoder: Decoder, sources: list[str], batch_size: int, last: dict[tuple[str, int], list[str]]
) -> Any:
    """One timed call: ``sources`` decoded at ``batch_size`` (batch 1: one by one); the
    outputs kept in ``last`` for counting their tokens after the timing."""

    def call() -> None:
        if batch_size == 1:
            outputs = [decoder.decode([source], 1)[0] for source in sources]
        else:
            outputs = decoder.decode(sources, batch_size)
        last[(decoder.key, batch_size)] = outputs

    return call


def speed_setup(
    config: ReportConfig, settings: DecodeSettings, runs: int, warmup: int, timed: list[str]
) -> dict[str, Any]:
    """How speed was measured, for the report to state beside the numbers."""
    decoding = "greedy" if settings.num_beams == 1 else f"beam search ({settings.num_beams})"
    return {
        "threads": config.latency_threads,
        "batch_sizes": list(BATCH_SIZES),
        "runs": runs,
        "warmup": warmup,
        "rounds": min(ROUNDS, runs),
        "max_new_tokens": settings.max_new_tokens,
        "num_beams": settings.num_beams,
        "timed": timed,
        "inputs": (
            f"batch 1: the first {BATCH_1_SOURCES} test sources decoded one after another per "
            f"call; batch {BATCH_SIZES[-1]}: one batch of the first {BATCH_SIZES[-1]} test "
            f"sources (cycled when fewer); {decoding}, at most {settings.max_new_tokens} new "
            "tokens, stopping at EOS; end to end (tokenize, generate, detokenize); latency "
            "per source = median call time / sources per call; tokens/s = the call's output "
            "tokens (the model's tokenizer, EOS not counted) / median call time; models and "
            "batch sizes interleaved round by round"
        ),
        "torch": "torch.set_num_threads(threads); model.generate (KV cache)",
        "onnxruntime": (
            "the bundle runner (encoder graph once per source, decoder graph with a KV "
            "cache), intra_op_num_threads = threads"
        ),
    }
