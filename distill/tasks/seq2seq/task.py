"""Sequence-to-sequence models (translation, summarization): what the registry knows of the
task, and the recipe keys it adds.

Imports nothing heavy: the registry (and so `distill validate`) reads this class without torch.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from distill.tasks.base import Task

# How the student learns (Kim & Rush 2016): "word" = KL x T^2 to the teacher's next-token
# distributions under teacher forcing on the gold targets, mixed with cross-entropy by alpha;
# "sequence" = cross-entropy on the teacher's beam outputs (no soft targets); "word+sequence"
# = the word-level loss on the teacher's beam outputs instead of the gold targets.
DISTILLATION = ("word", "sequence", "word+sequence")
# The twin trained on the teacher's beam outputs alone (the sequence-level twin): its folder.
SEQUENCE_TWIN = "sequence"


class Seq2Seq(Task):
    name = "seq2seq"
    # An encoder graph (run once per source) and a decoder graph with a KV cache.
    bundle_task = "text2text-generation"
    package = "distill.tasks.seq2seq"
    command = "generate"
    runner = "runner"
    architecture_suffixes = ("ForConditionalGeneration", "MTModel", "EncoderDecoderModel")
    own_keys: ClassVar[tuple[str, ...]] = ("student.transfer", "export.teacher_baseline")
    refused_keys: ClassVar[dict[str, str]] = {
        "data.text_column": "task 'seq2seq' reads data.source_column and data.target_column",
        "data.label_column": "task 'seq2seq' reads data.source_column and data.target_column",
        "student.transfer.text_column": "task 'seq2seq' reads the transfer file's "
        "data.source_column (its sources are translated by the teacher)",
        "report.latency_batch_size": "task 'seq2seq' times every model per source at batch "
        "1 and at batch 32",
        "adapt": "task 'seq2seq' does not adapt its teacher yet (the teacher stage fine-tunes "
        "it on the pairs of [data]); remove [adapt]",
    }
    recipe_keys: ClassVar[dict[str, dict[str, Any]]] = {
        "teacher": {
            "warm_start": (
                bool,
                Field(
                    False,
                    description="Build an encoder-decoder from an encoder-only checkpoint "
                    "(BERT2BERT, Rothe et al. 2020): the encoder and decoder start from "
                    "teacher.model, cross-attention new.",
                ),
            ),
        },
        "data": {
            "source_column": (
                str,
                Field(
                    "source",
                    description="Column holding each source text; a nested name "
                    "('translation.en') reads a field of a column of objects, as hub "
                    "translation sets (wmt16) store their pairs.",
                ),
            ),
            "target_column": (
                str,
                Field(
                    "target",
                    description="Column holding each target text (nested: see source_column).",
                ),
            ),
            "source_prefix": (
                str,
                Field(
                    "",
                    description="Text put before every source, as T5 expects (e.g. "
                    "'translate English to German: '); recorded in the bundle, which puts it "
                    "before every input too.",
                ),
            ),
            "max_target_length": (
                int,
                Field(
                    64,
                    ge=2,
                    le=4096,
                    description="Target tokens kept (EOS included); also the most tokens any "
                    "model generates per source.",
                ),
            ),
        },
        "student": {
            "distillation": (
                Literal[DISTILLATION],  # type: ignore[valid-type]
                Field(
                    "word",
                    description="'word': KL x T^2 to the teacher's next-token distributions "
                    "under teacher forcing on the gold targets, mixed with cross-entropy by "
                    "alpha; 'sequence': cross-entropy on the teacher's beam outputs (Kim & "
                    "Rush's sequence-level KD); 'word+sequence': the word-level loss on the "
                    "teacher's beam outputs instead of the gold targets.",
                ),
            ),
            "kd_top_k": (
                int,
                Field(
                    32,
                    ge=1,
                    le=4096,
                    description="Word-level KD: teacher logits cached per target token (the "
                    "rest of the vocabulary is one tail bucket in the loss).",
                ),
            ),
            "sequence_beams": (
                int,
                Field(
                    4,
                    ge=1,
                    le=64,
                    description="Beam size of the teacher's outputs that sequence-level KD "
                    "(and transfer sources) learn from.",
                ),
            ),
            "sequence_twin": (
                bool,
                Field(
                    True,
                    description="Train a sequence-level twin beside the distilled student "
                    "(same initialisation and budget; cross-entropy on the teacher's beam "
                    "outputs, folder sequence/): distilled vs it measures what soft targets "
                    "add beyond the teacher's outputs.",
                ),
            ),
            "encoder_layers": (
                list[int] | None,
                Field(
                    None,
                    description="teacher-layers: the teacher's encoder layers the student "
                    "keeps, by index (student.layers / num_layers choose its decoder layers); "
                    "default: all.",
                ),
            ),
        },
        "export": {
            "max_bleu_drop": (
                float,
                Field(
                    1.0,
                    ge=0,
                    le=100,
                    description="Largest test BLEU drop (points) of int8 vs fp32 for the int8 "
                    "graphs to be deployed.",
                ),
            ),
        },
        "report": {
            "num_beams": (
                int,
                Field(
                    1,
                    ge=1,
                    le=64,
                    description="Beam size every model decodes the test sources with for "
                    "BLEU, chrF and ROUGE (1 = greedy); the bundle records it as its default.",
                ),
            ),
            "examples": (
                int,
                Field(5, ge=0, le=100, description="Test sources shown with every model's output."),
            ),
        },
    }
    about = "a target text from a source text: translation, summarization (seq2seq.md)"
    key_notes: ClassVar[dict[str, str]] = {
        "data.max_length": "source tokens (the prefix included)",
        "student.num_layers": "decoder layers (encoder layers: student.encoder_layers)",
        "student.layers": "the teacher's decoder layers kept (DistilBART's shrink and fine-tune)",
        "student.alpha": "with distillation 'sequence' there are no soft targets: not used",
        "export.quantization": "'dynamic' only",
        "export.teacher_baseline": "both graphs of the teacher, its int8 decoded beside the "
        "student's",
    }
    stage_sections: ClassVar[dict[str, tuple[str, ...]]] = {
        # What the teacher makes for the students (stages/labels.py's LABELLING_FIELDS): a
        # change of the students' budget or build does not label again.
        "labels": (
            "data",
            "student.transfer",
            "student.distillation",
            "student.kd_top_k",
            "student.sequence_beams",
            "student.sequence_twin",
            "student.temperature",
        ),
        # The export decodes the test sources as the bundle will serve them (beam size).
        "export": ("data", "export", "report"),
    }
    data_column_keys = ("source_column", "target_column")
    data_check = "data_check"  # nested columns (translation.en) are checked by their first part

    def check_recipe(self, recipe: Any) -> list[str]:
        student = recipe.student
        problems = []
        if recipe.export.quantization not in ("none", "dynamic"):
            problems.append(
                f"export.quantization = {recipe.export.quantization!r} is not supported for "
                f"task {self.name!r} (yet): use 'dynamic' or 'none'"
            )
        if student.distillation == "sequence":
            problems += [
                f"student.{key} is not used with student.distillation = 'sequence' (no soft "
                "targets: the student learns the teacher's beam outputs by cross-entropy)"
                for key in ("alpha", "temperature", "kd_top_k", "sequence_twin")
                if recipe.is_set(f"student.{key}")
            ]
        if student.init != "teacher-layers" and recipe.is_set("student.encoder_layers"):
            problems.append(
                "student.encoder_layers is used only with student.init = 'teacher-layers' "
                f"(not {student.init!r})"
            )
        if "pseudo-labels" in student.twins:
            problems.append(
                "student.baselines = ['pseudo-labels'] is not a seq2seq twin: the "
                "sequence-level twin (student.sequence_twin) learns the teacher's outputs"
            )
        return problems

    def summary_lines(self, report: dict[str, Any]) -> list[str]:
        lines = [f"  {'model':<34} {'BLEU':>6} {'chrF':>6} {'MB':>7} {'ms/source':>9}"]
        for row in report.get("rows", []):
            scores = row.get("scores") or {}
            latency = (row.get("latency") or {}).get("batch_1_ms")
            lines.append(
                f"  {str(row.get('name', row.get('key', '?')))[:34]:<34} "
                f"{scores.get('bleu', float('nan')):6.2f} {scores.get('chrf', float('nan')):6.2f} "
                f"{(row.get('bytes') or 0) / 1e6:7.1f} "
                f"{'' if latency is None else f'{latency:.1f}':>9}"
            )
        return [*lines, ""]
