"""The encoder graph both encoder runners serve (distill/serving/encoder_graph.py): a graph
input a tokenizer cannot feed is refused naming the file, the input and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from distill.errors import ArtifactError
from distill.serving.encoder_graph import EncoderGraph


def _graph(path: Path, name: str, elem_type: int) -> Path:
    """A one-node graph: ``logits`` = Cast(``name``) to float, 4 scores per text."""
    graph = helper.make_graph(
        [helper.make_node("Cast", [name], ["logits"], to=TensorProto.FLOAT)],
        "tiny",
        [helper.make_tensor_value_info(name, elem_type, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_an_input_no_tokenizer_produces_is_refused(tmp_path: Path) -> None:
    path = _graph(tmp_path / "model.onnx", "pixel_values", TensorProto.INT64)
    with pytest.raises(ArtifactError) as error:
        EncoderGraph(path)
    assert str(error.value).startswith(
        f"{path}: the graph needs input 'pixel_values', which a tokenizer does not produce"
    )


def test_a_non_integer_token_input_is_refused(tmp_path: Path) -> None:
    path = _graph(tmp_path / "model.onnx", "input_ids", TensorProto.FLOAT)
    with pytest.raises(ArtifactError) as error:
        EncoderGraph(path)
    assert str(error.value) == (
        f"{path}: input 'input_ids' has type tensor(float), expected an integer tensor"
    )


def test_an_int32_graph_is_fed_int32_and_its_label_count_checked(tmp_path: Path) -> None:
    graph = EncoderGraph(_graph(tmp_path / "model.onnx", "input_ids", TensorProto.INT32))
    feeds = graph.array_feeds({"input_ids": np.array([[1, 2, 3, 4]], dtype=np.int64)})
    assert feeds["input_ids"].dtype == np.int32
    assert graph.run(feeds).tolist() == [[1.0, 2.0, 3.0, 4.0]]
    graph.check_label_count(tmp_path / "manifest.json", 4, per="text")
    with pytest.raises(
        ArtifactError, match="lists 3 labels but model.onnx outputs 4 scores per text"
    ):
        graph.check_label_count(tmp_path / "manifest.json", 3, per="text")
