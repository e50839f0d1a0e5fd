"""The centred edit and the position-restricted edit (issue #12, part 3)."""

from __future__ import annotations

import pytest
import torch

from spectral_edit.core.options import Merge, Positions, SeaOptions
from spectral_edit.core.spectral import dense_projections, spectral_edit
from spectral_edit.editors.sea import SpectralEditor
from spectral_edit.editors.sea_fit import fit_from_arrays
from spectral_edit.evaluate.scorer import ChoiceRequest, score_requests
from spectral_edit.hf.generation import generate_greedy
from spectral_edit.hf.layers import hidden_size_of
from spectral_edit.hf.positions import editable, prompt_boundary, real_token_index
from tests.tiny_models import make_tiny_model, make_tiny_tokenizer


def _orthonormal(d: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))
    return q


def test_centred_edit_equals_its_formula() -> None:
    d = 12
    pos, neg = _orthonormal(d, 3, 0), _orthonormal(d, 4, 1)
    g = torch.Generator().manual_seed(2)
    h = torch.randn(5, d, generator=g, dtype=torch.float64) * 3 + 7
    mu = torch.randn(d, generator=g, dtype=torch.float64) + 7
    p_pos, p_neg = dense_projections(pos, neg)
    c = h - mu
    z = c @ p_pos.T + c @ p_neg.T
    expected = mu + z * (c.norm(dim=-1, keepdim=True) / z.norm(dim=-1, keepdim=True))
    got = spectral_edit(h, pos, neg, mean=mu)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # the mean merge: μ + z / 2
    got_mean = spectral_edit(h, pos, neg, mean=mu, merge=Merge.MEAN)
    torch.testing.assert_close(got_mean, mu + z / 2, rtol=1e-12, atol=1e-12)
    # the token keeps its distance to μ (not its norm) under the norm merge
    torch.testing.assert_close((got - mu).norm(dim=-1), c.norm(dim=-1))
    # and differs from the paper's edit of the raw activation
    assert not torch.allclose(got, spectral_edit(h, pos, neg))
    # α blends towards it
    half = spectral_edit(h, pos, neg, mean=mu, alpha=0.5)
    torch.testing.assert_close(half, h + 0.5 * (expected - h))


def test_centred_edit_with_zero_mean_is_the_paper_edit() -> None:
    d = 10
    pos, neg = _orthonormal(d, 2, 3), _orthonormal(d, 3, 4)
    h = torch.randn(4, d, dtype=torch.float64)
    assert torch.equal(
        spectral_edit(h, pos, neg, mean=torch.zeros(d, dtype=torch.float64)),
        spectral_edit(h, pos, neg),
    )


