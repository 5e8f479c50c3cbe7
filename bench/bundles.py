"""Deployed graphs of several classification bundles timed against each other, interleaved:
what a change of exporter, fusion or int8 settings does to the model a user gets.

    python bench/bundles.py NAME=BUNDLE [NAME=BUNDLE ...] [--texts FILE] [--length 64]
                            [--threads 2] [--runs 200]

Each bundle's ``model.onnx`` (and its tokenizer) is timed at batch 1 and batch 32, every
text padded to ``--length`` tokens, in the same process and interleaved rounds, so load from
elsewhere hits every bundle alike. Prints p50/p95 per cell, the size of each file and each
bundle's p50 as a ratio of the first one's. The texts are the lines of ``--texts`` (default:
a fixed set of short sentences).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout without installing distill
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.serving.session import onnx_session
from distill.timing import latency

DEFAULT_TEXTS = [
    "@united thanks for the quick rebooking, the crew was great",
    "worst flight ever, two hours on the tarmac and no water",
    "is the 6pm flight to Denver still on time?",
    "lost my bag again. third time this year",
]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", nargs="+", help="NAME=BUNDLE_FOLDER, the first is the baseline")
    parser.add_argument("--texts", type=Path, help="one text per line")
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=200)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoTokenizer

    args = _parse(argv)
    bundles = dict(item.split("=", 1) for item in args.bundles)
    texts = args.texts.read_text(encoding="utf-8").splitlines() if args.texts else DEFAULT_TEXTS
    rows: dict[str, dict[int, object]] = {name: {} for name in bundles}
    for batch in (1, 32):
        calls = {}
        for name, folder in bundles.items():
            tokenizer = AutoTokenizer.from_pretrained(folder)
            inputs = latency.fixed_length_batch(
                tokenizer, texts, batch_size=batch, max_length=args.length
            )
            session = onnx_session(Path(folder) / "model.onnx", args.threads)
            calls[name] = latency.onnx_call(session, inputs)
        runs = args.runs if batch == 1 else max(20, args.runs // 8)
        stats = latency.interleaved_latency(calls, runs=runs, warmup=5, desc=f"batch {batch}")
        for name in bundles:
            rows[name][batch] = stats[name]
    base = next(iter(bundles))
    print(f"batch 1 and 32, {args.length} tokens, {args.threads} threads, p50 / p95 ms")
    print("| bundle | MB | b1 p50 | b1 p95 | b32 p50 | b32 p95 | b1 vs first | b32 vs first |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for name, folder in bundles.items():
        size = (Path(folder) / "model.onnx").stat().st_size / 1e6
        one, many = rows[name][1], rows[name][32]
        ratio1 = one.p50_ms / rows[base][1].p50_ms  # type: ignore[attr-defined]
        ratio32 = many.p50_ms / rows[base][32].p50_ms  # type: ignore[attr-defined]
        print(
            f"| {name} | {size:.1f} | {one.p50_ms:.2f} | {one.p95_ms:.2f} | "  # type: ignore[attr-defined]
            f"{many.p50_ms:.1f} | {many.p95_ms:.1f} | {ratio1:.3f}x | {ratio32:.3f}x |"  # type: ignore[attr-defined]
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
