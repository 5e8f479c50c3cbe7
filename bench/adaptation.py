"""Domain adaptation over several seeds (issue #28): for each shipped task, the teacher
fine-tuned after DAPT (the recipe's [adapt] text), after TAPT (the run's own text, no path)
and without adaptation (the plain-teacher stage, same seed and budget), on the test split;
with --students, the students distilled from the adapted and from the plain teacher
(adapt.baseline = "teacher-and-student"), and the deployed one.

    python bench/adaptation.py                          # both tasks, seeds 13 14 15, DAPT only
    python bench/adaptation.py --tasks ner --tapt       # NER, DAPT and TAPT
    python bench/adaptation.py --students               # full runs: the students too
    python bench/adaptation.py --summarise-only         # re-read an earlier invocation's runs

Runs go under bench-runs/adaptation/ (one work folder per task); the summary is printed and
written to bench-runs/adaptation/summary.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distillation import ROOT, run_seed, seed_stats, target_line

# task -> (adapted recipe, the test metric of its manifests and report rows)
TASKS = {
    "classification": ("adapt-quickstart.toml", "accuracy"),
    "ner": ("ner-adapt-quickstart.toml", "entity_f1"),
}
WORKDIR = ROOT / "bench-runs" / "adaptation"


def tapt_recipe(recipe: Path, out: Path) -> Path:
    """``recipe`` with its [adapt] table reading the run's own text (TAPT: no path, encoding
    or column; the same max_examples and budget) and without the plain twin (the DAPT run of
    the same seed trained it)."""
    text = recipe.read_text(encoding="utf-8")
    head, table, tail = re.split(r"(?m)^(\[adapt\]\n(?:(?!\[).*\n)*)", text, maxsplit=1)
    kept = [
        line
        for line in table.splitlines()
        if not re.match(r"(path|encoding|text_column|baseline)\s*=", line)
    ]
    out.write_text(head + "\n".join([*kept, 'baseline = "none"', "", ""]) + tail, "utf-8")
    return out


def teacher_metric(workdir: Path, name: str, stage: str, metric: str) -> float | None:
    path = workdir / "runs" / name / stage / "manifest.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))["metrics"]["test"][metric]


def adapt_figures(workdir: Path, name: str) -> dict[str, Any] | None:
    path = workdir / "runs" / name / "adapt" / "manifest.json"
    if not path.is_file():  # a run an earlier invocation did not get to
        return None
    manifest = json.loads(path.read_text(encoding="utf-8"))
    metrics = manifest["metrics"]
    return {
        "texts": metrics["text"]["texts"],
        "perplexity": {
            k: v["perplexity"] for k, v in metrics["masked_lm"].items() if "loss" in str(v)
        },
        "wall_time_s": manifest["wall_time_s"],
    }


def deployed(workdir: Path, name: str, metric: str) -> dict[str, float] | None:
    path = workdir / "reports" / name / "report.json"
    if not path.is_file():
        return None
    rows = {row["key"]: row for row in json.loads(path.read_text("utf-8"))["rows"]}
    names = {"student": "student", "deployed": "deployed", "plain": "student_plain_teacher"}
    if metric == "accuracy":  # classification names its deployed row by its file
        names["deployed"] = next((r["key"] for r in rows.values() if r.get("deployed")), "")
    return {k: rows[key][metric] for k, key in names.items() if key in rows}


def run_task(task: str, seeds: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    adapted_recipe, metric = TASKS[task]
    workdir = WORKDIR / task
    workdir.mkdir(parents=True, exist_ok=True)
    # With --students: full runs that also distil students from the plain twin (the teachers
    # of an earlier teachers-only invocation in the same folder are reused).
    extra = [] if args.students else ["--only", "plain-teacher"]
    overrides = ["adapt.baseline='teacher-and-student'"] if args.students else []
    results = []
    for seed in seeds:
        name = f"bench-seed{seed}"
        done = teacher_metric(workdir, name, "plain-teacher", metric) is not None
        if args.students:
            done = done and deployed(workdir, name, metric) is not None
        if not (args.summarise_only or done):  # runs of an earlier invocation are kept
            run_seed(ROOT / "recipes" / adapted_recipe, seed, workdir, overrides, extra)
        if args.summarise_only and teacher_metric(workdir, name, "teacher", metric) is None:
            continue  # not run (yet)
        row: dict[str, Any] = {
            "seed": seed,
            "plain": teacher_metric(workdir, name, "plain-teacher", metric),
            "dapt": teacher_metric(workdir, name, "teacher", metric),
            "dapt_adapt": adapt_figures(workdir, name),
            "dapt_students": deployed(workdir, name, metric),
        }
        if args.tapt:
            tapt_dir = workdir / "tapt"
            tapt_dir.mkdir(exist_ok=True)
            recipe = tapt_recipe(ROOT / "recipes" / adapted_recipe, tapt_dir / "recipe.toml")
            if (
                not args.summarise_only
                and teacher_metric(tapt_dir, name, "teacher", metric) is None
            ):
                run_seed(recipe, seed, tapt_dir, [], ["--only", "teacher"])
            row["tapt"] = teacher_metric(tapt_dir, name, "teacher", metric)
            row["tapt_adapt"] = adapt_figures(tapt_dir, name)
        if args.students:
            row["plain_students"] = {"student": (row["dapt_students"] or {}).pop("plain", None)}
        results.append(row)
        print(json.dumps(row), flush=True)
    return results


def summarise(task: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over the seeds of each teacher, the gains, and the targets."""
    rows = [r for r in rows if r.get("plain") is not None and r.get("dapt") is not None]
    variants = [v for v in ("plain", "dapt", "tapt") if all(r.get(v) is not None for r in rows)]
    stats = {v: seed_stats([r[v] for r in rows]) for v in variants}
    checks = []
    for v in variants[1:]:
        gain = stats[v]["mean"] - stats["plain"]["mean"]
        std = max(stats[v]["std"], stats["plain"]["std"])
        checks.append(
            target_line(
                f"{task}: {v} beats plain by more than the std ({gain * 100:+.2f} vs "
                f"{std * 100:.2f} points)",
                gain > std,
            )
        )
        checks.append(target_line(f"{task}: {v} loses no more than the std", gain > -std))
    students = [r for r in rows if (r.get("plain_students") or {}).get("student") is not None]
    if len(students) == len(rows):
        for key in ("student",):
            ours = seed_stats([r["dapt_students"][key] for r in rows])
            theirs = seed_stats([r["plain_students"][key] for r in rows])
            stats[f"{key}_dapt"], stats[f"{key}_plain"] = ours, theirs
            checks.append(
                target_line(
                    f"{task}: {key} of the adapted teacher beats the plain one's "
                    f"({(ours['mean'] - theirs['mean']) * 100:+.2f} points)",
                    ours["mean"] > theirs["mean"],
                )
            )
    return {"seeds": rows, "stats": stats, "checks": checks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=sorted(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[13, 14, 15])
    parser.add_argument("--tapt", action="store_true", help="also the teacher after TAPT")
    parser.add_argument("--students", action="store_true", help="full runs: deployed students")
    parser.add_argument("--summarise-only", action="store_true")
    args = parser.parse_args(argv)
    summary = {task: summarise(task, run_task(task, args.seeds, args)) for task in args.tasks}
    for task, result in summary.items():
        print(f"{task}: seeds {[row['seed'] for row in result['seeds']]}")
        for name, values in result["stats"].items():
            print(
                f"{task:<15} {name:<15} {values['mean'] * 100:6.2f} +- {values['std'] * 100:.2f}"
                f" (min {values['min'] * 100:.2f})"
            )
        print("\n".join(result["checks"]))
    (WORKDIR / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
