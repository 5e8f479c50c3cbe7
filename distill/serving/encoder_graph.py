"""An encoder ONNX graph fed by a tokenizer, as the encoder tasks' bundle runners serve it,
torch-free: its onnxruntime session, the tokenizer outputs it takes as inputs (each with the
integer type it declares), its logits output, and the checks of those against the bundle's
manifest.

What is the task's own stays in its runner: the labels, what the logits become (scores per
text, spans per token, ...) and the output's rank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import ArtifactError
from distill.export.bundle import is_int
from distill.serving.session import onnx_session
from distill.serving.tokenizer import ENCODING_FIELDS

# The integer types a tokenizer's ids are fed as, by the graph's declared input type.
INPUT_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def max_length_problems(path: Path, manifest: dict[str, Any]) -> list[str]:
    """The manifest at ``path``'s ``max_length``: the tokens a text is truncated to."""
    max_length = manifest.get("max_length")
    if not is_int(max_length) or max_length < 1:
        return [f"{path}: 'max_length' must be a positive integer, not {max_length!r}"]
    return []


def input_names_problems(path: Path, manifest: dict[str, Any], *, required: bool) -> list[str]:
    """The manifest at ``path``'s ``input_names`` (absent allowed unless ``required``): a list
    of names, checked against the graph by :meth:`EncoderGraph.check_input_names`."""
    names = manifest.get("input_names")
    if names is None and not required:
        return []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return [f"{path}: 'input_names' must be a list of graph input names"]
    return []


class EncoderGraph:
    """``model_path`` opened with :func:`~distill.serving.session.onnx_session`; raises
    :class:`ArtifactError` for an input a tokenizer does not produce or one not of an
    integer type. ``output`` is the ``logits`` output (else the first one)."""

    def __init__(self, model_path: Path, threads: int | None = None) -> None:
        self.model_path = model_path
        self.session = onnx_session(model_path, threads)
        self.inputs = self._inputs()
        outputs = self.session.get_outputs()
        output = next((o for o in outputs if o.name == "logits"), outputs[0])
        self.output: str = output.name
        # Its declared dimensions (ints, or names for dynamic ones); empty or None: unknown.
        self.output_shape: list[Any] | None = output.shape

    def _inputs(self) -> list[tuple[str, Any]]:
        """The graph's inputs with the numpy dtype each is fed as."""
        inputs = []
        for graph_input in self.session.get_inputs():
            if graph_input.name not in ENCODING_FIELDS:
                raise ArtifactError(
                    f"{self.model_path}: the graph needs input {graph_input.name!r}, which a "
                    f"tokenizer does not produce (known: {sorted(ENCODING_FIELDS)})"
                )
            dtype = INPUT_DTYPES.get(graph_input.type)
            if dtype is None:
                raise ArtifactError(
                    f"{self.model_path}: input {graph_input.name!r} has type "
                    f"{graph_input.type}, expected an integer tensor"
                )
            inputs.append((graph_input.name, dtype))
        return inputs

    @property
    def input_names(self) -> list[str]:
        return [name for name, _ in self.inputs]

    def check_input_names(self, manifest_path: Path, declared: list[str] | None) -> None:
        """The manifest's ``input_names`` (None: it records none) against the graph's."""
        if declared is not None and sorted(declared) != sorted(self.input_names):
            raise ArtifactError(
                f"{manifest_path}: 'input_names' {declared} differ from the inputs "
                f"of {self.model_path.name} {self.input_names}"
            )

    def check_label_count(self, manifest_path: Path, labels: int, per: str) -> None:
        """The manifest's ``labels`` count against the output's last dimension, when the graph
        declares it; ``per`` names what each row of scores is for ("text", "token")."""
        width = self.output_shape[-1] if self.output_shape else None
        if is_int(width) and width != labels:
            raise ArtifactError(
                f"{manifest_path}: lists {labels} labels but {self.model_path.name} outputs "
                f"{width} scores per {per}"
            )

    def feeds(self, encodings: list[Any]) -> dict[str, np.ndarray]:
        """The graph's feeds from a padded batch of ``tokenizers.Encoding``: exactly its
        declared inputs, in their dtypes."""
        return {
            name: np.asarray([getattr(e, ENCODING_FIELDS[name]) for e in encodings], dtype=dtype)
            for name, dtype in self.inputs
        }

    def array_feeds(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's feeds from arrays already keyed by input name (and holding at least its
        inputs), each in the dtype the graph declares."""
        return {name: arrays[name].astype(dtype, copy=False) for name, dtype in self.inputs}

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The logits output for ``feeds``."""
        return np.asarray(self.session.run([self.output], feeds)[0])
