"""An exported encoder-decoder model served with onnxruntime and numpy: no torch, no
transformers.

The folder is the one :func:`distill.tasks.seq2seq.onnx_export.export_seq2seq` writes:
``encoder.onnx`` (``input_ids``, ``attention_mask`` in; ``encoder_hidden_states`` and the
cross-attention keys/values ``cross.N.key`` / ``.value`` out, computed once per source) and
``decoder.onnx`` (``input_ids``, ``encoder_attention_mask``, the self-attention cache
``past.N.key`` / ``.value`` and the cross keys/values in; ``logits`` and
``present.N.key`` / ``.value`` out), beside ``config.json``, ``generation_config.json`` and
``tokenizer.json``. The first decoder step feeds an empty cache (past length 0).

This module must stay importable without torch or transformers: the standard library,
numpy, onnxruntime, tokenizers and light distill modules only.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import ArtifactError
from distill.export.bundle import is_int
from distill.serving.session import onnx_session
from distill.serving.tokenizer import read_tokenizer

log = logging.getLogger("distill")
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
TOKENIZER_FILE = "tokenizer.json"
_CACHE = re.compile(r"^(past|cross)\.(\d+)\.(key|value)$")
_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of the folder; ``{}`` when it is absent."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise ArtifactError(f"{path}: cannot read it as JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ArtifactError(f"{path}: expected a JSON object, not {type(value).__name__}")
    return value


@dataclass(frozen=True)
class TokenIds:
    """The special ids decoding needs, read from generation_config.json then config.json."""

    decoder_start_token_id: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int


def read_token_ids(folder: Path) -> TokenIds:
    """:class:`TokenIds` of an exported folder; :class:`ArtifactError` naming the files and
    key when the decoder start token is recorded nowhere or an id is not an integer."""
    sources = [folder / "generation_config.json", folder / "config.json"]
    configs = [(path, read_json(path)) for path in sources]

    def first(key: str) -> Any:
        for path, config in configs:
            value = config.get(key)
            if value is not None:
                values = value if isinstance(value, list) else [value]
                if not values or not all(is_int(v) for v in values):
                    raise ArtifactError(f"{path}: {key!r} must be a token id, not {value!r}")
                return value
        return None

    start = first("decoder_start_token_id")
    if start is None:
        raise ArtifactError(
            f"{sources[0]} and {sources[1]}: no 'decoder_start_token_id'; cannot start decoding"
        )
    eos = first("eos_token_id")
    eos_ids = tuple(eos if isinstance(eos, list) else [] if eos is None else [eos])
    pad = first("pad_token_id")
    pad = pad if is_int(pad) else (eos_ids[0] if eos_ids else 0)
    return TokenIds(int(start), eos_ids, int(pad))


# generation_config.json settings that transformers turns into logits processors the numpy
# decoder does not apply (those it does apply are the fields of GenerationRules).
_UNAPPLIED = (
    "encoder_no_repeat_ngram_size",
    "encoder_repetition_penalty",
    "sequence_bias",
    "suppress_tokens",
    "begin_suppress_tokens",
    "exponential_decay_length_penalty",
    "forced_decoder_ids",
)


@dataclass(frozen=True)
class GenerationRules:
    """The logits processors of transformers' ``generate`` that the numpy decoder applies,
    from the model's generation config, in transformers' order: repetition penalty, n-gram
    blocking, banned single tokens (``bad_words_ids``), minimum length and new tokens, the
    forced first (BOS) and last (EOS) tokens."""

    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    banned_token_ids: tuple[int, ...] = ()
    min_length: int = 0
    min_new_tokens: int = 0
    forced_bos_token_id: int | None = None
    forced_eos_token_ids: tuple[int, ...] = ()
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    unapplied: tuple[str, ...] = ()  # settings given that the decoder does not apply


def read_generation_rules(folder: Path, eos_token_ids: tuple[int, ...]) -> GenerationRules:
    """:class:`GenerationRules` of ``generation_config.json`` (else ``config.json``, where
    older models keep these settings); a multi-token ``bad_words_ids`` entry is unapplied."""
    path = folder / "generation_config.json"
    config = read_json(path) if path.is_file() else read_json(folder / "config.json")
    bad_words = config.get("bad_words_ids") or []
    single = [w[0] for w in bad_words if isinstance(w, list) and len(w) == 1 and is_int(w[0])]
    forced_eos = config.get("forced_eos_token_id")
    unapplied = [key for key in _UNAPPLIED if config.get(key) not in (None, 0, 1.0, [], {})]
    if len(single) != len(bad_words):
        unapplied.append("bad_words_ids (of several tokens)")
    return GenerationRules(
        repetition_penalty=float(config.get("repetition_penalty") or 1.0),
        no_repeat_ngram_size=int(config.get("no_repeat_ngram_size") or 0),
        banned_token_ids=tuple(int(t) for t in single if t not in eos_token_ids),
        min_length=int(config.get("min_length") or 0),
        min_new_tokens=int(config.get("min_new_tokens") or 0),
        forced_bos_token_id=config.get("forced_bos_token_id"),
        forced_eos_token_ids=tuple(
            forced_eos
            if isinstance(forced_eos, list)
            else []
            if forced_eos is None
            else [forced_eos]
        ),
        length_penalty=float(config.get("length_penalty", 1.0)),
        early_stopping=config.get("early_stopping", False),
        unapplied=tuple(unapplied),
    )


@dataclass(frozen=True)
class Encoded:
    """One batch of sources through the encoder graph: its states [B, S, H], the cross
    keys/values by the decoder's input name and the attention mask [B, S]."""

    hidden: np.ndarray
    cross: dict[str, np.ndarray]
    mask: np.ndarray


