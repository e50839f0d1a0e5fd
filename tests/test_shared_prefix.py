"""Generation on a shared prefix's KV cache equals transformers' own generation of each
prompt alone, on every tiny architecture, plain and under a position-restricted edit."""

import pytest
import torch

from spectral_edit.editors.sea_fit import fit_from_arrays
from spectral_edit.hf.generation import end_token_ids, generate_greedy
from spectral_edit.hf.layers import hidden_size_of
from spectral_edit.hf.positions import prompt_boundary
from spectral_edit.hf.prefix import (
    MIN_SHARED_TOKENS,
    shared_prefix_length,
    sliding_window,
    window_allows,
)
from spectral_edit.hf.tokens import encode

from .test_capture import PRIMER
from .tiny_models import TINY_ARCHS, make_tiny_model, make_tiny_tokenizer

PROMPTS = [
    PRIMER + "Q: where is the cat?\nA:",
    PRIMER + "Q: who?\nA:",
    PRIMER + "Q: a question much longer than the others, with more words in it?\nA:",
]


def _reference(model, tokenizer, prompt: str, new_tokens: int) -> str:
    """transformers' greedy generation of one unpadded prompt: its new text."""
    ids = torch.tensor([encode(tokenizer, prompt)])
    with prompt_boundary([ids.shape[1]]):
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_shared_prefix_length_stops_at_the_first_difference_and_the_limits():
    base = list(range(20))
    assert shared_prefix_length([base + [1, 2], base + [1, 3]]) == 21
    assert shared_prefix_length([base + [1, 2], base + [1, 3]], [30, 12]) == 12
    assert shared_prefix_length([base + [1], base[:5] + [99] * 20]) == 0  # under the minimum
    assert shared_prefix_length([base]) == 0  # nothing to share with
    assert shared_prefix_length([base[:MIN_SHARED_TOKENS]] * 2) == MIN_SHARED_TOKENS


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_generation_on_a_shared_prefix_equals_transformers_generate(arch):
    model = make_tiny_model(arch)
    tokenizer = make_tiny_tokenizer()
    widths = []
    hook = model.get_input_embeddings().register_forward_hook(
        lambda m, args, out: widths.append(args[0].shape[1])
    )
    try:
        got = generate_greedy(model, tokenizer, PROMPTS, max_new_tokens=6, stops=(), batch_size=2)
    finally:
        hook.remove()
    expected = [_reference(model, tokenizer, p, 6) for p in PROMPTS]
    assert got == expected
    assert all(got)
    # prefilled one by one, decoded as one batch: the three caches merged
    merged = generate_greedy(
        model, tokenizer, PROMPTS, max_new_tokens=6, stops=(), batch_size=1, decode_batch_size=3
    )
    assert merged == expected
    primer = len(encode(tokenizer, PRIMER.rstrip()))
    longest = max(len(encode(tokenizer, p)) for p in PROMPTS)
    if window_allows(model, longest + 6):
        assert widths[0] >= primer  # the prefix, once; then batches of the rests
        assert max(widths[1:]) < longest - primer + 1
    else:  # a window (tiny Gemma 2: 64, Gemma 3: 8) shorter than the prompts: no sharing
        window = sliding_window(model)
        assert window is not None and window < longest + 6 and widths[0] > primer


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
def test_generation_on_a_shared_prefix_under_a_restricted_edit(arch):
    model = make_tiny_model(arch)
    tokenizer = make_tiny_tokenizer()
    layers, d = model.config.num_hidden_layers, hidden_size_of(model)
    g = torch.Generator().manual_seed(5)
    neutral = torch.randn(30, layers, d, generator=g)
    editor = fit_from_arrays(
        neutral,
        neutral + torch.randn(30, layers, d, generator=g),
        neutral - torch.randn(30, layers, d, generator=g),
        pos_ratio=0.5,
        neg_ratio=0.5,
        centered=True,
        num_layers=layers,
    ).with_options(positions="generated")
    with editor.apply(model):
        got = generate_greedy(model, tokenizer, PROMPTS, max_new_tokens=5, stops=(), batch_size=3)
        expected = [_reference(model, tokenizer, p, 5) for p in PROMPTS]
    assert got == expected
    assert got != generate_greedy(model, tokenizer, PROMPTS, max_new_tokens=5, stops=())


def test_rows_stop_at_eos_and_at_stop_strings_and_leave_the_batch():
    model = make_tiny_model("llama")
    tokenizer = make_tiny_tokenizer()
    full = generate_greedy(model, tokenizer, PROMPTS, max_new_tokens=8, stops=())
    stop = full[0][2:4]
    cut = generate_greedy(model, tokenizer, PROMPTS, max_new_tokens=8, stops=(stop,))
    assert cut[0] == full[0][: full[0].find(stop)]
    for whole, part in zip(full[1:], cut[1:], strict=True):
        assert part == (whole[: whole.find(stop)] if stop in whole else whole)
    # an EOS token ends a row: make the first token generated for prompt 0 the EOS
    ids = torch.tensor([encode(tokenizer, PROMPTS[0])])
    first = int(model.generate(input_ids=ids, do_sample=False, max_new_tokens=1)[0, -1])
    assert end_token_ids(model, tokenizer)
    model.generation_config.eos_token_id = first
    ended = generate_greedy(model, tokenizer, PROMPTS, max_new_tokens=8, stops=())
    assert ended[0] == ""
    assert end_token_ids(model, tokenizer) == {first}
