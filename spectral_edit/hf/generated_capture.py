"""Capture of demonstrations whose neutral answer is the model's own greedy answer, read
while it is generated.

Capturing after generating runs every prompt three more times (once per kind of answer)
and every generated answer once more. Here each decoding group's prompts run once: their
prefill cache serves the given answers (positive, negative) before decoding starts, and
the generated answer's activations are the states the decoding itself computed, recorded
by hooks at each step. A generated answer is read from its decoding only where appending
it to the prompt re-encodes to the prompt's ids followed by the decoded ids (a stop cut
or a stripped space can change the tokens, and the token a stop string ended a row on was
never fed back; the last token of a row that ran to ``max_new_tokens`` is fed, with no LM
head); those demonstrations, and any whose prompt is not its context's encoding, are
captured afterwards by :func:`~.capture.capture_kinds`. Every activation equals the one
``capture_kinds`` gives for the same answers, up to float32 rounding.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..core.options import Site, Token
from ..util.progress import progress_bar
from .capture import LayerReader, answer_spans, capture_kinds
from .generation import ANSWER_STOPS, GreedyPlan, Prefilled, plan_greedy, truncate_at_stops
from .hooks import hooked
from .layers import site_modules
from .prefix import select_cache_rows, window_allows
from .tokens import check_length, context_length, encode_pair, input_device, pad_batch

GENERATED = "generated"
"""The kind under which :func:`capture_generated` returns the generated answers' activations."""

CONTINUATION_WIDTH = 4
"""Given answers run ``CONTINUATION_WIDTH × batch_size`` per pass on copies of their
prompts' cache rows (short answers: wide passes use the matrix units better)."""


class _StepStates:
    """The states of ``modules`` (keyed by layer, stacked in the order of ``keys``) at the
    last position of every forward pass, kept per row: ``states[row]`` is the list of
    ``(len(keys), d)`` tensors, one per pass that computed the row's last position."""

    def __init__(self, modules: Mapping[int, nn.Module], keys: Sequence[int]) -> None:
        self.modules, self.keys = modules, list(keys)
        self.latest: dict[int, torch.Tensor] = {}
        self.states: defaultdict[int, list[torch.Tensor]] = defaultdict(list)

    def record(self, key: int, hidden: torch.Tensor) -> None:
        self.latest[key] = hidden[:, -1]

    def observe(self, rows: list[int]) -> None:
        stacked = torch.stack([self.latest[key] for key in self.keys], dim=1).cpu()
        for batch_row, row in enumerate(rows):
            self.states[row].append(stacked[batch_row])


