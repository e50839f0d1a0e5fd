"""`sea export` / export_model: every editor that folds into stock weights round-trips through a
plain `AutoModelForCausalLM` folder with the hooked model's logits (1e-4, float32) on every
tiny architecture; every other edit is refused with the reason and the option to change, and
nothing is written."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from spectral_edit import fit_from_arrays
from spectral_edit.cli.app import app
from spectral_edit.editors.baselines import (
    ITIEditor,
    LeaceEditor,
    LoRAEditor,
    MeanDifferenceEditor,
    PCAVectorEditor,
)
from spectral_edit.editors.baselines.lora_train import lora_target_modules
from spectral_edit.editors.export import (
    EXPORT_FILE,
    ExportCheckFailed,
    ExportRefused,
    export_model,
    plan_export,
)
from spectral_edit.editors.file_format import editor_header, read_editor_file
from spectral_edit.hf.layers import attention_head_shape, hidden_size_of
from spectral_edit.util.atomic import OutputError

from .tiny_models import TINY_ARCHS, make_tiny_model, make_tiny_tokenizer

PROMPTS = [
    "Q: is the sky blue? A: yes",
    "the answer to the question is no",
    "a cat, 3 dogs and the sea",
]

# Where an edit needs a bias on the MLP's output projection: the architectures that have
# one (GPT-2, GPT-NeoX, OPT) or a config flag adding one (Llama's mlp_bias).
MLP_BIAS = {"llama", "gpt2", "gpt_neox", "opt"}
# ITI needs a bias on the attention output projection: there already, or `attention_bias`.
ATTENTION_BIAS = {"llama", "gemma2", "gemma3", "qwen3", "gpt2", "gpt_neox", "opt"}
# A residual shift folds into the MLP bias only where the MLP's output joins the residual
# stream unnormalised (not Gemma's post_feedforward_layernorm) and the bias exists.
RESIDUAL_SHIFT = MLP_BIAS - {"gemma2", "gemma3"}

EXPORTABLE = {
    "sea": set(TINY_ARCHS),
    "sea-centred": MLP_BIAS,
    "mean-diff-mlp": MLP_BIAS,
    "mean-diff-residual": RESIDUAL_SHIFT,
    "pca-residual": RESIDUAL_SHIFT,
    "leace-mlp": MLP_BIAS,
    "iti": ATTENTION_BIAS,
    "lora": set(TINY_ARCHS),
}


def _activations(model, n=12, seed=0):
    d, layers = hidden_size_of(model), model.config.num_hidden_layers
    generator = torch.Generator().manual_seed(seed)
    return [3 * torch.randn(n, layers, d, generator=generator, dtype=torch.float64) for _ in "abc"]


def _editor(kind, model):
    """An editor of ``kind`` for ``model`` with generic (random) fitted values and a strong
    edit; every layer is edited."""
    num_layers = model.config.num_hidden_layers
    layers = list(range(num_layers))
    neutral, positive, negative = _activations(model)
    negative = negative + 2.0  # class means apart: mean-difference and LEACE have work to do
    common = {"layers": layers, "num_layers": num_layers}
    if kind in ("sea", "sea-centred"):
        editor = fit_from_arrays(
            neutral, positive, negative, merge="mean", site="mlp", pos_rank=3, neg_rank=3,
            alpha=1.5, **common,
        )  # fmt: skip
        return editor.with_options(center_edit=True) if kind == "sea-centred" else editor
    if kind == "mean-diff-mlp":
        return MeanDifferenceEditor.fit(positive, negative, site="mlp", alpha=2.0, **common)
    if kind == "mean-diff-residual":
        return MeanDifferenceEditor.fit(positive, negative, site="residual", alpha=2.0, **common)
    if kind == "pca-residual":
        return PCAVectorEditor.fit(positive, negative, site="residual", alpha=2.0, **common)
    if kind == "leace-mlp":
        return LeaceEditor.fit(positive, negative, site="mlp", alpha=1.0, **common)
    if kind == "iti":
        heads, head_dim = attention_head_shape(model)
        generator = torch.Generator().manual_seed(1)
        chosen = ((0, 1), (num_layers - 1, heads - 1), (0, 0))
        directions = torch.nn.functional.normalize(
            torch.randn(len(chosen), head_dim, generator=generator), dim=1
        )
        return ITIEditor(
            heads=chosen, directions=directions, sigmas=torch.tensor([2.0, 3.0, 1.5]),
            num_heads=heads, head_dim=head_dim, hidden_size=hidden_size_of(model),
            num_layers=num_layers, alpha=4.0,
        )  # fmt: skip
    if kind == "lora":
        return _lora(model, lora_target_modules(model))
    raise AssertionError(kind)


def _lora(model, names, rank=2):
    generator = torch.Generator().manual_seed(2)
    factors_a, factors_b = [], []
    for name in names:
        weight = model.get_submodule(name).weight
        shape = (
            weight.shape
            if isinstance(model.get_submodule(name), torch.nn.Linear)
            else (weight.shape[1], weight.shape[0])
        )  # (out, in); GPT-2's Conv1D stores (in, out)
        factors_a.append(torch.randn(rank, shape[1], generator=generator) * 0.3)
        factors_b.append(torch.randn(shape[0], rank, generator=generator) * 0.3)
    return LoRAEditor(
        modules=tuple(names), lora_A=tuple(factors_a), lora_B=tuple(factors_b),
        scalings=(2.0,) * len(names), hidden_size=hidden_size_of(model),
        num_layers=model.config.num_hidden_layers, alpha=1.5,
    )  # fmt: skip


def _logits(model, tokenizer, prompts=PROMPTS):
    with torch.no_grad():
        return [model(**tokenizer(p, return_tensors="pt")).logits.float() for p in prompts]


def _max_diff(first, second):
    return max(float((a - b).abs().max()) for a, b in zip(first, second, strict=True))


def _model(arch):
    """A tiny model whose biases (zero at initialisation) are random, so that a fold that
    mishandles an existing bias shows."""
    model = make_tiny_model(arch)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(".bias"):
                parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
    return model


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tokenizer():
    return make_tiny_tokenizer()


@pytest.mark.parametrize("kind", list(EXPORTABLE))
@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_export_round_trips_or_refuses(arch, kind, tokenizer, tmp_path):
    model = _model(arch)
    editor = _editor(kind, model)
    out = tmp_path / "exported"
    before = _state(model)
    if arch not in EXPORTABLE[kind]:
        with pytest.raises(ExportRefused, match="bias") as refused:
            export_model(model, tokenizer, editor, out, check=False)
        message = str(refused.value)
        if kind == "sea-centred":
            assert "center_edit=False" in message  # the option that makes it exportable
        elif arch in ("gemma2", "gemma3") and "residual" in kind:
            assert "post-feedforward norm" in message and "site='mlp'" in message
        else:
            assert "serve it with hooks" in message and "docs/serving.md" in message
        assert not out.exists()
        return
    unedited = _logits(model, tokenizer)
    with editor.apply(model):
        hooked = _logits(model, tokenizer)
    assert _max_diff(hooked, unedited) > 1e-2  # the edit is real, so equality means something
    result = export_model(model, tokenizer, editor, out, check=False)
    assert result.plan.folds
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the model is untouched

    exported = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    exported.eval()
    assert _max_diff(_logits(exported, tokenizer), hooked) <= 1e-4
    assert type(exported) is type(model)
    loaded_tokenizer = AutoTokenizer.from_pretrained(out)
    assert loaded_tokenizer("the sea")["input_ids"] == tokenizer("the sea")["input_ids"]

    record = json.loads((out / EXPORT_FILE).read_text())
    assert record["editor"]["kind"] == editor.FORMAT.name
    assert record["editor"]["content_sha256"] == editor_header(editor)["content_sha256"]
    assert record["config_changes"] == dict(result.plan.config_flags)
    assert {f["module"] for f in record["folds"]} == {f["module"] for f in result.plan.folds}
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config  # no custom code: plain transformers classes


def test_check_passes_and_is_recorded(tokenizer, tmp_path):
    model = make_tiny_model("llama")
    editor = _editor("sea-centred", model)
    result = export_model(model, tokenizer, editor, tmp_path / "m", prompts=PROMPTS[:2])
    assert result.max_logit_diff is not None and 0 <= result.max_logit_diff <= 1e-4
    assert result.plan.config_flags == {"mlp_bias": True}
    record = json.loads((tmp_path / "m" / EXPORT_FILE).read_text())
    assert record["check"]["prompts"] == 2
    assert record["check"]["max_abs_logit_diff"] == result.max_logit_diff
    assert record["base_model"]["model_type"] == "llama"
    assert {f["fold"] for f in record["folds"]} == {"matrix+bias"}
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["mlp_bias"] is True


def test_a_failed_check_writes_nothing(tokenizer, tmp_path):
    model = make_tiny_model("gpt2")
    editor = _editor("sea", model)
    out = tmp_path / "m"
    with pytest.raises(ExportCheckFailed, match="tolerance|differ"):
        export_model(model, tokenizer, editor, out, tolerance=1e-15)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_refuses_an_existing_folder(tokenizer, tmp_path):
    model = make_tiny_model("llama")
    (tmp_path / "m").mkdir()
    with pytest.raises(OutputError, match="already exists"):
        export_model(model, tokenizer, _editor("sea", model), tmp_path / "m")


def test_zero_strength_exports_the_unedited_model(tokenizer, tmp_path):
    model = make_tiny_model("qwen2")
    editor = _editor("sea", model).with_options(alpha=0.0)
    result = export_model(model, tokenizer, editor, tmp_path / "m", check=False)
    assert result.plan.folds == () and dict(result.plan.tensors) == {}
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32)
    theirs, ours = exported.state_dict(), model.state_dict()
    assert set(theirs) == set(ours) and all(torch.equal(theirs[k], ours[k]) for k in ours)


def test_only_the_active_layers_are_folded(tokenizer):
    model = make_tiny_model("mistral")
    editor = _editor("sea", model).with_options(layers=[1])
    plan = plan_export(model, editor)
    assert [f["layer"] for f in plan.folds] == [1]
    assert set(plan.tensors) == {"model.layers.1.mlp.down_proj.weight"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"merge": "norm"}, "merge='mean'"),
        ({"positions": "answer"}, "positions='all'"),
        ({"positions": "generated"}, "positions='all'"),
    ],
)
def test_sea_options_that_do_not_fold_are_refused(change, expected, tokenizer, tmp_path):
    model = make_tiny_model("llama")
    editor = _editor("sea", model).with_options(**change)
    with pytest.raises(ExportRefused, match=expected.replace("(", r"\(")):
        export_model(model, tokenizer, editor, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_phi_sea_is_refused(tokenizer, tmp_path):
    model = make_tiny_model("llama")
    neutral, positive, negative = _activations(model)
    editor = fit_from_arrays(
        neutral, positive, negative, layers=[0, 1], num_layers=2, feature="tanh",
        merge="mean", site="mlp", pos_rank=2, neg_rank=2,
    )  # fmt: skip
    with pytest.raises(ExportRefused, match="Φ-SEA.*--feature linear"):
        export_model(model, tokenizer, editor, tmp_path / "m")


@pytest.mark.parametrize("kind", ["sea", "leace"])
def test_a_residual_site_map_is_refused(kind, tokenizer, tmp_path):
    model = make_tiny_model("gpt2")  # biases everywhere: the site alone is the reason
    neutral, positive, negative = _activations(model)
    if kind == "sea":
        editor = fit_from_arrays(
            neutral, positive, negative, layers=[0, 1], num_layers=2, merge="mean",
            site="residual", pos_rank=2, neg_rank=2,
        )  # fmt: skip
    else:
        editor = LeaceEditor.fit(positive, negative + 2, layers=[0, 1], num_layers=2)
    with pytest.raises(ExportRefused, match="residual site.*site"):
        export_model(model, tokenizer, editor, tmp_path / "m")


def test_lora_on_a_tied_weight_is_refused(tokenizer, tmp_path):
    model = make_tiny_model("gemma3")  # lm_head shares the embedding matrix
    editor = _lora(model, ["lm_head"])
    with pytest.raises(ExportRefused, match="tied"):
        export_model(model, tokenizer, editor, tmp_path / "m")


def test_gemma_post_norm_mlp_matrix_folds_exactly(tokenizer, tmp_path):
    """Gemma normalises the MLP's output after the edit site: the matrix goes on down_proj,
    inside the norm, exactly where the hook edits (the round trip would fail otherwise)."""
    model = make_tiny_model("gemma3")
    editor = _editor("sea", model)
    plan = plan_export(model, editor)
    assert {f["module"] for f in plan.folds} == {
        f"model.layers.{i}.mlp.down_proj" for i in range(3)
    }
    assert hasattr(model.model.layers[0], "post_feedforward_layernorm")


def test_cli_export_end_to_end(tokenizer, tmp_path):
    model = make_tiny_model("llama")
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    editor = _editor("sea-centred", model)
    editor.save(tmp_path / "editor.safetensors")
    out = tmp_path / "exported"
    args = [
        "export",
        "--model",
        str(tmp_path / "base"),
        "--editor",
        str(tmp_path / "editor.safetensors"),
    ]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--alpha", "0.8"])
    assert result.exit_code == 0, result.output
    assert "max |Δlogit|" in result.output and "mlp_bias=True" in result.output

    hooked_editor = editor.with_options(alpha=0.8)
    with hooked_editor.apply(model):
        hooked = _logits(model, tokenizer)
    exported = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert _max_diff(_logits(exported, tokenizer), hooked) <= 1e-4
    record = json.loads((out / EXPORT_FILE).read_text())
    header, _ = read_editor_file(tmp_path / "editor.safetensors", "spectral-edit/sea", 1, ())
    assert record["editor"]["source"]["name"] == "editor.safetensors"
    assert record["editor"]["options"]["alpha"] == 0.8
    assert header["content_sha256"] == editor_header(editor)["content_sha256"]

    again = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output

    editor.with_options(merge="norm").save(tmp_path / "norm.safetensors")
    norm_args = [*args[:-1], str(tmp_path / "norm.safetensors"), "--out", str(tmp_path / "norm")]
    refused = CliRunner().invoke(app, norm_args)
    assert refused.exit_code == 2
    assert "norm merge" in refused.output and "--merge mean" in refused.output
    assert not (tmp_path / "norm").exists()


@pytest.mark.real_model
def test_real_model_export_matches_hooks(real_model, tmp_path):
    """gemma-3-270m (float32): a linear mean-merge MLP-site SEA editor on two layers folds
    into down_proj with the hooked model's logits (the export's own check, 1e-4)."""
    model, tokenizer = real_model
    d = hidden_size_of(model)
    generator = torch.Generator().manual_seed(0)
    neutral, positive, negative = (
        torch.randn(24, 2, d, generator=generator, dtype=torch.float64) * 5 for _ in range(3)
    )
    editor = fit_from_arrays(
        neutral, positive, negative, layers=[12, 16], num_layers=18, merge="mean",
        site="mlp", pos_rank=4, neg_rank=4,
    )  # fmt: skip
    result = export_model(model, tokenizer, editor, tmp_path / "gemma", prompts=PROMPTS[:2])
    assert result.max_logit_diff is not None and result.max_logit_diff <= 1e-4
    assert result.plan.config_flags == {}
    assert (tmp_path / "gemma" / "tokenizer.json").exists()


def test_a_map_that_is_not_affine_is_refused_by_its_values():
    """The safety net behind the option checks: the norm merge's own edit, read as a map,
    fails the affinity check."""
    from spectral_edit.editors.fold import affine_map

    model = make_tiny_model("llama")
    editor = _editor("sea", model).with_options(merge="norm")
    with pytest.raises(ExportRefused, match="not an affine map"):
        affine_map(lambda h: editor.edit(h, 0), editor.hidden_size, "the norm-merge edit")
    a, c = affine_map(lambda h: _editor("sea", model).edit(h, 0), editor.hidden_size, "SEA")
    assert torch.allclose(a, a.T) and float(c.abs().max()) == 0  # (1−α)I + α(P+ + P-)/2
