"""A split as the model inputs classification trains and predicts on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from distill.tasks.classification.files import Split


def encode(
    tokenizer: Any,
    split: Split,
    max_length: int,
    teacher_logits: np.ndarray | None = None,
    with_labels: bool = True,
) -> Any:
    """A `datasets.Dataset` of model inputs (+ labels and cached teacher logits)."""
    import datasets
    import numpy as np

    # No padding here: the collator pads each batch to its longest example, which on
    # short texts (tweets) makes CPU training several times faster than fixed padding.
    columns: dict[str, Any] = dict(tokenizer(split.texts, truncation=True, max_length=max_length))
    if with_labels:  # label -1 marks unlabelled (transfer) text
        columns["labels"] = split.labels.tolist()
    if teacher_logits is not None:
        columns["teacher_logits"] = np.asarray(teacher_logits, dtype=np.float32).tolist()
    return datasets.Dataset.from_dict(columns)
