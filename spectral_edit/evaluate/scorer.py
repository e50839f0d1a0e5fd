"""The one log-likelihood scorer: continuations given contexts, sharing prefixes.

Every benchmark and every method scores through :func:`score_requests`. A request is a
context with its candidate continuations. Work shared between candidates is done once:

1. a ``shared_prefix`` (e.g. the TruthfulQA primer or few-shot examples) is run once and
   its key/value cache reused by every request that starts with it;
2. each request's context is run once on top of that cache;
3. its continuations run as one right-padded batch on copies of the context cache;
4. the LM head is applied only at the positions that predict continuation tokens.

Hooks on the model (an editor, a baseline) act on every one of these passes, so scores
under an edit equal those of a plain full-sequence forward pass under the same edit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..core.options import check_count
from ..hf.heads import decoder_and_head, lm_head_logits
from ..hf.positions import prompt_boundary
from ..hf.prefix import PrefixCache, expand_cache, forward_on_cache
from ..hf.tokens import encode, encode_pair, input_device, output_cache, pad_id_of
from ..util.progress import progress_bar
from .contrast import companion_of, join_features
from .readout import FINAL, FinalLayerReadout, Readout


@dataclass(frozen=True)
class ChoiceRequest:
    """A context and the continuations to score after it (each scored independently)."""

    context: str
    continuations: tuple[str, ...]


@dataclass(frozen=True)
class ContinuationScore:
    """Sum of token log-probabilities of one continuation, its token count, and whether
    greedy decoding would have produced it."""

    logprob: float
    n_tokens: int
    is_greedy: bool

    @property
    def mean_logprob(self) -> float:
        return self.logprob / max(self.n_tokens, 1)


__all__ = [
    "ChoiceRequest",
    "ContinuationScore",
    "FinalLayerReadout",
    "decoder_and_head",
    "lm_head_logits",
    "score_requests",
]


class _PairedCache:
    """The KV caches of the scored model and of a readout's companion, copied and
    repeated together (what :func:`~spectral_edit.hf.prefix.expand_cache` asks of a cache)."""

    def __init__(self, own: object, other: object) -> None:
        self.own, self.other = own, other

    def batch_repeat_interleave(self, rows: int) -> None:
        self.own.batch_repeat_interleave(rows)  # type: ignore[attr-defined]
        self.other.batch_repeat_interleave(rows)  # type: ignore[attr-defined]


class _Runner:
    """Runs the base model on new tokens on top of a cache (batch rows share the past) and
    returns, per position, the features the readout needs. A readout with a companion
    (:mod:`~spectral_edit.evaluate.contrast`) gets the companion's final state too, from a
    second pass over the same tokens on its own cache (under its editor's hooks)."""

    def __init__(self, model: nn.Module, readout: Readout) -> None:
        self.base, _ = decoder_and_head(model)
        self.device = input_device(model)
        self.extra = readout.hidden_states
        self.companion = companion_of(readout)
        if self.companion is not None:
            self.companion_base, _ = decoder_and_head(self.companion.model)

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, past, past_len: int):
        """``ids``/``mask`` ``(B, T)``; returns (features ``(B, T, 1 + K, d)``: the final
        hidden state then the readout's K extra hidden states, cache); with a companion,
        ``(B, T, 2 + K, w)`` (:func:`~spectral_edit.evaluate.contrast.join_features`)."""
        own_past, other_past = (
            (past.own, past.other) if isinstance(past, _PairedCache) else (past, None)
        )
        out = forward_on_cache(
            self.base, ids, mask, own_past, past_len, output_hidden_states=bool(self.extra)
        )
        if not self.extra:  # a view, no copy: the common case on the hot path
            features = out.last_hidden_state.unsqueeze(2)
        else:
            states = [out.last_hidden_state, *(out.hidden_states[j] for j in self.extra)]
            features = torch.stack(states, dim=2)
        if self.companion is None:
            return features, output_cache(out)
        with self.companion.active():
            other = forward_on_cache(self.companion_base, ids, mask, other_past, past_len)
        cache = _PairedCache(output_cache(out), output_cache(other))
        return join_features(features, other.last_hidden_state), cache


def _build_prefix(run: _Runner, tokenizer, text: str | None) -> PrefixCache:
    """The shared prefix's cache, its ``last`` the readout's features ``(1, 1 + K, d)``."""
    if not text:
        return PrefixCache([])
    ids = encode(tokenizer, text)
    # every prompt that shares the prefix is longer than it (see PrefixCache.split): no
    # prefix position is after a prompt's last token, so no position-restricted edit acts
    with prompt_boundary([len(ids) + 1]):
        hidden, cache = run(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), None, 0)
    return PrefixCache(ids, cache, hidden[:, -1])


