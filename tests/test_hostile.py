"""Hostile paths: output folders behind symlinks, ONNX external data outside the bundle."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest

from distill.config import validate_recipe
from distill.errors import ArtifactError
from distill.pipeline.artifacts import RunContext
from distill.pipeline.stages import run_pipeline

RAW = {
    "name": "h",
    "data": {"path": "x.csv"},
    "teacher": {"model": "m"},
    "student": {"num_layers": 1},
}


@pytest.mark.parametrize("linked", ["runs", "runs/h", "export/h", "reports"])
def test_output_folder_behind_a_symlink_is_refused_before_writing(
    tmp_path: Path, linked: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    work = tmp_path / "project"
    link = work / linked
    link.parent.mkdir(parents=True)
    link.symlink_to(outside, target_is_directory=True)
    ctx = RunContext(
        name="h", seed=0, task="sequence-classification", workdir=work, recipe_dir=work
    )
    with pytest.raises(ArtifactError, match=f"{link} is a symbolic link"):
        run_pipeline(validate_recipe(RAW), ctx)
    assert list(outside.iterdir()) == []  # nothing written through the link


def test_onnx_external_data_outside_the_bundle_is_refused(tmp_path: Path) -> None:
    from test_bundle import tiny_graph

    from distill.serving.session import onnx_session

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    path = tiny_graph(bundle / "model.onnx", weights="w.bin")
    model = onnx.load(path, load_external_data=False)
    for (
        tensor
    ) in model.graph.initializer:  # point the weights outside the bundle, as an attacker would
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../secret.bin"
    onnx.save_model(model, path)
    shutil.move(bundle / "w.bin", tmp_path / "secret.bin")
    with pytest.raises(Exception, match="escapes model directory"):
        onnx_session(path)
    with pytest.raises(Exception, match=r"\.\."):
        onnx.checker.check_model(str(path), full_check=True)
