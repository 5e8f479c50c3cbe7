"""The causal-LM report's Distillation section: the student's settings that matter (the
objective, how the teacher's outputs were cached, on-policy training), how the student was
cut from the teacher and selected, and what the teacher's distribution bought over the
no-KD twin."""

from __future__ import annotations

from typing import Any

from distill.tasks.causal_lm.report.rows import number

GENERATION_SETTINGS = ("divergence", "jsd_beta", "teacher_outputs", "top_k", "samples_per_token")
# Shown among the settings when a recipe changes them.
SELECTION_DEFAULTS = {"layer_selection": "even", "mlp_keep": 1.0, "heads_keep": 1.0}


def distillation_section(
    manifests: dict[str, dict[str, Any]],
    student_metrics: dict[str, Any],
    teacher_metrics: dict[str, Any],
    by_key: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The student's settings that matter, how it was built and selected, and what the
    teacher's distribution bought over the no-KD twin."""
    student_cfg = (manifests["student"].get("config") or {}).get("student") or {}
    settings = {
        key: student_cfg.get(key)
        for key in ("init", "num_layers", "layers", "temperature", "alpha")
        if student_cfg.get(key) is not None
    }
    settings.update(
        {
            key: student_cfg[key]
            for key, default in SELECTION_DEFAULTS.items()
            if student_cfg.get(key, default) != default
        }
    )
    for key in GENERATION_SETTINGS:
        value = student_metrics.get(key, student_cfg.get(key))
        if value is None or (key == "jsd_beta" and settings.get("divergence") != "jsd"):
            continue
        if key == "samples_per_token" and settings.get("teacher_outputs") != "sampled":
            continue
        settings[key] = value
    settings.update(on_policy_settings(student_metrics.get("on_policy")))
    gain = None
    if "student_no_kd" in by_key:
        no_kd_ppl, kd_ppl = by_key["student_no_kd"]["perplexity"], by_key["student"]["perplexity"]
        if no_kd_ppl is not None and kd_ppl is not None:
            gain = no_kd_ppl - kd_ppl
    distillation = {
        "settings": settings,
        "built": student_metrics.get("built"),
        "selection": student_selection(student_metrics, student_cfg, teacher_metrics),
        # What the teacher's distribution bought: positive when the distilled student is better.
        "perplexity_gain_over_no_kd": gain,
    }
    return distillation


def on_policy_settings(record: dict[str, Any] | None) -> dict[str, Any]:
    """The on-policy lines of the settings table (none when it was off): lambda, the
    divergence, how many training batches were the student's samples, and their length."""
    if not record:
        return {}
    batches = record["batches"] + record["off_policy_batches"]
    settings = {
        "on_policy_fraction": record["fraction"],
        "on_policy_divergence": record["divergence"],
        "on_policy_batches": f"{record['batches']} of {batches}",
        "on_policy_mean_sampled_tokens": record["mean_sampled_tokens"],
    }
    if "jsd_beta" in record:
        settings["on_policy_jsd_beta"] = record["jsd_beta"]
    return settings


def student_selection(
    student_metrics: dict[str, Any], student_cfg: dict[str, Any], teacher_metrics: dict[str, Any]
) -> dict[str, Any] | None:
    """How the student was cut from the teacher (layers kept, the scores behind a measured
    choice, neurons and heads kept) and its perplexity before and after training; None for
    a student stage that recorded neither."""
    built = student_metrics.get("built") or {}
    before = student_metrics.get("before_training")
    if before is None and "teacher_layers" not in built:
        return None
    layers = built.get("teacher_layers")
    selection = built.get("layer_selection")
    if selection is None and layers is not None:
        selection = "explicit" if student_cfg.get("layers") else "even"
    heads = built.get("heads")

    def ppl(metrics: dict[str, Any] | None, split: str) -> float | None:
        return number(((metrics or {}).get(split) or {}).get("perplexity"))

    return {
        "layer_selection": selection,
        "teacher_layers": layers,
        "calibration_texts": built.get("calibration_texts"),
        "calibration_tokens": built.get(
            "calibration_tokens", built.get("width_calibration_tokens")
        ),
        "block_influence": built.get("block_influence"),
        "dropped_block": built.get("dropped_block"),
        "mlp": built.get("mlp"),
        "heads": None if heads is None else {k: v for k, v in heads.items() if k != "scores"},
        "perplexity": {
            split: {
                "before_training": ppl(before, split),
                "after_training": ppl(student_metrics, split),
                "teacher": ppl(teacher_metrics, split),
            }
            for split in ("validation", "test")
        },
    }