def _encode_request(tokenizer, request: ChoiceRequest) -> tuple[list[int], list[list[int]]]:
    """(context ids, one id list per continuation); a continuation must have tokens."""
    pairs = [encode_pair(tokenizer, request.context, c) for c in request.continuations]
    if any(not target for _, target in pairs):
        raise ValueError(f"a continuation of {request.context[-60:]!r} encodes to no tokens")
    context_ids = pairs[0][0] if pairs else encode_pair(tokenizer, request.context, "")[0]
    return context_ids, [target for _, target in pairs]


@torch.no_grad()
def score_requests(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[ChoiceRequest],
    *,
    shared_prefix: str | None = None,
    batch_size: int = 16,
    share_contexts: bool | None = None,
    readout: Readout = FINAL,
    progress: bool | str = False,
) -> list[list[ContinuationScore]]:
    """Score every continuation of every request; results follow the input order.

    ``shared_prefix``: a string most contexts start with; its cache is computed once and
    reused where the context's tokens start with the prefix's tokens (others are run in
    full). ``batch_size``: sequences per forward pass. ``share_contexts``: run each
    context once and its continuations on its cache (fewest FLOPs: best on CPUs), or pack
    context-plus-continuation sequences of many requests into each batch on the prefix
    cache (fewest passes: best on GPUs). Default: pack on accelerators; on a CPU, pack
    the requests whose context is cheap to rerun per continuation (:data:`PACK_BELOW`
    context tokens rerun in all, e.g. CrowS-Pairs' empty contexts) and share the rest.
    All give the same scores. ``readout``: how hidden states become log-probabilities
    (default: the LM head; :class:`~spectral_edit.evaluate.readout.DoLaReadout` for DoLa).
    """
    check_count("batch_size", batch_size)
    run = _Runner(model, readout)
    pad = pad_id_of(tokenizer)
    prefix = _build_prefix(run, tokenizer, shared_prefix)
    encoded = [_encode_request(tokenizer, request) for request in requests]
    if share_contexts is None and run.device.type == "cpu":
        # on a CPU, share long contexts; pack the requests whose context costs little to
        # rerun per continuation (a forward pass of a few rows costs a read of the weights)
        packed = [
            i for i, (ids, targets) in enumerate(encoded) if _cheap_to_pack(prefix, ids, targets)
        ]
    else:
        packed = [] if share_contexts else list(range(len(requests)))
    chosen = set(packed)
    shared_rows = [i for i in range(len(requests)) if i not in chosen]
    results: list[list[ContinuationScore]] = [[] for _ in requests]
    bar = progress_bar(len(requests), progress, "score", "req")
    scored = _score_packed(
        model, run, [encoded[i] for i in packed], prefix, pad, batch_size, readout, bar
    )
    for i, packed_scores in zip(packed, scored, strict=True):
        results[i] = packed_scores
    for i in shared_rows:
        context_ids, targets = encoded[i]
        shared, rest = prefix.split(context_ids)
        past = prefix.expanded(1) if shared else None
        past_len = len(prefix.ids) if shared else 0
        scores: list[ContinuationScore] = []
        with prompt_boundary([len(context_ids)]):
            if rest:
                ones = torch.ones(1, len(rest), dtype=torch.long)
                hidden, past = run(torch.tensor([rest]), ones, past, past_len)
                last = hidden[:, -1]
                past_len += len(rest)
            else:
                last = prefix.last
            for start in range(0, len(targets), batch_size):
                chunk = targets[start : start + batch_size]
                scores.extend(_score_chunk(model, run, readout, chunk, last, past, past_len, pad))
        results[i] = scores
        bar.update(1)
    bar.close()
    return results


PACK_BELOW = 64
"""On a CPU, a request is packed (its context rerun with each continuation) when that
reruns at most this many context tokens in all, else its context runs once and is shared."""


def _cheap_to_pack(prefix: PrefixCache, context_ids: list[int], targets: list[list[int]]) -> bool:
    """Whether packing the request reruns at most :data:`PACK_BELOW` context tokens."""
    _, rest = prefix.split(context_ids)
    return (len(targets) - 1) * len(rest) <= PACK_BELOW


