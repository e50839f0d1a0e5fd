"""Captured activations equal a plain forward pass, whatever the padding and batch."""

import pytest
import torch

from spectral_edit.core.options import Site, Token
from spectral_edit.hf.capture import (
    capture,
    capture_kinds,
    capture_modules,
    random_answer_position,
)
from spectral_edit.hf.layers import (
    LayerNotFoundError,
    find_decoder_layers,
    parse_layers,
    site_module,
    site_modules,
)
from spectral_edit.hf.prefix import sliding_window
from spectral_edit.hf.tokens import encode_pair

from .tiny_models import TINY_ARCHS, make_tiny_model, make_tiny_tokenizer

TEXTS = [("the cat sat", " on the mat"), ("a", " b c d e f g"), ("hello world and more", "")]


def _reference(model, tokenizer, context, continuation, token="last"):
    """Per-layer decoder outputs of one unpadded sequence, from ``output_hidden_states``.

    transformers 5 returns the *final-normed* state as the last entry of
    ``hidden_states``, so the last layer's raw output is read with a plain hook instead
    (and the test checks that entry is indeed the normed one).
    """
    ctx, cont = encode_pair(tokenizer, context, continuation)
    ids = torch.tensor([ctx + cont])
    raw = {}
    last_layer = find_decoder_layers(model)[-1]
    handle = last_layer.register_forward_hook(
        lambda m, a, out: raw.update(last=out if torch.is_tensor(out) else out[0])
    )
    try:
        out = model(input_ids=ids, output_hidden_states=True)
    finally:
        handle.remove()
    hidden = list(out.hidden_states)
    base = model.base_model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(hidden[-1], base)
    hidden[-1] = raw["last"]
    if token == "mean" and cont:
        return torch.stack([h[0, len(ctx) :].mean(0) for h in hidden[1:]])
    if token == "random" and cont:
        at = len(ctx) + random_answer_position(ctx, cont, seed=0)
        return torch.stack([h[0, at] for h in hidden[1:]])
    return torch.stack([h[0, -1] for h in hidden[1:]])


def _capture_equals_reference(model, tokenizer, pairs, layers, token, side) -> list[int]:
    """Capture ``pairs`` (context, continuation) in batches of 3; each row equals the
    unpadded reference (1e-5). Returns the widths of the capture's forward passes."""
    widths: list[int] = []
    handle = model.get_input_embeddings().register_forward_hook(
        lambda m, args, out: widths.append(args[0].shape[1])
    )
    try:
        got = capture(
            model,
            tokenizer,
            [c for c, _ in pairs],
            [a for _, a in pairs],
            layers=layers,
            token=token,
            padding_side=side,
            batch_size=3,
        )
    finally:
        handle.remove()
    for i, (context, continuation) in enumerate(pairs):
        expected = _reference(model, tokenizer, context, continuation, token=token)
        torch.testing.assert_close(got[i], expected, atol=1e-5, rtol=1e-4)
    return widths


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_capture_matches_hidden_states(arch, side):
    model = make_tiny_model(arch)
    tokenizer = make_tiny_tokenizer()
    n_layers = len(find_decoder_layers(model))
    layers = list(range(n_layers))
    _capture_equals_reference(model, tokenizer, TEXTS, layers, "last", side)


PRIMER = (
    "Q: what is the first thing here?\nA: the first thing.\n\n"
    "Q: and the second one?\nA: it is two.\n\n"
)
"""A few-shot primer longer than the tiny Gemma 3's sliding window (8 tokens)."""

SHARED = [
    (PRIMER + "Q: where is the cat?\nA:", " on the mat"),
    (PRIMER + "Q: who?\nA:", " b c d e f g"),
    (PRIMER + "Q: a question much longer than the others, with more words in it?\nA:", ""),
    (PRIMER + "Q: x", " y"),
]


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("token", ["last", "mean", "random"])
def test_a_shared_prefix_runs_once_and_changes_no_activation(arch, side, token):
    model = make_tiny_model(arch)
    tokenizer = make_tiny_tokenizer()
    layers = list(range(len(find_decoder_layers(model))))
    widths = _capture_equals_reference(model, tokenizer, SHARED, layers, token, side)
    primer = len(encode_pair(tokenizer, PRIMER.rstrip(), "")[0])
    longest = max(sum(map(len, encode_pair(tokenizer, c, a))) for c, a in SHARED)
    assert widths[0] >= primer  # the prefix pass, once
    assert len(widths) == 3 and max(widths[1:]) <= longest - primer  # then two short batches


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_capture_mean_and_subset_of_layers(arch):
    model = make_tiny_model(arch)
    tokenizer = make_tiny_tokenizer()
    got = capture(
        model,
        tokenizer,
        [c for c, _ in TEXTS],
        [a for _, a in TEXTS],
        layers=[0],
        token="mean",
        padding_side="left",
    )
    for i, (context, continuation) in enumerate(TEXTS):
        expected = _reference(model, tokenizer, context, continuation, token="mean")[0]
        torch.testing.assert_close(got[i, 0], expected, atol=1e-5, rtol=1e-4)


