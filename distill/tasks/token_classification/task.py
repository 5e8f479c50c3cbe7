"""Token classification (NER): what the registry knows of the task, and the recipe keys it adds.

Imports nothing heavy: the registry (and so `distill validate`) reads this class without torch.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from distill.tasks.base import ENCODER_STUDENT_KEYS, PredictHelp, PredictOption, Task

# The int8 candidates (export.candidates) a tagger's export builds: the dynamic ones, on the
# plain or the ORT-optimized graph (never CLS-pruned: every token is read). Static QDQ needs a
# calibration path the tagging export does not have yet.
CANDIDATES = (
    "dynamic",
    "dynamic-fp32-embeddings",
    "dynamic-optimized",
    "dynamic-optimized-fp32-embeddings",
)
# How sub-token tags make entities (distill.tasks.token_classification.aggregation): whole
# words by their first, average or max sub-token, or "simple" (each sub-token's own tag).
AGGREGATIONS = ("first", "average", "max", "simple")
AGGREGATION_OPTION = PredictOption(
    name="aggregation",
    metavar="STRATEGY",
    help="for a bundle that finds entities: how sub-tokens make entities, overriding "
    "the bundle's manifest: first, average or max (whole words; the default is first) "
    "or simple (each sub-token's own tag: an entity may split a word)",
    applies_to="bundles that find entities",
    choices=AGGREGATIONS,
)


class TokenClassification(Task):
    name = "token-classification"
    bundle_task = "token-classification"
    package = "distill.tasks.token_classification"
    command = "predict"
    runner = "runner"
    predict_help = PredictHelp(
        does="find their named entities",
        line="type:start-end:text per entity, tab-separated (empty: none), for an NER bundle",
        json="NER: text, entities with type, text, start, end, score",
    )
    architecture_suffixes = ("ForTokenClassification",)
    # Shared keys this task reads as classification does (so they are not refused here).
    own_keys: ClassVar[tuple[str, ...]] = (
        *ENCODER_STUDENT_KEYS,
        "export.candidates",
        "export.optimization_level",
        "export.per_channel",
        "export.reduce_range",
        "export.teacher_baseline",
        "export.latency_runs",
        "export.latency_rounds",
        "export.latency_warmup",
    )
    recipe_keys: ClassVar[dict[str, dict[str, Any]]] = {
        "data": {
            "tokens_column": (
                str,
                Field(
                    "tokens",
                    description="JSONL/Parquet: the column holding each sentence's tokens (a list).",
                ),
            ),
            "tags_column": (
                str,
                Field(
                    "tags",
                    description="JSONL/Parquet: the column holding each token's tag (a list).",
                ),
            ),
            "token_index": (
                int,
                Field(0, description="CoNLL column files: the column of the token (0 = first)."),
            ),
            "tag_index": (
                int,
                Field(-1, description="CoNLL column files: the column of the tag (-1 = last)."),
            ),
            "tag_scheme": (
                Literal["iob2", "iob1", "bioes"],
                Field(
                    "iob2",
                    description="How the data's tags are written; iob1 and bioes are converted "
                    "to IOB2 when read.",
                ),
            ),
            "repair_tags": (
                bool,
                Field(
                    False,
                    description="An I- (BIOES: or E-) tag that continues nothing opens an "
                    "entity instead (I- as B-, E- as S-; counted); false: it is an error naming "
                    "file and line.",
                ),
            ),
        },
        "student": {
            "subtokens": (
                Literal["all", "first"],
                Field(
                    "all",
                    description="Which sub-tokens of a word the KL term scores: all real "
                    "sub-tokens, or each word's first only (the cross-entropy always uses firsts).",
                ),
            ),
        },
        "export": {
            "max_f1_drop": (
                float,
                Field(
                    0.02,
                    ge=0,
                    le=1,
                    description="Largest drop in entity micro-F1 (test split) of an int8 "
                    "candidate vs fp32 for it to be deployed.",
                ),
            ),
        },
    }
    about = "a tag per word, as NER (ner.md)"
    key_notes: ClassVar[dict[str, str]] = {
        "data.path": "also a CoNLL column file",
        "student.transfer.text_column": "default 'text'",
        "export.quantization": "'none' or 'dynamic'",
        "export.candidates": f"builds {', '.join(map(repr, CANDIDATES))}; gate: export.max_f1_drop",
    }
    stage_sections: ClassVar[dict[str, tuple[str, ...]]] = {
        "labels": ("data", "student.transfer"),  # the teacher runs in PyTorch: no [labels]
    }
    default_min_steps = 200  # few labelled sentences need many passes, as for classification
    data_column_keys = ("tokens_column", "tags_column")

    data_check = "data"  # CoNLL column files name no columns
    bench = "bench_models"
    predict_options = (AGGREGATION_OPTION,)

    def check_recipe(self, recipe: Any) -> list[str]:
        problems = []
        if recipe.data.format == "csv":
            # A CSV cell holds one string, not a sentence's token and tag lists.
            problems.append(
                "data.format = 'csv' is not supported for task 'token-classification': it reads "
                "CoNLL column files ('auto' for any extension but .json/.jsonl/.parquet), "
                "'jsonl', 'json' or 'parquet'"
            )
        if recipe.data.token_index == recipe.data.tag_index:
            problems.append(
                f"data.token_index and data.tag_index are both {recipe.data.tag_index}: "
                "the token and its tag must be different columns"
            )
        values = {
            "export.quantization = 'static'": recipe.export.quantization == "static",
            "export.quantization = 'weight-only'": recipe.export.quantization == "weight-only",
            "student.baselines = ['pseudo-labels']": "pseudo-labels" in recipe.student.twins,
        }
        problems += [
            f"{key} is not supported for task {self.name!r} (yet)"
            for key, on in values.items()
            if on
        ]
        return problems + self._candidate_problems(recipe.export.candidates)

    def _candidate_problems(self, candidates: list[str] | None) -> list[str]:
        """export.candidates naming one the tagging export does not build."""
        refused = [name for name in candidates or [] if name not in CANDIDATES]
        if not refused:
            return []
        return [
            f"export.candidates = {list(candidates or [])!r}: "
            f"{', '.join(map(repr, refused))} is not supported for task {self.name!r} "
            f"(it builds: {', '.join(map(repr, CANDIDATES))})"
        ]

    def summary_lines(self, report: dict[str, Any]) -> list[str]:
        lines = [f"  {'model':<40} {'entity F1':>9} {'MB':>7} {'p50 ms':>7}"]
        for row in report.get("rows", []):
            latency = (row.get("latency") or {}).get("p50_ms")
            lines.append(
                f"  {row.get('name', row.get('key', '?'))[:40]:<40} {row.get('entity_f1') or 0:9.4f} "
                f"{(row.get('bytes') or 0) / 1e6:7.1f} {'' if latency is None else f'{latency:.2f}':>7}"
            )
        verdict = (report.get("headline") or {}).get("verdict")
        warnings = (report.get("headline") or {}).get("warnings") or []
        return [*lines, *[f"  {s}" for s in ([verdict] if verdict else []) + warnings], ""]
