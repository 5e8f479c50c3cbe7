"""Seq2seq quick start over several seeds: teacher, distilled student, no-KD and
sequence-level twins, deployed int8 and teacher int8 (test BLEU and chrF), size and speed
against the PyTorch teacher, stage wall times, and issue #29's targets checked.

    python bench/seq2seq.py                  # seeds 13 14 15, recipes/seq2seq-quickstart.toml
    python bench/seq2seq.py --summarise-only # re-read the reports of an earlier run
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distillation import STAGES, run_name, seed_stats, seeded_bench, target_line

BLEU_SHARE = 0.90  # deployed student vs teacher BLEU, mean over the seeds
SPEEDUP = 2.0  # vs the PyTorch teacher per source at batch 1
MODELS = (
    "teacher",
    "student",
    "student_no_kd",
    "student_sequence",
    "deployed",
    "teacher_onnx_int8",
)


def per_seed(report: dict[str, Any], seed: int, workdir: Path) -> dict[str, Any]:
    """One seed's BLEU and chrF per model, deployed size and speed ratios, stage times."""
    rows = {row["key"]: row for row in report["rows"]}
    manifests = workdir / "runs" / run_name(seed)
    walls = {
        stage: json.loads((manifests / stage / "manifest.json").read_text()).get("wall_time_s")
        for stage in STAGES
        if (manifests / stage / "manifest.json").is_file()
    }
    return {
        "seed": seed,
        "bleu": {key: rows[key]["scores"]["bleu"] for key in MODELS if key in rows},
        "chrf": {key: rows[key]["scores"]["chrf"] for key in MODELS if key in rows},
        "size_ratio": rows["deployed"].get("size_ratio"),
        "speedup": rows["deployed"].get("speedup"),
        "kd_p": (report.get("distillation", {}).get("kd") or {}).get("p_value"),
        "wall_time_s": walls,
    }


def summarise(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    bleu = {
        key: seed_stats([s["bleu"][key] for s in seeds])
        for key in MODELS
        if all(key in s["bleu"] for s in seeds)
    }
    kept = seed_stats([s["bleu"]["deployed"] / s["bleu"]["teacher"] for s in seeds])
    gains = seed_stats([s["bleu"]["student"] - s["bleu"]["student_no_kd"] for s in seeds])
    speedups = seed_stats([s["speedup"] for s in seeds])
    spread = max(bleu["student_no_kd"]["std"], bleu["student"]["std"])
    summary = {"seeds": seeds, "bleu": bleu, "kept": kept, "kd_gain": gains, "speedup": speedups}
    summary["checks"] = [
        target_line(
            f"deployed keeps >= {BLEU_SHARE:.0%} of the teacher's BLEU (mean {kept['mean']:.1%}, "
            f"lowest {kept['min']:.1%})",
            kept["mean"] >= BLEU_SHARE,
        ),
        target_line(
            f"distilled beats no-KD by more than the seeds' std (gain {gains['mean']:+.2f} BLEU, "
            f"std {spread:.2f})",
            gains["mean"] > spread,
        ),
        target_line(
            f">= {SPEEDUP:.0f}x faster per source than the PyTorch teacher at batch 1 "
            f"(mean {speedups['mean']:.1f}x, lowest {speedups['min']:.1f}x)",
            speedups["min"] >= SPEEDUP,
        ),
    ]
    return summary


def table(summary: dict[str, Any]) -> str:
    seeds = summary["seeds"]
    lines = [
        "| model (test BLEU) | "
        + " | ".join(f"seed {s['seed']}" for s in seeds)
        + " | mean ± std |",
        "|---|" + "--:|" * (len(seeds) + 1),
    ]
    for key, stats in summary["bleu"].items():
        cells = " | ".join(f"{s['bleu'][key]:.2f}" for s in seeds)
        lines.append(f"| {key} | {cells} | {stats['mean']:.2f} ± {stats['std']:.2f} |")
    lines.append("")
    for s in seeds:
        walls = ", ".join(f"{k} {v:.0f}" for k, v in s["wall_time_s"].items() if v is not None)
        lines.append(
            f"seed {s['seed']}: stages (s) {walls}; teacher/deployed bytes {s['size_ratio']:.2f}; "
            f"{s['speedup']:.1f}x the PyTorch teacher; KD p = {s['kd_p']}"
        )
    return "\n".join([*lines, "", *summary["checks"]])


def main(argv: list[str] | None = None) -> int:
    return seeded_bench(
        argv,
        __doc__.split("\n\n")[0],
        "seq2seq-quickstart.toml",
        "seq2seq",
        per_seed,
        summarise,
        table,
    )


if __name__ == "__main__":
    raise SystemExit(main())