def test_capture_stops_after_deepest_layer():
    model = make_tiny_model("llama")
    tokenizer = make_tiny_tokenizer()
    calls = []
    head = model.get_output_embeddings().register_forward_hook(lambda *a: calls.append("head"))
    last = find_decoder_layers(model)[-1].register_forward_hook(lambda *a: calls.append("last"))
    try:
        capture(model, tokenizer, ["some text"], layers=[0])
    finally:
        head.remove()
        last.remove()
    assert calls == []


def test_mlp_site_is_mlp_output():
    model = make_tiny_model("qwen2")
    tokenizer = make_tiny_tokenizer()
    seen = {}
    mlp = find_decoder_layers(model)[1].mlp
    handle = mlp.register_forward_hook(lambda m, a, out: seen.update(out=out[0, -1].clone()))
    try:
        got = capture(model, tokenizer, ["the cat sat"], layers=[1], site="mlp")
    finally:
        handle.remove()
    torch.testing.assert_close(got[0, 0], seen["out"])


def test_find_layers_override_and_errors():
    model = make_tiny_model("gpt2")
    assert find_decoder_layers(model, "transformer.h") is model.transformer.h
    with pytest.raises(LayerNotFoundError, match="does not exist"):
        find_decoder_layers(model, "transformer.nope")
    with pytest.raises(LayerNotFoundError, match="not a non-empty ModuleList"):
        find_decoder_layers(model, "transformer.wte")
    with pytest.raises(LayerNotFoundError, match="no decoder-layer"):
        find_decoder_layers(torch.nn.Linear(2, 2))


def test_parse_layers():
    assert parse_layers("last-2", 5) == [3, 4]
    assert parse_layers("all", 3) == [0, 1, 2]
    assert parse_layers("0,-1", 4) == [0, 3]
    assert parse_layers([2, 2, 1], 4) == [1, 2]
    for bad in ("last-0", "last-9", "x", "7"):
        with pytest.raises(ValueError):
            parse_layers(bad, 4)


def test_parse_layers_int_is_one_index_not_a_count():
    assert parse_layers(2, 4) == [2]
    assert parse_layers(-1, 4) == [3]
    assert parse_layers(-2, 4) == [2]
    with pytest.raises(ValueError, match="out of range"):
        parse_layers(4, 4)


def test_sites_and_tokens_accept_the_enums_or_their_strings():
    model = make_tiny_model("llama")
    tokenizer = make_tiny_tokenizer()
    assert site_modules(model, [1], Site.MLP) == site_modules(model, [1], "mlp")
    first = find_decoder_layers(model)[0]
    assert site_module(first, Site.RESIDUAL) is site_module(first, "residual") is first
    with pytest.raises(
        ValueError, match=r"unknown site 'attn'; expected one of \('residual', 'mlp'\)"
    ):
        site_modules(model, [0], "attn")
    texts = ["the cat sat"], [" on the mat"]
    by_enum = capture(model, tokenizer, *texts, layers=[0], site=Site.MLP, token=Token.MEAN)
    by_str = capture(model, tokenizer, *texts, layers=[0], site="mlp", token="mean")
    assert torch.equal(by_enum, by_str)
    with pytest.raises(
        ValueError, match=r"token must be one of \('last', 'mean', 'random'\), not 'first'"
    ):
        capture(model, tokenizer, *texts, layers=[0], token="first")


def test_capture_modules_refuses_an_unknown_reading_point():
    model = make_tiny_model("llama")
    modules = site_modules(model, [0])
    with pytest.raises(ValueError, match=r"on must be one of \('input', 'output'\)"):
        capture_modules(model, make_tiny_tokenizer(), ["x"], modules=modules, on="middle")  # type: ignore[arg-type]


