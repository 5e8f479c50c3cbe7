"""Causal-LM preparation: GGUF materialization (cache, staging, marker), layer dropping,
and the same-vocabulary check. Tiny random Llamas only; the GGUF loader is replaced."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from generation_helpers import tiny_llama, tiny_tokenizer
from transformers import AutoModelForCausalLM

from distill.errors import DistillError, ModelLoadError
from distill.tasks.causal_lm import models
from distill.tasks.causal_lm.models import (
    MATERIALIZED_MARKER,
    TokenizerMismatchError,
    check_same_tokenizer,
    drop_layers,
    materialize_gguf,
)


@pytest.fixture
def fake_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[Path]]:
    """A stand-in GGUF file and a loader that returns a tiny Llama marked as GGUF-quantized."""
    path = tmp_path / "src" / "tiny.Q4_1.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF fake weights")
    calls: list[Path] = []

    def load(gguf_path: Path):
        calls.append(gguf_path)
        model = tiny_llama(seed=1)
        # What a GGUF load leaves behind, and what save_pretrained must not see.
        model.config.quantization_config = {"quant_method": "gguf"}
        return model, tiny_tokenizer()

    monkeypatch.setattr(models, "_load_gguf", load)
    return path, calls


def test_materialize_writes_a_clean_folder_once(tmp_path: Path, fake_gguf) -> None:
    gguf, calls = fake_gguf
    folder = materialize_gguf(gguf, tmp_path / "cache")
    assert folder.parent == tmp_path / "cache" and folder.name.startswith("tiny.Q4_1-")
    assert (folder / MATERIALIZED_MARKER).is_file() and (folder / "model.safetensors").is_file()
    assert "quantization_config" not in (folder / "config.json").read_text()
    reloaded = AutoModelForCausalLM.from_pretrained(folder)
    reference = tiny_llama(seed=1)
    for name, value in reference.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], value), name
    assert (folder / "tokenizer.json").is_file()
    # The second call finds the marker and loads nothing; only the final folder is left.
    assert materialize_gguf(gguf, tmp_path / "cache") == folder
    assert len(calls) == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [folder.name]


def test_a_changed_file_gets_its_own_folder(tmp_path: Path, fake_gguf) -> None:
    gguf, calls = fake_gguf
    first = materialize_gguf(gguf, tmp_path / "cache")
    gguf.write_bytes(b"GGUF other weights")
    second = materialize_gguf(gguf, tmp_path / "cache")
    assert first != second and len(calls) == 2


def test_an_interrupted_run_leaves_nothing_that_passes_for_complete(
    tmp_path: Path, fake_gguf, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf, calls = fake_gguf
    cache = tmp_path / "cache"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    # Everything written, then interrupted just before the rename.
    replace = models.os.replace
    monkeypatch.setattr(models.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        materialize_gguf(gguf, cache)
    assert list(cache.iterdir()) == []  # the staging folder was removed
    monkeypatch.setattr(models.os, "replace", replace)

    # A killed run (no cleanup) leaves a staging folder, and a half-copied final folder
    # has no marker: neither is taken for a result.
    target = models.materialized_folder(gguf, cache)
    (cache / f".{target.name}.staging-dead").mkdir()
    target.mkdir()
    (target / "config.json").write_text("{}")
    folder = materialize_gguf(gguf, cache)
    assert folder == target and (folder / MATERIALIZED_MARKER).is_file()
    assert (folder / "model.safetensors").is_file() and len(calls) == 2


def test_a_missing_gguf_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such GGUF file"):
        materialize_gguf(tmp_path / "absent.gguf", tmp_path / "cache")


def test_gguf_special_tokens_override_the_converted_ones() -> None:
    tokenizer = tiny_tokenizer()
    tokenizer.eos_token = "<s>"  # what transformers' converter does: BOS and EOS swapped
    models._apply_gguf_special_tokens(
        tokenizer, {"tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.bos_token_id": 1}
    )
    assert (tokenizer.eos_token, tokenizer.bos_token) == ("</s>", "<s>")


# --------------------------------------------------------------------------- drop_layers


def test_drop_layers_copies_the_kept_layers_and_renumbers_them() -> None:
    teacher = tiny_llama(seed=2, layers=4)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = drop_layers(teacher, [0, 3])
    assert student.config.num_hidden_layers == 2 and len(student.model.layers) == 2
    assert teacher.config.num_hidden_layers == 4 and len(teacher.model.layers) == 4
    assert [layer.self_attn.layer_idx for layer in student.model.layers] == [0, 1]
    assert [layer.self_attn.layer_idx for layer in teacher.model.layers] == [0, 1, 2, 3]
    for new, old in ((0, 0), (1, 3)):
        for name, value in student.model.layers[new].state_dict().items():
            assert torch.equal(value, before[f"model.layers.{old}.{name}"]), name
    for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        assert torch.equal(student.state_dict()[name], before[name])
    # Deep copies: training the student leaves the teacher alone; the head stays tied.
    with torch.no_grad():
        student.model.layers[1].mlp.up_proj.weight.add_(1.0)
    assert torch.equal(
        teacher.model.layers[3].mlp.up_proj.weight, before["model.layers.3.mlp.up_proj.weight"]
    )
    assert student.lm_head.weight is student.model.embed_tokens.weight


def test_generation_with_cache_works_after_dropping_layers() -> None:
    student = drop_layers(tiny_llama(seed=3, layers=3), [2, 0])
    ids = torch.tensor([[1, 10, 11, 12]])
    kwargs = {"do_sample": False, "max_new_tokens": 6, "min_new_tokens": 6, "pad_token_id": 0}
    cached = student.generate(ids, use_cache=True, **kwargs)
    uncached = student.generate(ids, use_cache=False, **kwargs)
    assert cached.shape == (1, 10) and torch.equal(cached, uncached)


def test_drop_layers_slices_layer_types() -> None:
    teacher = tiny_llama(seed=4, layers=3)
    teacher.config.layer_types = ["full_attention", "sliding_attention", "full_attention"]
    student = drop_layers(teacher, [1, 2])
    assert student.config.layer_types == ["sliding_attention", "full_attention"]


@pytest.mark.parametrize("keep", [[], [0, 0], [4], [-1]])
def test_drop_layers_refuses_bad_indices(keep: list[int]) -> None:
    with pytest.raises(ModelLoadError, match="4 decoder layers"):
        drop_layers(tiny_llama(layers=4), keep)


# --------------------------------------------------------------------------- tokenizers


def test_same_tokenizer_passes_and_a_different_one_names_both() -> None:
    teacher = tiny_tokenizer()
    check_same_tokenizer(teacher, tiny_tokenizer(), "teacher-lm", "student-lm")
    other = tiny_tokenizer()
    other.add_tokens(["zebra"])
    with pytest.raises(TokenizerMismatchError) as caught:
        check_same_tokenizer(teacher, other, "teacher-lm", "student-lm")
    message = str(caught.value)
    assert isinstance(caught.value, DistillError)
    assert "teacher-lm" in message and "student-lm" in message and "'zebra'" in message
