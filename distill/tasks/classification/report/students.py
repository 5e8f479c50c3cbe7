"""The report's Students section: one entry per student of the recipe (the primary and each
variant), measured as deployed, with the paired verdicts against its twins and whether it is
on the accuracy / size frontier."""

from __future__ import annotations

from typing import Any

from distill.report.ratios import ratio, times_faster, times_smaller
from distill.tasks.classification.report.inputs import ReportInputs, tokenizer
from distill.tasks.classification.report.verdict import student_kd_significance
from distill.timing.latency import TimingPlan


def student_frontier(
    inputs: ReportInputs,
    rows_by_key: dict[str, dict[str, Any]],
    variant_latencies: dict[str, dict[str, Any]],
    run: str,
) -> list[dict[str, Any]] | None:
    """One entry per student of the recipe (the primary and each variant), measured as
    deployed: accuracy of its deployed ONNX model, its file size, its latency (from the
    report's interleaved run: ``variant_latencies`` by variant name); the paired
    significance of its gain over its no-KD twin; marked ``pareto`` when no other student
    beats it on both accuracy and size. None when the recipe has a single student (the
    main table already says everything)."""
    student_metrics = inputs.manifests["student"].get("metrics") or {}
    names = ["main", *sorted(student_metrics.get("variants") or {})]
    if len(names) == 1:
        return None
    deployed_row = next((r for r in rows_by_key.values() if r.get("deployed")), None)
    entries = []
    for name in names:
        if name == "main" and deployed_row is not None:
            latency = deployed_row["latency"]  # the main table timed this very file
        else:
            latency = variant_latencies[name]
        entries.append(_student_entry(inputs, name, rows_by_key["teacher"], latency, run))
    for entry, best in zip(
        entries, pareto_front([(e["accuracy"], e["bytes"]) for e in entries]), strict=True
    ):
        entry["pareto"] = best
    return entries


def _student_entry(
    inputs: ReportInputs,
    name: str,
    teacher: dict[str, Any],
    latency: dict[str, Any],
    run: str,
) -> dict[str, Any]:
    """One student's entry: its deployed model scored, sized and timed, against the teacher."""
    student_metrics = inputs.manifests["student"].get("metrics") or {}
    export_metrics = inputs.manifests["export"].get("metrics") or {}
    main = name == "main"
    trained = student_metrics if main else student_metrics["variants"][name]
    exported = export_metrics if main else export_metrics["variants"][name]
    student_folder = inputs.student_dir if main else inputs.student_dir / "variants" / name
    stage_dir = inputs.export_dir if main else inputs.export_dir / "variants" / name
    predictions = stage_dir / "predictions"
    int8 = predictions / "test_int8.npz"
    metrics = inputs.score(inputs.logits(int8 if int8.is_file() else predictions / "test_fp32.npz"))
    labels = inputs.test.labels
    no_kd = ((trained.get("baseline") or {}).get("test") or {}).get("accuracy")
    pytorch_accuracy = (trained.get("test") or {}).get("accuracy")
    entry = {
        "name": name,
        "settings": student_settings(inputs.manifests["student"], name),
        "built": trained.get("built"),
        "parameters": (trained.get("parameters") or {}).get("total"),
        "deployed_precision": exported.get("deployed"),
        "bytes": (stage_dir / "bundle" / "model.onnx").stat().st_size,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "agreement": metrics.get("agreement"),
        "pytorch_accuracy": pytorch_accuracy,
        "no_kd_accuracy": no_kd,
        "gain_over_no_kd": None
        if no_kd is None or pytorch_accuracy is None
        else pytorch_accuracy - no_kd,
        "kd_significance": student_kd_significance(student_folder, labels, inputs.logits),
        "pseudo_accuracy": ((trained.get("pseudo") or {}).get("test") or {}).get("accuracy"),
        "soft_target_significance": student_kd_significance(
            student_folder, labels, inputs.logits, "pseudo"
        ),
        "latency": latency,
    }
    entry["accuracy_retained"] = ratio(entry["accuracy"], teacher["accuracy"])
    entry["size_ratio"] = times_smaller(entry, teacher)
    entry["speedup"] = times_faster(entry, teacher)
    entry["bundle"] = f"export/{run}/" if main else f"export/{run}.{name}/"
    return entry


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (accuracy, bytes) points: True where no other point is at least as accurate and
    at most as large while strictly better on one of the two."""
    return [
        not any(
            (a2 >= a and b2 <= b) and (a2 > a or b2 < b)
            for j, (a2, b2) in enumerate(points)
            if j != i
        )
        for i, (a, b) in enumerate(points)
    ]


def student_settings(student_manifest: dict[str, Any], name: str) -> dict[str, Any]:
    """The recipe keys that tell one student from another, as the student stage resolved
    them (the variant's table over [student], with the same inheritance rules)."""
    from pydantic import ValidationError

    from distill.config import StudentTable

    table = dict((student_manifest.get("config") or {}).get("student") or {})
    # Older manifests dumped every variant key, None for those a variant left unset.
    table["variants"] = {
        variant: {k: v for k, v in (keys or {}).items() if v is not None}
        for variant, keys in (table.get("variants") or {}).items()
    }
    try:
        resolved = StudentTable.model_validate(table).variant(name).model_dump(mode="json")
    except (ValidationError, KeyError):  # a manifest from another version: show what it says
        resolved = {k: v for k, v in table.items() if k != "variants"}
    keys = ("init", "model", "num_layers", "layers", "temperature", "alpha")
    keys += ("learning_rate", "epochs", "hidden_weight", "attention_weight", "trim_vocabulary")
    if resolved.get("init") == "static":
        keys += ("static_dim", "static_pooling", "static_hidden")
    return {k: resolved.get(k) for k in keys if resolved.get(k) not in (None, False, 0, 0.0)}


def register_variants(inputs: ReportInputs, plan: TimingPlan) -> list[str]:
    """Add each variant's deployed model to the timing plan (as ``variant:NAME``), so the
    Students table is timed in the same run as the main table; returns the names."""
    names = sorted((inputs.manifests["student"].get("metrics") or {}).get("variants") or {})
    for name in names:
        model_dir = inputs.student_dir / "variants" / name / "model"
        deployed = inputs.export_dir / "variants" / name / "bundle" / "model.onnx"
        plan.add_onnx(f"variant:{name}", deployed, tokenizer(model_dir))
    return names
