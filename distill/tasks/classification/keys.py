"""The recipe keys only sequence classification reads, declared here and added to the recipe
by distill.config (``SequenceClassification.recipe_keys`` / ``recipe_tables`` /
``student_kinds``): static students, CLS pruning, and the [labels] table.

Imports nothing heavy: the registry (and so `distill validate`) reads these without torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from distill.tasks.base import StudentKind
from distill.tasks.tables import RecipeTable

# Static students (student.init = "static", see distill.tasks.classification.static): the
# keys only they read. Their budget where the table does not say (a variant: where the
# variant does not say; it inherits [student]'s only when [student] is static too) was
# measured with bench/static.py (recipes/static-quickstart.toml); 256 hidden units measured
# +1.7 points over a linear head.
STATIC_KEYS: dict[str, Any] = {
    "static_dim": (
        int,
        Field(
            256,
            ge=2,
            le=4096,
            description="static: dimensions of the token table (model2vec's PCA "
            "components; at most the teacher's hidden size).",
        ),
    ),
    "static_pooling": (
        Literal["mean", "weighted"],
        Field(
            "mean",
            description="static: 'mean' of the text's token vectors, or 'weighted' (a "
            "learned positive weight per vocabulary entry, starting at 1).",
        ),
    ),
    "static_hidden": (
        int,
        Field(
            256,
            ge=0,
            le=8192,
            description="static: width of one hidden ReLU layer in the head; 0 = a "
            "linear head (256 measured +1.7 points over it, bench/static.py).",
        ),
    ),
}
STATIC = StudentKind(
    builds="a token-embedding table",
    description="a token-embedding table distilled from the teacher by model2vec, pooled, "
    "with a small head; see static.md",
    keys=tuple(STATIC_KEYS),
    # A static table and its small head learn nothing at transformer rates.
    learning_rate=3e-3,
    learning_rate_why="static student (token table and head)",
    defaults={"epochs": 6.0},
)

CLS_PRUNING = (
    bool,
    Field(
        True,
        description="'-optimized' candidates: after its attention, the last layer computes "
        "only the first token, the one the classification head reads (exact; checked by "
        "the parity test; about 1.5x faster int8 on a 2-layer student at batch 32).",
    ),
)

LabelsBackend = Literal["auto", "onnxruntime", "pytorch"]


class LabelsConfig(RecipeTable):
    """[labels]: how the labels stage runs the teacher over every example (classification)."""

    backend: LabelsBackend = Field(
        "auto",
        description="'onnxruntime': the teacher exported to ONNX (fp32, ORT graph fusions) and "
        "its cached logits checked against PyTorch on a sample; 'pytorch': the teacher as "
        "trained; 'auto': onnxruntime on CPU, pytorch when a GPU is available.",
    )
    parity_tolerance: float = Field(
        1e-3,
        ge=0,
        description="onnxruntime: largest |ONNX Runtime - PyTorch| allowed on the cached "
        "logits of the parity sample (else ParityError).",
    )
    parity_samples: int = Field(
        64,
        ge=1,
        le=100000,
        description="onnxruntime: examples (a seeded sample spread over the token lengths) "
        "whose cached logits are recomputed with PyTorch.",
    )
    batch_size: int = Field(
        64,
        ge=1,
        le=65536,
        description="Examples per batch (per process for pytorch under a launcher); each "
        "batch holds texts of similar token length.",
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="onnxruntime: intra-op threads; default: onnxruntime's (one per physical core).",
    )


LABELS_TABLE = (
    LabelsConfig,
    Field(
        default_factory=LabelsConfig,
        description="How the labels stage runs the teacher over every example (and the "
        "transfer text) to cache its soft targets.",
    ),
)
