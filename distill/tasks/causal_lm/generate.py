"""Text generation from an ONNX causal LM with onnxruntime, tokenizers and numpy only: no
torch, no transformers.

:func:`load_bundle` loads an exported bundle after the one bundle reader
(:func:`distill.export.bundle.read_bundle`) has verified every file's size and sha256;
:meth:`OnnxCausalLM.load` loads any exported folder as it is (the export stage's own), with
the loaders every bundle runner shares (:mod:`distill.serving.tokenizer`: a graph or tokenizer that
cannot be loaded is an :class:`ArtifactError` naming the file) and checks that the graph has
the inputs and outputs below.

A text prompt is encoded whole: the truncation (and padding) a trained ``tokenizer.json``
keeps from its last call are dropped. The prompt and the new tokens must fit the model's
positions (``max_position_embeddings`` / ``n_positions`` of ``config.json``; unchecked when
the folder records none): :func:`check_positions` refuses them before the first step.

The graph is the one :func:`distill.tasks.causal_lm.onnx_export.export_causal_lm` writes
(the usual layout of a ``text-generation-with-past`` ONNX graph): inputs ``input_ids``,
``attention_mask``, ``position_ids`` (when declared) and ``past_key_values.N.key`` /
``.value`` [batch, kv heads, past length, head dim], with fixed kv heads and head dim;
outputs ``logits`` and ``present.N.key`` / ``.value``. The first step feeds the whole prompt
with an empty past (length 0); each later step feeds one token and the previous step's
presents.

This module must stay importable without torch or transformers (the tests check it in a
fresh interpreter): import only the standard library, numpy, onnxruntime, tokenizers and
light distill modules here.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from distill.errors import ArtifactError, DataError
from distill.export.bundle import Bundle, is_int, problems_error, read_bundle, unlisted
from distill.serving.session import onnx_session
from distill.serving.tokenizer import read_tokenizer
from distill.tasks.causal_lm.task import CausalLM

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


# config.json keys that hold a causal LM's position count (its context window), by family:
# Llama, Qwen, Mistral...; GPT-2 (n_ctx in older configs); others.
_POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length")


def _read_config(path: Path) -> dict[str, Any]:
    """A JSON object file of the model folder; ``{}`` when it is absent."""
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise ArtifactError(f"{path}: cannot read it as JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ArtifactError(f"{path}: expected a JSON object, not {type(config).__name__}")
    return config


def _eos_ids_from_folder(folder: Path) -> tuple[int, ...]:
    """``eos_token_id`` of generation_config.json, else of config.json (an int or a list)."""
    for name in ("generation_config.json", "config.json"):
        value = _read_config(folder / name).get("eos_token_id")
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        if not all(is_int(v) for v in values):
            raise ArtifactError(
                f"{folder / name}: 'eos_token_id' must be a token id or a list of them, "
                f"not {value!r}"
            )
        return tuple(values)
    return ()


def _positions_from_folder(folder: Path) -> tuple[int | None, str]:
    """The model's position count from config.json and where it was read (None, '': none
    recorded, as in a hand-built folder without config.json)."""
    config = _read_config(folder / "config.json")
    for key in _POSITION_KEYS:
        value = config.get(key)
        if is_int(value) and value > 0:
            return value, f"{key} in {folder / 'config.json'}"
    return None, ""


class OnnxCausalLM:
    """An onnxruntime session of a causal LM with a KV cache, plus its tokenizer and EOS ids."""

    def __init__(
        self,
        session: Any,
        tokenizer: Any = None,
        eos_token_ids: Sequence[int] = (),
        name: str = "model",
        max_positions: int | None = None,
        positions_source: str = "",
    ) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.eos_token_ids = tuple(int(i) for i in eos_token_ids)
        self.name = name
        # The positions the model was built for (None: unknown, nothing is checked) and where
        # that number was read, for the message that refuses a prompt too long for it.
        self.max_positions = max_positions
        self.positions_source = positions_source or "given"
        inputs = {i.name: i for i in session.get_inputs()}
        missing = [n for n in ("input_ids", "attention_mask") if n not in inputs]
        past = sorted((int(m.group(1)), m.group(2), n) for n in inputs if (m := _PAST.match(n)))
        if missing or not past:
            raise ArtifactError(
                f"{name}: not a causal LM exported with a KV cache (inputs {sorted(inputs)}; "
                "expected input_ids, attention_mask and past_key_values.N.key/value, as "
                "distill's causal-LM export writes them)"
            )
        self.past_names = [n for _, _, n in past]
        self.num_layers = past[-1][0] + 1
        first = inputs[self.past_names[0]]
        if len(first.shape) != 4:
            raise ArtifactError(
                f"{name}: {first.name} has shape {first.shape}; expected "
                "[batch, kv heads, past length, head dim]"
            )
        heads, head_dim = first.shape[1], first.shape[3]
        if not isinstance(heads, int) or not isinstance(head_dim, int):
            raise ArtifactError(
                f"{name}: {first.name} has symbolic heads or head size ({first.shape}); "
                "cannot build the empty cache of the first step"
            )
        self.kv_heads, self.head_dim = heads, head_dim
        self.cache_dtype = _FLOAT_TYPES.get(first.type, np.float32)
        self.input_names = set(inputs)
        self.int_types = {
            n: np.int32 if inputs[n].type == "tensor(int32)" else np.int64
            for n in ("input_ids", "attention_mask", "position_ids")
            if n in inputs
        }
        self.output_names = [o.name for o in session.get_outputs()]
        needed = ["logits", *(self._present(n) for n in self.past_names)]
        absent = [n for n in needed if n not in self.output_names]
        if absent:
            raise ArtifactError(
                f"{name}: the graph has no output(s) {absent} (outputs {self.output_names}); "
                "a causal LM exported with a KV cache outputs logits and present.N.key/value "
                "for each past_key_values.N.key/value input"
            )

    @staticmethod
    def _present(past_name: str) -> str:
        return past_name.replace("past_key_values.", "present.", 1)

    @classmethod
    def load(
        cls, folder: Path | str, *, file_name: str = MODEL_FILE, threads: int | None = None
    ) -> OnnxCausalLM:
        """The model, ``tokenizer.json``, EOS ids and position count of an exported folder;
        :class:`ArtifactError` naming the file for any of them that cannot be loaded."""
        folder = Path(folder)
        model_path, tokenizer_path = folder / file_name, folder / TOKENIZER_FILE
        for path in (model_path, tokenizer_path):
            if not path.is_file():
                raise ArtifactError(f"{path}: missing; {folder} is not an exported causal LM")
        tokenizer = read_tokenizer(tokenizer_path)
        # A tokenizer.json saved after training keeps the truncation (to the recipe's
        # max_length) and padding of its last call: a prompt is encoded whole, and
        # check_positions refuses one the model has no positions for.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        positions, source = _positions_from_folder(folder)
        return cls(
            onnx_session(model_path, threads),
            tokenizer,
            _eos_ids_from_folder(folder),
            name=str(model_path),
            max_positions=positions,
            positions_source=source,
        )

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        shape = (batch, self.kv_heads, 0, self.head_dim)
        return {n: np.zeros(shape, dtype=self.cache_dtype) for n in self.past_names}

    def forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray | None = None,
        past: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One step: logits [B, S, V] for ``input_ids`` [B, S] after ``past`` (None: none), and
        the cache to feed the next step (keyed by this graph's past input names).

        ``attention_mask`` covers past and new tokens ([B, past + S]; default all ones).
        Position ids are counted over the mask, as transformers does.
        """
        input_ids = np.asarray(input_ids)
        batch, length = input_ids.shape
        if past is None:
            past = self.empty_past(batch)
        past_length = next(iter(past.values())).shape[2]
        if attention_mask is None:
            attention_mask = np.ones((batch, past_length + length), dtype=np.int64)
        feed: dict[str, np.ndarray] = {
            "input_ids": input_ids.astype(self.int_types["input_ids"]),
            "attention_mask": np.asarray(attention_mask).astype(self.int_types["attention_mask"]),
            **past,
        }
        if "position_ids" in self.input_names:
            positions = np.cumsum(attention_mask, axis=-1) - 1
            positions = np.where(attention_mask == 0, 1, positions)[:, -length:]
            feed["position_ids"] = positions.astype(self.int_types["position_ids"])
        try:
            results = self.session.run(None, feed)
        except Exception as exc:  # onnxruntime's own types (InvalidArgument, Fail, ...)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"{self.name}: onnxruntime cannot run it: {first}") from None
        outputs = dict(zip(self.output_names, results, strict=True))
        present = {n: outputs[self._present(n)] for n in self.past_names}
        return outputs["logits"], present


