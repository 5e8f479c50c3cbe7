"""Causal language models (text generation): what the registry knows of the task.

Imports nothing heavy: the registry (and so `distill validate`) reads this class without torch.
"""

from __future__ import annotations

from typing import Any, ClassVar

from distill.tasks.base import Task


class CausalLM(Task):
    name = "causal-lm"
    # One graph for the prompt and each next token: KV-cache inputs and outputs.
    export_task = "text-generation-with-past"
    bundle_task = "text-generation"
    package = "distill.tasks.causal_lm"
    command = "generate"
    runner = "generate"
    own_keys: ClassVar[tuple[str, ...]] = (
        "student.divergence",
        "student.jsd_beta",
        "student.teacher_outputs",
        "student.top_k",
        "export.max_perplexity_increase",
        "report.samples",
        "report.max_new_tokens",
    )
    stage_sections: ClassVar[dict[str, tuple[str, ...]]] = {
        # Token-level soft targets: what to cache depends on how the student learns.
        "labels": (
            "data",
            "student.teacher_outputs",
            "student.top_k",
            "student.temperature",  # the cached normalizer is the softened distribution's
        )
    }
    default_min_steps = 0  # a text teaches through every one of its tokens
    reads_gguf = True

    def check_recipe(self, recipe: Any) -> list[str]:
        values = {
            "student.init = 'pretrained'": recipe.student.init == "pretrained",
            "export.quantization = 'static'": recipe.export.quantization == "static",
        }
        return [
            f"{key} is not supported for task {self.name!r} (yet)"
            for key, on in values.items()
            if on
        ]

    def summary_lines(self, report: dict[str, Any]) -> list[str]:
        lines = [f"  {'model':<34} {'perplexity':>10} {'MB':>7} {'tokens/s':>8}"]
        for row in report.get("rows", []):
            speed = (row.get("speed") or {}).get("tokens_per_s")
            lines.append(
                f"  {row.get('name', row.get('key', '?'))[:34]:<34} "
                f"{row.get('perplexity') or float('nan'):10.3f} {(row.get('bytes') or 0) / 1e6:7.1f} "
                f"{'' if speed is None else f'{speed:.1f}':>8}"
            )
        return [*lines, ""]
