"""Students cut from a causal-LM teacher by measurement (distill/tasks/causal_lm/pruning.py):
layer importance and the contiguous block on tiny Llamas with identity layers built in,
width pruning of MLP neurons and attention heads, the recipe keys, and the student stage's
before-training perplexity."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from generation_helpers import WORDS, tiny_llama, tiny_tokenizer, write_tiny_lm_run

from distill.config import DataConfig, StudentTable, validate_recipe
from distill.errors import ModelLoadError, RecipeError
from distill.pipeline.artifacts import RunContext
from distill.tasks.causal_lm import pruning
from distill.tasks.causal_lm.models import drop_layers
from distill.tasks.causal_lm.pruning import (
    choose_layers,
    layer_distances,
    prune_heads,
    prune_mlp,
    prune_width,
    top_heads,
)
from distill.tasks.causal_lm.training import perplexity

PAD = 0


def texts(n: int, seed: int = 0) -> list[list[int]]:
    """Token ids of random texts of 4..15 tokens, each starting with BOS (id 1)."""
    rng = np.random.default_rng(seed)
    return [[1, *rng.integers(4, 4 + len(WORDS), size=int(rng.integers(3, 15)))] for _ in range(n)]


CALIBRATION = texts(24)


def make_identity(model: Any, layer: int) -> None:
    """Layer ``layer`` adds nothing to the residual stream: its output is its input."""
    block = model.model.layers[layer]
    with torch.no_grad():
        block.self_attn.o_proj.weight.zero_()
        block.mlp.down_proj.weight.zero_()


def logits(model: Any, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits


# --------------------------------------------------------------------------- layers


def test_an_identity_layer_is_ranked_least_important() -> None:
    model = tiny_llama(seed=3, layers=4)
    make_identity(model, 1)
    influence = layer_distances(model, CALIBRATION, PAD).block_influence()
    assert influence[1] == pytest.approx(0.0, abs=1e-9)
    assert min(influence[i] for i in (0, 2, 3)) > 0.01
    kept, record = choose_layers(model, "importance", 3, CALIBRATION, PAD)
    assert kept == [0, 2, 3]
    assert record["layer_selection"] == "importance"
    assert record["calibration_texts"] == len(CALIBRATION)
    assert record["calibration_tokens"] == sum(len(t) for t in CALIBRATION)
    assert len(record["block_influence"]) == 4 and record["block_influence"][1] < 1e-6


def test_the_last_layer_is_scored_on_its_own_output_not_the_final_norm() -> None:
    """transformers' last hidden state is norm(output): with a non-trivial norm weight an
    identity last layer would look like it changes the stream."""
    model = tiny_llama(seed=4, layers=3)
    with torch.no_grad():
        model.model.norm.weight.copy_(torch.linspace(0.1, 3.0, model.config.hidden_size))
    make_identity(model, 2)
    influence = layer_distances(model, CALIBRATION, PAD).block_influence()
    assert influence[2] == pytest.approx(0.0, abs=1e-9)
    assert choose_layers(model, "importance", 2, CALIBRATION, PAD)[0] == [0, 1]


def test_padding_does_not_change_the_scores() -> None:
    model = tiny_llama(seed=5, layers=3)
    alone = [layer_distances(model, [t], PAD) for t in CALIBRATION[:3]]
    together = layer_distances(model, CALIBRATION[:3], PAD)  # padded to the longest
    weights = np.array([a.tokens for a in alone], dtype=float)
    expected = sum(w * a.cosine for w, a in zip(weights, alone, strict=True)) / weights.sum()
    np.testing.assert_allclose(together.cosine, expected, atol=1e-6)
    assert together.tokens == sum(len(t) for t in CALIBRATION[:3])


def test_contiguous_drops_the_block_whose_input_and_output_agree() -> None:
    model = tiny_llama(seed=6, layers=6)
    make_identity(model, 2)
    make_identity(model, 3)
    kept, record = choose_layers(model, "contiguous", 4, CALIBRATION, PAD)
    assert kept == [0, 1, 4, 5]
    block = record["dropped_block"]
    assert block["start"] == 2 and block["layers"] == 2
    assert block["angular_distance"] == pytest.approx(0.0, abs=1e-6)
    # Starts 0..3: a block of 2 starting at 4 would drop the last layer.
    assert len(block["candidates"]) == 4
    assert block["candidates"][2] == pytest.approx(0.0, abs=1e-6)
    assert min(c for i, c in enumerate(block["candidates"]) if i != 2) > 0.01


def test_contiguous_never_drops_the_last_layer() -> None:
    model = tiny_llama(seed=6, layers=6)
    make_identity(model, 4)
    make_identity(model, 5)  # the block {4, 5} changes nothing, but holds the last layer
    kept, record = choose_layers(model, "contiguous", 4, CALIBRATION, PAD)
    assert 5 in kept and len(kept) == 4
    start = record["dropped_block"]["start"]
    assert kept == [i for i in range(6) if i not in (start, start + 1)] and start + 1 < 5
    # With one layer to drop, the identity layer 4 is that block.
    assert choose_layers(model, "contiguous", 5, CALIBRATION, PAD)[0] == [0, 1, 2, 3, 5]


def test_keeping_every_layer_drops_no_block() -> None:
    model = tiny_llama(seed=6, layers=3)
    kept, record = choose_layers(model, "contiguous", 3, CALIBRATION, PAD)
    assert kept == [0, 1, 2] and record["dropped_block"]["layers"] == 0


def test_more_layers_than_the_teacher_has_is_an_error_naming_the_key() -> None:
    with pytest.raises(ModelLoadError, match=r"student.num_layers = 5: the teacher has 3 layers"):
        choose_layers(tiny_llama(seed=0, layers=3), "importance", 5, CALIBRATION, PAD)


# --------------------------------------------------------------------------- width


def test_mlp_pruning_keeps_exactly_the_chosen_neurons() -> None:
    model = tiny_llama(seed=7, layers=2)
    original = copy.deepcopy(model)
    keep = [torch.tensor([0, 5, 17, 40, 63]), torch.tensor([1, 2, 3, 50, 62])]
    prune_mlp(model, keep)
    assert model.config.intermediate_size == 5
    for layer, before, neurons in zip(model.model.layers, original.model.layers, keep, strict=True):
        assert torch.equal(layer.mlp.gate_proj.weight, before.mlp.gate_proj.weight[neurons])
        assert torch.equal(layer.mlp.up_proj.weight, before.mlp.up_proj.weight[neurons])
        assert torch.equal(layer.mlp.down_proj.weight, before.mlp.down_proj.weight[:, neurons])
        # Attention untouched.
        assert torch.equal(layer.self_attn.q_proj.weight, before.self_attn.q_proj.weight)
    ids = CALIBRATION[0]
    assert logits(model, ids).shape == (1, len(ids), model.config.vocab_size)


def test_mlp_pruning_drops_the_silent_neurons_and_the_output_is_unchanged() -> None:
    model = tiny_llama(seed=8, layers=2)
    silent = [torch.arange(0, 64, 4), torch.arange(1, 64, 4)]  # 16 of 64 per layer
    with torch.no_grad():
        for layer, neurons in zip(model.model.layers, silent, strict=True):
            layer.mlp.gate_proj.weight[neurons] = 0.0  # silu(0) * up = 0
    reference = [logits(model, t) for t in CALIBRATION[:4]]
    record = prune_width(model, CALIBRATION, PAD, mlp_keep=0.75)
    assert record["mlp"]["neurons_kept"] == 48 and record["mlp"]["neurons_per_layer"] == 64
    assert record["mlp"]["score_kept"] == [1.0, 1.0]
    assert "heads" not in record
    for layer in model.model.layers:
        assert layer.mlp.up_proj.out_features == 48
    for ids, expected in zip(CALIBRATION[:4], reference, strict=True):
        torch.testing.assert_close(logits(model, ids), expected, rtol=0, atol=1e-5)


def test_keeping_everything_changes_nothing() -> None:
    model = tiny_llama(seed=9, layers=2)
    reference = logits(model, CALIBRATION[1])
    assert prune_width(model, CALIBRATION, PAD, mlp_keep=1.0, heads_keep=1.0) == {}
    assert torch.equal(logits(model, CALIBRATION[1]), reference)
    # Going through the slicing with every neuron and head kept is exact too.
    scores = pruning.width_scores(model, CALIBRATION, PAD)
    assert scores.neurons is not None and scores.heads is not None
    prune_mlp(model, pruning.top_neurons(scores.neurons, 1.0))
    prune_heads(model, [top_heads(s, 2, 1.0) for s in scores.heads])
    assert model.config.intermediate_size == 64 and model.config.num_attention_heads == 4
    torch.testing.assert_close(logits(model, CALIBRATION[1]), reference, rtol=0, atol=1e-6)


def _silence_heads(model: Any, heads: list[int]) -> None:
    head_dim = model.config.head_dim
    with torch.no_grad():
        for layer in model.model.layers:
            for h in heads:
                layer.self_attn.o_proj.weight[:, h * head_dim : (h + 1) * head_dim] = 0.0


def _cached_matches_full(model: Any, ids: list[int]) -> None:
    """Decoding the last token from the KV cache gives the full forward pass's logits."""
    with torch.no_grad():
        full = model(input_ids=torch.tensor([ids])).logits[0, -1]
        first = model(input_ids=torch.tensor([ids[:-1]]), use_cache=True)
        step = model(input_ids=torch.tensor([ids[-1:]]), past_key_values=first.past_key_values)
    torch.testing.assert_close(step.logits[0, -1], full, rtol=0, atol=1e-4)


