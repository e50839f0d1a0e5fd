"""LoRA baseline on tiny models: exported factors reproduce peft exactly (Linear and GPT-2
Conv1D), training lowers the answer loss, α = 0 identity, the user's model is untouched,
save/load, and the loss mask."""

import dataclasses

import pytest
import torch

from spectral_edit import EditorFileError
from spectral_edit.demos.format import Demonstration
from spectral_edit.demos.prompts import answer_text
from spectral_edit.editors.baselines import LoRAEditor
from spectral_edit.editors.baselines.lora_train import (
    IGNORE_INDEX,
    answer_example,
    collate_examples,
    default_targets,
    lora_target_modules,
    masked_lm_loss,
    positive_answer_loss,
    train_lora_copy,
)
from spectral_edit.hf.tokens import encode_pair

from .tiny_models import make_tiny_model, make_tiny_tokenizer

DEMOS = [
    Demonstration("Q: is the sky blue? A:", "yes", "no"),
    Demonstration("Q: is fire cold? A:", "no", "yes"),
    Demonstration("Q: is the sea wet? A:", "yes it is", "no"),
    Demonstration("Q: the answer to a question", "true", "false"),
    Demonstration("Q: is ice hot? A:", "no, it is cold", "yes"),
]
TEXTS = ["the cat sat on the mat", "Q: is the sky blue? A: yes"]


def _logits(model, tokenizer, texts=TEXTS):
    with torch.no_grad():
        return [model(input_ids=torch.tensor([tokenizer(t)["input_ids"]])).logits for t in texts]


def _state(model):
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


@pytest.fixture(scope="module")
def trained():
    """A tiny Llama, its state before training, and a LoRA editor trained on DEMOS."""
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    before = _state(model)
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    editor = LoRAEditor.train(model, tokenizer, DEMOS, rank=4, steps=40, lr=3e-2, batch_size=2)
    return model, tokenizer, before, grads, editor


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("llama", ("q_proj", "v_proj")),
        ("gpt2", ("c_attn",)),
        ("gpt_neox", ("query_key_value",)),
        ("phi3", ("qkv_proj",)),
        ("opt", ("q_proj", "v_proj")),
    ],
)
def test_default_targets_are_attention_query_value(arch, expected):
    model = make_tiny_model(arch)
    assert default_targets(model) == expected
    names = lora_target_modules(model, layers=[-1])
    assert len(names) == len(expected)
    for name in names:
        assert name.rsplit(".", 1)[-1] in expected
        model.get_submodule(name)  # a real dotted name in the original model
    assert f".{model.config.num_hidden_layers - 1}." in names[0]


def test_target_override_and_errors():
    model = make_tiny_model("llama")
    assert lora_target_modules(model, targets=["mlp.down_proj"], layers="0") == [
        "model.layers.0.mlp.down_proj"
    ]
    assert len(lora_target_modules(model, targets=["o_proj", "up_proj"])) == 4
    with pytest.raises(ValueError, match="matches no linear layer"):
        lora_target_modules(model, targets=["c_attn"])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_exported_factors_reproduce_peft(arch):
    model, tokenizer = make_tiny_model(arch), make_tiny_tokenizer()
    names = lora_target_modules(model)
    peft_model, losses = train_lora_copy(
        model, tokenizer, DEMOS, names, rank=4, lora_alpha=8, steps=4, lr=1e-2
    )
    editor = LoRAEditor.from_peft(peft_model, names)
    assert editor.scalings == (2.0,) * len(names)
    for name, a, b in zip(editor.modules, editor.lora_A, editor.lora_B, strict=True):
        fan_in = 32
        fan_out = model.get_submodule(name).weight.shape[1 if arch == "gpt2" else 0]
        assert a.shape == (4, fan_in) and b.shape == (fan_out, 4)
        assert b.abs().max() > 0  # trained (peft initialises B to zero)
    fresh = make_tiny_model(arch)
    reference = _logits(peft_model, tokenizer)
    with editor.apply(fresh):
        edited = _logits(fresh, tokenizer)
    for ref, got, base in zip(reference, edited, _logits(fresh, tokenizer), strict=True):
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
        assert (ref - base).abs().max() > 1e-2  # the adapters do change the model


