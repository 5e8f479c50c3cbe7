"""Static-embedding students against the peers a user would pick instead, over seeds.

    python bench/static.py [--seeds 13 14 15] [--recipe recipes/static-quickstart.toml]
                           [--workdir bench-runs/static] [--set KEY=VALUE ...]
                           [--json FILE] [--summarise-only]

Runs `distill run` once per seed on `recipes/static-quickstart.toml` (the quick start with
a static student as the variant `static`; its comments say how the settings were chosen;
`--set` changes keys), then, on the very same split and fine-tuned teacher of each seed:

* model2vec's own classifier (``StaticModelForClassification``, its defaults: one hidden
  layer of 512, early stopping on the validation split) on a table model2vec distils from
  the same fine-tuned teacher, trained on the hard labels: the peer a user would pick;
* the TF-IDF floor and the transformer student (the recipe's primary), from the run's report.

It prints test accuracy per model (mean and standard deviation over the seeds, then per
seed), the static bundle's bytes (the whole folder and its model.onnx), and the end-to-end
throughput the report measured in one interleaved run (tokenization included, as `distill
predict` serves the bundles) for the static and the transformer student at batch 1 and 32,
and checks the targets of issue #16:

* the deployed static student keeps >= 95% of the teacher's test accuracy (mean);
* its distilled model beats its no-KD twin by more than the seeds' standard deviation;
* it beats model2vec's hard-label classifier and the TF-IDF floor (means);
* end to end >= 30x the texts/s of the deployed transformer student at batch 1 and 32;
* the static bundle is <= 5 MB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import distillation as kd_bench  # the seed runner and per-seed rows of bench/distillation.py

from distill.tasks.classification.files import read_split

ROOT = Path(__file__).resolve().parents[1]
ACCURACY_SHARE = 0.95
SPEEDUP = 30.0
BUNDLE_BYTES = 5_000_000


def model2vec_peer(run_dir: Path, seed: int) -> float:
    """Test accuracy of model2vec's classifier on the hard labels of the run's split, kept
    beside the run (``model2vec_peer.json``, keyed by the teacher's weights) once computed."""
    from distill.pipeline.artifacts import sha256_file

    kept = run_dir / "model2vec_peer.json"
    weights = sha256_file(run_dir / "teacher" / "model" / "model.safetensors")
    if kept.is_file() and json.loads(kept.read_text())["teacher_sha256"] == weights:
        return float(json.loads(kept.read_text())["accuracy"])
    accuracy = _fit_model2vec_peer(run_dir, seed)
    kept.write_text(json.dumps({"teacher_sha256": weights, "accuracy": accuracy}))
    return accuracy


def _fit_model2vec_peer(run_dir: Path, seed: int) -> float:
    import os

    os.environ["TQDM_DISABLE"] = "1"  # model2vec's per-batch bars; the result is printed below
    from model2vec.distill import distill_from_model
    from model2vec.train import StaticModelForClassification
    from transformers import AutoModel, AutoTokenizer

    from distill.data.files import read_label_names
    from distill.tasks.classification.files import read_split

    teacher = run_dir / "teacher" / "model"
    static = distill_from_model(
        AutoModel.from_pretrained(teacher),
        AutoTokenizer.from_pretrained(teacher),
        pca_dims=256,
        quantize_to="float32",
        device="cpu",
    )
    names = read_label_names(run_dir / "data")
    splits = {s: read_split(run_dir / "data", s) for s in ("train", "validation", "test")}
    labels = {s: [names[i] for i in split.labels] for s, split in splits.items()}
    classifier = StaticModelForClassification.from_static_model(model=static)
    classifier.fit(
        splits["train"].texts,
        labels["train"],
        X_val=splits["validation"].texts,
        y_val=labels["validation"],
        random_seed=seed,
        device="cpu",
    )
    predicted = classifier.predict(splits["test"].texts)
    return statistics.fmean(p == y for p, y in zip(predicted, labels["test"], strict=True))


def same_predictions(bundle: Path, texts: list[str]) -> dict[str, Any]:
    """The bundle's logits through the word cache and through the reference tokenizer."""
    import numpy as np

    from distill.tasks.classification.runner import load_bundle

    fast = load_bundle(bundle, fast_tokenization=True)
    reference = load_bundle(bundle, fast_tokenization=False)
    a, b = fast.logits(texts), reference.logits(texts)
    return {
        "texts": len(texts),
        "tokenization": fast.tokenization,
        "identical_logits": bool(np.array_equal(a, b)),
        "same_labels": int((a.argmax(-1) == b.argmax(-1)).sum()),
    }


def seed_row(report: dict[str, Any], workdir: Path, seed: int, peer: float) -> dict[str, Any]:
    """What this bench adds to the shared per-seed row: the peer, sizes, throughput."""
    name = kd_bench.run_name(seed)
    bundle = workdir / "export" / f"{name}.static"
    throughput = report["throughput"]["bundles"]
    return {
        **kd_bench.per_seed(report, seed, workdir),
        "model2vec_classifier": peer,
        "static_bundle_bytes": sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()),
        "static_model_bytes": (bundle / "model.onnx").stat().st_size,
        "fast_tokenization_check": same_predictions(
            bundle, read_split(workdir / "runs" / name / "data", "test").texts
        ),
        "throughput": {
            batch: {
                "static_texts_per_s": throughput["static"][batch]["texts_per_s"],
                "transformer_texts_per_s": throughput["main"][batch]["texts_per_s"],
                "speedup": throughput["static"][batch]["texts_per_s"]
                / throughput["main"][batch]["texts_per_s"],
                "static_tokenization_us": throughput["static"][batch]["tokenization_us_per_text"],
                "static_model_us": throughput["static"][batch]["model_us_per_text"],
                "transformer_tokenization_us": throughput["main"][batch][
                    "tokenization_us_per_text"
                ],
                "transformer_model_us": throughput["main"][batch]["model_us_per_text"],
            }
            for batch in ("b1", "b32")
        },
    }


