"""The declared dependencies keep distill on today's stack: transformers 5 (and the hub and
datasets lines it brings), no optimum, and what the exporter needs."""

from __future__ import annotations

from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _requirements() -> dict[str, Requirement]:
    data = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    requirements = [Requirement(spec) for spec in data["project"]["dependencies"]]
    return {r.name.lower().replace("_", "-"): r for r in requirements}


def test_no_pin_holds_transformers_below_5() -> None:
    spec = _requirements()["transformers"].specifier
    assert not spec.contains(Version("4.57.6")), f"transformers {spec} admits 4.x"
    assert spec.contains(Version("5.25.0")), f"transformers {spec} refuses 5.25"


def test_the_stack_is_on_its_current_lines() -> None:
    requirements = _requirements()
    assert requirements["datasets"].specifier.contains(Version("5.2.0"))
    assert requirements["huggingface-hub"].specifier.contains(Version("2.4.0"))
    assert requirements["model2vec"].specifier.contains(Version("0.10.0"))
    assert not requirements["model2vec"].extras, "model2vec[distill] caps transformers < 5.4"
    assert {"onnxscript", "onnx-ir", "skeletoken"} <= set(requirements)


def test_no_optimum() -> None:
    assert not {"optimum", "optimum-onnx"} & set(_requirements())


def test_the_license_is_an_spdx_string() -> None:
    data = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    assert data["project"]["license"] == "Apache-2.0"


def test_installed_transformers_is_5() -> None:
    import transformers

    assert Version(transformers.__version__).major == 5
