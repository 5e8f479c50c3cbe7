"""What a student cut from the teacher keeps, chosen by measurement on calibration text.

Layers (scored on the teacher, over the real tokens of a sample of training texts):

* ``importance``: ShortGPT's block influence (Men et al. 2024), ``BI_l = 1 - cos(x_l, x_{l+1})``
  between the input and the output of layer ``l``; the layers of lowest influence are dropped.
* ``contiguous``: Gromov et al. 2024: the block of ``m = L - n`` consecutive layers whose input
  ``x_l`` and output ``x_{l+m}`` are closest in angular distance ``arccos(cos) / pi`` is
  dropped; blocks that would drop the last layer are not candidates.

Both average over every real token (padding masked), not only the last one.

Width (scored on the layer-dropped student itself, on the same texts):

* MLP neurons of Llama-style blocks (``gate_proj``/``up_proj``/``down_proj``) ranked per layer
  by the mean ``|act_fn(gate_proj x) * up_proj x|`` (the input of ``down_proj``);
* attention heads ranked per layer by the mean norm of what each adds to the residual stream
  (its slice of ``o_proj`` applied to its output). With grouped-query attention every KV group
  keeps the same number of query heads and all KV heads stay (the KV cache keeps its size);
  with one query head per KV head (plain multi-head attention) a head goes with its key and
  value heads.

The same number of neurons (and heads) is kept in every layer: the config holds one size.

transformers 4.57's ``output_hidden_states`` ends with the final norm's output, not the last
layer's: the last layer's own output is caught with a forward hook instead.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import ModelLoadError
from distill.pipeline.progress import track
from distill.tasks.causal_lm.models import decoder_of
from distill.tasks.causal_lm.training import CausalCollator

BATCH_SIZE = 16


def calibration_sample(sequences: Sequence[list[int]], count: int, seed: int) -> list[list[int]]:
    """A seeded sample of ``count`` token sequences (all of them when there are fewer)."""
    if count >= len(sequences):
        return list(sequences)
    return random.Random(seed).sample(list(sequences), count)


def _batches(
    model: nn.Module, sequences: Sequence[list[int]], pad_id: int, desc: str
) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """The model's inputs for ``sequences`` in batches (on its device), each with its real-token
    mask [batch, time] (bool); the model is put in eval mode and the caller runs it."""
    if not sequences:
        raise ValueError("calibration needs at least one text")
    model.eval()
    collate = CausalCollator(pad_id)
    device = next(model.parameters()).device
    for start in track(range(0, len(sequences), BATCH_SIZE), desc=desc, unit="batch"):
        batch = collate([{"input_ids": s} for s in sequences[start : start + BATCH_SIZE]])
        inputs = {
            "input_ids": batch["input_ids"].to(device),
            "attention_mask": batch["attention_mask"].to(device),
        }
        yield inputs, inputs["attention_mask"].bool()


# --------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class LayerDistances:
    """Means over calibration tokens between hidden states ``i`` and ``j`` ([L+1, L+1]):
    state 0 is the input of layer 0 (the embeddings), state ``l + 1`` the output of layer ``l``."""

    cosine: np.ndarray
    angular: np.ndarray  # arccos(cosine) / pi, averaged per token (not arccos of the mean)
    tokens: int

    @property
    def layers(self) -> int:
        return self.cosine.shape[0] - 1

    def block_influence(self) -> list[float]:
        """``1 - cos`` between each layer's input and output (ShortGPT): low = layer changes little."""
        return [float(1.0 - self.cosine[i, i + 1]) for i in range(self.layers)]

    def block_distances(self, dropped: int) -> list[float]:
        """Angular distance between the input of layer ``l`` and the output of layer
        ``l + dropped - 1``, for every start ``l`` whose block leaves the last layer."""
        return [float(self.angular[i, i + dropped]) for i in range(self.layers - dropped)]


def layer_distances(
    model: nn.Module, sequences: Sequence[list[int]], pad_id: int
) -> LayerDistances:
    """:class:`LayerDistances` of ``model`` on ``sequences``, padding excluded."""
    layers = decoder_of(model).layers
    size = len(layers) + 1
    cosine, angular = np.zeros((size, size)), np.zeros((size, size))
    last: dict[str, torch.Tensor] = {}

    def catch_last(module: nn.Module, args: Any, output: Any) -> None:
        last["output"] = output[0] if isinstance(output, tuple) else output

    hook = layers[-1].register_forward_hook(catch_last)
    tokens = 0
    try:
        with torch.no_grad():
            for inputs, mask in _batches(model, sequences, pad_id, "student: layer scores"):
                outputs = model(**inputs, use_cache=False, output_hidden_states=True)
                # hidden_states ends with norm(last layer's output): take the output itself.
                states = [*outputs.hidden_states[: size - 1], last["output"]]
                stacked = torch.stack([state[mask] for state in states], dim=1).double()
                unit = F.normalize(stacked, dim=-1)  # [tokens, L+1, hidden]
                cos = torch.einsum("nid,njd->nij", unit, unit).clamp(-1.0, 1.0)
                cosine += cos.sum(0).cpu().numpy()
                angular += (torch.arccos(cos) / math.pi).sum(0).cpu().numpy()
                tokens += int(mask.sum())
    finally:
        hook.remove()
    return LayerDistances(cosine / tokens, angular / tokens, tokens)