def _stat(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:6.2f} +- {100 * std:4.2f}"


def print_tables(rows: list[dict[str, Any]]) -> None:
    def column(get: Any) -> list[float]:
        return [get(r) for r in rows]

    print(f"\n{len(rows)} seeds: test accuracy (%), mean +- std")
    lines = {
        "teacher": column(lambda r: r["teacher"]),
        "transformer student, deployed": column(lambda r: r["students"]["main"]["deployed"]),
        "static, distilled": column(lambda r: r["students"]["static"]["distilled"]),
        "static, deployed (int8 table)": column(lambda r: r["students"]["static"]["deployed"]),
        "static, no-KD twin": column(lambda r: r["students"]["static"]["no_kd"]),
        "model2vec classifier (hard labels)": column(lambda r: r["model2vec_classifier"]),
        "TF-IDF + logistic regression": column(lambda r: r["tfidf"]),
    }
    for label, values in lines.items():
        print(
            f"  {label:<38} {_stat(values)}   per seed: "
            + " ".join(f"{100 * v:.2f}" for v in values)
        )
    for batch in ("b1", "b32"):
        t = [r["throughput"][batch] for r in rows]
        print(
            f"  throughput {batch}: static "
            + " / ".join(f"{x['static_texts_per_s']:,.0f}" for x in t)
            + " texts/s (tok "
            + " / ".join(f"{x['static_tokenization_us']:.1f}" for x in t)
            + " us, model "
            + " / ".join(f"{x['static_model_us']:.1f}" for x in t)
            + "); transformer "
            + " / ".join(f"{x['transformer_texts_per_s']:,.0f}" for x in t)
            + " texts/s; speed-up "
            + " / ".join(f"{x['speedup']:.1f}x" for x in t)
        )
    print(
        "  static bundle: "
        + " / ".join(f"{r['static_bundle_bytes'] / 1e6:.2f} MB" for r in rows)
        + " (model.onnx "
        + " / ".join(f"{r['static_model_bytes'] / 1e6:.2f} MB" for r in rows)
        + ")"
    )


def check_targets(rows: list[dict[str, Any]]) -> list[str]:
    def mean(get: Any) -> float:
        return statistics.fmean(get(r) for r in rows)

    teacher = mean(lambda r: r["teacher"])
    deployed = mean(lambda r: r["students"]["static"]["deployed"])
    distilled = [r["students"]["static"]["distilled"] for r in rows]
    no_kd = [r["students"]["static"]["no_kd"] for r in rows]
    spread = max(statistics.stdev(distilled), statistics.stdev(no_kd)) if len(rows) > 1 else 0.0
    gain = statistics.fmean(distilled) - statistics.fmean(no_kd)
    checks = [
        (
            deployed / teacher >= ACCURACY_SHARE,
            f"deployed static keeps {deployed / teacher:.1%} of the teacher (>= {ACCURACY_SHARE:.0%})",
        ),
        (gain > spread, f"KD gain {100 * gain:+.2f} points vs seeds' std {100 * spread:.2f}"),
        (
            deployed > mean(lambda r: r["model2vec_classifier"]),
            f"beats model2vec's classifier: {100 * deployed:.2f} vs "
            f"{100 * mean(lambda r: r['model2vec_classifier']):.2f}",
        ),
        (
            deployed > mean(lambda r: r["tfidf"]),
            f"beats TF-IDF: {100 * deployed:.2f} vs {100 * mean(lambda r: r['tfidf']):.2f}",
        ),
    ]
    for batch in ("b1", "b32"):
        slowest = min(r["throughput"][batch]["speedup"] for r in rows)
        checks.append(
            (
                slowest >= SPEEDUP,
                f"end to end {batch}: >= {slowest:.1f}x the transformer student (>= {SPEEDUP:.0f}x)",
            )
        )
    checks += [
        (
            check["identical_logits"],
            f"seed {r['seed']}: word-cache tokenization gives the reference tokenizer's logits "
            f"on all {check['texts']} test texts ({check['same_labels']} same labels)",
        )
        for r in rows
        if (check := r.get("fast_tokenization_check"))
    ]
    largest = max(r["static_bundle_bytes"] for r in rows)
    checks.append((largest <= BUNDLE_BYTES, f"static bundle {largest / 1e6:.2f} MB (<= 5 MB)"))
    return [f"  {'met   ' if ok else 'MISSED'} {line}" for ok, line in checks]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "static-quickstart.toml")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench-runs" / "static")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", type=Path, help="write the per-seed rows here")
    parser.add_argument("--summarise-only", action="store_true")
    parser.add_argument(
        "--remeasure",
        action="store_true",
        help="rerun each seed's export and report stages (bundles and timings anew)",
    )
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    rows = []
    for seed in args.seeds:
        path = workdir / "reports" / kd_bench.run_name(seed) / "report.json"
        if args.remeasure:
            path = kd_bench.run_seed(
                args.recipe, seed, workdir, args.overrides, extra=["--from", "export"]
            )
        elif not args.summarise_only:
            path = kd_bench.run_seed(args.recipe, seed, workdir, args.overrides)
        report = json.loads(path.read_text(encoding="utf-8"))
        peer = model2vec_peer(workdir / "runs" / kd_bench.run_name(seed), seed)
        rows.append(seed_row(report, workdir, seed, peer))
    print_tables(rows)
    print("\nTargets (issue #16):")
    print("\n".join(check_targets(rows)))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
