"""The token-embedding table a static student starts from, distilled from the fine-tuned
teacher by model2vec (one forward pass per vocabulary token, PCA to ``dim`` components,
SIF/Zipf weighting), with its rows put in the order of the teacher's own token ids so the
student keeps the teacher's tokenizer (and its cached soft targets stay valid).

model2vec leaves out tokens its pattern removes (BERT's ``[unusedN]``): those rows stay
zero; WordPiece never produces them from text. The table is computed once per teacher and
dimension and kept in the student stage's folder, so every student and twin built from it
starts from the same rows.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.errors import ModelLoadError

log = logging.getLogger("distill")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """model2vec's per-batch progress bar and INFO lines, and skeletoken's warning that it
    adopts the tokenizer's own padding token, kept out of distill's log."""
    loggers = {"model2vec": logging.WARNING, "skeletoken": logging.ERROR}
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name, level in loggers.items():
        logging.getLogger(name).setLevel(level)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def distil_table(teacher_dir: Path, tokenizer: Any, dim: int) -> np.ndarray:
    """A (teacher vocabulary x dim) float32 table from model2vec's distillation."""
    from model2vec.distill import distill_from_model
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(teacher_dir)  # the fine-tuned encoder, head dropped
    width = encoder.config.hidden_size
    if dim > width:
        raise ModelLoadError(
            f"student.static_dim = {dim} exceeds the teacher's hidden size {width}: PCA can "
            "only keep as many components as the teacher has"
        )
    log.info("static student: distilling a %d-dimensional token table with model2vec", dim)
    with _quiet(), torch.inference_mode():
        static = distill_from_model(
            model=encoder,
            tokenizer=tokenizer,
            pca_dims=dim,
            quantize_to="float32",
            device="cpu",
        )
    vectors = np.asarray(static.embedding, dtype=np.float32)
    rows = static.tokenizer.get_vocab()
    table = np.zeros((len(tokenizer), vectors.shape[1]), dtype=np.float32)
    found = 0
    for token, teacher_id in tokenizer.get_vocab().items():
        row = rows.get(token)
        if row is not None and teacher_id < len(table):
            table[teacher_id] = vectors[row]
            found += 1
    if found < len(rows) * 0.99:
        raise ModelLoadError(
            f"model2vec's table has {len(rows)} tokens but only {found} match the teacher's "
            "tokenizer; the static student needs the teacher's vocabulary"
        )
    return table


def cached_table(cache_dir: Path, teacher_dir: Path, tokenizer: Any, dim: int) -> np.ndarray:
    """The table for ``dim``, computed once and kept under ``cache_dir``."""
    path = cache_dir / f"table-{dim}.npy"
    if path.is_file():
        return np.load(path)
    table = distil_table(teacher_dir, tokenizer, dim)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npy")
    np.save(partial, table)
    partial.replace(path)  # never a half-written table under the final name
    return table
