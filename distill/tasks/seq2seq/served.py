"""A folder of seq2seq graphs served as its bundle will serve it (the runner's tokenization,
prefix, truncation and decoding; :func:`distill.tasks.seq2seq.runner.load_graphs`) and
scored with sacrebleu / rouge-score: what the export stage's gate reads, and the report's
ONNX rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.tasks.seq2seq.onnx_model import DECODER_FILE, ENCODER_FILE

GRAPHS = (ENCODER_FILE, DECODER_FILE)


@dataclass(frozen=True)
class ServedSettings:
    """What a bundle records to serve sources as the run scored them."""

    source_prefix: str
    max_length: int  # source tokens, the prefix included
    max_target_length: int  # tokens generated at most
    num_beams: int

    @classmethod
    def of(cls, data: Any, report: Any) -> ServedSettings:
        return cls(
            source_prefix=data.source_prefix,
            max_length=data.max_length,
            max_target_length=data.max_target_length,
            num_beams=report.num_beams,
        )

    def manifest(self) -> dict[str, Any]:
        return {
            "source_prefix": self.source_prefix,
            "max_length": self.max_length,
            "max_target_length": self.max_target_length,
            "num_beams": self.num_beams,
        }

    def load(self, folder: Path, *, threads: int | None = None) -> Any:
        """The graphs of ``folder`` as the runner serves them with these settings."""
        from distill.tasks.seq2seq.runner import load_graphs

        return load_graphs(folder, **self.manifest(), threads=threads)


def score_served(
    served: Any, test: Any, *, reference: dict[str, Any] | None = None
) -> dict[str, Any]:
    """BLEU, chrF and ROUGE of a served folder's outputs (:meth:`ServedSettings.load`) on the
    test pairs, the outputs (and, given another folder's record, the share of sources with
    the same output)."""
    from distill.tasks.seq2seq.metrics import score_outputs
    from distill.tasks.seq2seq.runner import translate

    outputs = translate(served, list(test.sources))
    record: dict[str, Any] = {**score_outputs(outputs, list(test.targets)), "outputs": outputs}
    if reference is not None:
        same = sum(a == b for a, b in zip(outputs, reference["outputs"], strict=True))
        record["agreement_with_fp32"] = same / max(1, len(outputs))
    return record
