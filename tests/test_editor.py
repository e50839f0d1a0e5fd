"""Applying an editor through hooks: identity at α = 0, clean removal, batch and padding
independence, KV-cache consistency, norm preservation, save/load."""

import json

import pytest
import torch

from spectral_edit import EditorFileError, SpectralEditor, fit_from_arrays
from spectral_edit.hf.capture import capture
from spectral_edit.hf.layers import find_decoder_layers
from spectral_edit.hf.tokens import cache_kwargs, model_inputs, output_cache, pad_batch, pad_id_of

from .tiny_models import make_tiny_model, make_tiny_tokenizer

PROMPTS = ["the cat sat on", "a b", "hello world and some more words here"]


def _random_editor(model, *, feature="linear", layers=None, seed=0, **options):
    """An editor fitted on random activations of the model's width (strong, random edit)."""
    blocks = len(find_decoder_layers(model))
    d = model.config.get_text_config().hidden_size
    layers = list(range(blocks)) if layers is None else layers
    gen = torch.Generator().manual_seed(seed)
    h, hp, hn = (torch.randn(40, len(layers), d, generator=gen) for _ in range(3))
    return fit_from_arrays(
        h,
        hp,
        hn,
        pos_rank=3,
        neg_rank=4,
        layers=layers,
        num_layers=blocks,
        feature=feature,
        **options,
    )


def _logits(model, tokenizer, prompts, side="right"):
    """Per-prompt logits ``(T_i, V)`` from one padded batch."""
    seqs = [tokenizer(p)["input_ids"] for p in prompts]
    ids, mask, pos = pad_batch(seqs, pad_id_of(tokenizer), side)
    out = model(**model_inputs(model, ids, mask, pos)).logits
    rows = []
    for i, seq in enumerate(seqs):
        start = ids.shape[1] - len(seq) if side == "left" else 0
        rows.append(out[i, start : start + len(seq)])
    return rows


@pytest.fixture(scope="module")
def tokenizer():
    return make_tiny_tokenizer()


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2", "gpt_neox"])
def test_alpha_zero_and_removal_are_bit_identical(arch, tokenizer):
    model = make_tiny_model(arch)
    before = _logits(model, tokenizer, PROMPTS)
    editor = _random_editor(model)
    with editor.with_options(alpha=0.0).apply(model):
        at_zero = _logits(model, tokenizer, PROMPTS)
    with editor.apply(model):
        edited = _logits(model, tokenizer, PROMPTS)
    after = _logits(model, tokenizer, PROMPTS)
    with pytest.raises(RuntimeError, match="boom"), editor.apply(model):
        raise RuntimeError("boom")
    after_error = _logits(model, tokenizer, PROMPTS)
    for b, z, e, a, ae in zip(before, at_zero, edited, after, after_error, strict=True):
        assert torch.equal(b, z)
        assert torch.equal(b, a)
        assert torch.equal(b, ae)
        assert not torch.allclose(b, e, atol=1e-3)


def test_attach_detach(tokenizer):
    model = make_tiny_model("qwen2")
    before = _logits(model, tokenizer, PROMPTS)
    handle = _random_editor(model).attach(model)
    assert handle.active
    edited = _logits(model, tokenizer, PROMPTS)
    handle.remove()
    handle.remove()  # idempotent
    assert not handle.active
    assert not torch.allclose(before[0], edited[0], atol=1e-3)
    assert all(
        torch.equal(b, a) for b, a in zip(before, _logits(model, tokenizer, PROMPTS), strict=True)
    )


