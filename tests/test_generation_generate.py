"""Torch-free generation with onnxruntime + tokenizers against transformers' generate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from generation_helpers import EOS_ID, exported_tiny_llama
from transformers import AutoModelForCausalLM

from distill.errors import DataError
from distill.tasks.causal_lm.generate import OnnxCausalLM, choose_token, generate

PROMPTS = ["the cat is in the house", "paris is the capital of", "one"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    return exported_tiny_llama(tmp_path_factory)


@pytest.fixture(scope="module")
def lm(exported) -> OnnxCausalLM:
    return OnnxCausalLM.load(exported[1])


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_reproduces_transformers_generate(exported, lm, prompt: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(exported[0]).eval()
    ours = generate(lm, prompt, max_new_tokens=12, eos_token_ids=())
    ids = torch.tensor([ours.prompt_ids])
    with torch.no_grad():
        theirs = model.generate(
            ids, do_sample=False, max_new_tokens=12, min_new_tokens=12, pad_token_id=0
        )
    assert ours.prompt_ids[0] == 1  # tokenizer.json's post-processor added <s>
    assert ours.token_ids == theirs[0, ids.shape[1] :].tolist()
    assert ours.finish_reason == "length" and len(ours.token_ids) == 12


def test_a_folder_and_token_ids_work_as_inputs(exported, lm) -> None:
    from_folder = generate(exported[1], "the dog", max_new_tokens=5, eos_token_ids=())
    from_ids = generate(lm, from_folder.prompt_ids, max_new_tokens=5, eos_token_ids=())
    assert from_folder.token_ids == from_ids.token_ids
    assert from_folder.text == lm.tokenizer.decode(from_ids.token_ids, skip_special_tokens=True)


def test_sampling_is_reproducible_with_a_seed_and_top_k_1_is_greedy(lm) -> None:
    kwargs = {"max_new_tokens": 10, "eos_token_ids": (), "do_sample": True, "temperature": 1.5}
    first = generate(lm, "the cat", seed=7, **kwargs)
    assert generate(lm, "the cat", seed=7, **kwargs).token_ids == first.token_ids
    others = {tuple(generate(lm, "the cat", seed=s, **kwargs).token_ids) for s in range(4)}
    assert len(others) > 1  # the seed matters: this is sampling
    greedy = generate(lm, "the cat", max_new_tokens=10, eos_token_ids=())
    top1 = generate(lm, "the cat", seed=3, top_k=1, **kwargs)
    assert top1.token_ids == greedy.token_ids
    nucleus = generate(lm, "the cat", seed=3, top_p=1e-9, **kwargs)
    assert nucleus.token_ids == greedy.token_ids


def test_top_k_and_top_p_filter_what_can_be_sampled() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(0)
    picks = {choose_token(logits, rng, do_sample=True, top_k=2) for _ in range(200)}
    assert picks == {0, 1}
    picks = {choose_token(logits, rng, do_sample=True, top_p=0.9) for _ in range(300)}
    assert picks == {0, 1, 2}  # 0.5 + 0.3 < 0.9: the third token is needed to reach 0.9
    picks = {choose_token(logits, rng, do_sample=True, top_p=0.75) for _ in range(300)}
    assert picks == {0, 1}


def test_generation_stops_at_eos(lm) -> None:
    greedy = generate(lm, "the cat", max_new_tokens=8, eos_token_ids=())
    stop = greedy.token_ids[3]
    first = greedy.token_ids.index(stop)
    ended = generate(lm, "the cat", max_new_tokens=8, eos_token_ids=(stop,))
    assert ended.finish_reason == "eos" and ended.token_ids == greedy.token_ids[: first + 1]
    # The model's own EOS id comes from generation_config.json.
    assert lm.eos_token_ids == (EOS_ID,)


def test_bad_sampling_settings_are_refused(lm) -> None:
    for kwargs in ({"max_new_tokens": 0}, {"temperature": 0.0}, {"top_k": 0}, {"top_p": 0.0}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            generate(lm, "the", **kwargs)
    for temperature in (float("inf"), float("nan")):  # inf sampled uniformly before
        with pytest.raises(ValueError, match="temperature must be a finite number > 0, not"):
            generate(lm, "the", do_sample=True, temperature=temperature)


def test_a_folder_records_where_its_positions_come_from(exported, lm) -> None:
    assert lm.max_positions == 128
    assert lm.positions_source == f"max_position_embeddings in {exported[1] / 'config.json'}"
    # Token ids are held to the positions too (the report stage passes ids).
    with pytest.raises(DataError, match="a 100-token prompt and max_new_tokens 29 need 129"):
        generate(lm, [5] * 100, max_new_tokens=29)
    assert len(generate(lm, [5] * 100, max_new_tokens=28, eos_token_ids=()).token_ids) == 28


def test_generation_loads_neither_torch_nor_transformers(exported) -> None:
    code = (
        "import json, sys\n"
        "from distill.tasks.causal_lm.generate import generate\n"
        f"out = generate({str(exported[1])!r}, 'the cat', max_new_tokens=4, eos_token_ids=())\n"
        "heavy = ('torch', 'transformers', 'optimum', 'datasets', 'accelerate', 'sklearn')\n"
        "print(json.dumps({'n': len(out.token_ids), 'loaded': [m for m in heavy if m in sys.modules]}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path.cwd())}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"n": 4, "loaded": []}
