"""Causal language models (text generation): what the registry knows of the task.

Imports nothing heavy: the registry (and so `distill validate`) reads this class without torch.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from distill.tasks.base import Task


class CausalLM(Task):
    name = "causal-lm"
    # One graph for the prompt and each next token: KV-cache inputs and outputs.
    bundle_task = "text-generation"
    package = "distill.tasks.causal_lm"
    command = "generate"
    runner = "generate"
    architecture_suffixes = ("ForCausalLM", "LMHeadModel")
    # Shared keys that causal-lm reads too (beside the tasks that own them).
    own_keys: ClassVar[tuple[str, ...]] = ("export.teacher_baseline",)
    refused_keys: ClassVar[dict[str, str]] = {
        "adapt": "task 'causal-lm' does not adapt its teacher before fine-tuning: its teacher "
        "stage already trains on the domain text of [data] with the language-modelling "
        "objective itself; remove [adapt] (or give the text to [data])"
    }
    recipe_keys: ClassVar[dict[str, dict[str, Any]]] = {
        "student": {
            "divergence": (
                Literal["forward_kl", "reverse_kl", "jsd"],
                Field(
                    "forward_kl",
                    description="per-token divergence between teacher and student: forward "
                    "KL(teacher||student), reverse KL(student||teacher) (MiniLLM) or "
                    "generalized Jensen-Shannon with jsd_beta (GKD).",
                ),
            ),
            "jsd_beta": (
                float,
                Field(
                    0.5,
                    gt=0,
                    lt=1,
                    description="the JSD's mixture weight; used only with 'jsd' as divergence "
                    "or on_policy_divergence.",
                ),
            ),
            "teacher_outputs": (
                Literal["top-k", "sampled", "online"],
                Field(
                    "top-k",
                    description="learn from the teacher's top-k logits cached once by the "
                    "labels stage, from samples_per_token token ids drawn from its softened "
                    "distribution and cached (an unbiased estimate of forward KL: divergence "
                    "'forward_kl' only), or run the teacher online at every step (full "
                    "distribution).",
                ),
            ),
            "samples_per_token": (
                int,
                Field(
                    8,
                    ge=1,
                    le=1024,
                    description="teacher_outputs 'sampled': token ids drawn per training "
                    "token (with replacement, seeded) from the teacher's distribution at the "
                    "student's temperature.",
                ),
            ),
            "top_k": (
                int,
                Field(
                    64,
                    ge=1,
                    le=4096,
                    description="teacher_outputs 'top-k': teacher logits kept per token when "
                    "cached.",
                ),
            ),
            # On-policy distillation (GKD): batches of the student's own samples (on_policy.py).
            "on_policy_fraction": (
                float,
                Field(
                    0.0,
                    ge=0,
                    le=1,
                    description="fraction of training batches (GKD's lambda, drawn per batch, "
                    "seeded) replaced by continuations the student samples from prompts cut "
                    "from their texts, scored token by token by the teacher run online; the "
                    "other batches keep the off-policy loss. 0 = off.",
                ),
            ),
            "on_policy_divergence": (
                Literal["forward_kl", "reverse_kl", "jsd"] | None,
                Field(
                    None,
                    description="on_policy_fraction > 0: per-token divergence on on-policy "
                    "batches (same choices as divergence); default: student.divergence.",
                ),
            ),
            "on_policy_prompt_tokens": (
                int,
                Field(
                    8,
                    ge=1,
                    le=8192,
                    description="on_policy_fraction > 0: prompts are the first this many "
                    "tokens of each training text (its BOS included; below data.max_length); a "
                    "shorter text keeps all but its last token.",
                ),
            ),
            "on_policy_max_new_tokens": (
                int,
                Field(
                    32,
                    ge=1,
                    le=1024,
                    description="on_policy_fraction > 0: tokens the student samples per "
                    "prompt (fewer when it ends with EOS).",
                ),
            ),
            "on_policy_temperature": (
                float,
                Field(
                    1.0,
                    gt=0,
                    le=10,
                    description="on_policy_fraction > 0: sampling temperature of the student's "
                    "continuations (1 = its own distribution; no top-k or top-p cut).",
                ),
            ),
            # Students cut from the teacher: what they keep, by measurement (pruning.py).
            "layer_selection": (
                Literal["even", "importance", "contiguous"],
                Field(
                    "even",
                    description="teacher-layers with num_layers: 'even' keeps evenly spaced "
                    "layers (always the last); 'importance' drops the layers of lowest block "
                    "influence (1 - cos of a layer's input and output on calibration text); "
                    "'contiguous' drops the block of consecutive layers whose input and output "
                    "are closest in angular distance (never the last layer). See generation.md.",
                ),
            ),
            "calibration_texts": (
                int,
                Field(
                    128,
                    ge=1,
                    le=100_000,
                    description="training texts (a seeded sample) that layer_selection "
                    "'importance'/'contiguous', mlp_keep and heads_keep measure on.",
                ),
            ),
            "mlp_keep": (
                float,
                Field(
                    1.0,
                    gt=0,
                    le=1,
                    description="teacher-layers: fraction of MLP neurons kept in every layer, "
                    "those of highest mean |act(gate) * up| on calibration text; 1 = all.",
                ),
            ),
            "heads_keep": (
                float,
                Field(
                    1.0,
                    gt=0,
                    le=1,
                    description="teacher-layers: fraction of attention query heads kept in "
                    "every layer (per KV group with grouped-query attention), those adding the "
                    "most to the residual stream on calibration text; 1 = all.",
                ),
            ),
        },
        "export": {
            "max_perplexity_increase": (
                float,
                Field(
                    0.05,
                    ge=0,
                    le=10,
                    description="largest relative test-perplexity increase of int8 vs fp32 "
                    "(0.05 = 5%) for the int8 model to be deployed.",
                ),
            ),
        },
        "report": {
            "samples": (
                int,
                Field(3, ge=0, le=50, description="held-out prompts continued side by side."),
            ),
            "max_new_tokens": (
                int,
                Field(
                    32, ge=1, le=1024, description="tokens generated per sample and for tokens/s."
                ),
            ),
        },
    }
    about = "the next token (generation.md)"
    key_notes: ClassVar[dict[str, str]] = {
        "student.num_layers": "which layers: see layer_selection",
        "export.quantization": "not 'static'; 'weight-only' its own pass",
        "export.teacher_baseline": "the KV-cache export and the student's dynamic int8; its "
        "tokens/s timed beside the student's",
        "report.latency_runs": "at most 20 generations",
        "report.latency_warmup": "at most 2",
    }
    stage_sections: ClassVar[dict[str, tuple[str, ...]]] = {
        # Token-level soft targets: what to cache depends on how the student learns.
        "labels": (
            "data",
            "student.teacher_outputs",
            "student.top_k",
            "student.samples_per_token",
            "student.temperature",  # the cached normalizer is the softened distribution's
        )
    }
    default_min_steps = 0  # a text teaches through every one of its tokens
    data_column_keys = ("text_column",)  # plain text: no label column
    reads_gguf = True

    def check_recipe(self, recipe: Any) -> list[str]:
        values = {
            "student.init = 'pretrained'": recipe.student.init == "pretrained",
            "export.quantization = 'static'": recipe.export.quantization == "static",
        }
        problems = [
            f"{key} is not supported for task {self.name!r} (yet)"
            for key, on in values.items()
            if on
        ]
        return (
            problems
            + _teacher_output_problems(recipe)
            + _on_policy_problems(recipe)
            + _jsd_beta_problems(recipe)
            + _pruning_problems(recipe)
        )

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


PRUNING_KEYS = ("layer_selection", "calibration_texts", "mlp_keep", "heads_keep")
# What shapes the on-policy batches; read only when student.on_policy_fraction > 0.
ON_POLICY_KEYS = (
    "on_policy_divergence",
    "on_policy_prompt_tokens",
    "on_policy_max_new_tokens",
    "on_policy_temperature",
)


def calibrates(student: Any) -> bool:
    """Whether building this student measures the teacher (or itself) on calibration text."""
    return student.layer_selection != "even" or student.mlp_keep < 1.0 or student.heads_keep < 1.0


def _teacher_output_problems(recipe: Any) -> list[str]:
    student = recipe.student
    problems = []
    if student.teacher_outputs != "sampled" and recipe.is_set("student.samples_per_token"):
        problems.append(
            "student.samples_per_token is used only with student.teacher_outputs = 'sampled' "
            f"(not {student.teacher_outputs!r})"
        )
    if student.teacher_outputs == "sampled":
        if student.divergence != "forward_kl":
            problems.append(
                f"student.divergence = {student.divergence!r} needs the teacher's full "
                "distribution: student.teacher_outputs = 'sampled' estimates forward_kl only "
                "(use divergence 'forward_kl', or teacher_outputs 'top-k' or 'online')"
            )
        if recipe.is_set("student.top_k"):
            problems.append(
                "student.top_k is not used with student.teacher_outputs = 'sampled' "
                "(student.samples_per_token sets the cache's size)"
            )
    return problems


def on_policy_divergence(student: Any) -> str:
    """The divergence of on-policy batches: their own key, else the student's divergence."""
    return student.on_policy_divergence or student.divergence