def test_grouped_query_heads_are_pruned_within_each_kv_group(tmp_path: Path) -> None:
    model = tiny_llama(seed=10, layers=2)  # 4 query heads, 2 KV heads: groups {0, 1}, {2, 3}
    _silence_heads(model, [0, 2])
    original = copy.deepcopy(model)
    reference = logits(model, CALIBRATION[2])
    record = prune_width(model, CALIBRATION, PAD, heads_keep=0.5)
    assert record["heads"]["kept"] == [[1, 3], [1, 3]]
    assert record["heads"]["heads_kept"] == 2 and record["heads"]["kv_heads_kept"] == 2
    assert all(s[0] == 0 and s[2] == 0 and s[1] > 0 and s[3] > 0 for s in record["heads"]["scores"])
    config = model.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (2, 2, 8)
    rows = torch.cat([torch.arange(8, 16), torch.arange(24, 32)])
    for layer, before in zip(model.model.layers, original.model.layers, strict=True):
        assert torch.equal(layer.self_attn.q_proj.weight, before.self_attn.q_proj.weight[rows])
        assert torch.equal(layer.self_attn.o_proj.weight, before.self_attn.o_proj.weight[:, rows])
        assert torch.equal(layer.self_attn.k_proj.weight, before.self_attn.k_proj.weight)
    torch.testing.assert_close(logits(model, CALIBRATION[2]), reference, rtol=0, atol=1e-5)
    _cached_matches_full(model, CALIBRATION[2])
    # It saves and reloads as a normal folder with the new shapes.
    from transformers import AutoModelForCausalLM

    model.save_pretrained(tmp_path / "pruned")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    torch.testing.assert_close(logits(reloaded, CALIBRATION[2]), reference, rtol=0, atol=1e-5)


