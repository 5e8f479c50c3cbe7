"""NER quick start over several seeds: teacher, distilled student, no-KD twin, deployed int8,
memorization floor (test entity micro-F1), size and speed against the PyTorch teacher,
stage wall times, and issue #15's targets checked.

    python bench/ner.py                      # seeds 13 14 15, recipes/ner-quickstart.toml
    python bench/ner.py --summarise-only     # re-read the reports of an earlier run
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distillation import STAGES, run_name, seed_stats, seeded_bench, target_line

F1_SHARE = 0.95  # deployed student vs teacher entity micro-F1, mean over the seeds
SPEEDUP = 10.0  # vs the PyTorch teacher at batch 1
SIZE_SHARE = 1 / 8
MODELS = ("teacher", "student", "student_no_kd", "deployed", "teacher_onnx_int8", "memorization")


def per_seed(
    report: dict[str, Any],
    seed: int,
    workdir: Path,
    score: str = "entity_f1",
    models: tuple[str, ...] = MODELS,
) -> dict[str, Any]:
    """One seed's scores (the rows' ``score``), deployed size and speed ratios, stage times."""
    rows = {row["key"]: row for row in report["rows"]}
    manifests = workdir / "runs" / run_name(seed)
    walls = {
        stage: json.loads((manifests / stage / "manifest.json").read_text()).get("wall_time_s")
        for stage in STAGES
    }
    return {
        "seed": seed,
        "f1": {key: rows[key][score] for key in models if key in rows},
        "size_ratio": rows["deployed"].get("size_ratio"),
        "speedup": rows["deployed"].get("speedup"),
        "wall_time_s": walls,
    }


def summarise(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    f1 = {
        key: seed_stats([s["f1"][key] for s in seeds if key in s["f1"]])
        for key in MODELS
        if all(key in s["f1"] for s in seeds)
    }
    kept = seed_stats([s["f1"]["deployed"] / s["f1"]["teacher"] for s in seeds])
    gains = seed_stats([s["f1"]["student"] - s["f1"]["student_no_kd"] for s in seeds])
    summary = {"seeds": seeds, "f1": f1, "kept": kept, "kd_gain": gains}
    summary["pipeline_s"] = seed_stats(
        [sum(v or 0 for v in s["wall_time_s"].values()) for s in seeds]
    )
    summary["checks"] = [
        target_line(
            "teacher above the memorization floor",
            f1["teacher"]["mean"] > f1["memorization"]["mean"],
        ),
        target_line(
            f"deployed keeps >= {F1_SHARE:.0%} of the teacher's F1 (mean {kept['mean']:.1%})",
            kept["mean"] >= F1_SHARE,
        ),
        target_line(
            f"distilled beats no-KD by more than the seeds' std (gain {gains['mean'] * 100:+.2f}, "
            f"std {f1['student_no_kd']['std'] * 100:.2f})",
            gains["mean"] > max(f1["student_no_kd"]["std"], f1["student"]["std"]),
        ),
        target_line(
            f"size <= 1/8 of the teacher ({seeds[0]['size_ratio']:.3f})",
            seeds[0]["size_ratio"] <= SIZE_SHARE,
        ),
        target_line(
            f">= {SPEEDUP:.0f}x faster than the PyTorch teacher (seed {seeds[0]['seed']}: {seeds[0]['speedup']:.1f}x)",
            seeds[0]["speedup"] >= SPEEDUP,
        ),
    ]
    return summary


def table(summary: dict[str, Any]) -> str:
    lines = [
        "| model | "
        + " | ".join(f"seed {s['seed']}" for s in summary["seeds"])
        + " | mean ± std |",
        "|---|" + "--:|" * (len(summary["seeds"]) + 1),
    ]
    for key, stats in summary["f1"].items():
        cells = " | ".join(f"{100 * s['f1'][key]:.2f}" for s in summary["seeds"])
        lines.append(f"| {key} | {cells} | {100 * stats['mean']:.2f} ± {100 * stats['std']:.2f} |")
    lines.append("")
    for s in summary["seeds"]:
        walls = ", ".join(f"{k} {v:.0f}" for k, v in s["wall_time_s"].items() if v is not None)
        lines.append(
            f"seed {s['seed']}: stages (s) {walls}; size {s['size_ratio']:.3f}; {s['speedup']:.1f}x the PyTorch teacher"
        )
    return "\n".join([*lines, "", *summary["checks"]])


def main(argv: list[str] | None = None) -> int:
    return seeded_bench(
        argv,
        __doc__.split("\n\n")[0],
        "ner-quickstart.toml",
        "ner",
        per_seed,
        summarise,
        table,
    )


if __name__ == "__main__":
    raise SystemExit(main())
