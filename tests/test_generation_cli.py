"""`distill generate BUNDLE PROMPT`: a text-generation bundle continued from the command line,
with onnxruntime and tokenizers only."""

from __future__ import annotations

import io
import json
import logging
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import run_command, run_distill
from generation_helpers import as_bundle, exported_tiny_gpt2, exported_tiny_llama

from distill.cli import main
from distill.export.bundle import BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION
from distill.tasks import get_task
from distill.tasks.causal_lm.generate import generate

PROMPT = "the cat is in the"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """The exported tiny Llama with the bundle manifest the export stage writes."""
    _, onnx_dir = exported_tiny_llama(tmp_path_factory)
    return as_bundle(onnx_dir, tmp_path_factory.mktemp("gen-bundle") / "tiny-lm")


def test_greedy_output_matches_generate(bundle, tmp_path) -> None:
    expected = generate(bundle, PROMPT, max_new_tokens=6)
    assert expected.text  # something to compare
    result = run_distill(["generate", str(bundle), PROMPT, "--max-new-tokens", "6"], tmp_path)
    assert result.returncode == 0, result.stderr
    # The word-level test tokenizer joins words with single spaces.
    assert result.stdout == f"{PROMPT} {expected.text}\n"
    only_new = run_distill(
        ["generate", str(bundle), PROMPT, "--max-new-tokens", "6", "--only-new", "--greedy"],
        tmp_path,
    )
    assert only_new.returncode == 0, only_new.stderr
    assert only_new.stdout == expected.text + "\n"


