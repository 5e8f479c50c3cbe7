"""The rows of the seq2seq report: one per model (teacher, distilled student, no-KD twin,
sequence-level twin, deployed bundle, teacher int8, those the run has), each scored on the
same test references (BLEU, chrF, ROUGE-1/2/L, exact match: :mod:`~distill.tasks.seq2seq
.metrics`) and against the teacher's own outputs (agreement), with its size on disk and its
parameters; latency and tokens/s are filled in after the timing run (:mod:`.speed`).

Every row has every column (None when not measured), so templates need no guards.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distill.errors import ArtifactError
from distill.pipeline.artifacts import onnx_files, relative_path, weight_files
from distill.tasks.seq2seq.metrics import SCORES, agreement, score_outputs
from distill.tasks.seq2seq.report.models import Decoder

# The graphs of an encoder-decoder export (bundle, fp32/, teacher/int8/).
GRAPHS = ("encoder.onnx", "decoder.onnx")


def graph_files(folder: Path) -> list[Path]:
    """The encoder and decoder graphs in ``folder`` with their external-data files."""
    missing = [name for name in GRAPHS if not (folder / name).is_file()]
    if missing:
        raise ArtifactError(f"{folder}: no {' or '.join(missing)} (the export stage writes them)")
    return [path for name in GRAPHS for path in onnx_files(folder / name)]


def model_files(folder: Path) -> list[Path]:
    """A saved PyTorch model's weight files, or an ONNX folder's graphs."""
    if (folder / GRAPHS[0]).is_file():
        return graph_files(folder)
    return weight_files(folder)


def scored_row(
    decoder: Decoder,
    outputs: Sequence[str],
    references: Sequence[str],
    teacher_outputs: Sequence[str] | None,
    files: Sequence[Path],
    base: Path,
    *,
    deployed: bool = False,
) -> dict[str, Any]:
    """A model's row: its scores on the references, its agreement with the teacher's
    outputs (None for the teacher itself), the bytes of ``files``; no speed yet."""
    scores = score_outputs(outputs, references)
    return {
        "key": decoder.key,
        "name": decoder.name,
        "runtime": decoder.runtime,
        "precision": decoder.precision,
        "deployed": deployed,
        "parameters": decoder.parameters,
        "bytes": sum(f.stat().st_size for f in files),
        "weight_files": [relative_path(f, base) for f in files],
        "scores": {name: scores[name] for name in SCORES},
        "agreement": None if teacher_outputs is None else agreement(outputs, teacher_outputs),
        "latency": None,
    }


def model_rows(
    decoders: Sequence[Decoder],
    outputs: dict[str, list[str]],
    references: Sequence[str],
    files: dict[str, list[Path]],
    base: Path,
    deployed: str,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The rows in the decoders' order (the teacher first) and sacrebleu's signatures of the
    scores; ``files``: each row's files by key, ``deployed``: the deployed row's key. A row
    without its own parameter count takes that of the PyTorch model it was exported from
    (the deployed bundle: the distilled student's; the teacher's graphs: the teacher's)."""
    if not decoders or decoders[0].key != "teacher":
        raise ValueError("the teacher's decoder comes first: every row is compared with it")
    teacher_outputs = outputs["teacher"]
    rows = []
    for decoder in decoders:
        reference = None if decoder.key == "teacher" else teacher_outputs
        rows.append(
            scored_row(
                decoder,
                outputs[decoder.key],
                references,
                reference,
                files[decoder.key],
                base,
                deployed=decoder.key == deployed,
            )
        )
    parameters = {row["key"]: row["parameters"] for row in rows}
    for row in rows:
        if row["parameters"] is None:
            origin = "teacher" if row["key"].startswith("teacher") else "student"
            row["parameters"] = parameters.get(origin)
    signatures = score_outputs(teacher_outputs[:1], references[:1])["signatures"]
    return rows, signatures


def bleu(row: dict[str, Any]) -> float | None:
    """A row's test BLEU."""
    return (row.get("scores") or {}).get("bleu")


def bleu_kept(row: dict[str, Any], reference: dict[str, Any]) -> float | None:
    """The share of ``reference``'s BLEU that ``row`` keeps (None without one)."""
    mine, theirs = bleu(row), bleu(reference)
    return mine / theirs if mine is not None and theirs else None