def most_influential(influence: Sequence[float], keep: int) -> list[int]:
    """The ``keep`` layers of highest block influence, in model order (ties drop the later)."""
    ranked = sorted(range(len(influence)), key=lambda i: (-influence[i], i))
    return sorted(ranked[:keep])


def contiguous_keep(distances: LayerDistances, keep: int) -> tuple[list[int], dict[str, Any]]:
    """Keep ``keep`` layers by dropping the block of ``L - keep`` consecutive layers (never the
    last layer) whose input and output are closest in angular distance; and what was compared."""
    total = distances.layers
    dropped = total - keep
    if dropped == 0:
        return list(range(total)), {"start": None, "layers": 0, "candidates": []}
    candidates = distances.block_distances(dropped)
    start = min(range(len(candidates)), key=lambda i: (candidates[i], i))
    kept = [i for i in range(total) if not start <= i < start + dropped]
    block = {"start": start, "layers": dropped, "angular_distance": candidates[start]}
    return kept, {**block, "candidates": candidates}


def choose_layers(
    model: nn.Module,
    selection: str,
    keep: int,
    calibration: Sequence[list[int]],
    pad_id: int,
) -> tuple[list[int], dict[str, Any]]:
    """The teacher layers to keep by ``selection`` (``importance`` or ``contiguous``) and a
    record of the scores behind the choice."""
    total = len(decoder_of(model).layers)
    if not 1 <= keep <= total:
        raise ModelLoadError(f"student.num_layers = {keep}: the teacher has {total} layers")
    distances = layer_distances(model, calibration, pad_id)
    influence = distances.block_influence()
    record: dict[str, Any] = {
        "layer_selection": selection,
        "calibration_texts": len(calibration),
        "calibration_tokens": distances.tokens,
        "block_influence": [round(x, 6) for x in influence],
    }
    if selection == "importance":
        return most_influential(influence, keep), record
    if selection == "contiguous":
        kept, block = contiguous_keep(distances, keep)
        block["candidates"] = [round(x, 6) for x in block["candidates"]]
        return kept, {**record, "dropped_block": block}
    raise ValueError(f"layer selection {selection!r}: expected 'importance' or 'contiguous'")


# --------------------------------------------------------------------------- width


def _kept_count(fraction: float, total: int) -> int:
    """``round(fraction * total)`` (halves up), at least one."""
    return max(1, min(total, int(fraction * total + 0.5)))


def _mlp(layer: nn.Module, index: int) -> nn.Module:
    mlp = getattr(layer, "mlp", None)
    if mlp is None or not all(
        isinstance(getattr(mlp, name, None), nn.Linear)
        for name in ("gate_proj", "up_proj", "down_proj")
    ):
        raise ModelLoadError(
            f"layer {index} ({type(layer).__name__}): student.mlp_keep needs a Llama-style MLP "
            "(gate_proj, up_proj, down_proj)"
        )
    return mlp


def _attention(layer: nn.Module, index: int) -> nn.Module:
    attention = getattr(layer, "self_attn", None)
    if attention is None or not all(
        isinstance(getattr(attention, name, None), nn.Linear)
        for name in ("q_proj", "k_proj", "v_proj", "o_proj")
    ):
        raise ModelLoadError(
            f"layer {index} ({type(layer).__name__}): student.heads_keep needs Llama-style "
            "attention (q_proj, k_proj, v_proj, o_proj)"
        )
    return attention


@dataclass(frozen=True)
class WidthScores:
    """Per layer: each MLP neuron's mean |activation| and each query head's mean output norm."""

    neurons: list[torch.Tensor] | None
    heads: list[torch.Tensor] | None
    tokens: int


