"""ITI baseline on tiny models: the attention-output locator, head capture, probes, the
planted head, the exact per-head edit, α = 0 identity, save/load and fit_model."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from spectral_edit import EditorFileError
from spectral_edit.demos.format import Demonstration
from spectral_edit.editors.baselines import ITIEditor, MeanDifferenceEditor
from spectral_edit.editors.baselines.iti_train import (
    _logistic_objective,
    demo_split,
    fit_logistic,
    head_projections,
    rank_heads,
)
from spectral_edit.hf.capture import capture_modules
from spectral_edit.hf.layers import (
    LayerNotFoundError,
    attention_head_shape,
    attention_output_module,
    attention_output_modules,
    find_decoder_layers,
    linear_dims,
)
from spectral_edit.hf.tokens import encode_pair

from .tiny_models import make_tiny_model, make_tiny_tokenizer, tiny_config

_PROJECTION_PATH = {
    "gpt2": "attn.c_proj",
    "gpt_neox": "attention.dense",
    "opt": "self_attn.out_proj",
}
TARGET = (1, 2)
"""The (layer, head) that carries the planted signal."""


def _gemma3_wide_heads(seed: int = 0):
    """A tiny Gemma 3 whose heads are wider than hidden/heads: 4 heads of 16 in width 32."""
    config = tiny_config("gemma3")
    config.head_dim = config.query_pre_attn_scalar = 16
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return model.eval()


def _model(name: str):
    return _gemma3_wide_heads() if name == "gemma3-wide" else make_tiny_model(name)


def _planted(n=200, layers=2, heads=4, head_dim=8, separation=2.0, seed=0):
    """(N, L, H·hd) positives/negatives: only head TARGET differs, by ±separation·θ."""
    gen = torch.Generator().manual_seed(seed)
    theta = torch.nn.functional.normalize(torch.randn(head_dim, generator=gen), dim=0)
    positive = torch.randn(n, layers, heads, head_dim, generator=gen)
    negative = torch.randn(n, layers, heads, head_dim, generator=gen)
    positive[:, TARGET[0], TARGET[1]] += separation * theta
    negative[:, TARGET[0], TARGET[1]] -= separation * theta
    return positive.flatten(2), negative.flatten(2), theta


def _fit_planted(model, **options) -> ITIEditor:
    heads, head_dim = attention_head_shape(model)
    layers = len(find_decoder_layers(model))
    positive, negative, _ = _planted(layers=layers, heads=heads, head_dim=head_dim)
    return ITIEditor.fit(
        positive,
        negative,
        layers=list(range(layers)),
        num_heads=heads,
        head_dim=head_dim,
        hidden_size=model.config.get_text_config().hidden_size,
        num_layers=layers,
        **options,
    )


def _ids(tokenizer, text="the question is the answer"):
    return torch.tensor([tokenizer(text)["input_ids"]])


# --- locator and capture ---------------------------------------------------------------


def test_locator_finds_projection_and_capture_reads_its_input(tiny_model, tiny_arch):
    tokenizer = make_tiny_tokenizer()
    blocks = find_decoder_layers(tiny_model)
    heads, head_dim = attention_head_shape(tiny_model)
    modules = attention_output_modules(tiny_model, range(len(blocks)))
    path = _PROJECTION_PATH.get(tiny_arch, "self_attn.o_proj")
    assert list(modules) == list(range(len(blocks)))
    for index, module in modules.items():
        assert module is blocks[index].get_submodule(path)
        assert linear_dims(module)[0] == heads * head_dim
    contexts = ["the cat", "a question is the answer to a long one", "Q"]
    answers = [" yes", " no", " true"]
    captured = capture_modules(
        tiny_model, tokenizer, contexts, answers, modules=modules, on="input", batch_size=2
    )
    assert captured.shape == (3, len(blocks), heads * head_dim)
    for row, (context, answer) in enumerate(zip(contexts, answers, strict=True)):
        ctx, cont = encode_pair(tokenizer, context, answer)
        seen = {}
        hooks = [
            module.register_forward_pre_hook(
                lambda m, args, i=index, store=seen: store.__setitem__(i, args[0][0, -1].clone())
            )
            for index, module in modules.items()
        ]
        try:
            with torch.no_grad():
                tiny_model(torch.tensor([ctx + cont]))
        finally:
            for hook in hooks:
                hook.remove()
        expected = torch.stack([seen[i] for i in modules])
        torch.testing.assert_close(captured[row], expected, atol=1e-5, rtol=1e-5)


def test_locator_override_and_errors():
    model = make_tiny_model("llama")
    block = find_decoder_layers(model)[0]
    assert attention_output_module(block, "self_attn.o_proj") is block.self_attn.o_proj
    assert attention_output_modules(model, [1], attn_path="self_attn.q_proj")[1] is (
        find_decoder_layers(model)[1].self_attn.q_proj
    )
    with pytest.raises(LayerNotFoundError, match="does not exist"):
        attention_output_module(block, "self_attn.nope")
    with pytest.raises(LayerNotFoundError, match="not a linear layer"):
        attention_output_module(block, "self_attn")
    with pytest.raises(LayerNotFoundError, match="attn_path"):
        attention_output_module(block.mlp)
    with pytest.raises(IndexError):
        attention_output_modules(model, [2])


def test_head_shape_reads_head_dim_and_checks_projection_width():
    wide = _gemma3_wide_heads()
    assert attention_head_shape(wide) == (4, 16)
    assert linear_dims(attention_output_modules(wide, [0])[0])[0] == 64
    assert attention_head_shape(make_tiny_model("gpt2")) == (4, 8)
    assert set(head_projections(wide, [0, 2], 4, 16)) == {0, 2}
    with pytest.raises(ValueError, match=r"takes 64 inputs, not num_heads \* head_dim"):
        head_projections(wide, [0], 4, 8)


# --- fitting ---------------------------------------------------------------------------


def test_fit_ranks_planted_head_first_with_its_direction():
    positive, negative, theta = _planted()
    options = {"layers": [0, 1], "num_heads": 4, "head_dim": 8, "hidden_size": 32}
    editor = ITIEditor.fit(positive, negative, num_layers=2, top_k=4, **options)
    assert editor.heads[0] == TARGET
    assert len(editor.heads) == 4
    cosine = float(editor.directions[0] @ theta)
    assert cosine > 0.99
    torch.testing.assert_close(editor.directions.norm(dim=1), torch.ones(4))
    head = slice(TARGET[1] * 8, (TARGET[1] + 1) * 8)
    mass_mean = positive[:, 1, head].mean(0) - negative[:, 1, head].mean(0)  # all demos
    torch.testing.assert_close(editor.directions[0], mass_mean / mass_mean.norm())
    projected = torch.cat([positive[:, 1, head], negative[:, 1, head]]) @ editor.directions[0]
    torch.testing.assert_close(editor.sigmas[0], projected.std(correction=0), rtol=1e-5, atol=0)
    accuracy = torch.tensor(editor.metadata["probe_accuracy"])
    assert accuracy.shape == (2, 4)
    assert accuracy[TARGET] > 0.9  # ±2 apart in unit noise: Bayes accuracy Φ(2) ≈ 0.98
    accuracy[TARGET] = 0
    assert accuracy.max() < 0.75  # the noise heads are near chance
    assert editor.metadata["selected_accuracy"] == sorted(
        editor.metadata["selected_accuracy"], reverse=True
    )
    assert (editor.metadata["n_train"], editor.metadata["n_val"]) == (160, 40)
    flipped = ITIEditor.fit(negative, positive, num_layers=2, top_k=1, **options)
    assert flipped.heads == (TARGET,)
    assert float(flipped.directions[0] @ theta) < -0.99
    everything = ITIEditor.fit(positive, negative, num_layers=2, top_k=100, **options)
    assert len(everything.heads) == 8


def test_fit_is_seeded_and_checks_shapes():
    positive, negative, _ = _planted(n=30)
    options = {"layers": [0, 1], "num_heads": 4, "head_dim": 8, "hidden_size": 32}
    first = ITIEditor.fit(positive, negative, num_layers=2, top_k=8, seed=3, **options)
    again = ITIEditor.fit(positive, negative, num_layers=2, top_k=8, seed=3, **options)
    assert first.heads == again.heads
    assert first.metadata == again.metadata
    assert torch.equal(first.directions, again.directions)
    with pytest.raises(ValueError, match="arrays of one shape"):
        ITIEditor.fit(positive, negative[:, :1], num_layers=2, **options)
    with pytest.raises(ValueError, match="top_k"):
        ITIEditor.fit(positive, negative, num_layers=2, top_k=0, **options)


def test_demo_split_is_by_demonstration_and_seeded():
    train, val = demo_split(12, 0.2, seed=0)
    assert len(val) == 2 and len(train) == 10
    assert sorted(train + val) == list(range(12))
    assert demo_split(12, 0.2, seed=0) == (train, val)
    assert any(demo_split(12, 0.2, seed=s) != (train, val) for s in range(1, 5))
    assert demo_split(2, 0.9, seed=0)[0] != []  # at least one training demonstration
    with pytest.raises(ValueError, match="at least 2"):
        demo_split(1, 0.2, seed=0)
    with pytest.raises(ValueError, match="val_fraction"):
        demo_split(10, 0.0, seed=0)


def test_logistic_probe_reaches_the_regularised_optimum():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40, 5, generator=gen, dtype=torch.float64)
    y = (torch.rand(40, generator=gen) < 0.5).double()
    x[1] += 0.8 * (2 * y - 1)[:, None]  # problem 1 is nearly separable
    weight, bias = fit_logistic(x, y, C=0.5)
    params = torch.cat([weight, bias[:, None]], dim=1).requires_grad_(True)
    _logistic_objective(x, y.expand(3, -1), params, 1 / (2 * 0.5 * 40)).backward()
    assert params.grad.abs().max() < 1e-7
    assert weight[1].norm() > 2 * weight[0].norm()
    stronger, _ = fit_logistic(x, y, C=0.01)
    assert (stronger.norm(dim=1) < weight.norm(dim=1)).all()


def test_rank_heads_breaks_ties_deterministically():
    accuracy = torch.tensor([[0.5, 1.0, 1.0], [1.0, 0.5, 0.75]])
    loss = torch.tensor([[0.1, 0.3, 0.2], [0.2, 0.1, 0.1]])
    assert rank_heads(accuracy, loss) == [(0, 2), (1, 0), (0, 1), (1, 2), (0, 0), (1, 1)]


# --- the edit --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["llama", "gpt2", "gemma3-wide"])
def test_edit_shifts_only_the_selected_head_slice(name):
    model = _model(name)
    tokenizer = make_tiny_tokenizer()
    editor = _fit_planted(model, top_k=1, alpha=2.0)
    assert editor.heads == (TARGET,)
    heads, head_dim = attention_head_shape(model)
    projections = attention_output_modules(model, [0, 1])
    ids = _ids(tokenizer)
    before = model(ids).logits
    seen = {}

    def reader(tag):
        return lambda m, args: seen.__setitem__(tag, args[0].clone())

    raw = [projections[i].register_forward_pre_hook(reader(("raw", i))) for i in (0, 1)]
    with editor.apply(model):
        edited_hooks = [
            projections[i].register_forward_pre_hook(reader(("edited", i))) for i in (0, 1)
        ]
        edited = model(ids).logits
        for hook in [*raw, *edited_hooks]:
            hook.remove()
    diff = seen[("edited", 1)] - seen[("raw", 1)]
    head = slice(TARGET[1] * head_dim, (TARGET[1] + 1) * head_dim)
    expected = (2.0 * editor.sigmas[0] * editor.directions[0]).expand_as(diff[..., head])
    torch.testing.assert_close(diff[..., head], expected, atol=1e-5, rtol=0)
    outside = torch.ones(heads * head_dim, dtype=torch.bool)
    outside[head] = False
    assert torch.equal(diff[..., outside], torch.zeros_like(diff[..., outside]))
    assert torch.equal(seen[("edited", 0)], seen[("raw", 0)])  # layer 0 has no edited head
    assert not torch.allclose(edited, before, atol=1e-4)
    assert torch.equal(model(ids).logits, before)


def test_alpha_zero_top_k_subset_and_save_load(tmp_path):
    model = make_tiny_model("llama")
    ids = _ids(make_tiny_tokenizer())
    editor = _fit_planted(model, top_k=3, alpha=3.0)
    before = model(ids).logits
    with editor.with_options(alpha=0.0).apply(model):
        assert torch.equal(model(ids).logits, before)
    with editor.apply(model):
        edited = model(ids).logits
    assert not torch.allclose(edited, before, atol=1e-4)
    loaded = ITIEditor.load(editor.save(tmp_path / "iti.safetensors"), model)
    assert loaded.heads == editor.heads and loaded.alpha == 3.0
    assert torch.equal(loaded.directions, editor.directions)
    assert torch.equal(loaded.sigmas, editor.sigmas)
    assert loaded.metadata == editor.metadata
    with loaded.apply(model):
        assert torch.equal(model(ids).logits, edited)
    best = editor.with_options(top_k=1)
    assert best.heads == editor.heads[:1] and best.top_k == 1
    assert torch.equal(best.directions, editor.directions[:1])
    assert best.shifts().keys() == {TARGET[0]}
    with pytest.raises(ValueError, match="top_k"):
        editor.with_options(top_k=4)


def test_files_of_other_kinds_and_models_are_refused(tmp_path):
    path = _fit_planted(make_tiny_model("gemma3")).save(tmp_path / "iti.safetensors")
    with pytest.raises(EditorFileError, match="heads of size"):
        ITIEditor.load(path, _gemma3_wide_heads())
    with pytest.raises(EditorFileError, match="layers"):
        ITIEditor.load(path, make_tiny_model("llama"))
    with pytest.raises(EditorFileError, match="is not 'spectral-edit/mean-diff'"):
        MeanDifferenceEditor.load(path)
    positive = torch.randn(4, 2, 32)
    steering = MeanDifferenceEditor.fit(positive, -positive, layers=[0, 1], num_layers=2)
    with pytest.raises(EditorFileError, match="is not 'spectral-edit/iti'"):
        ITIEditor.load(steering.save(tmp_path / "md.safetensors"))


# --- end to end ------------------------------------------------------------------------

_DEMOS = [
    Demonstration("Q: Is the sky blue? A:", "yes", "no"),
    Demonstration("Q: Is fire cold? A:", "no", "yes"),
    Demonstration("Q: Do fish swim? A:", "yes", "no"),
    Demonstration("Q: Is ice hot? A:", "no", "yes"),
    Demonstration("Q: Is two more than one? A:", "true", "false"),
    Demonstration("Q: Is the sun a planet? A:", "false", "true"),
    Demonstration("Q: Do birds fly? A:", "yes", "no"),
    Demonstration("Q: Can stones talk? A:", "no", "yes"),
    Demonstration("Q: Is water wet? A:", "true", "false"),
    Demonstration("Q: Is the moon made of cheese? A:", "false", "true"),
    Demonstration("Q: Is a cat an animal? A:", "yes", "no"),
    Demonstration("Q: Is seven an even number? A:", "no", "yes"),
]


def test_fit_model_end_to_end():
    model = make_tiny_model("llama")
    tokenizer = make_tiny_tokenizer()
    editor = ITIEditor.fit_model(model, tokenizer, _DEMOS, top_k=3, alpha=4.0, batch_size=5)
    assert editor.top_k == 3 and (editor.num_heads, editor.head_dim) == (4, 8)
    assert (editor.metadata["n_train"], editor.metadata["n_val"]) == (10, 2)
    torch.testing.assert_close(editor.directions.norm(dim=1), torch.ones(3))
    assert (editor.sigmas > 0).all()
    modules = attention_output_modules(model, [0, 1])
    answers = {
        kind: capture_modules(
            model, tokenizer, [d.prompt for d in _DEMOS], [" " + getattr(d, kind) for d in _DEMOS],
            modules=modules,
        )
        for kind in ("positive", "negative")
    }  # fmt: skip
    direct = ITIEditor.fit(
        answers["positive"], answers["negative"], layers=[0, 1], num_heads=4, head_dim=8,
        hidden_size=32, num_layers=2, top_k=3, alpha=4.0,
    )  # fmt: skip
    assert direct.heads == editor.heads
    torch.testing.assert_close(direct.directions, editor.directions)
    ids = _ids(tokenizer, "Q: Is the grass green? A:")
    before = model(ids).logits
    with editor.apply(model):
        assert not torch.allclose(model(ids).logits, before, atol=1e-4)
    only_last = ITIEditor.fit_model(model, tokenizer, _DEMOS, top_k=2, layers="1")
    assert only_last.layers == (1,)
    assert only_last.metadata["probe_layers"] == [1]
