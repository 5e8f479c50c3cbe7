"""Building students, freezing, and refusing model folders that would run code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from distill.errors import ModelLoadError
from distill.tasks.classification.models import load_classifier
from distill.train.models import (
    evenly_spaced_layers,
    freeze,
    resolve_model,
    student_from_config,
    student_from_teacher_layers,
    transformer_layers,
)

LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def teacher(tiny_model_dir: Path) -> torch.nn.Module:
    return load_classifier(str(tiny_model_dir), "teacher.model", LABELS)


def test_label_names_are_real(teacher: torch.nn.Module) -> None:
    assert teacher.config.id2label == {0: "negative", 1: "positive"}
    assert teacher.config.label2id == {"negative": 0, "positive": 1}


@pytest.mark.parametrize(
    ("total", "keep", "expected"),
    [(6, 2, [0, 5]), (6, 3, [0, 2, 5]), (12, 4, [0, 4, 7, 11]), (6, 1, [5]), (4, 4, [0, 1, 2, 3])],
)
def test_evenly_spaced_layers(total: int, keep: int, expected: list[int]) -> None:
    assert evenly_spaced_layers(total, keep) == expected


def test_too_many_layers_is_an_error() -> None:
    with pytest.raises(ModelLoadError, match="student.num_layers = 7: the teacher has 6 layers"):
        evenly_spaced_layers(6, 7)


def test_student_from_teacher_layers_keeps_the_chosen_weights(
    teacher: torch.nn.Module, tmp_path: Path
) -> None:
    student = student_from_teacher_layers(teacher, [1, 3])
    teacher_layers, student_layers = transformer_layers(teacher), transformer_layers(student)
    assert len(student_layers) == 2 and student.config.num_hidden_layers == 2
    for s_index, t_index in enumerate([1, 3]):
        for (name, s_param), (_, t_param) in zip(
            student_layers[s_index].named_parameters(),
            teacher_layers[t_index].named_parameters(),
            strict=True,
        ):
            assert torch.equal(s_param, t_param), name
    assert torch.equal(student.get_input_embeddings().weight, teacher.get_input_embeddings().weight)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert len(transformer_layers(teacher)) == 4  # the teacher itself is untouched
    # It round-trips as an ordinary transformers model folder.
    from transformers import AutoModelForSequenceClassification

    student.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    inputs = {
        "input_ids": torch.tensor([[2, 5, 9, 3]]),
        "attention_mask": torch.ones(1, 4, dtype=torch.long),
    }
    student.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**inputs).logits, student(**inputs).logits, atol=1e-6)


def test_out_of_range_layers_are_refused(teacher: torch.nn.Module) -> None:
    with pytest.raises(ModelLoadError, match=r"student.layers: \[4\] out of range"):
        student_from_teacher_layers(teacher, [0, 4])


def test_student_from_config_overrides_and_rejects_unknown_fields(teacher: torch.nn.Module) -> None:
    student = student_from_config(
        teacher, {"num_hidden_layers": 1, "intermediate_size": 16}, seed=0
    )
    assert student.config.num_hidden_layers == 1 and student.config.intermediate_size == 16
    assert student.config.id2label == teacher.config.id2label
    with pytest.raises(
        ModelLoadError, match=r"student.config: \['colour'\] are not fields of BertConfig"
    ):
        student_from_config(teacher, {"colour": 1}, seed=0)


def test_freeze_embeddings_and_lowest_layers(tiny_model_dir: Path) -> None:
    model = load_classifier(str(tiny_model_dir), "teacher.model", LABELS)
    counts = freeze(model, embeddings=True, lowest_layers=2)
    layers = transformer_layers(model)
    assert not any(p.requires_grad for p in model.base_model.embeddings.parameters())
    assert not any(p.requires_grad for layer in layers[:2] for p in layer.parameters())
    assert all(p.requires_grad for layer in layers[2:] for p in layer.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    assert 0 < counts["trainable"] < counts["total"]
    with pytest.raises(ModelLoadError, match="teacher.freeze_layers = 9: the model has 4 layers"):
        freeze(model, embeddings=False, lowest_layers=9)


def copy_model(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    return dest


def test_pickle_weights_are_refused_before_any_load(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(tiny_model_dir, tmp_path / "m")
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    torch.save({"x": Exploit()}, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"no .safetensors weights \(found pytorch_model.bin"):
        resolve_model(str(folder), tmp_path, "teacher.model")
    assert not marker.exists()


def test_remote_code_needs_explicit_trust(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(tiny_model_dir, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="set teacher.trust_remote_code = true"):
        resolve_model(str(folder), tmp_path, "teacher.model")


@pytest.mark.parametrize("field", ["_attn_implementation_internal", "attn_implementation"])
def test_hub_kernel_attention_is_refused(tiny_model_dir: Path, tmp_path: Path, field: str) -> None:
    folder = copy_model(tiny_model_dir, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config[field] = "kernels-community/flash-attn"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=f"sets {field} = 'kernels-community/flash-attn'"):
        resolve_model(str(folder), tmp_path, "teacher.model")


def test_unknown_hub_model_offline_is_one_clear_error() -> None:
    with pytest.raises(
        ModelLoadError, match=r"teacher.model: cannot load 'nobody/no-such-model-xyz' as a hub id"
    ):
        load_classifier("nobody/no-such-model-xyz", "teacher.model", LABELS)


def test_missing_local_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"teacher.model: './nope' does not exist"):
        resolve_model("./nope", tmp_path, "teacher.model")


@pytest.mark.parametrize("key", ["_attn_implementation", "auto_map", "model_type"])
def test_code_choosing_config_keys_are_refused(teacher: torch.nn.Module, key: str) -> None:
    with pytest.raises(ModelLoadError, match="cannot be set from a recipe"):
        student_from_config(teacher, {key: "x"}, seed=0)


def test_tokenizer_files_outside_the_folder_are_refused(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from distill.train.models import load_tokenizer

    folder = copy_model(tiny_model_dir, tmp_path / "m")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["vocab_file"] = "../../etc/passwd"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(
        ModelLoadError, match="field 'vocab_file' = '../../etc/passwd' points outside"
    ):
        load_tokenizer(str(folder), "teacher.model")


@pytest.mark.parametrize(
    "config",
    [
        {"model_type": "bert", "max_position_embeddings": 12},
        {"model_type": "roberta", "max_position_embeddings": 12, "pad_token_id": 1},
        {"model_type": "xlm-roberta", "max_position_embeddings": 12, "pad_token_id": 1},
        {"model_type": "mpnet", "max_position_embeddings": 12},
        {"model_type": "gpt2", "n_positions": 12},
        {"model_type": "llama", "max_position_embeddings": 12},
    ],
    ids=lambda config: config["model_type"],
)
def test_usable_positions_is_the_longest_input_transformers_runs(config: dict) -> None:
    """What preflight compares data.max_length with: one more token and the model fails."""
    from transformers import AutoConfig, AutoModel

    from distill.serving.positions import usable_positions

    fields = {k: v for k, v in config.items() if k != "model_type"}
    small = {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32}
    if config["model_type"] == "gpt2":
        small = {"n_embd": 16, "n_head": 2, "n_layer": 1}
    else:
        small["num_hidden_layers"] = 1
    model = AutoModel.from_config(
        AutoConfig.for_model(config["model_type"], vocab_size=40, **fields, **small)
    ).eval()
    limit, why = usable_positions(config)
    assert why.startswith(next(iter(fields)))
    ids = torch.full((1, limit), 5)
    with torch.no_grad():
        model(input_ids=ids)  # the longest input runs
        if config["model_type"] != "llama":  # rotary: no table to run past, only untrained
            with pytest.raises((IndexError, RuntimeError)):
                model(input_ids=torch.full((1, limit + 1), 5))
    assert usable_positions({"model_type": "t5"}) is None
