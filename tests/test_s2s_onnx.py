"""The seq2seq ONNX graphs (encoder with cross keys/values, decoder with a KV cache), their
parity with PyTorch, numpy greedy and beam search against transformers' ``generate``, int8,
and the runner's ``translate`` (order, truncation), on a tiny T5 and a tiny BART.

Random weights, scaled up so that the next token depends on the step, and an EOS made likely
mid-sequence, so that the sources end at different steps (greedy and beam): EOS handling,
padding of finished rows and finished beams are exercised, not only the length limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from seq2seq_models import build_tiny_bart, build_tiny_t5

from distill.errors import DataError, ParityError
from distill.export.bundle import write_bundle_manifest
from distill.tasks.seq2seq.decoding import generate_ids, log_softmax, pad_sources
from distill.tasks.seq2seq.onnx_export import (
    check_seq2seq_parity,
    cut_after_eos,
    export_seq2seq,
    load_for_export,
    quantize_seq2seq,
)
from distill.tasks.seq2seq.onnx_model import (
    GenerationRules,
    OnnxSeq2Seq,
    read_generation_rules,
    read_token_ids,
)
from distill.tasks.seq2seq.runner import generate, load_bundle, translate

WORDS = "a b c d e f g h i j k l m n o p q r s t u v w x y z".split()
EOS = 1
MAX_NEW = 12
_RNG = np.random.default_rng(0)
# Token ids 4.. are words; every source ends with EOS, as the tokenizer writes it.
SOURCES = [[int(x) for x in _RNG.integers(4, 30, size=n)] + [EOS] for n in (3, 5, 8, 4, 6, 2, 7, 3)]


def _vary(folder: Path, kind: str) -> None:
    """Scale the weight matrices (a random model otherwise repeats one token) and make EOS
    likely mid-sequence: T5's EOS row of the tied head copies a token it often generates;
    BART (which starts decoding from EOS) gets a logit bias instead."""
    model = load_for_export(folder)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() >= 2 and "shared" not in name and "embed" not in name:
                parameter.mul_(3.0 if kind == "t5" else 12.0)
        if kind == "t5":
            head = model.get_output_embeddings().weight
            head[EOS] = head[3] * 1.05
        else:
            model.final_logits_bias[0, EOS] = 0.25
    model.save_pretrained(folder)


@pytest.fixture(scope="module", params=["t5", "bart"])
def exported(request: Any, tmp_path_factory: Any) -> dict[str, Any]:
    kind = request.param
    root = tmp_path_factory.mktemp(kind)
    build = build_tiny_t5 if kind == "t5" else build_tiny_bart
    build(root / "model", WORDS)
    _vary(root / "model", kind)
    folder = export_seq2seq(root / "model", root / "onnx")
    return {
        "kind": kind,
        "root": root,
        "folder": folder,
        "torch": load_for_export(root / "model"),
        "onnx": OnnxSeq2Seq.load(folder),
    }


def _torch_generate(model: Any, sources: list[list[int]], **options: Any) -> list[list[int]]:
    ids, mask = pad_sources(sources, model.config.pad_token_id)
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            do_sample=False,
            max_new_tokens=MAX_NEW,
            **options,
        )
    return [cut_after_eos(row[1:].tolist(), EOS) for row in out]


def test_graphs_names_and_cache_shapes(exported: dict[str, Any]) -> None:
    model: OnnxSeq2Seq = exported["onnx"]
    assert [o.name for o in model.encoder.get_outputs()] == [
        "encoder_hidden_states",
        "cross.0.key",
        "cross.0.value",
        "cross.1.key",
        "cross.1.value",
    ]
    assert [i.name for i in model.decoder.get_inputs()][:4] == [
        "input_ids",
        "encoder_attention_mask",
        "past.0.key",
        "past.0.value",
    ]
    assert model.num_layers == 2 and model.heads == 2
    assert model.head_dim == 16
    assert model.decoder_start_token_id == (0 if exported["kind"] == "t5" else EOS)
    ids, mask = pad_sources(SOURCES[:3], model.pad_token_id)  # widths 4, 6, 9
    encoded = model.encode(ids, mask)
    assert encoded.cross["cross.1.value"].shape == (3, 2, 9, 16)
    logits, past = model.decode_step(np.zeros((3, 2), np.int64), mask, encoded.cross)
    assert logits.shape == (3, 2, 30)
    _, past = model.decode_step(np.zeros((3, 1), np.int64), mask, encoded.cross, past)
    assert past["past.0.key"].shape == (3, 2, 3, 16)
    for name in ("config.json", "generation_config.json", "tokenizer.json"):
        assert (exported["folder"] / name).is_file()


def test_parity_and_greedy_agreement(exported: dict[str, Any]) -> None:
    result = check_seq2seq_parity(
        exported["folder"], exported["torch"], SOURCES[:4], tolerance=1e-4, max_new_tokens=MAX_NEW
    )
    assert result["greedy_token_agreement"] == 1.0
    assert set(result) == {
        "encoder.onnx:encoder_hidden_states",
        "decoder.onnx:logits_first_step",
        "decoder.onnx:logits_with_past",
        "greedy_token_agreement",
    }
    assert max(v for k, v in result.items() if k != "greedy_token_agreement") < 1e-4


def test_parity_error_names_the_graph_and_output(exported: dict[str, Any]) -> None:
    with pytest.raises(ParityError, match=r"decoder\.onnx:logits_first_step"):
        check_seq2seq_parity(
            exported["folder"], exported["torch"], SOURCES[:1], tolerance=0.0, max_new_tokens=2
        )


def test_batched_greedy_equals_torch_generate(exported: dict[str, Any]) -> None:
    mine = generate_ids(exported["onnx"], SOURCES, max_new_tokens=MAX_NEW)
    assert mine == _torch_generate(exported["torch"], SOURCES, num_beams=1)
    lengths = [len(tokens) for tokens in mine]
    # Some rows end early on EOS, some mid-way or never: finished rows are padded meanwhile.
    assert 1 < len(set(lengths)) and max(lengths) == MAX_NEW
    assert any(1 < n < MAX_NEW for n in lengths)
    assert all(t[-1] == EOS for t in mine if len(t) < MAX_NEW)


@pytest.mark.parametrize(
    ("beams", "length_penalty", "early_stopping"),
    [(3, 1.0, False), (3, 0.5, True), (4, 2.0, "never")],
)
def test_beam_search_equals_transformers(
    exported: dict[str, Any], beams: int, length_penalty: float, early_stopping: bool | str
) -> None:
    options = {"length_penalty": length_penalty, "early_stopping": early_stopping}
    mine = generate_ids(
        exported["onnx"], SOURCES, num_beams=beams, max_new_tokens=MAX_NEW, **options
    )
    assert mine == _torch_generate(exported["torch"], SOURCES, num_beams=beams, **options)
    if (beams, early_stopping) == (3, False):  # one source alone (no padding) too
        one = generate_ids(exported["onnx"], SOURCES[2:3], num_beams=3, max_new_tokens=MAX_NEW)
        assert one == _torch_generate(exported["torch"], SOURCES[2:3], num_beams=3)


def test_beam_lengths_vary(exported: dict[str, Any]) -> None:
    lengths = [
        len(t) for t in generate_ids(exported["onnx"], SOURCES, num_beams=3, max_new_tokens=MAX_NEW)
    ]
    expected = {"t5": [12, 4, 4, 12, 5, 10, 12, 12], "bart": [1, 2, 12, 11, 1, 1, 12, 12]}
    assert lengths == expected[exported["kind"]]


RULES = [
    {
        "repetition_penalty": 1.3,
        "no_repeat_ngram_size": 2,
        "bad_words_ids": [[5]],
        "min_length": 4,
        "forced_eos_token_id": EOS,
    },
    {"forced_bos_token_id": 7, "min_new_tokens": 3, "no_repeat_ngram_size": 3},
]


@pytest.mark.parametrize("settings", RULES, ids=["penalties", "forced-bos"])
def test_generation_config_processors_match_transformers(
    exported: dict[str, Any], tmp_path: Path, settings: dict[str, Any]
) -> None:
    """The logits processors a generation config asks for, greedy and beam, as transformers."""
    import json

    (tmp_path / "generation_config.json").write_text(json.dumps(settings), encoding="utf-8")
    rules = read_generation_rules(tmp_path, (EOS,))
    assert rules.unapplied == () and rules.no_repeat_ngram_size == settings["no_repeat_ngram_size"]
    onnx_model: OnnxSeq2Seq = exported["onnx"]
    ids = read_token_ids(exported["folder"])
    model = OnnxSeq2Seq(onnx_model.encoder, onnx_model.decoder, ids, rules=rules)
    for beams in (1, 3):
        mine = generate_ids(model, SOURCES, num_beams=beams, max_new_tokens=MAX_NEW)
        assert mine == _torch_generate(exported["torch"], SOURCES, num_beams=beams, **settings)


def test_unapplied_generation_settings_are_named(tmp_path: Path) -> None:
    import json

    settings = {"suppress_tokens": [4], "bad_words_ids": [[5, 6]], "length_penalty": 0.6}
    (tmp_path / "generation_config.json").write_text(json.dumps(settings), encoding="utf-8")
    rules = read_generation_rules(tmp_path, (EOS,))
    assert rules.unapplied == ("suppress_tokens", "bad_words_ids (of several tokens)")
    assert rules.length_penalty == 0.6 and rules == GenerationRules(
        length_penalty=0.6, unapplied=rules.unapplied
    )


def test_cached_decoding_equals_full_recompute(exported: dict[str, Any]) -> None:
    """Every cached step's logits equal the decoder run on the whole prefix without cache."""
    model: OnnxSeq2Seq = exported["onnx"]
    ids, mask = pad_sources(SOURCES[:4], model.pad_token_id)
    encoded = model.encode(ids, mask)
    prefix = np.full((4, 1), model.decoder_start_token_id, dtype=np.int64)
    past = None
    for _ in range(6):
        cached, past = model.decode_step(prefix[:, -1:], mask, encoded.cross, past)
        full, _ = model.decode_step(prefix, mask, encoded.cross)
        np.testing.assert_allclose(cached[:, -1], full[:, -1], atol=1e-5)
        prefix = np.concatenate([prefix, cached[:, -1].argmax(-1)[:, None]], axis=1)
    assert past is not None and past["past.1.key"].shape[2] == 6