@pytest.mark.parametrize("arch", ["llama", "gemma3", "opt"])
@pytest.mark.parametrize("feature", ["linear", "squared-exponential"])
def test_edit_independent_of_batch_and_padding(arch, feature, tokenizer):
    model = make_tiny_model(arch)
    editor = _random_editor(model, feature=feature)
    with editor.apply(model):
        alone = [_logits(model, tokenizer, [p])[0] for p in PROMPTS]
        right = _logits(model, tokenizer, PROMPTS, "right")
        left = _logits(model, tokenizer, PROMPTS, "left")
    for a, r, lft in zip(alone, right, left, strict=True):
        torch.testing.assert_close(r, a, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(lft, a, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_generation_with_and_without_cache_agree_under_edit(arch, tokenizer):
    model = make_tiny_model(arch)
    editor = _random_editor(model, layers=[0, 1])
    ids = torch.tensor([tokenizer("the cat sat on")["input_ids"]])
    with editor.apply(model):
        cached = model.generate(
            ids, max_new_tokens=8, do_sample=False, use_cache=True, pad_token_id=0
        )
        uncached = model.generate(
            ids, max_new_tokens=8, do_sample=False, use_cache=False, pad_token_id=0
        )
        # and step-by-step logits with a cache equal one full forward pass
        full = model(cached).logits
        out = model(cached[:, :5], use_cache=True)
        steps = [out.logits]
        for t in range(5, cached.shape[1]):
            past = cache_kwargs(model, output_cache(out))
            out = model(cached[:, t : t + 1], use_cache=True, **past)
            steps.append(out.logits)
    plain = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(cached, uncached)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)
    assert not torch.equal(full, model(cached).logits)
    assert plain.shape == cached.shape


def test_edited_layer_output_keeps_token_norms(tokenizer):
    model = make_tiny_model("llama")
    editor = _random_editor(model)
    blocks = find_decoder_layers(model)
    seen = {}

    def grab(name):
        def hook(module, args, output):
            seen[name] = (output if torch.is_tensor(output) else output[0]).detach().clone()

        return hook

    ids = torch.tensor([tokenizer(PROMPTS[2])["input_ids"]])
    handle = blocks[0].register_forward_hook(grab("raw"))  # registered before the editor
    try:
        with editor.apply(model):
            after = blocks[0].register_forward_hook(grab("edited"))  # runs after the editor
            try:
                model(ids)
            finally:
                after.remove()
    finally:
        handle.remove()
    raw, edited = seen["raw"], seen["edited"]
    torch.testing.assert_close(edited.norm(dim=-1), raw.norm(dim=-1))
    torch.testing.assert_close(edited, editor.edit(raw, 0))
    assert not torch.allclose(edited, raw, atol=1e-3)
    # the next layer's capture sees the edited activations
    with editor.apply(model):
        captured = capture(model, tokenizer, [PROMPTS[2]], layers=[0])
    torch.testing.assert_close(captured[0, 0], edited[0, -1])


def test_editor_options_and_projections():
    model = make_tiny_model("llama")
    editor = _random_editor(model, layers=[0, 1])
    sub = editor.with_options(layers=[1], alpha=0.5, merge="mean")
    assert sub.active_layers == (1,) and sub.alpha == 0.5 and sub.merge == "mean"
    assert editor.active_layers == (0, 1)  # immutable
    with pytest.raises(ValueError, match="not fitted"):
        editor.with_options(layers=[2])
    with pytest.raises(Exception):  # noqa: B017 - frozen dataclass
        editor.alpha = 2.0
    p_pos, p_neg = editor.projections(1)
    assert p_pos.shape == p_neg.shape == (32, 32)
    with pytest.raises(KeyError):
        editor.projections(5)


@pytest.mark.parametrize("feature", ["linear", "elu"])
def test_save_load_round_trip(tmp_path, tokenizer, feature):
    model = make_tiny_model("gemma3")
    editor = _random_editor(model, feature=feature, metadata={"model": "tiny"})
    path = editor.save(tmp_path / "editor.safetensors")
    loaded = SpectralEditor.load(path, model)
    assert loaded.ranks == editor.ranks
    assert loaded.metadata["model"] == "tiny"
    assert loaded.feature == feature and loaded.feature_scales == editor.feature_scales
    with editor.apply(model):
        a = _logits(model, tokenizer, PROMPTS)
    with loaded.apply(model):
        b = _logits(model, tokenizer, PROMPTS)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert [p.name for p in tmp_path.iterdir()] == ["editor.safetensors"]


def test_load_refuses_mismatch_and_corruption(tmp_path):
    model = make_tiny_model("llama")
    path = _random_editor(model).save(tmp_path / "e.safetensors")
    other = make_tiny_model("mistral")  # 3 layers instead of 2
    with pytest.raises(EditorFileError, match="layers|hidden size"):
        SpectralEditor.load(path, other)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # flip bits inside the tensor data
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(EditorFileError, match="hash mismatch"):
        SpectralEditor.load(bad)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(EditorFileError, match="junk.safetensors"):
        SpectralEditor.load(tmp_path / "junk.safetensors")
    with pytest.raises(EditorFileError, match="no such"):
        SpectralEditor.load(tmp_path / "missing.safetensors")


def test_load_refuses_other_format_version(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    model = make_tiny_model("llama")
    path = _random_editor(model).save(tmp_path / "e.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["spectral_edit"])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    header["format_version"] = 99
    save_file(
        tensors, str(tmp_path / "v99.safetensors"), metadata={"spectral_edit": json.dumps(header)}
    )
    with pytest.raises(EditorFileError, match="version 99"):
        SpectralEditor.load(tmp_path / "v99.safetensors")
