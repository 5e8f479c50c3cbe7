"""Causal-LM quick start over several seeds: teacher, distilled student, no-KD twin and the
deployed int8 student (test perplexity), the student's perplexity before training, tokens/s
against the PyTorch teacher and the teacher's own int8 ONNX, the sample continuations'
lengths, stage wall times, and issue #13's targets checked.

    python bench/generation.py                   # seeds 13 14 15, recipes/generation-quickstart.toml
    python bench/generation.py --summarise-only  # re-read the reports of an earlier run

Each seed is one `distill run` in its own run folder (`bench-seed<N>`) under `--workdir`, so
the spread includes the teacher's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distillation import ROOT, STAGES, run_name, seed_report, seed_stats, target_line

PERPLEXITY_RATIO = 1.5  # distilled student vs teacher (mean over the seeds), at most
LAYER_SHARE = 2 / 3  # student layers vs the teacher's, at most
INT8_DRIFT = 0.05  # int8 perplexity vs fp32, at most (every seed)
SPEEDUP_OVER_TEACHER_INT8 = 1.4  # deployed tokens/s vs the teacher's int8 ONNX, at least
MIN_CONTINUATION = 8  # tokens the deployed student generates for every sample prompt
PIPELINE_S = 15 * 60
MODELS = ("teacher", "student", "student_no_kd", "deployed")


def per_seed(report: dict[str, Any], seed: int, workdir: Path) -> dict[str, Any]:
    """What the bench keeps of one seed's report and stage manifests."""
    deployed_name = report["deployed"]
    rows = {row["key"]: row for row in report["rows"]}
    rows["deployed"] = rows[deployed_name]
    manifests = workdir / "runs" / run_name(seed)

    def manifest(stage: str) -> dict[str, Any]:
        return json.loads((manifests / stage / "manifest.json").read_text(encoding="utf-8"))

    student = manifest("student")["metrics"]
    before = (student.get("before_training") or {}).get("test") or {}
    lengths = [
        c["tokens"]
        for sample in report["samples"]
        for c in sample["continuations"]
        if c["key"] == deployed_name
    ]
    export = report["export"]
    return {
        "seed": seed,
        "perplexity": {key: rows[key]["perplexity"] for key in MODELS},
        "before_training": before.get("perplexity"),
        "layers": (rows["student"].get("architecture") or {}).get("layers"),
        "teacher_layers": (rows["teacher"].get("architecture") or {}).get("layers"),
        "int8_drift": export["int8_perplexity"] / export["fp32_perplexity"] - 1,
        "speedup": {ref: (v or {}).get("speedup") for ref, v in report["headline"].items()},
        "continuation_tokens": lengths,
        "wall_time_s": {stage: manifest(stage).get("wall_time_s") for stage in STAGES},
    }


def summarise(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    ppl = {key: seed_stats([s["perplexity"][key] for s in seeds]) for key in MODELS}
    ratio = seed_stats([s["perplexity"]["student"] / s["perplexity"]["teacher"] for s in seeds])
    # Lower perplexity is better: the gain is the no-KD twin's minus the distilled one's.
    gain = seed_stats(
        [s["perplexity"]["student_no_kd"] - s["perplexity"]["student"] for s in seeds]
    )
    pipeline = seed_stats([sum(v or 0 for v in s["wall_time_s"].values()) for s in seeds])
    vs_int8 = [s["speedup"].get("teacher_onnx_int8") for s in seeds]
    shortest = min(min(s["continuation_tokens"], default=0) for s in seeds)
    layers, teacher_layers = seeds[0]["layers"], seeds[0]["teacher_layers"]
    noise = max(ppl["student"]["std"], ppl["student_no_kd"]["std"])
    checks = [
        target_line(
            f"student keeps <= 2/3 of the teacher's layers ({layers} of {teacher_layers})",
            bool(layers and teacher_layers and layers <= LAYER_SHARE * teacher_layers),
        ),
        target_line(
            f"distilled perplexity <= {PERPLEXITY_RATIO}x the teacher's (mean {ratio['mean']:.2f}x)",
            ratio["mean"] <= PERPLEXITY_RATIO,
        ),
        target_line(
            f"distilled beats no-KD by more than the seeds' std (gain {gain['mean']:.1f}, "
            f"std {noise:.1f})",
            gain["mean"] > noise,
        ),
        target_line(
            f"every sample continuation of the deployed student >= {MIN_CONTINUATION} tokens "
            f"(shortest {shortest})",
            shortest >= MIN_CONTINUATION,
        ),
        target_line(
            f"int8 perplexity within {INT8_DRIFT:.0%} of fp32 (worst "
            f"{max(s['int8_drift'] for s in seeds):+.1%})",
            all(abs(s["int8_drift"]) <= INT8_DRIFT for s in seeds),
        ),
        target_line(
            f"deployed >= {SPEEDUP_OVER_TEACHER_INT8}x the tokens/s of the teacher's int8 ONNX "
            f"({', '.join('n/a' if v is None else f'{v:.2f}x' for v in vs_int8)})",
            all(v is not None and v >= SPEEDUP_OVER_TEACHER_INT8 for v in vs_int8),
        ),
        target_line(
            f"pipeline <= {PIPELINE_S // 60} min (mean {pipeline['mean'] / 60:.1f} min)",
            pipeline["mean"] <= PIPELINE_S,
        ),
    ]
    return {
        "seeds": seeds,
        "perplexity": ppl,
        "ratio_to_teacher": ratio,
        "kd_gain": gain,
        "pipeline_s": pipeline,
        "checks": checks,
    }


def table(summary: dict[str, Any]) -> str:
    seeds = summary["seeds"]
    lines = [
        "| test perplexity | " + " | ".join(f"seed {s['seed']}" for s in seeds) + " | mean ± std |",
        "|---|" + "--:|" * (len(seeds) + 1),
    ]
    for key, stats in summary["perplexity"].items():
        cells = " | ".join(f"{s['perplexity'][key]:.1f}" for s in seeds)
        lines.append(f"| {key} | {cells} | {stats['mean']:.1f} ± {stats['std']:.1f} |")
    before = " | ".join(
        "n/a" if s["before_training"] is None else f"{s['before_training']:.1f}" for s in seeds
    )
    gains = " | ".join(
        f"{s['perplexity']['student_no_kd'] - s['perplexity']['student']:.1f}" for s in seeds
    )
    gain = summary["kd_gain"]
    lines += [
        f"| student before training | {before} | |",
        # Paired by seed (the same test split): what the target's unpaired std leaves out.
        f"| no-KD minus distilled | {gains} | {gain['mean']:.1f} ± {gain['std']:.1f} |",
        "",
    ]
    for s in seeds:
        walls = ", ".join(f"{k} {v:.0f}" for k, v in s["wall_time_s"].items() if v is not None)
        speed = ", ".join(f"{v:.2f}x {ref}" for ref, v in s["speedup"].items() if v is not None)
        lines.append(
            f"seed {s['seed']}: stages (s) {walls}; int8 drift {s['int8_drift']:+.2%}; "
            f"speed {speed}; continuation tokens {s['continuation_tokens']}"
        )
    return "\n".join([*lines, "", *summary["checks"]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    parser.add_argument(
        "--recipe", type=Path, default=ROOT / "recipes" / "generation-quickstart.toml"
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench-runs" / "generation")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--summarise-only", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    seeds = [
        per_seed(
            seed_report(args.recipe, seed, workdir, args.overrides, args.summarise_only),
            seed,
            workdir,
        )
        for seed in args.seeds
    ]
    summary = summarise(seeds)
    print(table(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