def _on_policy_problems(recipe: Any) -> list[str]:
    """On-policy keys that would be ignored, and settings that contradict each other."""
    student = recipe.student
    if student.on_policy_fraction == 0:
        return [
            f"student.{key} is used only with student.on_policy_fraction > 0 (on-policy "
            "distillation is off)"
            for key in ON_POLICY_KEYS
            if recipe.is_set(f"student.{key}")
        ]
    problems = []
    if student.on_policy_fraction == 1 and student.teacher_outputs != "online":
        problems.append(
            "student.on_policy_fraction = 1 trains on the student's own samples only: the "
            f"teacher outputs cached for student.teacher_outputs = {student.teacher_outputs!r} "
            "would never be read (set teacher_outputs = 'online', or a fraction below 1)"
        )
    if student.on_policy_prompt_tokens >= recipe.data.max_length:
        problems.append(
            f"student.on_policy_prompt_tokens = {student.on_policy_prompt_tokens} must be below "
            f"data.max_length = {recipe.data.max_length}: prompts are cut from the training "
            "texts, which are at most that long"
        )
    return problems


def _jsd_beta_problems(recipe: Any) -> list[str]:
    """jsd_beta weighs the JSD's mixture only: set beside two KLs it would be ignored."""
    student = recipe.student
    used = {student.divergence}
    if student.on_policy_fraction > 0:
        used.add(on_policy_divergence(student))
    if recipe.is_set("student.jsd_beta") and "jsd" not in used:
        return [
            "student.jsd_beta is used only with student.divergence = 'jsd' or "
            f"student.on_policy_divergence = 'jsd' (this recipe uses {', '.join(sorted(used))})"
        ]
    return []


def _pruning_problems(recipe: Any) -> list[str]:
    student = recipe.student
    set_keys = [key for key in PRUNING_KEYS if recipe.is_set(f"student.{key}")]
    if student.init != "teacher-layers":
        return [
            f"student.{key} is used only with student.init = 'teacher-layers' (not "
            f"{student.init!r}): it chooses what a copy of the teacher keeps"
            for key in set_keys
        ]
    problems = []
    if student.layers is not None and student.layer_selection != "even":
        problems.append(
            f"student.layers and student.layer_selection = {student.layer_selection!r} both "
            "choose the layers: give num_layers with the selection, or the explicit layers alone"
        )
    if "calibration_texts" in set_keys and not calibrates(student):
        problems.append(
            "student.calibration_texts is used only with layer_selection 'importance' or "
            "'contiguous', mlp_keep < 1 or heads_keep < 1"
        )
    return problems
