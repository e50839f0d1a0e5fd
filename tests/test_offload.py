"""Models larger than one device: editors on a model dispatched by accelerate, with some
decoder layers, the embeddings and the LM head offloaded to disk and the rest on the CPU,
give what they give on the same model in memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip(
    "accelerate", reason="dispatching a model (device_map) needs the accelerate extra"
)

from typer.testing import CliRunner  # noqa: E402

from spectral_edit.cli.app import app  # noqa: E402
from spectral_edit.core.options import SeaOptions  # noqa: E402
from spectral_edit.demos.format import Demonstration, write_demos  # noqa: E402
from spectral_edit.editors.baselines.lora import LoRAEditor  # noqa: E402
from spectral_edit.editors.baselines.mean_diff import MeanDifferenceEditor  # noqa: E402
from spectral_edit.evaluate.kl import token_kl  # noqa: E402
from spectral_edit.evaluate.scorer import ChoiceRequest, score_requests  # noqa: E402
from spectral_edit.experiments.pipeline import fit_editor  # noqa: E402
from spectral_edit.hf.capture import capture  # noqa: E402
from spectral_edit.hf.devices import execution_device  # noqa: E402
from spectral_edit.hf.generation import generate_greedy  # noqa: E402
from spectral_edit.hf.models import load_model, parse_device_map  # noqa: E402
from spectral_edit.hf.tokens import input_device  # noqa: E402
from tests.tiny_models import make_tiny_model, make_tiny_tokenizer  # noqa: E402

DEVICE_MAP = {
    "model.embed_tokens": "disk",
    "model.layers.0": "disk",
    "model.layers.1": "cpu",
    "model.norm": "cpu",
    "model.rotary_emb": "cpu",
    "lm_head": "disk",
}
"""A tiny Llama (2 layers) with its first layer, embeddings and LM head on disk."""

TEXTS = ["Q: Is the sky green?\nA: no", "Q: What is 2 and 2?\nA: the answer is 4"]
DEMOS = [
    Demonstration(f"Q: question {i} about {w}?\nA:", f" yes {w} is true", f" no {i} is false")
    for i, w in enumerate(["apple", "river", "stone", "cloud", "lamp", "green", "north", "paper"])
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_model("llama", seed=4).save_pretrained(folder)
    make_tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """``(in memory, dispatched with disk offload, tokenizer)``."""
    memory, tokenizer = load_model(str(model_dir))
    offload = tmp_path_factory.mktemp("offload")
    dispatched, _ = load_model(str(model_dir), device_map=DEVICE_MAP, offload_folder=offload)
    return memory, dispatched, tokenizer


def _logits(model, tokenizer) -> torch.Tensor:
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


def test_the_model_is_really_offloaded(models):
    _, dispatched, _ = models
    assert dispatched.hf_device_map == DEVICE_MAP
    offloaded = {n for n, p in dispatched.named_parameters() if p.device.type == "meta"}
    assert "model.layers.0.mlp.down_proj.weight" in offloaded
    assert "lm_head.weight" in offloaded and "model.embed_tokens.weight" in offloaded
    assert "model.layers.1.mlp.down_proj.weight" not in offloaded
    # the library finds where the offloaded modules run (their weights wait on meta)
    assert input_device(dispatched) == torch.device("cpu")
    assert execution_device(dispatched.lm_head) == torch.device("cpu")


def test_capture_and_sea_fit_equal_the_in_memory_model(models):
    memory, dispatched, tokenizer = models
    for site in ("residual", "mlp"):
        alone = capture(memory, tokenizer, TEXTS, layers=[0, 1], site=site)
        spread = capture(dispatched, tokenizer, TEXTS, layers=[0, 1], site=site)
        torch.testing.assert_close(spread, alone, atol=1e-5, rtol=0)
    options = SeaOptions(layers="all", neutral="prompt", pos_ratio=0.9, neg_ratio=0.9)
    editors = [fit_editor(m, tokenizer, DEMOS, options) for m in (memory, dispatched)]
    assert editors[0].ranks == editors[1].ranks
    for a, b in zip(editors[0].pos_factors, editors[1].pos_factors, strict=True):
        torch.testing.assert_close(a @ a.T, b @ b.T, atol=1e-5, rtol=0)


def _editors(models):
    memory, _, tokenizer = models
    options = SeaOptions(layers="all", neutral="prompt", pos_ratio=0.9, neg_ratio=0.9)
    sea = fit_editor(memory, tokenizer, DEMOS, options)
    g = torch.Generator().manual_seed(0)
    mean_diff = MeanDifferenceEditor(
        layers=(0, 1), vectors=tuple(torch.randn(32, generator=g) for _ in range(2)),
        hidden_size=32, num_layers=2, alpha=0.5,
    )  # fmt: skip
    names = ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj")
    lora = LoRAEditor(
        modules=names,
        lora_A=(torch.randn(2, 32, generator=g), torch.randn(2, 64, generator=g)),
        lora_B=(torch.randn(32, 2, generator=g), torch.randn(32, 2, generator=g)),
        scalings=(0.5, 0.5), hidden_size=32, num_layers=2,
    )  # fmt: skip
    return {"sea": sea, "sea-answer": sea.with_options(positions="answer"), "mean-diff": mean_diff,
            "lora": lora}  # fmt: skip


def test_editors_give_the_in_memory_logits_and_come_off_cleanly(models):
    memory, dispatched, tokenizer = models
    unedited = _logits(dispatched, tokenizer)
    torch.testing.assert_close(unedited, _logits(memory, tokenizer), atol=1e-5, rtol=0)
    for name, editor in _editors(models).items():
        with editor.apply(memory):
            alone = _logits(memory, tokenizer)
        with editor.apply(dispatched):
            spread = _logits(dispatched, tokenizer)
        assert not torch.allclose(alone, unedited, atol=1e-4), name  # the edit does something
        torch.testing.assert_close(spread, alone, atol=1e-5, rtol=0, msg=name)
        # hooks removed: the offloaded model computes exactly what it did unedited
        assert torch.equal(_logits(dispatched, tokenizer), unedited), name


def test_scorer_generation_and_kl_on_the_offloaded_model(models):
    memory, dispatched, tokenizer = models
    sea = _editors(models)["sea"]
    requests = [ChoiceRequest("Q: Is the sky green?\nA:", (" yes", " no", " maybe so"))]
    prompts = ["Q: What is the answer?\nA:"]
    results = []
    for model in (memory, dispatched):
        with sea.apply(model):
            scores = score_requests(model, tokenizer, requests, shared_prefix="Q:")
            text = generate_greedy(model, tokenizer, prompts, max_new_tokens=6, stops=())
        results.append(([s.logprob for s in scores[0]], text))
    assert results[1][1] == results[0][1]
    assert results[1][0] == pytest.approx(results[0][0], abs=1e-4)
    states = torch.randn(5, 32, generator=torch.Generator().manual_seed(1))
    kl = [token_kl(model, states + 0.1, states) for model in (memory, dispatched)]
    torch.testing.assert_close(kl[1], kl[0], atol=1e-6, rtol=0)


def test_device_maps_from_the_command_line(tmp_path: Path, model_dir: Path):
    assert parse_device_map(None) is None and parse_device_map("auto") == "auto"
    assert parse_device_map(json.dumps(DEVICE_MAP)) == DEVICE_MAP
    (tmp_path / "map.json").write_text(json.dumps(DEVICE_MAP))
    assert parse_device_map(str(tmp_path / "map.json")) == DEVICE_MAP
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_device_map("{model: disk}")
    with pytest.raises(ValueError, match="module names to devices"):
        parse_device_map('{"model": ["cpu"]}')
    with pytest.raises(ValueError, match="offload_folder"):
        load_model(str(model_dir), device_map=DEVICE_MAP)


def test_sea_fit_and_generate_with_an_offloaded_model_on_the_command_line(
    tmp_path: Path, model_dir: Path, models
):
    demos = write_demos(tmp_path / "demos.jsonl", DEMOS)
    where = ["--device-map", json.dumps(DEVICE_MAP), "--offload-folder", str(tmp_path / "off")]
    model = ["--model", str(model_dir), "--dtype", "float32"]
    runner = CliRunner()
    fit = [*model, "--demos", str(demos), "--neutral", "prompt", "--layers", "all"]
    fit += ["--pos-ratio", "0.9", "--neg-ratio", "0.9"]
    for name, extra in (("memory", []), ("offload", where)):
        out = tmp_path / f"{name}.safetensors"
        result = runner.invoke(app, ["fit", *fit, *extra, "--out", str(out)])
        assert result.exit_code == 0, result.output
    from spectral_edit.editors.sea import SpectralEditor

    alone, spread = (
        SpectralEditor.load(tmp_path / f"{n}.safetensors") for n in ("memory", "offload")
    )
    assert alone.ranks == spread.ranks
    for a, b in zip(alone.neg_factors, spread.neg_factors, strict=True):
        torch.testing.assert_close(a @ a.T, b @ b.T, atol=1e-5, rtol=0)
    result = runner.invoke(
        app, ["generate", *model, *where, "--editor", str(tmp_path / "offload.safetensors"),
              "--max-new-tokens", "4", "Q: Is it?"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    missing = runner.invoke(app, ["generate", *model, "--device-map", json.dumps(DEVICE_MAP), "Q"])
    assert missing.exit_code == 2 and "--offload-folder" in missing.output