def load_bundle(bundle: Path | str | Bundle, *, threads: int | None = None) -> OnnxCausalLM:
    """The model of a bundle verified by :func:`distill.export.bundle.read_bundle` (every
    file's size and sha256; a folder is read and verified first), its tokenizer listed."""
    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle, command=CausalLM.command)
    problems = unlisted(bundle.manifest_path, bundle.manifest["files"], [TOKENIZER_FILE])
    if problems:
        raise problems_error(bundle.path, problems)
    # The loaders of every bundle runner (distill.serving.tokenizer) name the file that fails.
    return OnnxCausalLM.load(bundle.path, file_name=bundle.manifest["model"], threads=threads)


@dataclass(frozen=True)
class GenerationOutput:
    """The prompt's ids, the new ids (with the EOS token if one ended generation), their text
    (special tokens skipped) and why generation stopped."""

    text: str
    token_ids: list[int]
    prompt_ids: list[int]
    finish_reason: Literal["eos", "length"]
    timings_ms: dict[str, float] = field(default_factory=dict)


def choose_token(
    logits: np.ndarray,
    rng: np.random.Generator | None,
    *,
    do_sample: bool,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> int:
    """The next token from one position's logits [V]: argmax, or a sample after temperature,
    top-k and top-p filtering (in that order, as transformers applies them), drawn with ``rng``
    (None: an unseeded generator)."""
    if not do_sample:
        return int(np.argmax(logits))
    scores = np.asarray(logits, dtype=np.float64) / temperature
    if top_k is not None and top_k < scores.size:
        # Stable sort: among equal logits the lowest id wins, as argmax picks it (top_k=1 == greedy).
        dropped = np.argsort(-scores, kind="stable")[top_k:]
        scores[dropped] = -np.inf
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        # Keep the smallest prefix whose mass reaches top_p (at least the most likely token).
        cut = int(np.searchsorted(cumulative, top_p)) + 1
        keep = np.zeros_like(probs, dtype=bool)
        keep[order[:cut]] = True
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum()
    rng = rng if rng is not None else np.random.default_rng()
    return int(rng.choice(probs.size, p=probs))


def _check_sampling(
    max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None
) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, not {max_new_tokens}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, not {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None), not {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (or None), not {top_p}")


def encode_prompt(lm: OnnxCausalLM, prompt: str) -> list[int]:
    """The ids of a text prompt, whole (no truncation), with the tokenizer's special tokens."""
    if lm.tokenizer is None:
        raise ValueError(f"{lm.name}: no tokenizer to encode a text prompt; pass token ids")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: what argv keeps of non-UTF-8 bytes
        raise ValueError(
            f"the prompt is not valid text (character {exc.start + 1}: {exc.reason}); "
            "decode its bytes as UTF-8 first"
        ) from None
    return list(lm.tokenizer.encode(prompt).ids)


def check_positions(
    lm: OnnxCausalLM, prompt_tokens: int, max_new_tokens: int, *, flag: str = "max_new_tokens"
) -> None:
    """Refuse (:class:`DataError`) a prompt and new tokens that do not fit the model's
    positions: past them a learnt position table fails (GPT-2's Gather) and a rotary model
    decodes from positions it never saw. ``flag`` names the setting in the message."""
    limit = lm.max_positions
    if limit is None:
        return
    where = f"{lm.name} has {limit} positions ({lm.positions_source})"
    if prompt_tokens >= limit:
        raise DataError(
            f"the prompt is {prompt_tokens} tokens, but {where}: shorten the prompt to "
            f"{limit - 1} tokens or fewer, to leave room for a new token"
        )
    if prompt_tokens + max_new_tokens > limit:
        raise DataError(
            f"a {prompt_tokens}-token prompt and {flag} {max_new_tokens} need "
            f"{prompt_tokens + max_new_tokens} positions, but {where}; set {flag} to "
            f"{limit - prompt_tokens} or less, or shorten the prompt"
        )


def generate(
    model: OnnxCausalLM | Path | str,
    prompt: str | Sequence[int],
    *,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    eos_token_ids: Sequence[int] | None = None,
    file_name: str = MODEL_FILE,
    max_new_tokens_name: str = "max_new_tokens",
) -> GenerationOutput:
    """Continue ``prompt`` (text, tokenized with the model's tokenizer and its special tokens;
    or token ids) by up to ``max_new_tokens`` tokens, one sequence at a time.

    ``model`` is an :class:`OnnxCausalLM` or an exported folder (``file_name`` in it, with
    ``tokenizer.json``). Greedy unless ``do_sample``; sampling with the same ``seed`` gives
    the same tokens. Generation stops after a token of ``eos_token_ids`` (default: the
    model's EOS ids; ``()`` never stops early).

    The prompt is never cut: with ``max_new_tokens`` it must fit the model's positions
    (:func:`check_positions`, whose message calls the budget ``max_new_tokens_name``).
    """
    _check_sampling(max_new_tokens, temperature, top_k, top_p)
    lm = model if isinstance(model, OnnxCausalLM) else OnnxCausalLM.load(model, file_name=file_name)
    if isinstance(prompt, str):
        prompt_ids = encode_prompt(lm, prompt)
    else:
        prompt_ids = [int(i) for i in prompt]
    if not prompt_ids:
        raise ValueError("the prompt has no tokens")
    check_positions(lm, len(prompt_ids), max_new_tokens, flag=max_new_tokens_name)
    stop = set(lm.eos_token_ids if eos_token_ids is None else eos_token_ids)
    rng = np.random.default_rng(seed) if do_sample else None

    started = time.perf_counter()
    logits, past = lm.forward(np.asarray([prompt_ids], dtype=np.int64))
    first = time.perf_counter()
    new: list[int] = []
    reason: Literal["eos", "length"] = "length"
    while True:
        token = choose_token(
            logits[0, -1],
            rng,
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
        )
        new.append(token)
        if token in stop:
            reason = "eos"
            break
        if len(new) >= max_new_tokens:
            break
        logits, past = lm.forward(np.asarray([[token]], dtype=np.int64), past=past)
    done = time.perf_counter()
    text = lm.tokenizer.decode(new, skip_special_tokens=True) if lm.tokenizer is not None else ""
    timings = {
        "prompt_ms": (first - started) * 1e3,
        "per_token_ms": (done - first) * 1e3 / max(len(new) - 1, 1),
    }
    return GenerationOutput(text, new, prompt_ids, reason, timings)