def width_scores(
    model: nn.Module,
    sequences: Sequence[list[int]],
    pad_id: int,
    *,
    neurons: bool = True,
    heads: bool = True,
) -> WidthScores:
    """:class:`WidthScores` of ``model`` on ``sequences`` (one pass; padding excluded)."""
    layers = decoder_of(model).layers
    neuron_sums: list[torch.Tensor] = []
    head_sums: list[torch.Tensor] = []
    hooks = []
    state: dict[str, torch.Tensor] = {}

    def neuron_hook(index: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            neuron_sums[index] += args[0][state["mask"]].abs().double().sum(0).cpu()

        return hook

    def head_hook(index: int, head_dim: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            outputs = args[0][state["mask"]]  # [N, heads * head_dim]
            per_head = outputs.view(outputs.shape[0], -1, head_dim)
            weight = module.weight.view(module.weight.shape[0], -1, head_dim)
            added = torch.einsum("nhd,ohd->nho", per_head, weight)  # what each head adds
            head_sums[index] += added.norm(dim=-1).double().sum(0).cpu()

        return hook

    for index, layer in enumerate(layers):
        if neurons:
            down = _mlp(layer, index).down_proj
            neuron_sums.append(torch.zeros(down.in_features, dtype=torch.float64))
            hooks.append(down.register_forward_pre_hook(neuron_hook(index)))
        if heads:
            attention = _attention(layer, index)
            head_dim = int(attention.head_dim)
            head_sums.append(
                torch.zeros(attention.o_proj.in_features // head_dim, dtype=torch.float64)
            )
            hooks.append(attention.o_proj.register_forward_pre_hook(head_hook(index, head_dim)))

    tokens = 0
    try:
        with torch.no_grad():
            for inputs, mask in _batches(model, sequences, pad_id, "student: width scores"):
                state["mask"] = mask  # read by the hooks
                model(**inputs, use_cache=False)
                tokens += int(mask.sum())
    finally:
        for hook in hooks:
            hook.remove()
    return WidthScores(
        [s / tokens for s in neuron_sums] if neurons else None,
        [s / tokens for s in head_sums] if heads else None,
        tokens,
    )


def _rows(linear: nn.Linear, index: torch.Tensor) -> nn.Linear:
    """A new Linear with only the output features ``index`` of ``linear`` (weights copied)."""
    kept = nn.Linear(
        linear.in_features,
        len(index),
        bias=linear.bias is not None,
        device=linear.weight.device,
        dtype=linear.weight.dtype,
    )
    with torch.no_grad():
        kept.weight.copy_(linear.weight[index])
        if linear.bias is not None:
            kept.bias.copy_(linear.bias[index])
    return kept.requires_grad_(linear.weight.requires_grad)


def _columns(linear: nn.Linear, index: torch.Tensor) -> nn.Linear:
    """A new Linear with only the input features ``index`` of ``linear`` (bias unchanged)."""
    kept = nn.Linear(
        len(index),
        linear.out_features,
        bias=linear.bias is not None,
        device=linear.weight.device,
        dtype=linear.weight.dtype,
    )
    with torch.no_grad():
        kept.weight.copy_(linear.weight[:, index])
        if linear.bias is not None:
            kept.bias.copy_(linear.bias)
    return kept.requires_grad_(linear.weight.requires_grad)


def top_neurons(scores: Sequence[torch.Tensor], fraction: float) -> list[torch.Tensor]:
    """Per layer, the indices (ascending) of the ``round(fraction * size)`` highest scores."""
    keep = _kept_count(fraction, len(scores[0]))
    return [torch.sort(torch.topk(s, keep, sorted=False).indices).values for s in scores]


def prune_mlp(model: nn.Module, keep: Sequence[torch.Tensor]) -> None:
    """Keep only the intermediate neurons ``keep[l]`` of each layer's MLP, in place: rows of
    ``gate_proj`` and ``up_proj``, columns of ``down_proj``; ``config.intermediate_size``
    follows (the same count in every layer)."""
    layers = decoder_of(model).layers
    sizes = {len(k) for k in keep}
    if len(keep) != len(layers) or len(sizes) != 1:
        raise ValueError(f"need one equal-sized neuron list per layer; got sizes {sorted(sizes)}")
    for index, (layer, neurons) in enumerate(zip(layers, keep, strict=True)):
        mlp = _mlp(layer, index)
        neurons = torch.as_tensor(neurons, dtype=torch.long, device=mlp.gate_proj.weight.device)
        mlp.gate_proj = _rows(mlp.gate_proj, neurons)
        mlp.up_proj = _rows(mlp.up_proj, neurons)
        mlp.down_proj = _columns(mlp.down_proj, neurons)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = len(neurons)
    model.config.intermediate_size = sizes.pop()


def top_heads(scores: torch.Tensor, kv_heads: int, fraction: float) -> tuple[list[int], list[int]]:
    """(query heads, KV heads) to keep, ascending. Grouped-query attention: the best
    ``round(fraction * group)`` query heads of every KV group, every KV head. One query head
    per KV head: the best ``round(fraction * heads)`` heads with their KV heads."""
    heads = len(scores)
    group = heads // kv_heads
    order = sorted(range(heads), key=lambda h: (-float(scores[h]), h))
    if group == 1:
        chosen = sorted(order[: _kept_count(fraction, heads)])
        return chosen, chosen
    per_group = _kept_count(fraction, group)
    rank = {h: i for i, h in enumerate(order)}
    query = []
    for g in range(kv_heads):
        members = sorted(range(g * group, (g + 1) * group), key=rank.__getitem__)
        query += sorted(members[:per_group])
    return query, list(range(kv_heads))


def _head_features(heads: list[int], head_dim: int, device: torch.device) -> torch.Tensor:
    """The feature indices of ``heads`` in a projection laid out head by head."""
    rows = [h * head_dim + i for h in heads for i in range(head_dim)]
    return torch.tensor(rows, dtype=torch.long, device=device)


def prune_heads(model: nn.Module, keep: Sequence[tuple[list[int], list[int]]]) -> None:
    """Keep only the (query heads, KV heads) ``keep[l]`` of each layer's attention, in place:
    rows of ``q_proj`` (and ``k_proj``/``v_proj`` for dropped KV heads), columns of
    ``o_proj``; the config's head counts follow and ``head_dim`` is written out (it can no
    longer be derived as hidden_size / heads)."""
    layers = decoder_of(model).layers
    shapes = {(len(q), len(kv)) for q, kv in keep}
    if len(keep) != len(layers) or len(shapes) != 1:
        raise ValueError(f"need one equal-sized head choice per layer; got {sorted(shapes)}")
    (queries, kvs) = shapes.pop()
    if queries % kvs:
        raise ValueError(f"{queries} query heads do not split into {kvs} KV groups")
    head_dim = None
    for index, (layer, (query, kv)) in enumerate(zip(layers, keep, strict=True)):
        attention = _attention(layer, index)
        head_dim = int(attention.head_dim)
        old_kv = attention.k_proj.out_features // head_dim
        old_group = (attention.q_proj.out_features // head_dim) // old_kv
        # Query head j reads KV head j // group (repeat_kv): each kept KV head needs the same
        # number of kept query heads, listed group by group.
        if (
            query != sorted(query)
            or [sum(q // old_group == g for q in query) for g in kv] != [queries // kvs] * kvs
        ):
            raise ValueError(
                f"layer {index}: query heads {query} do not split evenly over KV heads {kv}"
            )
        device = attention.q_proj.weight.device
        attention.q_proj = _rows(attention.q_proj, _head_features(query, head_dim, device))
        attention.o_proj = _columns(attention.o_proj, _head_features(query, head_dim, device))
        if len(kv) != old_kv:
            attention.k_proj = _rows(attention.k_proj, _head_features(kv, head_dim, device))
            attention.v_proj = _rows(attention.v_proj, _head_features(kv, head_dim, device))
        attention.num_key_value_groups = queries // kvs
    config = model.config
    config.num_attention_heads, config.num_key_value_heads = queries, kvs
    config.head_dim = head_dim


def prune_width(
    model: nn.Module,
    calibration: Sequence[list[int]],
    pad_id: int,
    mlp_keep: float = 1.0,
    heads_keep: float = 1.0,
) -> dict[str, Any]:
    """Prune ``model``'s MLP neurons and/or attention heads in place, ranked on
    ``calibration``; returns what was kept (counts, and the share of score mass kept)."""
    neurons, heads = mlp_keep < 1.0, heads_keep < 1.0
    if not (neurons or heads):
        return {}
    scores = width_scores(model, calibration, pad_id, neurons=neurons, heads=heads)
    record: dict[str, Any] = {"width_calibration_tokens": scores.tokens}
    if scores.neurons is not None:
        keep = top_neurons(scores.neurons, mlp_keep)
        record["mlp"] = {
            "fraction": mlp_keep,
            "neurons_kept": len(keep[0]),
            "neurons_per_layer": len(scores.neurons[0]),
            "score_kept": [
                round(float(s[k].sum() / s.sum()), 6) if float(s.sum()) > 0 else 1.0
                for s, k in zip(scores.neurons, keep, strict=True)
            ],
        }
        prune_mlp(model, keep)
    if scores.heads is not None:
        kv_heads = int(model.config.num_key_value_heads)
        chosen = [top_heads(s, kv_heads, heads_keep) for s in scores.heads]
        record["heads"] = {
            "fraction": heads_keep,
            "heads_kept": len(chosen[0][0]),
            "heads_per_layer": len(scores.heads[0]),
            "kv_heads_kept": len(chosen[0][1]),
            "kept": [query for query, _ in chosen],
            "scores": [[round(float(x), 6) for x in s] for s in scores.heads],
        }
        prune_heads(model, chosen)
    return record
