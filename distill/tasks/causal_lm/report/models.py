"""The models the causal-LM report runs: the PyTorch teacher and students, the ONNX files
through the bundle's generator, the tokenizer; and the two ways it calls them, greedy with
EOS ignored (timing: every run generates the same number of tokens) and greedy to EOS
(the samples)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill.errors import ArtifactError


def load_torch(model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    if not model_dir.is_dir():
        raise ArtifactError(f"{model_dir}: model folder is missing")
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{model_dir}: cannot load the model: {exc}") from None
    return model.eval()


def load_onnx(bundle: Path, path: Path, threads: int) -> Any:
    from distill.tasks.causal_lm.generate import OnnxCausalLM

    if not path.is_file():
        raise ArtifactError(f"{path}: the export stage's ONNX model is missing")
    # Loaded through the bundle folder: its tokenizer.json and EOS ids serve every file in it.
    return OnnxCausalLM.load(bundle, file_name=path.relative_to(bundle).as_posix(), threads=threads)


def tokenizer(bundle: Path, fallback: Path) -> Any:
    from tokenizers import Tokenizer

    for folder in (bundle, fallback):
        path = folder / "tokenizer.json"
        if path.is_file():
            return Tokenizer.from_file(str(path))
    raise ArtifactError(
        f"{bundle / 'tokenizer.json'}: missing (and no {fallback / 'tokenizer.json'})"
    )


def _eos_ids(model: Any) -> list[int]:
    value = getattr(model.generation_config, "eos_token_id", None)
    if value is None:
        value = getattr(model.config, "eos_token_id", None)
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, list) else [value])]


def _greedy_config(model: Any, max_new_tokens: int, *, forced: bool) -> Any:
    """Plain greedy decoding whatever the checkpoint's generation_config.json asks for
    (sampling, repetition penalties); ``forced`` suppresses EOS for ``max_new_tokens`` tokens."""
    from transformers import GenerationConfig

    eos = _eos_ids(model)
    pad = getattr(model.generation_config, "pad_token_id", None)
    if pad is None:
        pad = getattr(model.config, "pad_token_id", None)
    if pad is None:
        pad = eos[0] if eos else 0
    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        # Set outright: transformers 5 fills whatever is left unset from the model's own
        # generation config (a repetition penalty there would change greedy decoding).
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        use_cache=True,
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens if forced else None,
        eos_token_id=eos or None,
        pad_token_id=pad,
    )


def _torch_generate(model: Any, config: Any, ids: list[int]) -> list[int]:
    import torch

    input_ids = torch.tensor([ids], dtype=torch.long)
    with torch.inference_mode():
        output = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            generation_config=config,
        )
    return output[0, len(ids) :].tolist()


def torch_caller(model: Any, max_new_tokens: int) -> Callable[[list[int]], int]:
    config = _greedy_config(model, max_new_tokens, forced=True)
    return lambda ids: len(_torch_generate(model, config, ids))


def torch_continuer(
    model: Any, max_new_tokens: int
) -> Callable[[list[int]], tuple[list[int], str]]:
    config = _greedy_config(model, max_new_tokens, forced=False)
    eos = set(_eos_ids(model))

    def continuer(ids: list[int]) -> tuple[list[int], str]:
        new = _torch_generate(model, config, ids)
        return new, "eos" if new and new[-1] in eos else "length"

    return continuer


def onnx_caller(lm: Any, max_new_tokens: int) -> Callable[[list[int]], int]:
    from distill.tasks.causal_lm.generate import generate

    return lambda ids: len(
        generate(lm, ids, max_new_tokens=max_new_tokens, eos_token_ids=()).token_ids
    )


def onnx_continuer(lm: Any, max_new_tokens: int) -> Callable[[list[int]], tuple[list[int], str]]:
    from distill.tasks.causal_lm.generate import generate

    def continuer(ids: list[int]) -> tuple[list[int], str]:
        output = generate(lm, ids, max_new_tokens=max_new_tokens)
        return output.token_ids, output.finish_reason

    return continuer
