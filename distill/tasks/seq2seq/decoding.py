"""Batched greedy and beam-search decoding of an :class:`OnnxSeq2Seq` with numpy: the tokens
transformers' ``generate`` gives, without torch.

Greedy follows ``generate(num_beams=1, do_sample=False)``: the argmax at every step, a row
stops at its first EOS token (later steps feed it the pad token, as transformers does), all
stop at ``max_new_tokens``. Beam search is a port of transformers 5's ``_beam_search``
(generation/utils.py), step for step and in float32 as it computes: log-softmax scores summed
along a beam, ``2 * num_beams`` candidates kept per source (``(1 + EOS ids) * num_beams``
with several EOS ids), a hypothesis finished by EOS or by the length limit scored as its sum
divided by ``length ** length_penalty``, ``early_stopping`` (True: stop when ``num_beams``
hypotheses are done; False: stop when the best running beam at its current length cannot
beat the worst finished one; "never": at its best possible length). The cache of each
beam is reordered with numpy ``take`` after each step. The encoder runs once per source; its
cross-attention keys/values are repeated per beam.

The logits processors the model's generation config asks for
(:class:`~distill.tasks.seq2seq.onnx_model.GenerationRules`: repetition penalty, n-gram
blocking, banned tokens, minimum length, forced BOS/EOS) are applied as transformers applies
them: to the logits in greedy decoding, to the log-probabilities in beam search.

Torch-free: numpy and the model only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distill.tasks.seq2seq.onnx_model import GenerationRules, OnnxSeq2Seq

# transformers' stand-in for minus infinity in beam scores (kept float32 as it does).
_NEG = np.float32(-1.0e9)


def pad_sources(sources: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ids [B, S] and attention mask of token id lists."""
    if not sources or any(not s for s in sources):
        raise ValueError("every source needs at least one token id")
    width = max(len(s) for s in sources)
    ids = np.full((len(sources), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sources), width), dtype=np.int64)
    for row, source in enumerate(sources):
        ids[row, : len(source)] = source
        mask[row, : len(source)] = 1
    return ids, mask


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32 (max-subtracted), as torch computes it."""
    z = np.asarray(logits, dtype=np.float32)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _banned_ngram_tokens(row: np.ndarray, size: int) -> list[int]:
    """Tokens that would repeat an n-gram of ``row`` (transformers' NoRepeatNGram)."""
    length = row.size
    if length + 1 < size:
        return []
    tokens = row.tolist()
    prefix = tuple(tokens[length + 1 - size :])
    return [
        tokens[i + size - 1]
        for i in range(length - size + 1)
        if tuple(tokens[i : i + size - 1]) == prefix
    ]


def apply_rules(
    rules: GenerationRules,
    scores: np.ndarray,
    sequences: np.ndarray,
    max_length: int,
    eos: np.ndarray,
) -> np.ndarray:
    """``scores`` [N, V] (float32) after the generation config's logits processors, given
    the decoder ``sequences`` [N, length] so far (the start token included)."""
    length = sequences.shape[1]
    scores = np.array(scores, dtype=np.float32)
    if rules.repetition_penalty != 1.0:
        penalty = np.float32(rules.repetition_penalty)
        seen = np.take_along_axis(scores, sequences, axis=1)
        seen = np.where(seen < 0, seen * penalty, seen / penalty)
        np.put_along_axis(scores, sequences, seen, axis=1)
    if rules.no_repeat_ngram_size > 0:
        for row in range(scores.shape[0]):
            banned = _banned_ngram_tokens(sequences[row], rules.no_repeat_ngram_size)
            scores[row, banned] = -np.inf
    if rules.banned_token_ids:
        scores[:, list(rules.banned_token_ids)] = -np.inf
    if eos.size and (length < rules.min_length or length - 1 < rules.min_new_tokens):
        scores[:, eos] = -np.inf
    forced = None
    if rules.forced_bos_token_id is not None and length == 1:
        forced = [rules.forced_bos_token_id]
    if rules.forced_eos_token_ids and length == max_length - 1:
        forced = list(rules.forced_eos_token_ids)
    if forced is not None:
        scores[:] = -np.inf
        scores[:, forced] = 0.0
    return scores


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values per row, best first (ties: lowest index first).

    A partition finds each row's k-th value in linear time (a full sort of the
    ``beams x vocabulary`` candidates would dominate a decoding step on a real vocabulary);
    then the values above it and the lowest-index ones equal to it are sorted."""
    if k >= scores.shape[1]:
        return np.argsort(-scores, axis=-1, kind="stable")[:, :k]
    kth = np.partition(scores, scores.shape[1] - k, axis=1)[:, scores.shape[1] - k]
    rows = []
    for row, threshold in zip(scores, kth, strict=True):
        above = np.flatnonzero(row > threshold)
        chosen = np.sort(
            np.concatenate([above, np.flatnonzero(row == threshold)[: k - above.size]])
        )
        rows.append(chosen[np.argsort(-row[chosen], kind="stable")])
    return np.stack(rows)


def generate_ids(
    model: OnnxSeq2Seq,
    sources: list[list[int]],
    *,
    num_beams: int = 1,
    max_new_tokens: int,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
) -> list[list[int]]:
    """The generated ids of each source (without the decoder start token or padding; with
    the EOS token when one ended it), one batch through the encoder: greedy when
    ``num_beams`` is 1, beam search else (see the module docstring)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, not {max_new_tokens}")
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, not {num_beams}")
    ids, mask = pad_sources(sources, model.pad_token_id)
    if num_beams == 1:
        return _greedy(model, ids, mask, max_new_tokens)
    return _BeamSearch(model, num_beams, max_new_tokens, length_penalty, early_stopping).run(
        ids, mask
    )