def test_training_lowers_the_positive_answer_loss(trained):
    model, tokenizer, _, _, editor = trained
    curve = editor.metadata["loss_curve"]
    assert len(curve) == 40 and editor.metadata["train_seconds"] > 0
    start = positive_answer_loss(model, tokenizer, DEMOS)
    with editor.apply(model):
        end = positive_answer_loss(model, tokenizer, DEMOS)
    assert end < start - 1.0  # nats per answer token
    assert curve[-1] < curve[0]
    with editor.with_options(alpha=0.5).apply(model):
        half = positive_answer_loss(model, tokenizer, DEMOS)
    assert end < half < start


def test_train_leaves_the_model_untouched_and_alpha_zero_is_identity(trained):
    model, tokenizer, before, grads, editor = trained
    after = model.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert not model.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert "lora" not in " ".join(n for n, _ in model.named_modules())
    base = _logits(model, tokenizer)
    with editor.with_options(alpha=0.0).apply(model):
        for got, ref in zip(_logits(model, tokenizer), base, strict=True):
            assert torch.equal(got, ref)
    with editor.apply(model):
        assert not torch.allclose(_logits(model, tokenizer)[0], base[0], atol=1e-3)
    for got, ref in zip(_logits(model, tokenizer), base, strict=True):
        assert torch.equal(got, ref)


def test_training_is_seeded():
    model, tokenizer = make_tiny_model("gpt2"), make_tiny_tokenizer()
    rng = torch.get_rng_state()
    first, second, other = (
        LoRAEditor.train(model, tokenizer, DEMOS, rank=2, steps=3, lr=1e-2, seed=seed)
        for seed in (0, 0, 1)
    )
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is not consumed
    assert all(torch.equal(a, b) for a, b in zip(first.lora_B, second.lora_B, strict=True))
    assert not torch.equal(first.lora_A[0], other.lora_A[0])


def test_save_load_round_trip_and_refusals(trained, tmp_path):
    model, tokenizer, _, _, editor = trained
    editor = editor.with_options(alpha=0.7)
    path = editor.save(tmp_path / "lora.safetensors")
    loaded = LoRAEditor.load(path, model)
    assert loaded.alpha == 0.7 and loaded.modules == editor.modules
    assert loaded.metadata["loss_curve"] == editor.metadata["loss_curve"]
    with editor.apply(model):
        expected = _logits(model, tokenizer)
    with loaded.apply(model):
        for got, ref in zip(_logits(model, tokenizer), expected, strict=True):
            assert torch.equal(got, ref)

    corrupted = tmp_path / "corrupted.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the last tensor's bytes
    corrupted.write_bytes(bytes(data))
    with pytest.raises(EditorFileError, match="hash mismatch"):
        LoRAEditor.load(corrupted)
    with pytest.raises(EditorFileError, match="layers|hidden size"):
        LoRAEditor.load(path, make_tiny_model("mistral"))


def test_files_with_the_old_site_field_still_load(trained, tmp_path):
    from spectral_edit.editors.file_format import read_editor_file, write_editor_file

    model, tokenizer, _, _, editor = trained
    path = editor.save(tmp_path / "lora.safetensors")
    header, tensors = read_editor_file(path, "spectral-edit/lora", 1)
    assert "site" not in header
    header.pop("content_sha256")
    old = write_editor_file(tmp_path / "old.safetensors", tensors, {**header, "site": "residual"})
    loaded = LoRAEditor.load(old, model)
    assert loaded.modules == editor.modules and not hasattr(loaded, "site")
    with editor.apply(model):
        expected = _logits(model, tokenizer)
    with loaded.apply(model):
        for got, ref in zip(_logits(model, tokenizer), expected, strict=True):
            assert torch.equal(got, ref)