def test_multi_head_attention_prunes_heads_with_their_keys_and_values() -> None:
    model = tiny_llama(seed=11, layers=2, num_key_value_heads=4)  # one query head per KV head
    _silence_heads(model, [1])
    reference = logits(model, CALIBRATION[3])
    record = prune_width(model, CALIBRATION, PAD, heads_keep=0.75)
    assert record["heads"]["kept"] == [[0, 2, 3], [0, 2, 3]]
    assert model.config.num_attention_heads == 3 and model.config.num_key_value_heads == 3
    assert model.model.layers[0].self_attn.k_proj.out_features == 3 * 8
    torch.testing.assert_close(logits(model, CALIBRATION[3]), reference, rtol=0, atol=1e-5)
    _cached_matches_full(model, CALIBRATION[3])


def test_head_choices_that_break_the_kv_groups_are_refused() -> None:
    model = tiny_llama(seed=0, layers=1)
    with pytest.raises(ValueError, match="do not split evenly over KV heads"):
        prune_heads(model, [([0, 1], [0, 1])])  # both from group 0: group 1 would be empty


def test_a_pruned_student_exports_to_onnx_with_parity(tmp_path: Path) -> None:
    from distill.tasks.causal_lm.onnx_export import check_causal_parity, export_causal_lm

    student = drop_layers(tiny_llama(seed=12, layers=3), [0, 2])
    prune_width(student, CALIBRATION, PAD, mlp_keep=0.5, heads_keep=0.5)
    student.save_pretrained(tmp_path / "model")
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    onnx = export_causal_lm(tmp_path / "model", tmp_path / "onnx")
    differences = check_causal_parity(onnx, student, CALIBRATION[4], tolerance=1e-4)
    assert max(differences.values()) <= 1e-4