def _greedy(
    model: OnnxSeq2Seq, ids: np.ndarray, mask: np.ndarray, max_new_tokens: int
) -> list[list[int]]:
    encoded = model.encode(ids, mask)
    batch = ids.shape[0]
    eos = np.asarray(model.eos_token_ids, dtype=np.int64)
    sequences = np.full((batch, 1), model.decoder_start_token_id, dtype=np.int64)
    running = np.ones(batch, dtype=bool)
    outputs: list[list[int]] = [[] for _ in range(batch)]
    past = None
    for _ in range(max_new_tokens):
        logits, past = model.decode_step(sequences[:, -1:], mask, encoded.cross, past)
        scores = apply_rules(model.rules, logits[:, -1], sequences, max_new_tokens + 1, eos)
        tokens = np.argmax(scores, axis=-1)
        for row in np.flatnonzero(running):
            outputs[row].append(int(tokens[row]))
        running &= ~np.isin(tokens, eos)
        if not running.any():
            break
        step = np.where(running, tokens, model.pad_token_id)
        sequences = np.concatenate([sequences, step[:, None]], axis=1)
    return outputs


@dataclass
class _Beams:
    """Beam state per source, as transformers keeps it: [batch, beams, ...] arrays."""

    running: np.ndarray  # running sequences [B, K, L] (start token at 0)
    running_scores: np.ndarray  # summed log-probs of the running beams [B, K]
    running_origin: np.ndarray  # flat beam each step came from [B, K, L - 1]; -1 unset
    done: np.ndarray  # finished hypotheses [B, K, L]
    done_scores: np.ndarray  # their length-penalized scores [B, K]
    done_origin: np.ndarray  # [B, K, L - 1]
    finished: np.ndarray  # is a finished slot filled [B, K]
    improvable: np.ndarray  # can a running beam still beat the finished ones [B, 1]


