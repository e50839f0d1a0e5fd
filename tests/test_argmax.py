"""The bfloat16-screened greedy head gives the float32 arg-max, also where bfloat16
cannot tell the best tokens apart."""

import pytest
import torch
from torch import nn

import spectral_edit.hf.argmax as argmax
from spectral_edit.hf.argmax import GreedyHead, bfloat16_is_fast
from spectral_edit.hf.heads import lm_head_logits

from .tiny_models import TINY_ARCHS, make_tiny_model


def _hidden(rows: int, width: int, seed: int, scale: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, width, generator=generator) * scale


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_screened_arg_max_equals_the_float32_one(arch):
    model = make_tiny_model(arch)
    greedy = GreedyHead(model, screen=True)
    assert greedy.screening
    width = model.get_output_embeddings().weight.shape[1]
    for seed, scale in enumerate((0.01, 1.0, 30.0, 1e4)):
        hidden = _hidden(70, width, seed, scale)  # more rows than one screen
        expected = lm_head_logits(model, hidden).argmax(-1)
        assert torch.equal(greedy(hidden), expected)


def test_gemma2_soft_capping_is_finished_on_the_candidates():
    model = make_tiny_model("gemma2")
    assert model.config.final_logit_softcapping  # the tiny config caps its logits
    hidden = _hidden(16, model.config.hidden_size, 0, 1e3)  # capped logits nearly tie
    assert torch.equal(
        GreedyHead(model, screen=True)(hidden), lm_head_logits(model, hidden).argmax(-1)
    )


def _near_tie_model(bias: bool) -> tuple[nn.Module, torch.Tensor]:
    """A tiny Llama whose LM head has 12 rows that agree to within 1e-4 of each other
    (bfloat16 rounds them alike), and a hidden state that scores them highest."""
    model = make_tiny_model("llama")
    head = model.get_output_embeddings()
    vocab, width = head.weight.shape
    new = nn.Linear(width, vocab, bias=bias)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        weight = torch.randn(vocab, width, generator=generator) * 0.1
        direction = torch.randn(width, generator=generator)
        direction /= direction.norm()
        weight[100:112] = direction + 1e-4 * torch.randn(12, width, generator=generator)
        new.weight.copy_(weight)
        if bias:
            new.bias.copy_(torch.randn(vocab, generator=generator) * 1e-3)
    model.set_output_embeddings(new)
    return model, direction


@pytest.mark.parametrize("bias", [False, True])
def test_near_ties_bfloat16_cannot_separate_are_decided_in_float32(bias):
    model, direction = _near_tie_model(bias)
    greedy = GreedyHead(model, screen=True)
    generator = torch.Generator().manual_seed(4)
    hidden = 5.0 * direction + torch.randn(40, direction.shape[0], generator=generator)
    expected = lm_head_logits(model, hidden).argmax(-1)
    assert set(expected.tolist()) <= set(range(100, 112)) and len(set(expected.tolist())) > 1
    kept = greedy.candidates(hidden)
    assert bool(kept[:, 100:112].all())  # bfloat16 cannot rule any of them out
    assert torch.equal(greedy(hidden), expected)


def test_the_screen_keeps_the_exact_arg_max_and_few_others():
    """Against float64 logits: the true arg-max is always a candidate, and on ordinary
    hidden states the screen rules out nearly every token (else it would not pay)."""
    model = make_tiny_model("qwen2")
    head = model.get_output_embeddings()
    greedy = GreedyHead(model, screen=True)
    hidden = _hidden(200, head.weight.shape[1], 7, 3.0)
    exact = (hidden.double() @ head.weight.double().T).argmax(-1)
    kept = greedy.candidates(hidden)
    assert bool(kept[torch.arange(200), exact].all())
    assert kept.sum(-1).float().mean() < 0.1 * head.weight.shape[0]


def test_no_screen_where_it_would_not_be_exact():
    model = make_tiny_model("llama")
    model.config.logit_scale = -1.0  # an order-reversing finish: the raw arg-max is wrong
    assert not GreedyHead(model, screen=True).screening
    model = make_tiny_model("llama")
    model.half()  # float16 weights: the screen's bound is for float32 logits
    assert not GreedyHead(model, screen=True).screening
    assert not GreedyHead(make_tiny_model("llama"), screen=False).screening


def test_the_default_screens_only_where_bfloat16_is_fast():
    model = make_tiny_model("llama")
    assert GreedyHead(model).screening == bfloat16_is_fast(torch.device("cpu"))
    assert not bfloat16_is_fast(torch.device("meta"))


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_blockwise_arg_max_equals_the_whole_logits_one(arch, monkeypatch):
    """Unscreened, the head is read in blocks (7 rows here, so many blocks and a short
    last one); ties across blocks keep the first token, as ``argmax`` does: rows 3 and 40
    of the head are made equal, and gemma2's soft-capping saturates at large scales."""
    monkeypatch.setattr(argmax, "VOCAB_BLOCK", 7)
    model = make_tiny_model(arch)
    head = model.get_output_embeddings()
    with torch.no_grad():
        head.weight[40] = head.weight[3]
    greedy = GreedyHead(model, screen=False)
    assert greedy.blockwise and not greedy.screening
    width = head.weight.shape[1]
    tie = head.weight[3].detach() * 100  # scores rows 3 and 40 highest, equally
    for seed, scale in enumerate((0.01, 1.0, 30.0, 1e4)):
        for rows in (argmax.FEW_ROWS - 1, argmax.FEW_ROWS + 4):  # both unscreened routes
            hidden = torch.cat([_hidden(rows, width, seed, scale), tie[None]])
            expected = lm_head_logits(model, hidden).argmax(-1)
            assert expected[-1] == 3
            assert torch.equal(greedy(hidden), expected)


def test_blockwise_arg_max_in_half_precision(monkeypatch):
    monkeypatch.setattr(argmax, "VOCAB_BLOCK", 5)
    model = make_tiny_model("llama").to(torch.bfloat16)
    hidden = _hidden(30, model.config.hidden_size, 1, 3.0).to(torch.bfloat16)
    greedy = GreedyHead(model)
    assert greedy.blockwise and not greedy.screening
    assert torch.equal(greedy(hidden), lm_head_logits(model, hidden).argmax(-1))
