"""Tiny causal LMs for the generation tests: a random Llama (hidden 32, 2 layers) with a
word-level tokenizer built in memory, saved as a ``from_pretrained`` folder. No network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

WORDS = (
    "the a an of to in is was and or but cat dog bird fish tree house river city king queen "
    "red green blue small big old new fast slow happy sad one two three four five six seven "
    "eight nine ten run walk swim fly see hear eat sleep paris france capital country town "
    "sun moon star sky sea land north south east west up down left right good bad hot cold"
).split() + [f"w{i}" for i in range(40)]
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def tiny_tokenizer() -> Any:
    """A ``PreTrainedTokenizerFast`` over :data:`WORDS` that prepends ``<s>`` like Llama's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", BOS_ID)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )


def tiny_llama(seed: int = 0, layers: int = 2, **overrides: Any) -> Any:
    """A random ``LlamaForCausalLM`` (grouped-query attention, tied embeddings) in eval mode;
    ``overrides`` replace any of its config fields."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    settings = {
        "vocab_size": len(SPECIAL) + len(WORDS),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "tie_word_embeddings": True,
    }
    config = LlamaConfig(**{**settings, **overrides})
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    # Larger weights than the init's 0.02 std: the next-token distribution is then peaked, so
    # greedy choices are far from ties and fp32 rounding (ONNX vs torch) cannot flip them.
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.3)
    return model


def save_tiny_llama(folder: Path, seed: int = 0) -> Path:
    """:func:`tiny_llama` and :func:`tiny_tokenizer` saved into ``folder`` (safetensors)."""
    tiny_llama(seed).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


_EXPORTED: dict[str, Path] = {}


def exported_tiny_llama(tmp_path_factory: Any) -> tuple[Path, Path]:
    """(model folder, ONNX folder of ``text-generation-with-past``), built once per session."""
    from distill.tasks.causal_lm.onnx_export import export_causal_lm

    if "onnx" not in _EXPORTED:
        root = tmp_path_factory.mktemp("tiny-llama")
        model_dir = save_tiny_llama(root / "model")
        export_causal_lm(model_dir, root / "onnx")
        _EXPORTED.update(model=model_dir, onnx=root / "onnx")
    return _EXPORTED["model"], _EXPORTED["onnx"]


def exported_tiny_gpt2(tmp_path_factory: Any) -> Path:
    """The ONNX folder of a random GPT-2-shaped LM with only 32 positions (``n_positions``:
    a learnt position table that onnxruntime's Gather cannot index past), built once."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from distill.tasks.causal_lm.onnx_export import export_causal_lm

    if "gpt2" not in _EXPORTED:
        root = tmp_path_factory.mktemp("tiny-gpt2")
        torch.manual_seed(0)
        tokenizer = tiny_tokenizer()
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=32,
            n_embd=32,
            n_layer=2,
            n_head=4,
            bos_token_id=BOS_ID,
            eos_token_id=EOS_ID,
        )
        GPT2LMHeadModel(config).eval().save_pretrained(root / "model")
        tokenizer.save_pretrained(root / "model")
        export_causal_lm(root / "model", root / "onnx")
        _EXPORTED["gpt2"] = root / "onnx"
    return _EXPORTED["gpt2"]


def as_bundle(source: Path, folder: Path, **info: Any) -> Path:
    """``source`` copied to ``folder`` with the manifest the export stage writes (every file
    hashed; ``info`` adds manifest keys), as a hand-built bundle would be sealed too."""
    import shutil

    from distill.export.bundle import write_bundle_manifest

    if source != folder:
        shutil.copytree(source, folder)
    (folder / "manifest.json").unlink(missing_ok=True)
    roles = {
        p.relative_to(folder).as_posix(): "model" if p.suffix == ".onnx" else "tokenizer-or-config"
        for p in folder.rglob("*")
        if p.is_file()
    }
    write_bundle_manifest(folder, roles, {"task": "text-generation", "model": "model.onnx", **info})
    return folder


def write_tiny_lm_run(root: Path, teacher: Any, max_words: int) -> None:
    """A run folder for calling causal-LM stages directly: ``teacher/model`` (``teacher``
    and the tiny tokenizer) and ``data/`` with 40 / 8 / 8 texts of 4 to ``max_words - 1``
    random words (seeded)."""
    import numpy as np

    from distill.tasks.causal_lm.files import TextSplit, write_split

    (root / "teacher" / "model").mkdir(parents=True)
    teacher.save_pretrained(root / "teacher" / "model")
    tiny_tokenizer().save_pretrained(root / "teacher" / "model")
    rng = np.random.default_rng(0)
    (root / "data").mkdir()
    for name, n in {"train": 40, "validation": 8, "test": 8}.items():
        rows = [
            " ".join(rng.choice(WORDS[:60], size=int(rng.integers(4, max_words)))) for _ in range(n)
        ]
        split = TextSplit([f"{name}-{i}" for i in range(n)], rows)
        write_split(root / "data" / f"{name}.jsonl", split)