def _score_packed(
    model,
    run: _Runner,
    encoded: Sequence[tuple[list[int], list[list[int]]]],
    prefix: PrefixCache,
    pad: int,
    batch_size: int,
    readout: Readout,
    bar,
) -> list[list[ContinuationScore]]:
    """Pack ``context-after-prefix + continuation`` sequences of many requests (given as
    ``(context ids, continuation ids)``) per batch.

    Each sequence runs on a copy of the prefix cache (or from scratch when its context does
    not start with the prefix); the LM head sees only continuation-predicting positions.
    ``bar`` advances by one per request finished.
    """
    items = []  # (request, choice, shared, tokens, last context position, n target tokens)
    for r, (context_ids, continuation_ids) in enumerate(encoded):
        shared, rest = prefix.split(context_ids)
        for c, target in enumerate(continuation_ids):
            items.append((r, c, shared, rest + target, len(rest) - 1, len(target)))
    prompt_lengths = {  # (request, choice) → real tokens of its prompt (prefix included)
        (r, c): len(tokens) - n + (len(prefix.ids) if shared else 0)
        for r, c, shared, tokens, _, n in items
    }
    results: list[list[ContinuationScore | None]] = [[None] * len(t) for _, t in encoded]
    waiting = [len(t) for _, t in encoded]  # continuations still to score, per request
    # group by (shared, length) so batches are dense and share one kind of past
    order = sorted(range(len(items)), key=lambda i: (items[i][2], len(items[i][3])))
    start = 0
    while start < len(order):
        kind = items[order[start]][2]
        rows = [i for i in order[start : start + batch_size] if items[i][2] == kind]
        start += len(rows)
        width = max(len(items[i][3]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, i in enumerate(rows):
            tokens = items[i][3]
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        past, past_len = (prefix.expanded(len(rows)), len(prefix)) if kind else (None, 0)
        with prompt_boundary([prompt_lengths[items[i][0], items[i][1]] for i in rows]):
            hidden, _ = run(ids, mask, past, past_len)
        predictors: list[torch.Tensor] = []
        targets: list[int] = []
        for row, i in enumerate(rows):
            _, _, _, tokens, first, n = items[i]
            if first < 0:  # the context is exactly the prefix: its last state predicts
                assert prefix.last is not None  # a shared context means a built prefix
                predictors.append(torch.cat([prefix.last, hidden[row, : n - 1]]))
            else:
                predictors.append(hidden[row, first : first + n])
            targets.extend(tokens[first + 1 :])
        lengths = [items[i][5] for i in rows]
        scores = _score_rows(model, readout, torch.cat(predictors), targets, lengths)
        for i, score in zip(rows, scores, strict=True):
            results[items[i][0]][items[i][1]] = score
            waiting[items[i][0]] -= 1
            bar.update(int(waiting[items[i][0]] == 0))
    return results  # type: ignore[return-value]


def _score_rows(
    model, readout: Readout, predictors: torch.Tensor, targets: list[int], lengths: list[int]
) -> list[ContinuationScore]:
    """Sum the log-probabilities of ``targets`` predicted by the ``predictors`` features
    ``(sum(lengths), 1 + K, d)``, split into continuations of ``lengths`` tokens."""
    picked, greedy = readout.target_log_probs(model, predictors, torch.tensor(targets))
    out, offset = [], 0
    for n in lengths:
        out.append(
            ContinuationScore(
                logprob=float(picked[offset : offset + n].sum()),
                n_tokens=n,
                is_greedy=bool(greedy[offset : offset + n].all()),
            )
        )
        offset += n
    return out


def _score_chunk(
    model, run: _Runner, readout: Readout, chunk, last, past, past_len, pad
) -> list[ContinuationScore]:
    """Score continuations ``chunk`` (token lists) after a context whose last position's
    features are ``last`` ``(1, 1 + K, d)`` and whose cache is ``past`` (not modified)."""
    width = max(len(t) for t in chunk)
    ids = torch.full((len(chunk), width), pad, dtype=torch.long)
    mask = torch.zeros((len(chunk), width), dtype=torch.long)
    for row, tokens in enumerate(chunk):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    predictors = []
    if width > 1:
        hidden, _ = run(ids[:, :-1], mask[:, :-1], expand_cache(past, len(chunk)), past_len)
    for row, tokens in enumerate(chunk):
        rows = [last[0]]
        if len(tokens) > 1:
            rows.extend(hidden[row, : len(tokens) - 1])
        predictors.append(torch.stack(rows))
    targets = [t for tokens in chunk for t in tokens]
    return _score_rows(model, readout, torch.cat(predictors), targets, [len(t) for t in chunk])
