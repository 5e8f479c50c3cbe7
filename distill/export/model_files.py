"""What an exported generative model carries beside its graphs, shared by the tasks that
export with a wrapper module around the model (generative ones): the config, generation
config and tokenizer files copied from the model folder, and the graph's weights named after
the model's own parameters instead of the wrapper's."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from distill.errors import ModelLoadError

# Copied from the model folder beside the graphs when present: what the torch-free runners
# and the bundle read (config, generation config, tokenizer.json) and what from_pretrained
# needs for the tokenizer (its config, vocabularies, sentencepiece models, chat templates).
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "source.spm",
    "target.spm",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def copy_model_files(model_dir: Path, out_dir: Path) -> None:
    """:data:`MODEL_FILES` present in ``model_dir``; a folder with a slow tokenizer only gets
    ``tokenizer.json`` written by its fast conversion (the runners read nothing else)."""
    for name in MODEL_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out_dir / name)
    if not (out_dir / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        try:
            AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(out_dir))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"{model_dir}: cannot load the tokenizer to export ({exc})"
            ) from None


def name_weights(graph_model: Any, model: Any, wrapper: str) -> None:
    """Give the graph's weights the model's own parameter names (``shared.weight``, not the
    wrapper's ``<wrapper>.lm_head.weight``; a tied table is named after its first owner).
    Weights the exporter folded (transposed copies, ``val_N``) keep theirs."""
    owners: dict[int, str] = {}
    for name, tensor in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(tensor), name)
    canonical = {
        f"{wrapper}.{name}": owners[id(t)]
        for name, t in model.named_parameters(remove_duplicate=False)
    }
    canonical.update({f"{wrapper}.{name}": name for name, _ in model.named_buffers()})
    graph = graph_model.graph
    for value in list(graph.initializers.values()):
        new = canonical.get(value.name)
        if new is not None and new not in graph.initializers:
            value.name = new