def test_top_candidates_break_ties_by_lowest_index() -> None:
    from distill.tasks.seq2seq.decoding import _top

    rng = np.random.default_rng(2)
    scores = rng.integers(-3, 3, size=(6, 40)).astype(np.float32)
    scores[:2, :9] = -np.inf
    for k in (1, 4, 6, 39, 40):
        expected = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
        np.testing.assert_array_equal(_top(scores, k), expected)


def test_log_softmax_matches_torch() -> None:
    logits = np.random.default_rng(1).normal(size=(3, 11)).astype(np.float32) * 20
    expected = torch.log_softmax(torch.from_numpy(logits), dim=-1).numpy()
    np.testing.assert_allclose(log_softmax(logits), expected, atol=1e-6)


def test_int8_graphs_load_and_decode(exported: dict[str, Any]) -> None:
    import onnx

    out = exported["root"] / "int8"
    paths = quantize_seq2seq(exported["folder"], out)
    assert sorted(paths) == ["decoder.onnx", "encoder.onnx"]
    ops = {node.op_type for node in onnx.load(str(paths["decoder.onnx"])).graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    assert (out / "quantization.json").is_file() and (out / "tokenizer.json").is_file()
    int8 = OnnxSeq2Seq.load(out)
    greedy = generate_ids(int8, SOURCES, max_new_tokens=MAX_NEW)
    beams = generate_ids(int8, SOURCES, num_beams=3, max_new_tokens=MAX_NEW)
    fp32 = generate_ids(exported["onnx"], SOURCES, max_new_tokens=MAX_NEW)
    assert len(greedy) == len(beams) == len(SOURCES)
    assert all(0 < len(t) <= MAX_NEW for t in greedy + beams)
    assert sum(a == b for a, b in zip(greedy, fp32, strict=True)) >= len(SOURCES) // 2


def _bundle(exported: dict[str, Any], max_length: int) -> Path:
    import shutil

    bundle = exported["root"] / f"bundle{max_length}"
    if bundle.exists():
        return bundle
    shutil.copytree(exported["folder"], bundle)
    roles = {p.name: "model" if p.suffix == ".onnx" else "config" for p in bundle.iterdir()}
    info = {
        "task": "text2text-generation",
        "model": "decoder.onnx",
        "encoder": "encoder.onnx",
        "decoder": "decoder.onnx",
        "max_length": max_length,
        "max_target_length": MAX_NEW,
        "num_beams": 3,
        "source_prefix": "x ",
    }
    write_bundle_manifest(bundle, roles, {**info})
    return bundle


def test_translate_keeps_order_and_cuts_long_sources(exported: dict[str, Any], caplog: Any) -> None:
    runner = load_bundle(_bundle(exported, max_length=6))
    assert (runner.num_beams, runner.max_target_length, runner.source_prefix) == (3, 12, "x ")
    texts = ["a b c", "d e f g h i j k", "l m", "n o p q r", "s"]
    ids = [runner.tokenizer.encode(runner.source_prefix + t).ids for t in texts]
    assert [len(i) for i in ids] == [5, 6, 4, 6, 3]  # cut to max_length, EOS kept
    assert ids[1][-1] == EOS
    with caplog.at_level("WARNING", logger="distill"):
        outputs = translate(runner, texts, batch_size=2)
    assert "2 of 5 source(s) were longer than 6 tokens" in caplog.text
    expected = generate_ids(runner.model, ids, num_beams=3, max_new_tokens=MAX_NEW)
    decoded = [runner.tokenizer.decode(t, skip_special_tokens=True) for t in expected]
    assert outputs == decoded  # input order, whatever the batching by length
    greedy = translate(runner, texts[::-1], num_beams=1, max_new_tokens=4, batch_size=3)
    assert greedy == [
        runner.tokenizer.decode(t, skip_special_tokens=True)
        for t in generate_ids(runner.model, ids[::-1], max_new_tokens=4)
    ]


def test_generate_contract_output_and_refusals(exported: dict[str, Any]) -> None:
    runner = load_bundle(_bundle(exported, max_length=16))
    output = generate(
        runner,
        "a b c",
        max_new_tokens=MAX_NEW,
        do_sample=False,
        temperature=1.0,
        top_k=None,
        top_p=None,
        seed=None,
        max_new_tokens_name="--max-new-tokens",
    )
    assert output.prompt_ids == runner.tokenizer.encode("x a b c").ids
    assert (
        output.token_ids
        == generate_ids(runner.model, [output.prompt_ids], num_beams=3, max_new_tokens=MAX_NEW)[0]
    )
    assert output.finish_reason == ("eos" if output.token_ids[-1] == EOS else "length")
    assert output.continues_prompt is False
    with pytest.raises(ValueError, match="--sample"):
        generate(runner, "a", max_new_tokens=3, do_sample=True)
    if exported["kind"] == "bart":  # learnt positions: 128 in the tiny config
        with pytest.raises(DataError, match="--max-new-tokens 200 needs 200 decoder positions"):
            generate(runner, "a", max_new_tokens=200, max_new_tokens_name="--max-new-tokens")


def test_cli_generate_prints_outputs_in_input_order(
    exported: dict[str, Any], tmp_path: Path, capsys: Any
) -> None:
    """`distill generate` on a seq2seq bundle: the output alone (not the source before it),
    --num-beams, --file with one source a line, --sample refused in one line."""
    from distill.cli import main

    bundle = _bundle(exported, max_length=16)
    runner = load_bundle(bundle)
    texts = ["a b c", "d e f g", "h"]
    beams = translate(runner, texts, max_new_tokens=5)
    greedy = translate(runner, texts, max_new_tokens=5, num_beams=1)
    assert main(["generate", str(bundle), texts[0], "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out == beams[0] + "\n"
    sources = tmp_path / "sources.txt"
    sources.write_text("\n".join(texts) + "\n", encoding="utf-8")
    args = ["generate", str(bundle), "--file", str(sources), "--max-new-tokens", "5"]
    assert main([*args, "--num-beams", "1"]) == 0
    assert capsys.readouterr().out.splitlines() == greedy
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines() == beams
    assert main([*args, "--sample"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "drop --sample" in err
    assert main(["generate", str(bundle), "a", "--file", str(sources)]) == 2
    assert "give PROMPT or --file (one input a line), not both" in capsys.readouterr().err


def test_pytorch_and_the_bundle_search_with_the_same_settings(exported: dict[str, Any]) -> None:
    """The report's PyTorch rows (generation.generate_texts) and its ONNX rows (the runner)
    both take length penalty and early stopping from the model's generation config: the same
    beam search on the same model gives the same texts."""
    from transformers import AutoTokenizer

    from distill.tasks.seq2seq.generation import generate_texts
    from distill.tasks.seq2seq.runner import load_graphs

    texts = ["a b c", "d e f g", "l m", "n o p q r"]
    for beams in (1, 3):
        served = translate(
            load_graphs(
                exported["folder"],
                source_prefix="",
                max_length=16,
                max_target_length=MAX_NEW,
                num_beams=beams,
            ),
            texts,
        )
        expected = generate_texts(
            exported["torch"],
            AutoTokenizer.from_pretrained(exported["root"] / "model"),
            texts,
            prefix="",
            max_length=16,
            max_new_tokens=MAX_NEW,
            num_beams=beams,
        )
        assert served == expected, beams
