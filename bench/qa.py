"""Question-answering quick start over several seeds: teacher, distilled student, no-KD twin,
deployed int8 and teacher int8 (test SQuAD F1 and EM), size and speed against the PyTorch
teacher, stage wall times, and issue #30's targets checked.

    python bench/qa.py                       # seeds 13 14 15, recipes/qa-quickstart.toml
    python bench/qa.py --summarise-only      # re-read the reports of an earlier run
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distillation import seed_stats, seeded_bench, target_line
from ner import per_seed, table

F1_SHARE = 0.95  # deployed student vs teacher F1, mean over the seeds
SPEEDUP = 3.0  # vs the PyTorch teacher at batch 1
MODELS = ("teacher", "student", "student_no_kd", "deployed", "teacher_onnx_int8")


def summarise(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    f1 = {key: seed_stats([s["f1"][key] for s in seeds]) for key in MODELS}
    kept = seed_stats([s["f1"]["deployed"] / s["f1"]["teacher"] for s in seeds])
    gains = seed_stats([s["f1"]["student"] - s["f1"]["student_no_kd"] for s in seeds])
    speedups = seed_stats([s["speedup"] for s in seeds])
    summary = {"seeds": seeds, "f1": f1, "kept": kept, "kd_gain": gains, "speedup": speedups}
    summary["pipeline_s"] = seed_stats(
        [sum(v or 0 for v in s["wall_time_s"].values()) for s in seeds]
    )
    summary["checks"] = [
        target_line(
            f"deployed keeps >= {F1_SHARE:.0%} of the teacher's F1 (mean {kept['mean']:.1%}, "
            f"lowest {kept['min']:.1%})",
            kept["mean"] >= F1_SHARE,
        ),
        target_line(
            f"distilled beats no-KD by more than the seeds' std (gain {gains['mean'] * 100:+.2f}, "
            f"std {max(f1['student_no_kd']['std'], f1['student']['std']) * 100:.2f})",
            gains["mean"] > max(f1["student_no_kd"]["std"], f1["student"]["std"]),
        ),
        target_line(
            f">= {SPEEDUP:.0f}x faster than the PyTorch teacher at batch 1 "
            f"(mean {speedups['mean']:.1f}x, lowest {speedups['min']:.1f}x)",
            speedups["min"] >= SPEEDUP,
        ),
    ]
    return summary


def main(argv: list[str] | None = None) -> int:
    return seeded_bench(
        argv,
        __doc__.split("\n\n")[0],
        "qa-quickstart.toml",
        "qa",
        lambda report, seed, workdir: per_seed(report, seed, workdir, score="f1", models=MODELS),
        summarise,
        table,
    )


if __name__ == "__main__":
    raise SystemExit(main())
