"""Build teacher and student models: pre-trained (safely), from the teacher's layers, or from a config."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distill.config import TeacherConfig
from distill.errors import ModelLoadError
from distill.sources.paths import resolve_local

# Attention kernels that ship inside transformers. Anything else named in a config.json
# could make transformers fetch and run code (the `kernels` hub integration): refused.
LOCAL_ATTENTION = {"eager", "sdpa", "flash_attention_2", "flex_attention"}
ATTENTION = "sdpa"
_CODE_CHOOSING_KEYS = {
    "auto_map",
    "attn_implementation",
    "architectures",
    "model_type",
    "trust_remote_code",
}


def _check_model_folder(folder: Path, key: str, trust_remote_code: bool) -> None:
    """Refuse folders that would execute code on load: pickle weights, remote code, hub kernels."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"{key}: {folder} has no config.json; not a model folder")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelLoadError(f"{key}: {config_path} is not valid JSON ({exc})") from None
    for field in ("_attn_implementation_internal", "attn_implementation", "_attn_implementation"):
        value = config.get(field)
        if value is not None and value not in LOCAL_ATTENTION:
            raise ModelLoadError(
                f"{key}: {config_path} sets {field} = {value!r}, not a local attention implementation "
                f"({sorted(LOCAL_ATTENTION)}); refused because it could load code from the hub"
            )
    if config.get("auto_map") and not trust_remote_code:
        raise ModelLoadError(
            f"{key}: {folder} needs custom code (auto_map in config.json); set "
            f"{key.rsplit('.', 1)[0]}.trust_remote_code = true only if you trust its author"
        )
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(
            p.name for p in folder.glob("*.pt")
        )
        detail = (
            f" (found {', '.join(pickles)}: pickle files can run code when loaded)"
            if pickles
            else ""
        )
        raise ModelLoadError(f"{key}: {folder} has no .safetensors weights{detail}; refused")


def resolve_model(
    reference: str,
    base_dir: Path,
    key: str,
    trust_remote_code: bool = False,
    archive: list[str] | None = None,
) -> str:
    """A local folder path (checked) or a hub id, as a string for ``from_pretrained``.

    With ``archive`` (split zip parts), the parts are unpacked once into the cache and
    ``reference`` names the folder inside the archive.
    """
    if archive:
        from distill.sources.archives import resolve_parts, unpack_split_zip

        archive_key = f"{key.rsplit('.', 1)[0]}.archive"
        root = unpack_split_zip(resolve_parts(archive, base_dir, archive_key), archive_key)
        inside = Path(reference)
        if inside.is_absolute() or ".." in inside.parts:
            raise ModelLoadError(
                f"{key}: {reference!r} must be a folder inside {archive_key} (a relative path)"
            )
        reference = str(root / inside)
        if not Path(reference).is_dir():
            found = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise ModelLoadError(
                f"{key}: the archive has no folder {inside.as_posix()!r} (it holds {found})"
            )
    local = resolve_local(reference, base_dir, key)
    if local is None:
        return reference
    if not local.is_dir():
        raise ModelLoadError(f"{key}: {local} is a file; name the model folder")
    _check_model_folder(local, key, trust_remote_code)
    return str(local)


def _check_tokenizer_files(folder: Path, key: str) -> None:
    """Refuse a tokenizer config that names files outside its own folder."""
    config_path = folder / "tokenizer_config.json"
    if not config_path.is_file():
        return
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelLoadError(f"{key}: {config_path} is not valid JSON ({exc})") from None
    root = folder.resolve()
    for field, value in config.items():
        if not (field.endswith("_file") or field.endswith("_files")) or not isinstance(value, str):
            continue
        target = (folder / value).resolve()
        if Path(value).is_absolute() or not target.is_relative_to(root):
            raise ModelLoadError(
                f"{key}: {config_path} field {field!r} = {value!r} points outside the model folder; refused"
            )