KINDS = {
    "neutral": ["", " b", " two words", ""],
    "positive": [" on the mat", " b c d e f g", " yes", " y z"],
    "negative": [" under the mat", " c", " no it is not", " w"],
}
"""Three kinds of answer to the contexts of ``SHARED``: empty ones (read at the context's
last token), answers of different lengths, one that begins like another."""


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize("token", ["last", "mean", "random"])
@pytest.mark.parametrize("primer", [True, False])
def test_kinds_of_answer_share_each_context_and_equal_one_capture_per_kind(arch, token, primer):
    model = make_tiny_model(arch)
    tokenizer = make_tiny_tokenizer()
    layers = list(range(len(find_decoder_layers(model))))
    contexts = [c if primer else c[len(PRIMER) :] for c, _ in SHARED]
    shapes: list[tuple[int, int]] = []  # (rows, tokens) of each forward pass
    handle = model.get_input_embeddings().register_forward_hook(
        lambda m, args, out: shapes.append(tuple(args[0].shape))
    )
    try:
        got = capture_kinds(
            model, tokenizer, contexts, KINDS, layers=layers, token=token, batch_size=3
        )
    finally:
        handle.remove()
    assert list(got) == list(KINDS)
    for kind, answers in KINDS.items():
        for i, (context, answer) in enumerate(zip(contexts, answers, strict=True)):
            expected = _reference(model, tokenizer, context, answer, token=token)
            torch.testing.assert_close(got[kind][i], expected, atol=1e-5, rtol=1e-4)
    lengths = [
        len(ctx + cont)
        for answers in KINDS.values()
        for ctx, cont in (
            encode_pair(tokenizer, c, a) for c, a in zip(contexts, answers, strict=True)
        )
    ]
    alone = 3 * ((1 if primer else 0) + 2)  # each kind on its own: prefix, 2 batches
    # prefix; per batch of contexts, their pass, then their 3x as many continuations in
    # chunks of batch_size rows
    rows = ([1] if primer else []) + [3, 3, 3, 3, 1, 3]
    if sliding_window(model) is None:
        assert [n for n, _ in shapes] == rows
    if [n for n, _ in shapes] == rows:  # each context's tokens before its first read ran once
        assert sum(w * n for n, w in shapes) < sum(lengths)
    else:  # only where inner padding could move a sliding window
        assert sliding_window(model) is not None and len(shapes) == alone


def test_capture_kinds_checks_every_kind():
    model = make_tiny_model("llama")
    tokenizer = make_tiny_tokenizer()
    with pytest.raises(ValueError, match="2 contexts but 1 continuations"):
        capture_kinds(model, tokenizer, ["a", "b"], {"x": ["c", "d"], "y": ["e"]}, layers=[0])
    with pytest.raises(ValueError, match="at least one layer"):
        capture_kinds(model, tokenizer, ["a"], {"x": ["c"]}, layers=[])


def test_random_answer_token_is_seeded_uniform_and_independent_of_batching():
    context, answer = [5, 6, 7], [11, 12, 13, 14, 15]
    draws = [random_answer_position(context, answer, seed) for seed in range(2000)]
    assert draws == [random_answer_position(context, answer, seed) for seed in range(2000)]
    counts = torch.bincount(torch.tensor(draws), minlength=len(answer))
    assert len(counts) == len(answer)  # always inside the answer
    assert counts.min() > 0.15 * len(draws) and counts.max() < 0.25 * len(draws)
    # the draw depends on the text, not only on the answer's length
    others = [random_answer_position([5, 6, 8], answer, seed) for seed in range(2000)]
    assert others != draws
    with pytest.raises(ValueError, match="non-empty"):
        random_answer_position(context, [], 0)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_random_token_reads_its_drawn_answer_token_whatever_the_batch(arch):
    model = make_tiny_model(arch)
    tokenizer = make_tiny_tokenizer()
    contexts, answers = [c for c, _ in SHARED], [a for _, a in SHARED]
    encoded = [encode_pair(tokenizer, c, a) for c, a in SHARED]
    # some drawn token is not the last one (else this test could not tell them apart)
    assert any(random_answer_position(c, a, 0) < len(a) - 1 for c, a in encoded if a)
    layers = [0, 1]
    one = capture(model, tokenizer, contexts, answers, layers=layers, token="random", batch_size=1)
    many = capture(model, tokenizer, contexts[::-1], answers[::-1], layers=layers, token="random")
    torch.testing.assert_close(one, many.flip(0), atol=1e-5, rtol=1e-4)
    last = capture(model, tokenizer, contexts, answers, layers=layers, token="last")
    reseeded = capture(
        model, tokenizer, contexts, answers, layers=layers, token="random", token_seed=7
    )
    assert not torch.allclose(one, last) and not torch.allclose(one, reseeded)
