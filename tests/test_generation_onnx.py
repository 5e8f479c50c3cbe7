"""ONNX export of a causal LM with a KV cache, parity with PyTorch, int8, perplexity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from generation_helpers import exported_tiny_llama
from transformers import AutoModelForCausalLM

from distill.errors import ParityError
from distill.export.exporter import op_counts
from distill.tasks.causal_lm.generate import OnnxCausalLM
from distill.tasks.causal_lm.int8 import quantize_int8
from distill.tasks.causal_lm.losses import mean_token_nll
from distill.tasks.causal_lm.onnx_export import (
    check_causal_parity,
    onnx_perplexity,
)

SEQUENCES = [[1, 10, 20, 30, 40, 50, 60], [1, 5, 6], [1, 70, 71, 72, 73, 74, 75, 76, 77, 78]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    return exported_tiny_llama(tmp_path_factory)


@pytest.fixture(scope="module")
def torch_model(exported):
    return AutoModelForCausalLM.from_pretrained(exported[0]).eval()


def test_export_writes_one_graph_with_a_kv_cache(exported) -> None:
    _, onnx_dir = exported
    for name in ("model.onnx", "tokenizer.json", "config.json", "generation_config.json"):
        assert (onnx_dir / name).is_file(), name
    lm = OnnxCausalLM.load(onnx_dir)
    assert lm.num_layers == 2 and (lm.kv_heads, lm.head_dim) == (2, 8)
    assert "position_ids" in lm.input_names and lm.eos_token_ids == (2,)


def test_parity_on_the_first_step_and_a_step_with_past(exported, torch_model) -> None:
    differences = check_causal_parity(
        exported[1] / "model.onnx", torch_model, SEQUENCES[2], tolerance=1e-4
    )
    assert set(differences) == {"logits_first_step", "logits_with_past"}
    # A wrong cache would show here: compare against a model whose weights differ.
    other = AutoModelForCausalLM.from_pretrained(exported[0]).eval()
    with torch.no_grad():
        other.model.layers[1].self_attn.v_proj.weight.mul_(1.5)
    with pytest.raises(ParityError, match="logits_with_past"):
        check_causal_parity(exported[1] / "model.onnx", other, SEQUENCES[2], tolerance=1e-4)


def test_onnx_perplexity_matches_torch(exported, torch_model) -> None:
    result = onnx_perplexity(exported[1] / "model.onnx", SEQUENCES)
    total, count = 0.0, 0
    for ids in SEQUENCES:
        tensor = torch.tensor([ids])
        with torch.no_grad():
            nll, n = mean_token_nll(torch_model(input_ids=tensor).logits, tensor)
        total, count = total + nll, count + n
    assert result["tokens"] == count == sum(len(s) - 1 for s in SEQUENCES)
    assert result["nll"] == pytest.approx(total, rel=1e-5)
    assert result["perplexity"] == pytest.approx(np.exp(total / count), rel=1e-5)


def test_int8_model_quantizes_every_projection_and_stays_close(exported, tmp_path: Path) -> None:
    fp32 = exported[1] / "model.onnx"
    int8 = quantize_int8(fp32, tmp_path)
    assert int8 == tmp_path / "model_quantized.onnx"
    # (No size check: at hidden 32 the per-channel scales and extra nodes outweigh the savings.)
    # Every projection of both layers (q, k, v, o, gate, up, down) runs in int8, and so does
    # the head tied to the embedding table.
    assert op_counts(int8).get("MatMulInteger") == 2 * 7 + 1
    base = onnx_perplexity(fp32, SEQUENCES)["perplexity"]
    quantized = onnx_perplexity(int8, SEQUENCES)["perplexity"]
    assert quantized == pytest.approx(base, rel=0.1)


def test_weight_only_int8_keeps_activations_float_and_stays_close(exported, tmp_path) -> None:
    import json

    fp32 = exported[1] / "model.onnx"
    int8 = quantize_int8(fp32, tmp_path, "weight-only")
    assert int8 == tmp_path / "model_quantized.onnx"
    ops = op_counts(int8)
    # Every projection of both layers in int8 blocks; no activation quantized per tensor
    # (DynamicQuantizeLinear is only the tied head's, over the int8 embedding table).
    assert ops.get("com.microsoft:MatMulNBits") == 2 * 7
    assert ops.get("MatMulInteger") == 1 and ops.get("DynamicQuantizeLinear") == 1
    settings = json.loads((tmp_path / "quantization.json").read_text())
    assert settings == {
        "mode": "weight-only",
        "operator": "MatMulNBits",
        "bits": 8,
        "block_size": 32,
        "is_symmetric": True,
        "accuracy_level": 4,
    }
    base = onnx_perplexity(fp32, SEQUENCES)["perplexity"]
    quantized = onnx_perplexity(int8, SEQUENCES)["perplexity"]
    assert quantized == pytest.approx(base, rel=0.05)  # a random tiny model: the gate's 5%


def test_unknown_int8_mode_is_refused(exported, tmp_path) -> None:
    with pytest.raises(ValueError, match="int8 mode 'static'"):
        quantize_int8(exported[1] / "model.onnx", tmp_path, "static")


def test_tied_embedding_table_is_stored_once_in_int8(exported, tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    fp32 = exported[1] / "model.onnx"
    table = next(
        numpy_helper.to_array(i)
        for i in onnx.load(str(fp32)).graph.initializer
        if i.name == "model.embed_tokens.weight"
    )
    int8 = onnx.load(str(quantize_int8(fp32, tmp_path)))
    initializers = {i.name: numpy_helper.to_array(i) for i in int8.graph.initializer}
    assert "model.embed_tokens.weight" not in initializers
    stored = initializers["model.embed_tokens.weight.int8_t"]
    scale = initializers["model.embed_tokens.weight.row_scale"]
    assert stored.dtype == np.int8 and stored.shape == table.shape[::-1]
    # Per-token scales: each row is within half a step of the fp32 row.
    assert np.abs(stored.T * scale[:, None] - table).max() <= scale.max() / 2 + 1e-7
    assert not [
        n
        for n in int8.graph.node
        if n.op_type == "Transpose" and n.input[0] == "model.embed_tokens.weight"
    ]
    # The embeddings it computes are the dequantized rows: first-step logits stay close.
    from distill.serving.session import onnx_session
    from distill.tasks.causal_lm.generate import OnnxCausalLM

    ids = np.asarray([SEQUENCES[0]], dtype=np.int64)
    reference, _ = OnnxCausalLM(onnx_session(fp32, 1)).forward(ids)
    quantized, _ = OnnxCausalLM(onnx_session(tmp_path / "model_quantized.onnx", 1)).forward(ids)
    assert np.corrcoef(reference.ravel(), quantized.ravel())[0, 1] > 0.99


def test_a_gpt2_shaped_model_exports_with_its_matmuls_quantizable(tmp_path: Path) -> None:
    """GPT-2's Conv1D layers trace to Gemm: the export rewrites them to MatMul (+ Add) so the
    weight-only pass quantizes every projection; the graph matches PyTorch on the first step
    and with past, and decodes the same greedy tokens."""
    from generation_helpers import tiny_tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    from distill.tasks.causal_lm.generate import generate
    from distill.tasks.causal_lm.onnx_export import export_causal_lm

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=32, n_layer=2, n_head=4)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.3)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    path = export_causal_lm(tmp_path / "model", tmp_path / "onnx")
    assert "Gemm" not in op_counts(path)
    differences = check_causal_parity(path, model, [1, 10, 20, 30, 40], tolerance=1e-4)
    assert set(differences) == {"logits_first_step", "logits_with_past"}
    int8 = quantize_int8(path, tmp_path / "int8", mode="weight-only")
    # 4 projections per layer (qkv, attention output, mlp in, mlp out): all quantized
    assert op_counts(int8).get("com.microsoft:MatMulNBits", 0) >= 4 * config.n_layer
    lm = OnnxCausalLM.load(tmp_path / "onnx")
    ids = tokenizer("the cat")["input_ids"]
    onnx_tokens = generate(lm, ids, max_new_tokens=6, eos_token_ids=()).token_ids
    with torch.inference_mode():
        expected = model.generate(
            torch.tensor([ids]),
            max_new_tokens=6,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )[0, len(ids) :].tolist()
    assert onnx_tokens == expected