# --------------------------------------------------------------------------- recipe keys

CAUSAL = {
    "name": "t",
    "task": "causal-lm",
    "data": {"path": "x.csv"},
    "teacher": {"model": "some/model"},
    "student": {"num_layers": 2},
}


def _problems(student: dict[str, Any], **top: Any) -> list[str]:
    with pytest.raises(RecipeError) as info:
        validate_recipe({**CAUSAL, **top, "student": student})
    return info.value.problems


def test_pruning_keys_validate_and_default_to_todays_student() -> None:
    recipe = validate_recipe(CAUSAL)
    student = recipe.student
    assert (student.layer_selection, student.mlp_keep, student.heads_keep) == ("even", 1.0, 1.0)
    assert student.calibration_texts == 128
    chosen = validate_recipe(
        {
            **CAUSAL,
            "student": {"num_layers": 2, "layer_selection": "contiguous", "mlp_keep": 0.5},
        }
    ).student
    assert chosen.layer_selection == "contiguous" and chosen.mlp_keep == 0.5
    # Explicit layers with the default selection stay what they were.
    assert validate_recipe({**CAUSAL, "student": {"layers": [0, 3]}}).student.layers == [0, 3]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("mlp_keep", 0.0, "student.mlp_keep: Input should be greater than 0 (got 0.0)"),
        ("mlp_keep", 1.5, "student.mlp_keep: Input should be less than or equal to 1 (got 1.5)"),
        ("heads_keep", -0.5, "student.heads_keep: Input should be greater than 0 (got -0.5)"),
        ("calibration_texts", 0, "student.calibration_texts: Input should be greater than"),
        ("layer_selection", "random", "student.layer_selection: Input should be 'even'"),
    ],
)
def test_bad_pruning_values_are_errors(key: str, value: Any, message: str) -> None:
    problems = _problems({"num_layers": 2, key: value})
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_layers_with_a_measured_selection_is_an_error() -> None:
    problems = _problems(
        {"layers": [0, 1], "layer_selection": "importance", "calibration_texts": 4}
    )
    assert problems == [
        "(top level): student.layers and student.layer_selection = 'importance' both choose "
        "the layers: give num_layers with the selection, or the explicit layers alone"
    ]


def test_all_pruning_problems_are_reported_at_once() -> None:
    problems = _problems(
        {"init": "config", "num_layers": 2, "mlp_keep": 0.5, "layer_selection": "importance"}
    )
    # The recipe's own checks come as one problem, each part naming its key.
    assert problems == [
        "(top level): "
        + "; ".join(
            f"student.{key} is used only with student.init = 'teacher-layers' (not 'config'): "
            "it chooses what a copy of the teacher keeps"
            for key in ("layer_selection", "mlp_keep")
        )
    ]


def test_calibration_texts_without_anything_to_measure_is_an_error() -> None:
    assert _problems({"num_layers": 2, "calibration_texts": 64}) == [
        "(top level): student.calibration_texts is used only with layer_selection "
        "'importance' or 'contiguous', mlp_keep < 1 or heads_keep < 1"
    ]