def _run(session: Any, name: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    try:
        results = session.run(None, feed)
    except Exception as exc:  # onnxruntime's own types (InvalidArgument, Fail, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{name}: onnxruntime cannot run it: {first}") from None
    return dict(zip([o.name for o in session.get_outputs()], results, strict=True))


class OnnxSeq2Seq:
    """The two onnxruntime sessions of an encoder-decoder model, its tokenizer and ids."""

    def __init__(
        self,
        encoder: Any,
        decoder: Any,
        ids: TokenIds,
        tokenizer: Any = None,
        name: str = "model",
        rules: GenerationRules | None = None,
    ) -> None:
        self.encoder, self.decoder, self.tokenizer, self.name = encoder, decoder, tokenizer, name
        self.rules = rules or GenerationRules()
        self.decoder_start_token_id = ids.decoder_start_token_id
        self.eos_token_ids = ids.eos_token_ids
        self.pad_token_id = ids.pad_token_id
        inputs = {i.name: i for i in decoder.get_inputs()}
        cache = sorted(
            (m.group(1), int(m.group(2)), m.group(3), n) for n in inputs if (m := _CACHE.match(n))
        )
        self.past_names = [n for kind, _, _, n in cache if kind == "past"]
        self.cross_names = [n for kind, _, _, n in cache if kind == "cross"]
        expected = {"input_ids", "encoder_attention_mask"}
        if not expected <= set(inputs) or not self.past_names:
            raise ArtifactError(
                f"{name}: the decoder graph's inputs {sorted(inputs)} are not those of a "
                "seq2seq decoder with a KV cache (input_ids, encoder_attention_mask, "
                "past.N.key/value, cross.N.key/value)"
            )
        encoder_outputs = [o.name for o in encoder.get_outputs()]
        absent = [n for n in self.cross_names if n not in encoder_outputs]
        if absent:
            raise ArtifactError(
                f"{name}: the encoder graph has no output(s) {absent} (outputs "
                f"{encoder_outputs}); the decoder graph needs them"
            )
        self.num_layers = len(self.past_names) // 2
        first = inputs[self.past_names[0]]
        heads, head_dim = (first.shape[1], first.shape[3]) if len(first.shape) == 4 else (0, 0)
        if not isinstance(heads, int) or not isinstance(head_dim, int) or not heads:
            raise ArtifactError(
                f"{name}: {first.name} has shape {first.shape}; expected [batch, heads, "
                "past length, head dim] with fixed heads and head dim"
            )
        self.heads, self.head_dim = heads, head_dim
        self.cache_dtype = _FLOAT_TYPES.get(first.type, np.float32)
        logits = next((o for o in decoder.get_outputs() if o.name == "logits"), None)
        vocab = logits.shape[-1] if logits is not None else None
        self.vocab_size = vocab if isinstance(vocab, int) else 0

    @classmethod
    def load(
        cls,
        folder: Path | str,
        *,
        threads: int | None = None,
        encoder_file: str = ENCODER_FILE,
        decoder_file: str = DECODER_FILE,
    ) -> OnnxSeq2Seq:
        """The graphs, ``tokenizer.json`` (when present) and token ids of an exported folder;
        :class:`ArtifactError` naming the file for any that cannot be loaded."""
        folder = Path(folder)
        for name in (encoder_file, decoder_file):
            if not (folder / name).is_file():
                raise ArtifactError(
                    f"{folder / name}: missing; {folder} is not an exported seq2seq"
                )
        tokenizer = None
        if (folder / TOKENIZER_FILE).is_file():
            tokenizer = read_tokenizer(folder / TOKENIZER_FILE)
        ids = read_token_ids(folder)
        rules = read_generation_rules(folder, ids.eos_token_ids)
        if rules.unapplied:
            log.warning(
                "%s: the generation config asks for %s, which transformers' generate applies "
                "but the ONNX decoder does not: outputs may differ from PyTorch's",
                folder,
                ", ".join(rules.unapplied),
            )
        return cls(
            onnx_session(folder / encoder_file, threads),
            onnx_session(folder / decoder_file, threads),
            ids,
            tokenizer,
            name=str(folder / decoder_file),
            rules=rules,
        )

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> Encoded:
        """The encoder graph on a batch of sources [B, S] (right-padded, mask 0 on padding)."""
        mask = np.asarray(attention_mask, dtype=np.int64)
        feed = {"input_ids": np.asarray(input_ids, dtype=np.int64), "attention_mask": mask}
        outputs = _run(self.encoder, self.name.replace(DECODER_FILE, ENCODER_FILE), feed)
        cross = {n: outputs[n] for n in self.cross_names}
        return Encoded(outputs["encoder_hidden_states"], cross, mask)

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        shape = (batch, self.heads, 0, self.head_dim)
        return {n: np.zeros(shape, dtype=self.cache_dtype) for n in self.past_names}

    def decode_step(
        self,
        input_ids: np.ndarray,
        encoder_attention_mask: np.ndarray,
        cross: dict[str, np.ndarray],
        past: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits [B, T, V] of decoder tokens ``input_ids`` [B, T] after ``past`` (None: the
        first step), and the self-attention cache for the next step (keyed by past names)."""
        input_ids = np.asarray(input_ids, dtype=np.int64)
        if past is None:
            past = self.empty_past(input_ids.shape[0])
        feed = {
            "input_ids": input_ids,
            "encoder_attention_mask": np.asarray(encoder_attention_mask, dtype=np.int64),
            **past,
            **cross,
        }
        outputs = _run(self.decoder, self.name, feed)
        present = {n: outputs[n.replace("past.", "present.", 1)] for n in self.past_names}
        return outputs["logits"], present