def test_attach_names_missing_modules_and_shape_mismatches(trained):
    model, _, _, _, editor = trained
    renamed = dataclasses.replace(
        editor, modules=("model.layers.0.self_attn.nope", *editor.modules[1:])
    )
    with pytest.raises(EditorFileError, match="'model.layers.0.self_attn.nope'"):
        renamed.attach(model)
    wide = dataclasses.replace(editor, lora_A=(torch.zeros(4, 33), *editor.lora_A[1:]))
    with pytest.raises(EditorFileError, match=r"\(in, out\) = \(33, 32\)"):
        wide.attach(model)
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="A \\(r, in\\) and B \\(out, r\\)"):
        dataclasses.replace(editor, lora_B=(torch.zeros(32, 3), *editor.lora_B[1:]))
    with pytest.raises(ValueError, match="one A, one B"):
        dataclasses.replace(editor, scalings=editor.scalings[1:])


def test_labels_mask_the_prompt_and_padding(tiny_tokenizer):
    prompt, answer = "Q: is the sky blue? A:", "yes it is"
    ids, labels = answer_example(tiny_tokenizer, prompt, answer)
    context, continuation = encode_pair(tiny_tokenizer, prompt, answer_text(answer))
    assert ids == context + continuation  # the scoring tokenisation
    assert labels == [IGNORE_INDEX] * len(context) + continuation
    short = answer_example(tiny_tokenizer, "Q:", "no")
    batch_ids, mask, _, batch_labels = collate_examples([(ids, labels), short], pad_id=0)
    assert batch_labels[0].tolist() == labels
    assert batch_labels[1, len(short[1]) :].eq(IGNORE_INDEX).all()
    assert mask[1].sum() == len(short[0])

    # Only positions that predict an answer token get a gradient: the prompt-internal
    # predictions and the padding carry no loss.
    logits = torch.randn(*batch_ids.shape, 50, requires_grad=True)
    targets = batch_labels.clamp(max=49).masked_fill(batch_labels.eq(IGNORE_INDEX), IGNORE_INDEX)
    masked_lm_loss(logits, targets).backward()
    predicts_answer = torch.zeros_like(targets, dtype=torch.bool)
    predicts_answer[:, :-1] = targets[:, 1:] != IGNORE_INDEX
    touched = logits.grad.abs().sum(-1) > 0
    assert torch.equal(touched, predicts_answer)
    assert predicts_answer[0].sum() == len(continuation)
    # The loss is the mean over answer tokens only.
    manual = torch.nn.functional.cross_entropy(
        logits[:, :-1][predicts_answer[:, :-1]], targets[:, 1:][predicts_answer[:, :-1]]
    )
    torch.testing.assert_close(masked_lm_loss(logits, targets), manual)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_training_loss_uses_the_head_only_where_it_is_needed(arch):
    """The training loss (LM head at answer positions only) equals the masked loss of
    the model's full logits."""
    from spectral_edit.editors.baselines.lora_train import (
        _forward_loss,
        answer_example,
        collate_examples,
    )
    from spectral_edit.hf.tokens import model_inputs, pad_id_of

    model, tokenizer = make_tiny_model(arch), make_tiny_tokenizer()
    examples = [
        answer_example(tokenizer, "q: what is it\na:", "a cat"),
        answer_example(tokenizer, "q: where\na:", "on the big mat"),
    ]
    batch = collate_examples(examples, pad_id_of(tokenizer))
    ids, mask, positions, labels = batch
    logits = model(**model_inputs(model, ids, mask, positions), use_cache=False).logits
    for reduction in ("mean", "sum"):
        torch.testing.assert_close(
            _forward_loss(model, batch, reduction), masked_lm_loss(logits, labels, reduction)
        )