def _gather(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``array[b, index[b, j], ...]``: transformers' ``_gather_beams``."""
    expanded = index.reshape(index.shape + (1,) * (array.ndim - 2))
    return np.take_along_axis(array, expanded, axis=1)


class _BeamSearch:
    """One call of beam search over a batch (see the module docstring)."""

    def __init__(
        self,
        model: OnnxSeq2Seq,
        num_beams: int,
        max_new_tokens: int,
        length_penalty: float,
        early_stopping: bool | str,
    ) -> None:
        self.model, self.k = model, num_beams
        self.max_length = 1 + max_new_tokens  # the start token is the decoder's prompt
        self.length_penalty, self.early_stopping = length_penalty, early_stopping
        self.eos = np.asarray(model.eos_token_ids, dtype=np.int64)
        self.keep = max(2, 1 + len(self.eos)) * num_beams

    def _initial(self, batch: int) -> _Beams:
        k, length = self.k, self.max_length
        running = np.full((batch, k, length), self.model.pad_token_id, dtype=np.int64)
        running[:, :, 0] = self.model.decoder_start_token_id
        scores = np.zeros((batch, k), dtype=np.float32)
        scores[:, 1:] = _NEG  # only the first beam's tokens count at the first step
        origin = np.full((batch, k, length - 1), -1, dtype=np.int64)
        return _Beams(
            running=running,
            running_scores=scores,
            running_origin=origin,
            done=running.copy(),
            done_scores=np.full((batch, k), _NEG, dtype=np.float32),
            done_origin=origin.copy(),
            finished=np.zeros((batch, k), dtype=bool),
            improvable=np.ones((batch, 1), dtype=bool),
        )

    def run(self, ids: np.ndarray, mask: np.ndarray) -> list[list[int]]:
        model, k = self.model, self.k
        encoded = model.encode(ids, mask)
        cross = {name: np.repeat(value, k, axis=0) for name, value in encoded.cross.items()}
        mask = np.repeat(mask, k, axis=0)
        beams = self._initial(ids.shape[0])
        past, cur = None, 1
        while True:
            step = beams.running[:, :, cur - 1].reshape(-1, 1)
            logits, past = model.decode_step(step, mask, cross, past)
            sequences = beams.running[:, :, :cur].reshape(-1, cur)
            log_probs = log_softmax(logits[:, -1])
            log_probs = apply_rules(model.rules, log_probs, sequences, self.max_length, self.eos)
            hits = self._step(beams, log_probs, cur)
            flat_origin = beams.running_origin[:, :, cur - 1].reshape(-1)
            past = {name: np.take(value, flat_origin, axis=0) for name, value in past.items()}
            cur += 1
            self._update_improvable(beams, cur)
            open_beam = not (beams.finished.all() and self.early_stopping is True)
            if not (beams.improvable.any() and open_beam and not hits.all()):
                break
        lengths = (beams.done_origin[:, 0] != -1).sum(axis=-1)
        return [beams.done[b, 0, 1 : 1 + n].tolist() for b, n in enumerate(lengths)]

    def _step(self, beams: _Beams, log_probs: np.ndarray, cur: int) -> np.ndarray:
        """Extend the beams by one token (transformers' top-k continuations, running beams
        and finished beams); returns which candidates hit a stopping criterion."""
        batch, k = beams.running_scores.shape
        vocab = log_probs.shape[-1]
        scores = log_probs.reshape(batch, k, vocab) + beams.running_scores[:, :, None]
        scores = scores.reshape(batch, k * vocab)
        top = _top(scores, self.keep)
        top_scores = np.take_along_axis(scores, top, axis=1)
        from_beam, tokens = top // vocab, top % vocab
        top_origin = _gather(beams.running_origin, from_beam)
        top_running = _gather(beams.running, from_beam)
        top_running[:, :, cur] = tokens
        top_origin[:, :, cur - 1] = from_beam + np.arange(batch)[:, None] * k
        hits = np.isin(tokens, self.eos) | (cur + 1 >= self.max_length)

        running_scores = top_scores + hits.astype(np.float32) * _NEG
        chosen = _top(running_scores, k)
        beams.running = _gather(top_running, chosen)
        beams.running_scores = np.take_along_axis(running_scores, chosen, axis=1)
        beams.running_origin = _gather(top_origin, chosen)

        just_done = hits & (np.arange(self.keep) < k)[None, :]
        done_scores = top_scores / np.float32(float(cur) ** self.length_penalty)
        full = beams.finished.all(axis=-1, keepdims=True) & (self.early_stopping is True)
        done_scores = done_scores + full.astype(np.float32) * _NEG
        done_scores = done_scores + (~beams.improvable).astype(np.float32) * _NEG
        done_scores = done_scores + (~just_done).astype(np.float32) * _NEG
        merged_scores = np.concatenate([beams.done_scores, done_scores], axis=1)
        best = _top(merged_scores, k)
        beams.done = _gather(np.concatenate([beams.done, top_running], axis=1), best)
        beams.done_scores = np.take_along_axis(merged_scores, best, axis=1)
        beams.done_origin = _gather(np.concatenate([beams.done_origin, top_origin], axis=1), best)
        beams.finished = _gather(np.concatenate([beams.finished, just_done], axis=1), best)
        return hits

    def _update_improvable(self, beams: _Beams, cur: int) -> None:
        """transformers' early-stop heuristic: can the best running beam still beat the
        worst finished hypothesis of its source?"""
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            best_length = self.max_length - 1
        else:
            best_length = cur - 1
        best_running = beams.running_scores[:, :1] / np.float32(
            float(best_length) ** self.length_penalty
        )
        worst_done = np.where(beams.finished, beams.done_scores.min(axis=1, keepdims=True), _NEG)
        beams.improvable &= (best_running > worst_done).any(axis=-1, keepdims=True)