def _arrays(n: int = 40, layers: int = 2, d: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    neutral = torch.randn(n, layers, d, generator=g) + 5
    positive = neutral + 0.5 * torch.randn(n, layers, d, generator=g)
    negative = neutral - 0.5 * torch.randn(n, layers, d, generator=g)
    return neutral, positive, negative


def test_fitted_editor_stores_neutral_means_and_centres_with_them(tmp_path) -> None:
    neutral, positive, negative = _arrays()
    editor = fit_from_arrays(neutral, positive, negative, centered=True, center_edit=True)
    for i in range(2):
        torch.testing.assert_close(editor.means[i], neutral[:, i].double().mean(0).float())
    h = torch.randn(3, 16) + 5
    pos, neg = editor.factors(1)
    expected = spectral_edit(h, pos, neg, mean=editor.means[1])
    torch.testing.assert_close(editor.edit(h, 1), expected)
    assert not torch.allclose(editor.with_options(center_edit=False).edit(h, 1), expected)
    # a round trip through the file keeps the means and the options
    back = SpectralEditor.load(
        editor.with_options(positions="answer").save(tmp_path / "e.safetensors")
    )
    assert back.center_edit and back.positions is Positions.ANSWER
    assert all(torch.equal(a, b) for a, b in zip(back.means, editor.means, strict=True))


def test_default_options_are_not_written_and_old_files_read_back(tmp_path) -> None:
    from safetensors import safe_open

    neutral, positive, negative = _arrays()
    editor = fit_from_arrays(neutral, positive, negative)
    path = editor.save(tmp_path / "plain.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()["spectral_edit"]
        names = set(handle.keys())
    assert "center_edit" not in header and "positions" not in header
    assert {f"layer.{i}.mean" for i in range(2)} <= names
    # an editor without means (an earlier release's file) loads, and refuses the centred edit
    old = SpectralEditor(
        layers=editor.layers,
        pos_factors=editor.pos_factors,
        neg_factors=editor.neg_factors,
        hidden_size=16,
        num_layers=2,
    )
    loaded = SpectralEditor.load(old.save(tmp_path / "old.safetensors"))
    assert loaded.means is None and not loaded.center_edit
    with pytest.raises(ValueError, match="neutral means"):
        loaded.with_options(center_edit=True)


def test_sea_options_carry_the_edit_variants() -> None:
    options = SeaOptions(center_edit=True, positions="generated")
    assert options.fit_kwargs()["center_edit"] is True
    assert options.fit_kwargs()["positions"] is Positions.GENERATED
    assert SeaOptions.from_json(options.to_json()) == options
    with pytest.raises(ValueError, match="positions must be one of"):
        SeaOptions(positions="prompt")


def test_real_token_index_and_editable_positions() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    index = real_token_index(mask, 3)
    assert index.tolist() == [[1, 2, 3], [3, 4, 5]]
    assert editable(index, [2, 5], Positions.GENERATED).tolist() == [
        [False, True, True],
        [False, False, True],
    ]
    assert editable(index, [2, 5], Positions.ANSWER).tolist() == [
        [True, True, True],
        [False, True, True],
    ]
    assert editable(index, [9], Positions.ALL).all()


# ----------------------------------------------------------------- on a tiny model
@pytest.fixture(scope="module")
def model_and_editor():
    model = make_tiny_model("llama")
    d = hidden_size_of(model)
    g = torch.Generator().manual_seed(5)
    layers = model.config.num_hidden_layers
    neutral = torch.randn(30, layers, d, generator=g)
    positive = neutral + torch.randn(30, layers, d, generator=g)
    negative = neutral - torch.randn(30, layers, d, generator=g)
    editor = fit_from_arrays(
        neutral,
        positive,
        negative,
        pos_ratio=0.5,
        neg_ratio=0.5,
        centered=True,
        num_layers=layers,
    )
    return model, editor


@torch.no_grad()
def _logits(model, ids, mask=None):
    return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("mode", [Positions.GENERATED, Positions.ANSWER])
def test_restricted_edit_leaves_prompt_positions_bit_identical(model_and_editor, mode) -> None:
    model, editor = model_and_editor
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46, 47]])
    prompt = 5
    first_edited = prompt if mode is Positions.GENERATED else prompt - 1
    plain = _logits(model, ids)
    with editor.with_options(positions=mode).apply(model), prompt_boundary([prompt]):
        restricted = _logits(model, ids)
    with editor.apply(model):
        everywhere = _logits(model, ids)
    assert torch.equal(restricted[:, :first_edited], plain[:, :first_edited])
    assert not torch.allclose(restricted[:, first_edited:], plain[:, first_edited:])
    # from the first edited position on it is the full edit's causal consequence, not
    # the everywhere-edit (whose prompt positions are edited too)
    assert not torch.allclose(restricted[:, -1], everywhere[:, -1])
    # no boundary: every position counts as generated text
    with editor.with_options(positions=mode).apply(model):
        torch.testing.assert_close(_logits(model, ids), everywhere)


