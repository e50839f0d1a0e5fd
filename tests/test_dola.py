"""DoLa scoring: the final norm is found generically, the JS divergence is right, and
the shared-prefix scorer with the DoLa readout equals a direct full-sequence DoLa."""

import math

import pytest
import torch
import torch.nn.functional as F

from spectral_edit.evaluate.readout import (
    DoLaReadout,
    dola_buckets,
    jensen_shannon,
    parse_premature_layers,
)
from spectral_edit.evaluate.scorer import ChoiceRequest, score_requests
from spectral_edit.evaluate.truthfulqa import evaluate_truthfulqa
from spectral_edit.hf.heads import final_norm
from spectral_edit.hf.hooks import hooked
from spectral_edit.hf.layers import find_decoder_layers
from spectral_edit.hf.tokens import encode_pair

from .tiny_models import TINY_ARCHS, make_tiny_model, make_tiny_tokenizer

PREFIX = "q: what is it\na: it is a cat\n\n"
REQUESTS = [
    ChoiceRequest(PREFIX + "q: where is the dog\na:", (" in the house", " no", " on the mat")),
    ChoiceRequest("unrelated context", (" one", " two three")),
    ChoiceRequest(PREFIX.rstrip(), (" q: next",)),
]


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_final_norm_maps_last_layer_output_to_last_hidden_state(arch):
    model = make_tiny_model(arch)
    ids = torch.tensor([[5, 9, 17, 33, 2]])
    last_block = find_decoder_layers(model)[-1]
    seen = {}
    with hooked({0: last_block}, lambda key, hidden: seen.update(raw=hidden)):
        final = model.base_model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(final_norm(model)(seen["raw"]), final, atol=1e-5, rtol=1e-5)


def test_jensen_shannon_properties():
    gen = torch.Generator().manual_seed(0)
    p = torch.log_softmax(torch.randn(4, 7, generator=gen), -1)
    q = torch.log_softmax(torch.randn(4, 7, generator=gen), -1)
    torch.testing.assert_close(jensen_shannon(p, q), jensen_shannon(q, p))
    torch.testing.assert_close(jensen_shannon(p, p), torch.zeros(4), atol=1e-6, rtol=0)
    disjoint_p = torch.log(torch.tensor([[1.0, 0.0]]).clamp_min(1e-30))
    disjoint_q = torch.log(torch.tensor([[0.0, 1.0]]).clamp_min(1e-30))
    assert jensen_shannon(disjoint_p, disjoint_q).item() == pytest.approx(math.log(2), abs=1e-6)


def _direct_dola(model, tokenizer, context, continuation, readout):
    """DoLa on one full sequence, token by token, written independently of the readout."""
    ctx, cont = encode_pair(tokenizer, context, continuation)
    out = model(torch.tensor([ctx + cont]), output_hidden_states=True)
    head, norm = model.get_output_embeddings(), final_norm(model)
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)

    def logp(hidden):
        logits = head(hidden).float()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return torch.log_softmax(logits, -1)

    total = 0.0
    for i, token in enumerate(cont):
        pos = len(ctx) - 1 + i
        mature = torch.log_softmax(out.logits[0, pos].float(), -1)
        best, best_div = None, -1.0
        for j in readout.hidden_states:
            early = logp(norm(out.hidden_states[j][0, pos]))
            mix = 0.5 * (mature.exp() + early.exp())
            div = (
                0.5
                * (
                    F.kl_div(mix.log(), mature, log_target=True, reduction="sum")
                    + F.kl_div(mix.log(), early, log_target=True, reduction="sum")
                ).item()
            )
            if div > best_div:
                best, best_div = early, div
        contrast = torch.log_softmax(mature - best, -1)
        plausible = mature.exp() >= readout.relative_top * mature.exp().max()
        total += contrast[token].item() if plausible[token] else -1000.0
    return total


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
@pytest.mark.parametrize("share", [True, False])
def test_dola_scorer_matches_direct_dola(arch, share):
    model = make_tiny_model(arch)
    tokenizer = make_tiny_tokenizer()
    readout = DoLaReadout(hidden_states=(0, 1), relative_top=0.1)
    scored = score_requests(
        model,
        tokenizer,
        REQUESTS,
        shared_prefix=PREFIX,
        batch_size=2,
        share_contexts=share,
        readout=readout,
    )
    for request, scores in zip(REQUESTS, scored, strict=True):
        for continuation, score in zip(request.continuations, scores, strict=True):
            expected = _direct_dola(model, tokenizer, request.context, continuation, readout)
            assert score.logprob == pytest.approx(expected, abs=1e-3)
    plain = score_requests(model, tokenizer, REQUESTS, shared_prefix=PREFIX)
    assert [s.logprob for r in plain for s in r] != [s.logprob for r in scored for s in r]


def test_dola_options_are_validated():
    with pytest.raises(ValueError, match="at least one"):
        DoLaReadout(hidden_states=())
    with pytest.raises(ValueError, match="relative_top"):
        DoLaReadout(hidden_states=(0,), relative_top=1.5)
    with pytest.raises(ValueError, match="not below the final layer"):
        DoLaReadout(hidden_states=(0, 4)).check_model(4)
    assert dola_buckets(18) == {"early": (0, 3, 6), "late": (9, 12, 15)}
    assert dola_buckets(32, size=8) == {
        "early": (0, 2, 4, 6, 8, 10, 12, 14),  # the paper's buckets for 32 layers
        "late": (16, 18, 20, 22, 24, 26, 28, 30),
    }
    assert dola_buckets(2) == {"early": (0,), "late": (1,)}
    assert parse_premature_layers("late", 18) == (9, 12, 15)
    assert parse_premature_layers("0,3", 18) == (0, 3)
    with pytest.raises(ValueError, match="bad DoLa layers"):
        parse_premature_layers("middle", 18)


def test_truthfulqa_accepts_the_dola_readout():
    from spectral_edit.data.truthfulqa import MCQuestion

    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    question = MCQuestion(
        question="what is it",
        mc1_answers=("a cat", "a dog"),
        mc1_labels=(1, 0),
        mc2_answers=("a cat", "a pet", "a dog"),
        mc2_labels=(1, 1, 0),
    )
    plain = evaluate_truthfulqa(model, tokenizer, [question])
    dola = evaluate_truthfulqa(model, tokenizer, [question], readout=DoLaReadout((0,)))
    assert plain.per_question[0]["mc1_logprobs"] != dola.per_question[0]["mc1_logprobs"]
