"""What every task's bundle runner shares, torch-free (onnxruntime, tokenizers, numpy): the
bundle's fast tokenizer set up as it was trained (truncation, padding token and side) and a
stable softmax. Sessions come from :func:`distill.serving.session.onnx_session`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import ArtifactError
from distill.export.bundle import is_int

TOKENIZER_FILE = "tokenizer.json"
DEFAULT_BATCH_SIZE = 32
# Graph input -> the tokenizers.Encoding attribute that feeds it.
ENCODING_FIELDS = {
    "input_ids": "ids",
    "attention_mask": "attention_mask",
    "token_type_ids": "type_ids",
}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax (computed in float64, max-subtracted)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def bundle_pad_token(bundle: Path, tokenizer: Any, manifest: dict[str, Any]) -> tuple[int, str]:
    """The padding token the model was trained and exported with.

    Looked up in ``tokenizer_config.json`` / ``special_tokens_map.json`` (what transformers
    reads), then in ``tokenizer.json``'s own padding settings, then ``config.json``'s
    ``pad_token_id``. Only files listed (hence verified) by the manifest are read.
    """
    files = manifest["files"]
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if name not in files:
            continue
        try:
            token = json.loads((bundle / name).read_text(encoding="utf-8")).get("pad_token")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str) and tokenizer.token_to_id(token) is not None:
            return tokenizer.token_to_id(token), token
    padding = tokenizer.padding
    if padding and padding.get("pad_token") is not None:
        return int(padding["pad_id"]), str(padding["pad_token"])
    if "config.json" in files:
        try:
            pad_id = json.loads((bundle / "config.json").read_text(encoding="utf-8")).get(
                "pad_token_id"
            )
        except (OSError, ValueError, AttributeError):
            pad_id = None
        if is_int(pad_id):
            return pad_id, tokenizer.id_to_token(pad_id) or "[PAD]"
    raise ArtifactError(
        f"{bundle / TOKENIZER_FILE}: no padding token found (looked in tokenizer_config.json, "
        "special_tokens_map.json, tokenizer.json and config.json)"
    )


def _padding_side(bundle: Path, manifest: dict[str, Any], key: str) -> str:
    if "tokenizer_config.json" in manifest["files"]:
        try:
            side = json.loads((bundle / "tokenizer_config.json").read_text(encoding="utf-8")).get(
                key
            )
        except (OSError, ValueError, AttributeError):
            side = None
        if side in ("left", "right"):
            return side
    return "right"


def read_tokenizer(path: Path) -> Any:
    """``tokenizer.json`` as the ``tokenizers`` library loads it (its stored truncation and
    padding included); :class:`ArtifactError` naming the file when it cannot."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on a malformed file
        raise ArtifactError(f"{path}: the tokenizers library cannot load it: {exc}") from None


def load_tokenizer(bundle: Path, manifest: dict[str, Any]) -> Any:
    """``tokenizer.json`` with truncation to ``max_length`` and batch-longest padding.

    The truncation and padding stored inside tokenizer.json (whatever the last transformers
    call left there, often fixed-length padding) are replaced, so that serving tokenizes
    like ``tokenizer(texts, truncation=True, max_length=..., padding=True)``.
    """
    tokenizer = read_tokenizer(bundle / TOKENIZER_FILE)
    pad_id, pad_token = bundle_pad_token(bundle, tokenizer, manifest)
    tokenizer.enable_truncation(
        max_length=manifest["max_length"],
        stride=0,
        strategy="longest_first",
        direction=_padding_side(bundle, manifest, "truncation_side"),
    )
    tokenizer.enable_padding(
        direction=_padding_side(bundle, manifest, "padding_side"),
        pad_id=pad_id,
        pad_type_id=0,
        pad_token=pad_token,
    )
    return tokenizer
