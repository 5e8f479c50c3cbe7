"""A folder of seq2seq graphs scored as its bundle would serve it: the sources tokenized
with the folder's own tokenizer.json (prefix and truncation of the recipe), decoded by the
torch-free decoder, detokenized and scored with sacrebleu / rouge-score. The export stage
reads it for its gate; the report for its ONNX rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

GRAPHS = ("encoder.onnx", "decoder.onnx")


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

    def source_ids(self, folder: Path, sources: list[str]) -> list[list[int]]:
        """The sources as token ids, with the folder's tokenizer.json."""
        from distill.serving.tokenizer import read_tokenizer

        # As the runner's load_bundle sets it up: truncation to max_length, no padding.
        tokenizer = read_tokenizer(folder / "tokenizer.json")
        tokenizer.enable_truncation(max_length=self.max_length)
        tokenizer.no_padding()
        texts = [self.source_prefix + source for source in sources]
        return [list(encoding.ids) for encoding in tokenizer.encode_batch(texts)]


def decode_folder(
    folder: Path, sources: list[str], settings: ServedSettings, *, threads: int | None = None
) -> list[str]:
    """The outputs of the graphs in ``folder`` for ``sources``, in order."""
    from distill.serving.tokenizer import read_tokenizer
    from distill.tasks.seq2seq.decoding import generate_ids
    from distill.tasks.seq2seq.onnx_model import OnnxSeq2Seq

    model = OnnxSeq2Seq.load(folder, threads=threads)
    tokenizer = read_tokenizer(folder / "tokenizer.json")
    ids = generate_ids(
        model,
        settings.source_ids(folder, sources),
        num_beams=settings.num_beams,
        max_new_tokens=settings.max_target_length,
    )
    return tokenizer.decode_batch(ids, skip_special_tokens=True)


def score_folder(
    folder: Path,
    test: Any,
    settings: ServedSettings,
    *,
    reference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """BLEU, chrF and ROUGE of the folder's outputs on the test pairs (and, given another
    folder's record, the share of sources with the same output)."""
    from distill.tasks.seq2seq.metrics import score_outputs

    outputs = decode_folder(folder, test.sources, settings)
    scores = score_outputs(outputs, test.targets)
    record: dict[str, Any] = {**scores, "outputs": outputs}
    if reference is not None:
        same = sum(a == b for a, b in zip(outputs, reference["outputs"], strict=True))
        record["agreement_with_fp32"] = same / max(1, len(outputs))
    return record
