"""End-to-end throughput of deployed bundles, tokenization included, the way ``distill
predict`` serves them (the bundle runner: its tokenizer, then its onnxruntime session).

For a static student the model is a table lookup, so tokenization is most of the cost;
the report therefore shows tokenization and model time per text separately, at batch 1
and at a larger batch, for every student's bundle in one interleaved run (rounds, the
order rotating, so a burst of load from elsewhere hits every bundle alike). The runner's
word cache starts from the bundle's ``words.txt`` (the training split's words) and
is warmed on the validation texts, then the test texts are timed: words the test split
adds are cache misses, as new traffic would be.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distill.tasks.classification.report.inputs import ReportInputs

BATCH_SIZES = (1, 32)
ROUNDS = 7
TEXTS_PER_ROUND = 64  # per bundle and batch size; a multiple of the largest batch


def _time_batches(predictor: Any, texts: Sequence[str], batch_size: int) -> tuple[float, float]:
    """Seconds spent tokenizing and in the model, over ``texts`` in batches."""
    tokenizing = modelling = 0.0
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        began = time.perf_counter()
        feeds = predictor.encode(chunk)
        encoded = time.perf_counter()
        predictor.session.run(None, feeds)
        tokenizing += encoded - began
        modelling += time.perf_counter() - encoded
    return tokenizing, modelling


def measure_throughput(
    bundles: dict[str, Path],
    texts: Sequence[str],
    warm_texts: Sequence[str],
    *,
    threads: int,
    rounds: int = ROUNDS,
) -> dict[str, Any]:
    """Per bundle and batch size: texts/s end to end, tokenization and model microseconds
    per text (medians over the rounds)."""
    from distill.errors import ArtifactError
    from distill.tasks.classification.runner import load_bundle

    predictors, unreadable = {}, {}
    for name, path in bundles.items():
        try:
            # As `distill predict` serves it: the bundle's measured thread hint, if it has
            # one (a static student runs fastest on one thread), else the report's threads.
            predictors[name] = load_bundle(path, default_threads=threads)
        except ArtifactError as exc:  # the report still renders, and says why
            unreadable[name] = str(exc)
    if not predictors:
        return {"bundles": {}, "skipped": unreadable}
    for predictor in predictors.values():
        predictor.logits(list(warm_texts))  # warm-up: sessions, allocations, word cache
    samples: dict[tuple[str, int], list[tuple[float, float]]] = {}
    names = list(predictors)
    for round_index in range(rounds):
        start = (round_index * TEXTS_PER_ROUND) % max(1, len(texts) - TEXTS_PER_ROUND + 1)
        chunk = list(texts[start : start + TEXTS_PER_ROUND])
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            for batch_size in BATCH_SIZES:
                samples.setdefault((name, batch_size), []).append(
                    _time_batches(predictors[name], chunk, batch_size)
                )
    per_text = len(chunk)
    results: dict[str, Any] = {}
    for (name, batch_size), timings in samples.items():
        tokenizing = statistics.median(t for t, _ in timings) / per_text * 1e6
        modelling = statistics.median(m for _, m in timings) / per_text * 1e6
        total = statistics.median(t + m for t, m in timings) / per_text * 1e6
        results.setdefault(name, {})[f"b{batch_size}"] = {
            "batch_size": batch_size,
            "texts_per_s": 1e6 / total if total else None,
            "tokenization_us_per_text": tokenizing,
            "model_us_per_text": modelling,
            "total_us_per_text": total,
            "tokenization": predictors[name].tokenization,
            "threads": predictors[name].threads,
        }
    return {
        "bundles": results,
        "skipped": unreadable,
        "setup": {
            "threads": f"each bundle's serving hint (manifest serving.threads), else {threads}",
            "batch_sizes": list(BATCH_SIZES),
            "rounds": rounds,
            "texts_per_round": per_text,
            "texts": "test split (the runner's word cache prefilled from the bundle's "
            "words.txt and warmed on the validation split; unseen test words are misses)",
            "what": "BundlePredictor.encode (the runner's tokenization) + session.run",
        },
    }


def student_throughput(inputs: ReportInputs, variants: list[str], threads: int) -> dict[str, Any]:
    """End-to-end texts/s of every student's bundle (the primary's and each variant's),
    timed on the test texts after a warm-up on (at most 512) validation texts."""
    export_dir, test = inputs.export_dir, inputs.test
    bundles = {"main": export_dir / "bundle"}
    bundles.update({name: export_dir / "variants" / name / "bundle" for name in variants})
    warm_texts = (inputs.splits["validation"].texts or test.texts)[:512]
    return measure_throughput(bundles, test.texts, warm_texts, threads=threads)
