"""Neutral answers read while they are generated (:mod:`spectral_edit.hf.generated_capture`)
equal generation followed by full-sequence capture."""

import pytest
import torch

import spectral_edit.hf.generated_capture as generated_capture
from spectral_edit.hf.generated_capture import GENERATED, capture_generated
from spectral_edit.hf.generation import generate_greedy
from spectral_edit.hf.layers import find_decoder_layers
from spectral_edit.hf.prefix import window_allows
from spectral_edit.hf.tokens import encode

from .test_capture import PRIMER, _reference
from .tiny_models import TINY_ARCHS, make_tiny_model, make_tiny_tokenizer

PROMPTS = [
    PRIMER + "Q: where is the cat?\nA:",
    PRIMER + "Q: who?\nA:",
    PRIMER + "Q: a longer question than the others?\nA:",
    PRIMER + "Q: x\nA:",
]
GIVEN = {
    "positive": [" on the mat", " b c d e f g", " yes", " y"],
    "negative": [" no", "", " it is not so", " z z"],
}


def _same(text: str) -> str:
    return text


def _readable(model, tokenizer) -> None:
    """Make the random model generate printable ASCII (its head's other rows zeroed: their
    logits 0, below the largest of ~95 random ones), so that answers re-encode to the
    decoded ids, and give it an EOS that ends the first prompt's answer early and, where
    the model allows it, not another's: rows that end at EOS and rows that run to the
    token limit."""
    head = model.get_output_embeddings().weight
    with torch.no_grad():
        for token in range(head.shape[0]):
            text = tokenizer.decode([token], skip_special_tokens=True)
            if not (text and text.isascii() and text.isprintable()):
                head[token] = 0
    texts = generate_greedy(model, tokenizer, PROMPTS, max_new_tokens=6, stops=())
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    candidates = ids[0][1:5]
    model.generation_config.eos_token_id = next(
        (token for token in candidates if any(token not in other for other in ids[1:])),
        candidates[-1],
    )


def _captured(arch, monkeypatch, **options):
    """``capture_generated`` of the prompts on a readable tiny ``arch`` model (6 new
    tokens, no stops): the model, its tokenizer, the texts, the activations, and the
    contexts :func:`~spectral_edit.hf.capture.capture_kinds` captured again, per call."""
    model = make_tiny_model(arch)
    tokenizer = make_tiny_tokenizer()
    _readable(model, tokenizer)
    again: list[list[str]] = []
    real = generated_capture.capture_kinds
    monkeypatch.setattr(
        generated_capture,
        "capture_kinds",
        lambda *a, **k: (again.append(list(a[2])), real(*a, **k))[1],
    )
    texts, got = capture_generated(
        model,
        tokenizer,
        PROMPTS,
        GIVEN,
        layers=list(range(len(find_decoder_layers(model)))),
        max_new_tokens=6,
        stops=(),
        **options,
    )
    return model, tokenizer, texts, got, again


def _fused(model, tokenizer) -> bool:
    """Whether the prompts and their answers fit the model's window (read while decoding)."""
    return window_allows(model, max(len(encode(tokenizer, p)) for p in PROMPTS) + 6)


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize("token", ["last", "mean", "random"])
def test_generated_capture_equals_generation_then_capture(arch, token, monkeypatch):
    model, tokenizer, texts, got, again = _captured(
        arch, monkeypatch, answer=_same, token=token, batch_size=2, decode_batch_size=4
    )
    assert texts == generate_greedy(
        model, tokenizer, PROMPTS, max_new_tokens=6, stops=(), batch_size=2
    )
    answers = {GENERATED: texts, **GIVEN}
    for kind, continuations in answers.items():
        for i, (context, continuation) in enumerate(zip(PROMPTS, continuations, strict=True)):
            expected = _reference(model, tokenizer, context, continuation, token=token)
            torch.testing.assert_close(got[kind][i], expected, atol=1e-5, rtol=1e-4)
    if _fused(model, tokenizer):  # every row read while decoding, the last token too
        assert again == []
    else:  # padding would shift a sliding window: generated, then captured
        assert again == [PROMPTS]


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_answers_that_do_not_re_encode_to_the_decoded_ids_are_captured_again(arch, monkeypatch):
    """An answer without its leading space starts with other ids than the decoded ones:
    its row is captured again (the others are read while decoding), with equal results."""
    model, tokenizer, texts, got, again = _captured(
        arch, monkeypatch, answer=str.lstrip, batch_size=3, decode_batch_size=3
    )
    for i, (context, text) in enumerate(zip(PROMPTS, texts, strict=True)):
        expected = _reference(model, tokenizer, context, text.lstrip(), token="last")
        torch.testing.assert_close(got[GENERATED][i], expected, atol=1e-5, rtol=1e-4)
    if _fused(model, tokenizer):
        spaced = [p for p, text in zip(PROMPTS, texts, strict=True) if text.startswith(" ")]
        assert again == ([spaced] if spaced else [])
    else:
        assert again == [PROMPTS]