def test_sampling_with_a_seed_is_reproducible(bundle, capsys) -> None:
    args = ["generate", str(bundle), PROMPT, "--only-new", "--max-new-tokens", "8", "--sample"]
    args += ["--temperature", "1.5", "--top-k", "20", "--top-p", "0.95", "--seed", "7"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first
    expected = generate(
        bundle,
        PROMPT,
        max_new_tokens=8,
        do_sample=True,
        temperature=1.5,
        top_k=20,
        top_p=0.95,
        seed=7,
    )
    assert first == expected.text + "\n"


def test_generate_imports_neither_torch_nor_transformers(bundle, tmp_path) -> None:
    code = (
        "import sys\n"
        "from distill.cli import main\n"
        f"code = main(['generate', {str(bundle)!r}, 'the dog', '--max-new-tokens', '3'])\n"
        "print('exit', code)\n"
        "print('heavy', sorted(m for m in ('torch', 'transformers', 'optimum') "
        "if m in sys.modules))\n"
    )
    result = run_command([sys.executable, "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ["exit 0", "heavy []"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sample", "--temperature", "0"], "--temperature must be a finite number > 0, not 0"),
        (
            ["--sample", "--temperature", "inf"],
            "--temperature must be a finite number > 0, not inf",
        ),
        (
            ["--sample", "--temperature", "nan"],
            "--temperature must be a finite number > 0, not nan",
        ),
        (["--sample", "--top-p", "1.5"], "--top-p must be in (0, 1], not 1.5"),
        (["--sample", "--top-k", "0"], "--top-k must be >= 1, not 0"),
        (["--temperature", "0.7", "--seed", "1"], "--temperature, --seed only apply with --sample"),
    ],
)
def test_bad_sampling_values_exit_2_with_one_line(bundle, capsys, extra, message) -> None:
    assert main(["generate", str(bundle), PROMPT, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_bundle_problems_exit_2_naming_the_file(bundle, tmp_path, capsys) -> None:
    missing = tmp_path / "nowhere"
    assert main(["generate", str(missing), PROMPT]) == 2
    assert f"{missing}: no such bundle folder" in capsys.readouterr().err

    classifier = tmp_path / "classifier"
    classifier.mkdir()
    stub = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION}
    (classifier / "manifest.json").write_text(json.dumps({**stub, "task": "text-classification"}))
    assert main(["generate", str(classifier), PROMPT]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{classifier / 'manifest.json'}: task is 'text-classification'" in err
    assert "not a text-generation or text2text-generation bundle; use `distill predict`" in err

    (classifier / "manifest.json").unlink()
    assert main(["generate", str(classifier), PROMPT]) == 2
    assert f"{classifier / 'manifest.json'}: missing" in capsys.readouterr().err

    truncated = tmp_path / "truncated"
    shutil.copytree(bundle, truncated)
    model = truncated / "model.onnx"
    model.write_bytes(model.read_bytes()[:100])
    assert main(["generate", str(truncated), PROMPT]) == 2
    assert f"{model}: 100 bytes, but manifest.json records" in capsys.readouterr().err


def test_a_flipped_byte_in_the_model_is_refused(bundle, tmp_path, capsys) -> None:
    """Same size, other content: only the sha256 tells, and it is checked before loading."""
    copy = tmp_path / "flipped"
    shutil.copytree(bundle, copy)
    model = copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    assert main(["generate", str(copy), PROMPT]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{model}: sha256 differs from manifest.json" in err


def test_predict_refuses_a_generation_bundle_with_a_hint(bundle, capsys) -> None:
    assert main(["predict", str(bundle), "some text"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert f"{bundle / 'manifest.json'}: task is 'text-generation'" in captured.err
    assert (
        "not a text-classification, token-classification or question-answering bundle; "
        "use `distill generate` for it" in captured.err
    )


def test_a_subprocess_error_is_one_line_with_status_2(tmp_path) -> None:
    result = run_distill(["generate", str(tmp_path / "nowhere"), PROMPT], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nowhere'}: no such bundle folder "
        "(expected export/<run name>/ of a causal-lm or seq2seq run)"
    ]


def _one_error(capsys) -> str:
    """The CLI's stderr when it failed cleanly: one 'error: ' line, nothing on stdout."""
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    return captured.err


@pytest.fixture(scope="module")
def gpt2_bundle(tmp_path_factory) -> Path:
    """A GPT-2-shaped bundle with 32 positions (config.json n_positions)."""
    onnx_dir = exported_tiny_gpt2(tmp_path_factory)
    return as_bundle(onnx_dir, tmp_path_factory.mktemp("gpt2-bundle") / "tiny-gpt2")


def test_a_long_prompt_is_encoded_whole_not_at_the_training_length(bundle, tmp_path, capsys):
    """#27.2: a trained tokenizer.json keeps the truncation of its last call (the recipe's
    max_length); two prompts that differ past it must not give the same prompt ids."""
    truncating = as_bundle(bundle, tmp_path / "truncating", max_length=4)
    settings = json.loads((truncating / "tokenizer.json").read_text(encoding="utf-8"))
    settings["truncation"] = {
        "direction": "Right",
        "max_length": 4,
        "strategy": "LongestFirst",
        "stride": 0,
    }
    (truncating / "tokenizer.json").write_text(json.dumps(settings), encoding="utf-8")
    as_bundle(truncating, truncating, max_length=4)  # sealed again, as the export does

    from distill.tasks.causal_lm.generate import load_bundle

    lm = load_bundle(truncating)
    first, second = PROMPT + " red house", PROMPT + " blue river"
    ids = [generate(lm, p, max_new_tokens=2).prompt_ids for p in (first, second)]
    assert len(ids[0]) == len(ids[1]) == 1 + len(first.split())  # <s> and every word
    assert ids[0][:-2] == ids[1][:-2] and ids[0][-2:] != ids[1][-2:]
    for prompt in (first, second):
        assert main(["generate", str(truncating), prompt, "--only-new"]) == 0
        assert capsys.readouterr().out == generate(bundle, prompt).text + "\n"


def test_new_tokens_past_the_positions_are_refused_before_decoding(gpt2_bundle, capsys) -> None:
    """#27.3: 3 prompt tokens + 100 crashed in onnxruntime's Gather (idx=32) for GPT-2."""
    config = gpt2_bundle / "config.json"
    model = gpt2_bundle / "model.onnx"
    assert main(["generate", str(gpt2_bundle), "the cat", "--max-new-tokens", "100"]) == 2
    assert _one_error(capsys) == (
        f"error: a 3-token prompt and --max-new-tokens 100 need 103 positions, but {model} "
        f"has 32 positions (n_positions in {config}); set --max-new-tokens to 29 or less, "
        "or shorten the prompt\n"
    )
    # The largest budget that fits runs (the last new token is never fed back).
    assert main(["generate", str(gpt2_bundle), "the cat", "--max-new-tokens", "29"]) == 0
    assert capsys.readouterr().out.startswith("the cat")

    long_prompt = " ".join(["the cat"] * 20)  # 41 tokens with <s>
    assert main(["generate", str(gpt2_bundle), long_prompt, "--max-new-tokens", "1"]) == 2
    err = _one_error(capsys)
    assert f"the prompt is 41 tokens, but {model} has 32 positions" in err
    assert "shorten the prompt to 31 tokens or fewer" in err


def test_a_llama_bundle_is_held_to_its_max_position_embeddings(bundle, capsys) -> None:
    """#27.3: a rotary model ran silently past its 128 positions."""
    assert main(["generate", str(bundle), PROMPT, "--max-new-tokens", "123"]) == 2
    err = _one_error(capsys)
    assert "a 6-token prompt and --max-new-tokens 123 need 129 positions" in err
    assert f"has 128 positions (max_position_embeddings in {bundle / 'config.json'})" in err
    from distill.errors import DataError

    with pytest.raises(DataError, match="set max_new_tokens to 122 or less"):
        generate(bundle, PROMPT, max_new_tokens=123)  # the library names its own argument


def test_a_non_utf8_prompt_is_refused_from_argv_and_stdin(bundle, capsys, monkeypatch) -> None:
    """#27.4: argv keeps the byte 0xff as a surrogate, which the tokenizer cannot take."""
    assert main(["generate", str(bundle), "the cat \udcff"]) == 2
    assert _one_error(capsys) == (
        "error: PROMPT is not UTF-8 text: byte 0xff at byte 9 (invalid start byte); "
        "give the text to continue as UTF-8\n"
    )
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"the cat \xff\n")))
    assert main(["generate", str(bundle), "-"]) == 2
    assert "error: PROMPT (stdin) is not UTF-8 text: byte 0xff at byte 9" in _one_error(capsys)
    with pytest.raises(ValueError, match="the prompt is not valid text"):
        generate(bundle, "the cat \udcff")


def test_a_non_utf8_prompt_in_a_real_process(bundle, tmp_path) -> None:
    result = run_distill(["generate", str(bundle), "the cat \udcff"], tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: PROMPT is not UTF-8 text: byte 0xff at byte 9 (invalid start byte); "
        "give the text to continue as UTF-8"
    ]


def _drop_outputs(prefix: str):
    def edit(folder: Path) -> None:
        import onnx

        graph = onnx.load(folder / "model.onnx")
        kept = [o for o in graph.graph.output if not o.name.startswith(prefix)]
        del graph.graph.output[:]
        graph.graph.output.extend(kept)
        onnx.save(graph, folder / "model.onnx")

    return edit


def _truncate_model(folder: Path) -> None:
    model = folder / "model.onnx"
    model.write_bytes(model.read_bytes()[:1000])


def _break_tokenizer(folder: Path) -> None:
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": 3}', encoding="utf-8")


def _config_as_a_list(folder: Path) -> None:
    (folder / "config.json").write_text("[1, 2]", encoding="utf-8")


@pytest.mark.parametrize(
    ("edit", "file", "message"),
    [
        (_truncate_model, "model.onnx", "not an ONNX model (Error parsing message"),
        (_drop_outputs("logits"), "model.onnx", "the graph has no output(s) ['logits']"),
        (
            _drop_outputs("present.1."),
            "model.onnx",
            "the graph has no output(s) ['present.1.key', 'present.1.value']",
        ),
        (_break_tokenizer, "tokenizer.json", "the tokenizers library cannot load it"),
        (_config_as_a_list, "config.json", "not a readable model config (not a JSON object)"),
    ],
)
def test_a_malformed_but_sealed_bundle_is_refused_naming_the_file(
    bundle, tmp_path, capsys, edit, file, message
) -> None:
    """#27.5: the manifest matches (as for a hand-built bundle): only loading can tell."""
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    edit(broken)
    as_bundle(broken, broken)
    assert main(["generate", str(broken), PROMPT]) == 2
    assert f"error: {broken / file}: {message}" in _one_error(capsys)


def test_threads_beyond_the_cores_are_capped_with_a_note(bundle, capsys, caplog) -> None:
    """onnxruntime starts every thread asked for: 100000 took minutes before failing."""
    from distill.timing.latency import available_cores

    cores = available_cores()
    with caplog.at_level(logging.WARNING, logger="distill"):
        code = main(
            ["generate", str(bundle), PROMPT, "--threads", "100000", "--max-new-tokens", "2"]
        )
    assert code == 0 and capsys.readouterr().out.startswith(PROMPT)
    assert f"--threads 100000 is more than the {cores} core(s) available; using {cores}" in (
        caplog.text
    )


@pytest.mark.parametrize("verb", ["predict", "generate"])
def test_both_verbs_cap_threads_the_same_way(bundle, monkeypatch, capsys, caplog, verb) -> None:
    import distill.cli
    import distill.serving.arguments
    from distill.errors import DataError

    seen: list[int | None] = []

    def load_bundle(_bundle: Path, *, threads: int | None = None) -> None:
        seen.append(threads)
        raise DataError("stop here")

    runner = type("Runner", (), {"load_bundle": staticmethod(load_bundle)})
    verified = SimpleNamespace(path=bundle, task=get_task("causal-lm"))  # as read_bundle gives
    monkeypatch.setattr(distill.cli, "_bundle_runner", lambda args: (verified, runner))
    monkeypatch.setattr(distill.serving.arguments, "available_cores", lambda: 3)
    for threads in ("2", "3", "4", "100000"):
        with caplog.at_level(logging.WARNING, logger="distill"):
            assert main([verb, str(bundle), PROMPT, "--threads", threads]) == 2
    assert seen == [2, 3, 3, 3]
    assert "--threads 4 is more than the 3 core(s) available; using 3" in caplog.text
    assert "--threads 2 " not in caplog.text and "--threads 3 " not in caplog.text