def load_tokenizer(
    source: str, key: str, revision: str | None = None, trust_remote_code: bool = False
) -> Any:
    from transformers import AutoTokenizer

    if Path(source).is_dir():
        _check_tokenizer_files(Path(source), key)
    try:
        return AutoTokenizer.from_pretrained(
            source, revision=revision, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(load_failure(key, source, exc)) from None


def teacher_source(
    teacher: TeacherConfig,
    base_dir: Path,
    resolve: Callable[..., str] = resolve_model,
    adapted: Path | None = None,
) -> tuple[str, Any]:
    """The recipe's ``[teacher]`` model, resolved for ``from_pretrained`` (through
    ``resolve``, a task's own resolver when it reads more than folders and hub ids), and
    its tokenizer; with ``adapted`` (the adapt stage's folder), the encoder it adapted."""
    if adapted is not None:
        folder = adapted / "model"
        return str(folder), load_tokenizer(str(folder), "adapted teacher (stage adapt)")
    source = resolve(
        teacher.model,
        base_dir,
        "teacher.model",
        teacher.trust_remote_code,
        archive=teacher.archive,
    )
    tokenizer = load_tokenizer(source, "teacher.model", teacher.revision, teacher.trust_remote_code)
    return source, tokenizer


def load_failure(key: str, source: str, exc: Exception) -> str:
    """The one-line message for a model or tokenizer ``source`` that did not load."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = "folder" if Path(source).exists() else "hub id (offline, or not found)"
    return f"{key}: cannot load {source!r} as a {where}: {first}"


def load_with_labels(
    auto_class: Any,
    source: str,
    label_names: list[str],
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> nn.Module:
    """``auto_class.from_pretrained(source)`` (a transformers Auto class) with real label names,
    safetensors only; a new head when the label set differs. Load errors propagate: each task
    says what it was loading."""
    return with_supported_attention(
        auto_class.from_pretrained,
        source,
        revision=revision,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        ignore_mismatched_sizes=True,
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
    )


def with_supported_attention(load: Any, *args: Any, **kwargs: Any) -> Any:
    """``load(..., attn_implementation=ATTENTION)``, or eager attention for the architectures
    without a fused kernel (MPNet has no SDPA path in transformers 4.57)."""
    try:
        return load(*args, attn_implementation=ATTENTION, **kwargs)
    except ValueError as exc:
        if "attention implementation" not in str(exc) and "attn_implementation" not in str(exc):
            raise
        return load(*args, attn_implementation="eager", **kwargs)


def load_saved(auto_class: Any, folder: Path) -> nn.Module:
    """A model an earlier stage saved, through ``auto_class`` (a transformers Auto class):
    safetensors only, the same attention kernel."""
    return with_supported_attention(auto_class.from_pretrained, folder, use_safetensors=True)


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks, for the architectures distill knows."""
    base = getattr(model, "base_model", model)
    for path in (
        "encoder.layer",
        "transformer.layer",
        "layers",
        "h",
        "encoder.layers",
        "decoder.layers",
    ):
        module: Any = base
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return module
    raise ModelLoadError(
        f"{type(model).__name__}: cannot find its transformer layers to select or freeze"
    )


def evenly_spaced_layers(total: int, keep: int) -> list[int]:
    """``keep`` layer indices spread over ``total`` layers, always including the last."""
    if not 1 <= keep <= total:
        raise ModelLoadError(f"student.num_layers = {keep}: the teacher has {total} layers")
    if keep == 1:
        return [total - 1]
    return [int(i) for i in np.linspace(0, total - 1, keep).round().astype(int)]


def freeze(
    model: nn.Module, embeddings: bool, lowest_layers: int, table: str = "teacher"
) -> dict[str, int]:
    """Freeze the embeddings and/or the lowest N layers; returns trainable/total parameter counts."""
    layers = transformer_layers(model)
    if lowest_layers > len(layers):
        raise ModelLoadError(
            f"{table}.freeze_layers = {lowest_layers}: the model has {len(layers)} layers"
        )
    if embeddings:
        model.get_input_embeddings().requires_grad_(False)
        base = getattr(model, "base_model", model)
        if hasattr(base, "embeddings"):
            base.embeddings.requires_grad_(False)
    for layer in list(layers)[:lowest_layers]:
        layer.requires_grad_(False)
    return parameter_counts(model)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def student_from_teacher_layers(teacher: nn.Module, layers: list[int]) -> nn.Module:
    """DistilBERT-style: copy the teacher and keep its embeddings, head and the chosen layers."""
    teacher_stack = transformer_layers(teacher)
    bad = [i for i in layers if not 0 <= i < len(teacher_stack)]
    if bad:
        raise ModelLoadError(
            f"student.layers: {bad} out of range; the teacher has {len(teacher_stack)} layers"
        )
    student = copy.deepcopy(teacher)
    kept = nn.ModuleList(copy.deepcopy(teacher_stack[i]) for i in layers)
    for new_index, layer in enumerate(kept):
        for module in layer.modules():  # caches are indexed by position in the stack
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    _replace_layers(student, kept)
    _share_config(student)
    student.config.num_hidden_layers = len(layers)
    student.config.distill_teacher_layers = list(layers)
    return student


def _share_config(model: nn.Module) -> None:
    """Point every submodule of ``model`` at ``model.config`` and drop copied output hooks.

    Layers copied on their own carry their own copy of the teacher's config: transformers 5
    reads the attention implementation from it, so ``set_attn_implementation`` on the student
    would leave them on the old kernel. They also carry the teacher's output-capturing hooks
    (installed at its first forward), which record nothing for the student: transformers
    installs fresh ones at the student's first forward once the flag is cleared.
    """
    from transformers import PretrainedConfig

    for module in model.modules():
        if isinstance(getattr(module, "config", None), PretrainedConfig):
            module.config = model.config
        for key, hook in list(module._forward_hooks.items()):
            if getattr(hook, "__name__", "") == "output_capturing_hook":
                del module._forward_hooks[key]
        if hasattr(module, "_output_capturing_hooks_installed"):
            module._output_capturing_hooks_installed = False


def _replace_layers(model: nn.Module, new_layers: nn.ModuleList) -> None:
    old = transformer_layers(model)
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new_layers)
                return
    raise ModelLoadError(
        f"{type(model).__name__}: cannot replace its transformer layers"
    )  # pragma: no cover


def student_from_config(teacher: nn.Module, overrides: dict[str, Any], seed: int) -> nn.Module:
    """A randomly initialised model of the teacher's class (its head too), with config
    fields overridden."""
    config = copy.deepcopy(teacher.config)
    # Keys that choose code rather than shapes are not configurable from a recipe.
    refused = [k for k in overrides if k.startswith("_") or k in _CODE_CHOOSING_KEYS]
    if refused:
        raise ModelLoadError(f"student.config: {refused} cannot be set from a recipe")
    unknown = [k for k in overrides if not hasattr(config, k)]
    if unknown:
        raise ModelLoadError(f"student.config: {unknown} are not fields of {type(config).__name__}")
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    try:
        return with_supported_attention(type(teacher)._from_config, config)
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(
            f"student.config: cannot build a {type(config).__name__} from it: {exc}"
        ) from None