@pytest.mark.parametrize("mode", [Positions.GENERATED, Positions.ANSWER])
def test_restricted_edit_agrees_cached_uncached_and_across_padding(model_and_editor, mode) -> None:
    model, editor = model_and_editor
    editor = editor.with_options(positions=mode)
    prompts = [[1, 40, 41, 42], [1, 50, 51, 52, 53, 54, 55]]

    def generate(batch, side, use_cache):
        width = max(len(p) for p in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(batch):
            cols = slice(width - len(p), width) if side == "left" else slice(0, len(p))
            ids[row, cols] = torch.tensor(p)
            mask[row, cols] = 1
        with editor.apply(model), prompt_boundary([len(p) for p in batch]):
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=6,
                do_sample=False,
                use_cache=use_cache,
                pad_token_id=0,
            )
        return [row[width:].tolist() for row in out]

    singles = [generate([p], "left", True)[0] for p in prompts]
    assert [generate([p], "left", False)[0] for p in prompts] == singles
    assert generate(prompts, "left", True) == singles
    assert generate(prompts, "left", False) == singles
    # the unrestricted and the unedited model generate differently (the edit acts)
    with editor.with_options(positions="all").apply(model):
        everywhere = model.generate(
            input_ids=torch.tensor([prompts[1]]), max_new_tokens=6, do_sample=False, pad_token_id=0
        )[0, 7:].tolist()
    plain = model.generate(
        input_ids=torch.tensor([prompts[1]]), max_new_tokens=6, do_sample=False, pad_token_id=0
    )[0, 7:].tolist()
    assert singles[1] != plain or everywhere != plain


def test_restricted_edit_right_padding_matches_unpadded_logits(model_and_editor) -> None:
    model, editor = model_and_editor
    editor = editor.with_options(positions=Positions.GENERATED)
    short, long = [1, 40, 41, 42, 43], [1, 50, 51, 52, 53, 54, 55, 56]
    with editor.apply(model):
        with prompt_boundary([3]):
            alone = _logits(model, torch.tensor([short]))
        ids = torch.tensor([short + [0, 0, 0], long])
        mask = torch.tensor([[1] * 5 + [0] * 3, [1] * 8])
        with prompt_boundary([3, 4]):
            batch = _logits(model, ids, mask)
        left = torch.tensor([[0, 0, 0] + short, long])
        left_mask = torch.tensor([[0] * 3 + [1] * 5, [1] * 8])
        with prompt_boundary([3, 4]):
            batch_left = _logits(model, left, left_mask)
    torch.testing.assert_close(batch[0, :5], alone[0], rtol=1e-4, atol=1e-5)
    # left padding needs positions counted over real tokens, as generation does
    pos = (left_mask.cumsum(1) - 1).clamp_min(0)
    with editor.apply(model), prompt_boundary([3, 4]):
        batch_left = model(input_ids=left, attention_mask=left_mask, position_ids=pos).logits
    torch.testing.assert_close(batch_left[0, 3:], alone[0], rtol=1e-4, atol=1e-5)


def test_scorer_and_generation_set_the_prompt_boundary(model_and_editor) -> None:
    model, editor = model_and_editor
    tokenizer = make_tiny_tokenizer()
    requests = [ChoiceRequest("the cat sat on", (" the mat", " a dog ran"))]
    plain = score_requests(model, tokenizer, requests)
    first = [score_requests(model, tokenizer, [ChoiceRequest("the cat sat on", (" the",))])]
    with editor.with_options(positions="generated").apply(model):
        generated = score_requests(model, tokenizer, requests)
        generated_first = score_requests(
            model, tokenizer, [ChoiceRequest("the cat sat on", (" the",))]
        )
        packed = score_requests(model, tokenizer, requests, share_contexts=False)
    with editor.with_options(positions="answer").apply(model):
        answer_first = score_requests(
            model, tokenizer, [ChoiceRequest("the cat sat on", (" the",))]
        )
    # the first answer token is predicted by the prompt's last position: unedited under
    # "generated", edited under "answer"
    assert generated_first[0][0].logprob == first[0][0][0].logprob
    assert answer_first[0][0].logprob != first[0][0][0].logprob
    assert generated[0][0].logprob != plain[0][0].logprob  # later answer tokens are edited
    for a, b in zip(generated[0], packed[0], strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
    # generation: restricted edits change the continuation only after the prompt
    prompts = ["the cat sat on", "a dog"]
    with editor.with_options(positions="generated").apply(model):
        batched = generate_greedy(model, tokenizer, prompts, max_new_tokens=5, stops=())
        singles = [
            generate_greedy(model, tokenizer, [p], max_new_tokens=5, stops=())[0] for p in prompts
        ]
    assert batched == singles