@torch.no_grad()
def capture_generated(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    contexts: Sequence[str],
    continuations: Mapping[str, Sequence[str]],
    *,
    answer: Callable[[str], str],
    layers: Sequence[int],
    site: Site | str = Site.RESIDUAL,
    token: Token | str = Token.LAST,
    token_seed: int = 0,
    batch_size: int = 8,
    decode_batch_size: int | None = None,
    max_new_tokens: int = 64,
    stops: Sequence[str] = ANSWER_STOPS,
    layer_path: str | None = None,
    progress: bool | str = False,
) -> tuple[list[str], dict[str, torch.Tensor]]:
    """Greedy answers to ``contexts`` and the activations of them and of the given
    ``continuations`` (kind → N answers), as :func:`~.generation.generate_greedy` then
    :func:`~.capture.capture_kinds` of ``{"generated": [answer(text) ...], **continuations}``
    give them (module docstring).

    ``answer`` maps a generated text (cut at ``stops``) to the continuation read (e.g.
    one space and the stripped text; ``""`` reads the prompt's last token). The other
    arguments are those two functions'.

    Returns:
        The generated texts (cut at the stops, in the order of ``contexts``), and
        kind → float32 ``(N, L, d)`` on the CPU for :data:`GENERATED` and every kind of
        ``continuations``.
    """
    token = Token.parse(token, "token")
    layers = list(layers)
    if not layers:
        raise ValueError("capture needs at least one layer")
    if GENERATED in continuations:
        raise ValueError(f"the kind {GENERATED!r} is the generated answers'")
    for kind, answers in continuations.items():
        if len(answers) != len(contexts):
            raise ValueError(f"{len(contexts)} contexts but {len(answers)} {kind} continuations")
    modules = site_modules(model, layers, site, layer_path)
    kinds = list(continuations)
    given = {
        kind: [encode_pair(tokenizer, c, a) for c, a in zip(contexts, answers, strict=True)]
        for kind, answers in continuations.items()
    }
    spans = {kind: answer_spans(given[kind], token, token_seed) for kind in kinds}
    longest_given = max((len(c) + len(a) for k in kinds for c, a in given[k]), default=0)
    check_length(model, longest_given)  # before any forward pass
    plan = plan_greedy(
        model,
        tokenizer,
        contexts,
        max_new_tokens=max_new_tokens,
        stops=stops,
        batch_size=batch_size,
        decode_batch_size=decode_batch_size,
    )
    longest = max(map(len, plan.encoded), default=0) + max(
        [max_new_tokens, *(len(a) for k in kinds for _, a in given[k])]
    )
    limit = context_length(model)
    # padded slots must neither shift a sliding window nor pass the context length
    fused = window_allows(model, longest) and (limit is None or longest <= limit)
    width = len(layers)
    result: dict[str, torch.Tensor] = {}
    texts: list[str] = [""] * len(contexts)
    redo: set[int] = set()
    reader = LayerReader(model, modules, layers, "output", layer_path)
    bar = progress_bar(len(contexts), progress, "answer + capture", "seq")

    def store(kind: str, row: int, activation: torch.Tensor) -> None:
        if kind not in result:
            result[kind] = torch.empty((len(contexts), width, activation.shape[-1]))
        result[kind][row] = activation

    for group in plan.groups if fused else []:
        steps = _StepStates(modules, layers)
        with hooked(modules, steps.record):
            parts = plan.decoding.prefill(
                [plan.encoded[i] for i in group], plan.pad, plan.chunk, steps.observe
            )
        for part in parts:
            rows = [group[r] for r in part.rows]
            _read_given(reader, part, rows, plan, given, spans, batch_size, store, redo)
            with hooked(modules, steps.record):
                new = plan.decoding.decode(part, steps.observe, feed_last=True)
            for local, row, tokens in zip(part.rows, rows, new, strict=True):
                texts[row] = truncate_at_stops(plan.decoding.text(tokens), stops)
                states = steps.states.pop(local)
                for kind in kinds:  # a given empty answer reads the prompt's last token
                    if row not in redo and not given[kind][row][1]:
                        store(kind, row, states[0].float())
                ctx, cont = encode_pair(tokenizer, contexts[row], answer(texts[row]))
                # read it here if its ids are the decoded ones, all fed back (states[0]
                # is the prompt's last position)
                if ctx != plan.encoded[row] or cont != tokens[: len(cont)]:
                    redo.add(row)
                elif len(cont) >= len(states):
                    redo.add(row)  # noqa: SIM114 - two reasons, one remedy
                else:
                    start, end = answer_spans([(ctx, cont)], token, token_seed)[0]
                    first = len(ctx) - 1  # states[0]: the prompt's last position
                    if start == end:
                        store(GENERATED, row, states[start - first].float())
                    else:
                        picked = torch.stack(states[start - first : end - first])
                        store(GENERATED, row, picked.mean(0).float())
        bar.update(len(group))
    if not fused:
        texts = plan.generate()
        redo = set(range(len(contexts)))
    bar.close()
    if redo:
        again = sorted(redo)
        captured = capture_kinds(
            model,
            tokenizer,
            [contexts[i] for i in again],
            {
                GENERATED: [answer(texts[i]) for i in again],
                **{kind: [continuations[kind][i] for i in again] for kind in kinds},
            },
            layers=layers,
            site=site,
            token=token,
            token_seed=token_seed,
            batch_size=batch_size,
            layer_path=layer_path,
            progress=progress,
        )
        for kind, activations in captured.items():
            for at, row in enumerate(again):
                store(kind, row, activations[at])
    return texts, {kind: result[kind] for kind in [GENERATED, *kinds]}


def _read_given(
    reader: LayerReader,
    part: Prefilled,
    rows: list[int],
    plan: GreedyPlan,
    given: Mapping[str, Sequence[tuple[list[int], list[int]]]],
    spans: Mapping[str, Sequence[tuple[int, int]]],
    batch_size: int,
    store: Callable[[str, int, torch.Tensor], None],
    redo: set[int],
) -> None:
    """The given answers of ``part``'s prompts (``rows``: their indices in ``prompts``),
    read on copies of their cache rows, shortest first, ``CONTINUATION_WIDTH ×
    batch_size`` per pass; a row whose context is not its prompt's ids joins ``redo``."""
    prompts = plan.encoded
    pairs: list[tuple[str, int, int]] = []  # (kind, row in part, demonstration)
    for j, row in enumerate(rows):
        if any(given[kind][row][0] != prompts[row] for kind in given):
            redo.add(row)
            continue
        pairs.extend((kind, j, row) for kind in given if given[kind][row][1])
    pairs.sort(key=lambda pair: len(given[pair[0]][pair[2]][1]))
    width = CONTINUATION_WIDTH * batch_size
    for at in range(0, len(pairs), width):
        chunk = pairs[at : at + width]
        index = torch.tensor([j for _, j, _ in chunk])
        ids, mask, _ = pad_batch([given[kind][row][1] for kind, _, row in chunk], plan.pad, "right")
        read = [
            (spans[kind][row][0] - len(prompts[row]), spans[kind][row][1] - len(prompts[row]))
            for kind, _, row in chunk
        ]
        batch = reader.read(
            ids,
            mask,
            select_cache_rows(part.past, index.to(input_device(reader.base))),
            part.seen.shape[1],
            read,
            [0] * len(chunk),
            past_mask=part.seen[index],
        )
        for (kind, _, row), activation in zip(chunk, batch, strict=True):
            store(kind, row, activation)
