"""What the cached top-k teacher logits cost in student quality and save in time (causal LM).

    python bench/generation_teacher_outputs.py [--recipe recipes/generation-quickstart.toml]
                                               [--workdir bench-runs/generation] [--top-k 64 8]
                                               [--set KEY=VALUE ...]

Runs the recipe's stages up to `student` once per setting in one work folder: the teacher
is trained once and reused (its stage fingerprint does not change), and each setting reruns
`labels` and `student`. Settings: the teacher run online at every step (the full
distribution), and the cached top-k logits for each k. The no-KD twin is off (it does not
depend on the setting). Prints, side by side: the distilled student's test perplexity, the
labels stage's time (building the cache), the student's training time, and the cache size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_setting(recipe: Path, workdir: Path, settings: list[str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "distill", "run", str(recipe.resolve()), "--only", "student"]
    command += ["--workdir", str(workdir)]
    for assignment in ["student.baseline=false", *settings]:
        command += ["--set", assignment]
    print(" ".join(command[3:]), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    import tomllib

    name = tomllib.loads(recipe.read_text(encoding="utf-8"))["name"]
    stages = workdir / "runs" / name

    def manifest(stage: str) -> dict[str, Any]:
        return json.loads((stages / stage / "manifest.json").read_text(encoding="utf-8"))

    labels, student = manifest("labels"), manifest("student")
    return {
        "test_perplexity": student["metrics"]["test"]["perplexity"],
        "labels_s": labels["wall_time_s"],
        "student_train_s": student["metrics"]["train_runtime_s"],
        "cache_bytes": labels["metrics"].get("bytes"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--recipe", type=Path, default=ROOT / "recipes" / "generation-quickstart.toml"
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench-runs" / "generation")
    parser.add_argument("--top-k", type=int, nargs="+", default=[64, 8])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    results = {
        "online": run_setting(
            args.recipe, workdir, ["student.teacher_outputs='online'", *args.overrides]
        )
    }
    for k in args.top_k:
        settings = ["student.teacher_outputs='top-k'", f"student.top_k={k}", *args.overrides]
        results[f"top-{k}"] = run_setting(args.recipe, workdir, settings)
    online = results["online"]
    print(
        "| teacher outputs | test perplexity | vs online | labels s | student train s "
        "| train time vs online | cache MB |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        cache = "–" if not r["cache_bytes"] else f"{r['cache_bytes'] / 1e6:.1f}"
        print(
            f"| {name} | {r['test_perplexity']:.3f} | "
            f"{100 * (r['test_perplexity'] / online['test_perplexity'] - 1):+.1f}% | "
            f"{r['labels_s']:.0f} | {r['student_train_s']:.0f} | "
            f"{r['student_train_s'] / online['student_train_s']:.2f}x | {cache} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
