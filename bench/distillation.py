"""Does distillation earn its place? The quick-start data over several seeds, side by side.

    python bench/distillation.py [--seeds 13 14 15] [--recipe recipes/quickstart.toml]
                                 [--workdir bench-runs] [--set KEY=VALUE ...] [--json FILE]

Runs `distill run` once per seed (each in its own work folder, so runs never share a
stage) with the students below added to the recipe, then prints, for every student: the
teacher's accuracy, the distilled student's and its no-KD twin's test accuracy (mean and
standard deviation over the seeds), the deployed (int8) student's accuracy and its share of
the teacher's, its file's share of the teacher's fp32 weights, and its share of the
teacher's parameters. Then it checks the targets of issue #3 and says which were missed:

* the best distilled student keeps >= 97% of the teacher's accuracy (deployed int8 model,
  mean over seeds) while its deployed file is <= 1/8 of the teacher's fp32 weights;
* every distilled student beats its no-KD twin by more than the seeds' standard deviation.

Each seed re-trains the teacher too, so the spread includes the teacher's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Added to the quick-start recipe: transfer text (the tweets max_examples left out, labelled
# by the teacher), trimmed vocabularies, and a 3-layer student beside the 2-layer one.
STUDENTS = [
    "student.transfer.path='unused'",
    "student.transfer.max_examples=4000",
    "student.trim_vocabulary=true",
    "student.variants.L3.num_layers=3",
]
ACCURACY_SHARE = 0.97
SIZE_SHARE = 1 / 8


def run_seed(recipe: Path, seed: int, workdir: Path, overrides: list[str]) -> Path:
    """One `distill run` for ``seed``; returns its report.json."""
    name = f"bench-seed{seed}"
    command = [
        sys.executable,
        "-m",
        "distill",
        "run",
        str(recipe.resolve()),
        "--workdir",
        str(workdir),
    ]
    for assignment in [f"seed={seed}", f"name='{name}'", *overrides]:
        command += ["--set", assignment]
    started = time.perf_counter()
    print(f"seed {seed}: {' '.join(command[3:])}", flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    print(f"seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)
    return workdir / "reports" / name / "report.json"


def _students(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's per-student entries; a one-student report has them in its main rows."""
    if report.get("students"):
        return report["students"]
    rows = {r["key"]: r for r in report["rows"]}
    deployed = next(r for r in report["rows"] if r.get("deployed"))
    no_kd = rows.get("student_no_kd")
    return [
        {
            "name": "main",
            "accuracy": deployed["accuracy"],
            "bytes": deployed["bytes"],
            "parameters": rows["student"]["parameters"],
            "pytorch_accuracy": rows["student"]["accuracy"],
            "no_kd_accuracy": None if no_kd is None else no_kd["accuracy"],
        }
    ]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-student means and standard deviations over the seeds' reports."""
    teachers = [next(r for r in rep["rows"] if r["key"] == "teacher") for rep in reports]
    teacher_accuracy = _mean_std([t["accuracy"] for t in teachers])
    teacher_bytes = statistics.fmean(t["bytes"] for t in teachers)
    teacher_parameters = teachers[0]["parameters"]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for report in reports:
        for student in _students(report):
            by_name.setdefault(student["name"], []).append(student)
    students = []
    for name, entries in by_name.items():
        distilled = _mean_std([e["pytorch_accuracy"] for e in entries])
        no_kd_values = [e["no_kd_accuracy"] for e in entries if e["no_kd_accuracy"] is not None]
        no_kd = _mean_std(no_kd_values) if len(no_kd_values) == len(entries) else None
        deployed = _mean_std([e["accuracy"] for e in entries])
        size = statistics.fmean(e["bytes"] for e in entries)
        students.append(
            {
                "name": name,
                "seeds": len(entries),
                "distilled": distilled,
                "no_kd": no_kd,
                "deployed": deployed,
                "accuracy_share": deployed[0] / teacher_accuracy[0],
                "size_share": size / teacher_bytes,
                "parameter_share": entries[0]["parameters"] / teacher_parameters,
                "deployed_bytes": size,
            }
        )
    return {
        "seeds": len(reports),
        "teacher": {"accuracy": teacher_accuracy, "bytes": teacher_bytes},
        "students": students,
    }


def check_targets(summary: dict[str, Any]) -> list[str]:
    """One line per target: met or missed, with the numbers."""
    lines = []
    small = [s for s in summary["students"] if s["size_share"] <= SIZE_SHARE]
    best = max(small, key=lambda s: s["accuracy_share"], default=None)
    if best is None:
        lines.append("MISSED: no student's deployed file is <= 1/8 of the teacher's fp32 weights")
    else:
        verdict = "met" if best["accuracy_share"] >= ACCURACY_SHARE else "MISSED"
        lines.append(
            f"{verdict}: best student within 1/8 of the teacher's size ({best['name']}, "
            f"{best['size_share']:.3f} of its bytes) keeps {100 * best['accuracy_share']:.1f}% "
            f"of the teacher's accuracy (target >= {100 * ACCURACY_SHARE:.0f}%)"
        )
    for student in summary["students"]:
        if student["no_kd"] is None:
            lines.append(f"n/a: {student['name']} has no no-KD twin")
            continue
        gain = student["distilled"][0] - student["no_kd"][0]
        spread = max(student["distilled"][1], student["no_kd"][1])
        verdict = "met" if gain > spread else "MISSED"
        lines.append(
            f"{verdict}: {student['name']} distilled beats its no-KD twin by "
            f"{100 * gain:+.2f} points (seed std {100 * spread:.2f})"
        )
    return lines


def table(summary: dict[str, Any]) -> str:
    teacher = summary["teacher"]["accuracy"]
    lines = [
        f"seeds: {summary['seeds']}; teacher accuracy {100 * teacher[0]:.2f} ± {100 * teacher[1]:.2f}%, "
        f"{summary['teacher']['bytes'] / 1e6:.1f} MB fp32",
        "",
        "| student | distilled acc | no-KD acc | deployed acc | share of teacher acc "
        "| deployed MB | share of teacher bytes | share of teacher params |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def pct(pair: tuple[float, float] | None) -> str:
        return "–" if pair is None else f"{100 * pair[0]:.2f} ± {100 * pair[1]:.2f}"

    for s in summary["students"]:
        lines.append(
            f"| {s['name']} | {pct(s['distilled'])} | {pct(s['no_kd'])} | {pct(s['deployed'])} "
            f"| {100 * s['accuracy_share']:.1f}% | {s['deployed_bytes'] / 1e6:.1f} "
            f"| {s['size_share']:.3f} | {s['parameter_share']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "quickstart.toml")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench-runs")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--no-students", action="store_true", help="the recipe's students only")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    overrides = ([] if args.no_students else STUDENTS) + args.overrides
    reports = [
        json.loads(run_seed(args.recipe, seed, args.workdir.resolve(), overrides).read_text())
        for seed in args.seeds
    ]
    summary = summarise(reports)
    print(table(summary))
    print()
    for line in check_targets(summary):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
