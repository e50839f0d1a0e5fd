"""The shared-prefix scorer equals plain full-sequence log-probabilities."""

import pytest
import torch

from spectral_edit import fit_from_arrays
from spectral_edit.evaluate.scorer import ChoiceRequest, lm_head_logits, score_requests
from spectral_edit.hf.layers import find_decoder_layers
from spectral_edit.hf.tokens import encode_pair

from .tiny_models import TINY_ARCHS, make_tiny_model, make_tiny_tokenizer

PREFIX = "q: what is it\na: it is a cat\n\n"
REQUESTS = [
    ChoiceRequest(
        PREFIX + "q: where is the dog\na:", (" in the house", " no", " on the big red mat")
    ),
    ChoiceRequest(PREFIX + "q: why\na:", (" because", " it is so and so and so")),
    ChoiceRequest("unrelated context", (" one", " two three")),
    ChoiceRequest("", (" a whole sentence scored alone",)),
    ChoiceRequest(PREFIX.rstrip(), (" q: next", " x")),  # the context is the prefix itself
]


def _plain_logprob(model, tokenizer, context, continuation):
    ctx, cont = encode_pair(tokenizer, context, continuation)
    ids = torch.tensor([ctx + cont])
    logprobs = torch.log_softmax(model(ids).logits[0].double(), -1)
    return sum(logprobs[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont)), len(cont)


def _editor(model):
    blocks = len(find_decoder_layers(model))
    d = model.config.get_text_config().hidden_size
    gen = torch.Generator().manual_seed(0)
    h, hp, hn = (torch.randn(30, blocks, d, generator=gen) for _ in range(3))
    return fit_from_arrays(h, hp, hn, pos_rank=2, neg_rank=3, num_layers=blocks)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_lm_head_logits_match_model(arch):
    model = make_tiny_model(arch)
    ids = torch.tensor([[5, 9, 17, 33]])
    hidden = model.base_model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(
        lm_head_logits(model, hidden), model(ids).logits, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize("edited", [False, True])
def test_scorer_matches_full_forward(arch, edited):
    model = make_tiny_model(arch)
    tokenizer = make_tiny_tokenizer()
    editor = _editor(model)
    with editor.with_options(alpha=1.0 if edited else 0.0).apply(model):
        runs = [
            score_requests(
                model, tokenizer, REQUESTS, shared_prefix=PREFIX, batch_size=2, share_contexts=True
            ),
            score_requests(model, tokenizer, REQUESTS, batch_size=8, share_contexts=True),
            score_requests(
                model, tokenizer, REQUESTS, shared_prefix=PREFIX, batch_size=3, share_contexts=False
            ),
            score_requests(model, tokenizer, REQUESTS, batch_size=16, share_contexts=False),
        ]
        for r, request in enumerate(REQUESTS):
            for c, continuation in enumerate(request.continuations):
                expected, n = _plain_logprob(model, tokenizer, request.context, continuation)
                for run in runs:
                    assert run[r][c].n_tokens == n
                    assert abs(run[r][c].logprob - expected) < 1e-4


def test_edit_changes_scores_and_greedy_flag():
    model = make_tiny_model("llama")
    tokenizer = make_tiny_tokenizer()
    plain = score_requests(model, tokenizer, REQUESTS)
    with _editor(model).apply(model):
        edited = score_requests(model, tokenizer, REQUESTS)
    assert any(
        abs(a.logprob - b.logprob) > 1e-3
        for ra, rb in zip(plain, edited, strict=True)
        for a, b in zip(ra, rb, strict=True)
    )
    # a continuation made of the greedy next token is greedy
    ctx = "q: why\na:"
    ids = torch.tensor([encode_pair(tokenizer, ctx, " x")[0]])
    token = int(model(ids).logits[0, -1].argmax())
    text = tokenizer.decode([token])
    pair_ids = encode_pair(tokenizer, ctx, text)[1]
    if pair_ids == [token]:
        (score,) = score_requests(model, tokenizer, [ChoiceRequest(ctx, (text,))])[0]
        assert score.is_greedy


@pytest.mark.parametrize("share_contexts", [True, False])
def test_context_equal_to_prefix(share_contexts):
    model = make_tiny_model("qwen3")
    tokenizer = make_tiny_tokenizer()
    prefix = "q: what is it\na: it is a cat"
    requests = [ChoiceRequest(prefix, (" and a dog", ".")), ChoiceRequest(prefix + " x", (" y",))]
    got = score_requests(
        model, tokenizer, requests, shared_prefix=prefix, share_contexts=share_contexts
    )
    for request, scores in zip(requests, got, strict=True):
        for continuation, score in zip(request.continuations, scores, strict=True):
            expected, _ = _plain_logprob(model, tokenizer, request.context, continuation)
            assert abs(score.logprob - expected) < 1e-4


def test_scorer_finds_the_decoder_when_base_model_prefix_is_wrong():
    """transformers 4.57's Gemma 3 names a ``language_model`` prefix it does not have, so
    ``model.base_model`` is the model itself; the decoder is then found by its layers."""
    from spectral_edit.hf.heads import decoder_and_head

    model, tokenizer = make_tiny_model("gemma3"), make_tiny_tokenizer()
    expected = score_requests(model, tokenizer, REQUESTS, shared_prefix=PREFIX)
    model.base_model_prefix = "language_model"  # instance attribute: the class is untouched
    assert model.base_model is model
    base, head = decoder_and_head(model)
    assert base is model.model and head is model.lm_head
    assert score_requests(model, tokenizer, REQUESTS, shared_prefix=PREFIX) == expected


def test_cpu_default_packs_short_requests_and_shares_long_contexts():
    model = make_tiny_model("llama")
    tokenizer = make_tiny_tokenizer()
    long_context = "a long context with many words that is costly to run again " * 3
    requests = [ChoiceRequest("", (f"the cat {w} sat", f"a dog {w} ran")) for w in "abcdef"]
    requests.insert(3, ChoiceRequest(long_context, (" yes", " no", " maybe")))
    passes = {}
    for mode in (None, True, False):
        calls: list[int] = []
        hook = model.get_input_embeddings().register_forward_hook(
            lambda *a, calls=calls: calls.append(1)
        )
        try:
            passes[mode] = (
                score_requests(model, tokenizer, requests, share_contexts=mode),
                len(calls),
            )
        finally:
            hook.remove()
    auto, shared, packed = (passes[m][0] for m in (None, True, False))
    for a, s, p in zip(auto, shared, packed, strict=True):
        for x, y, z in zip(a, s, p, strict=True):
            assert (
                x.logprob
                == pytest.approx(y.logprob, abs=1e-5)
                == pytest.approx(z.logprob, abs=1e-5)
            )
    # six empty-context pairs in one packed pass; the long context run once, then its answers
    assert passes[None][1] == 1 + 2 < passes[True][1] == 6 * 2 + 2
    # the plain forward pass agrees
    assert auto[0][0].logprob == pytest.approx(
        _plain_logprob(model, tokenizer, "", "the cat a sat")[0], abs=1e-4
    )