def test_pruning_keys_are_refused_by_other_tasks() -> None:
    with pytest.raises(RecipeError) as info:
        validate_recipe(
            {
                **CAUSAL,
                "task": "sequence-classification",
                "student": {"num_layers": 2, "layer_selection": "importance", "mlp_keep": 0.5},
            }
        )
    assert info.value.problems == [
        "(top level): "
        + "; ".join(
            f"student.{key} is read by task 'causal-lm' only, not by this recipe's task "
            "'sequence-classification'"
            for key in ("layer_selection", "mlp_keep")
        )
    ]


# --------------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The causal-LM student stage on a 4-layer teacher with an identity layer 2, keeping 3
    layers by importance and half the MLP neurons; two optimizer steps."""
    from distill.tasks.causal_lm.stages import student as student_stage

    root = tmp_path_factory.mktemp("lm-prune")
    teacher = tiny_llama(seed=13, layers=4)
    make_identity(teacher, 2)
    write_tiny_lm_run(root, teacher, max_words=10)
    ctx = RunContext(name="p", seed=3, task="causal-lm", workdir=root, recipe_dir=root)
    student = StudentTable(
        num_layers=3,
        layer_selection="importance",
        calibration_texts=16,
        mlp_keep=0.5,
        max_steps=2,
        batch_size=8,
        learning_rate=1e-2,
        alpha=0.5,
        teacher_outputs="online",
        baselines=["no-kd"],
    )
    data = DataConfig(path="unused", max_length=16)
    out = root / "student"
    out.mkdir()
    metrics = student_stage.run(
        ctx, {"data": root / "data", "teacher": root / "teacher"}, out, data=data, student=student
    )
    return {"root": root, "metrics": metrics, "ctx": ctx, "student": student, "data": data}


def test_the_stage_records_the_selection_and_before_training_perplexity(stage_run) -> None:
    metrics = stage_run["metrics"]
    built = metrics["built"]
    assert built["teacher_layers"] == [0, 1, 3] and built["layer_selection"] == "importance"
    assert built["calibration_texts"] == 16 and len(built["block_influence"]) == 4
    assert built["block_influence"][2] < 1e-6
    assert built["mlp"]["neurons_kept"] == 32 and built["mlp"]["neurons_per_layer"] == 64
    saved = json.loads((stage_run["root"] / "student" / "model" / "config.json").read_text())
    assert saved["num_hidden_layers"] == 3 and saved["intermediate_size"] == 32
    before = metrics["before_training"]
    for split in ("validation", "test"):
        assert before[split]["tokens"] == metrics[split]["tokens"] > 0
        assert before[split]["perplexity"] != metrics[split]["perplexity"]
    # The no-KD twin started from the very same weights.
    assert metrics["baseline"]["built"] == built


def test_before_training_perplexity_is_the_initial_students(stage_run) -> None:
    """Rebuilt from the same teacher, sample and seed, the student scores the recorded number."""
    from distill.tasks.causal_lm.files import read_split
    from distill.tasks.causal_lm.stages.student import build_student
    from distill.tasks.causal_lm.training import encode_texts, load_causal_lm, prepare_tokenizer
    from distill.train.models import load_tokenizer

    root = stage_run["root"]
    tokenizer = prepare_tokenizer(load_tokenizer(str(root / "teacher" / "model"), "teacher"))
    teacher = load_causal_lm(root / "teacher" / "model", "teacher").eval()
    train = encode_texts(tokenizer, read_split(root / "data", "train"), 16)
    test = encode_texts(tokenizer, read_split(root / "data", "test"), 16)
    calibration = pruning.calibration_sample(train, 16, stage_run["ctx"].seed)
    model, built = build_student(
        stage_run["student"], teacher, tokenizer, stage_run["ctx"], calibration
    )
    assert built == stage_run["metrics"]["built"]
    expected = perplexity(model, test, tokenizer.pad_token_id)["perplexity"]
    assert stage_run["metrics"]["before_training"]["test"]["perplexity"] == pytest.approx(expected)
