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


# --------------------------------------------------------------- outputs under an edit
REQUESTS = [
    ChoiceRequest("Q: Is the sky green?\nA:", (" yes", " no", " maybe so")),
    ChoiceRequest("Q: What is 2 and 2?\nA:", (" the answer is 4", " 5", " no")),
    ChoiceRequest("Q: Where is the river?\nA:", (" north", " in the stone", " yes")),
]
NEUTRAL = ["The lamp is on the table.", "A river runs north of the stone.", "Paper is white."]


def _scores(model, tokenizer, readout=None):
    kwargs = {} if readout is None else {"readout": readout}
    scored = score_requests(model, tokenizer, REQUESTS, shared_prefix="Q:", batch_size=2, **kwargs)
    return torch.tensor([[s.logprob for s in row] for row in scored], dtype=torch.float64)


def test_scores_and_greedy_generation_under_every_editor_equal_the_in_memory_model(models):
    from spectral_edit.evaluate.readout import DoLaReadout

    memory, dispatched, tokenizer = models
    prompts = ["Q: What is the answer?\nA:", "Q: Is the lamp on?\nA: yes, and"]
    dola = DoLaReadout(hidden_states=(0,))
    for name, editor in _editors(models).items():
        seen = []
        for model in (memory, dispatched):
            with editor.apply(model):
                texts = generate_greedy(model, tokenizer, prompts, max_new_tokens=8, stops=())
                seen.append((_scores(model, tokenizer), _scores(model, tokenizer, dola), texts))
        (alone, alone_dola, alone_text), (spread, spread_dola, spread_text) = seen
        assert not torch.allclose(alone, _scores(memory, tokenizer), atol=1e-4), name
        torch.testing.assert_close(spread, alone, atol=1e-5, rtol=0, msg=name)
        torch.testing.assert_close(spread_dola, alone_dola, atol=1e-5, rtol=0, msg=name)
        assert spread_text == alone_text, name
        assert all(t for t in alone_text), name  # something was generated


def test_kl_and_the_contrast_readout_kl_equal_the_in_memory_model(models):
    from spectral_edit.evaluate.contrast import Companion, ContrastReadout
    from spectral_edit.evaluate.kl import build_kl_reference, measure_kl, measure_readout_kl

    memory, dispatched, tokenizer = models
    editors = _editors(models)
    results = []
    for model in (memory, dispatched):
        reference = build_kl_reference(model, tokenizer, NEUTRAL, batch_size=2)
        kl = measure_kl(model, reference, editors["sea"])
        # ICD's readout: the model contrasted with itself under an editor, run on the
        # offloaded model as companion too (its LM head's weights wait on meta)
        readout = ContrastReadout(Companion(model, editors["mean-diff"]), beta=1.0)
        readout_kl = measure_readout_kl(model, reference, readout)
        results.append((torch.cat(reference.hidden), kl.values, readout_kl.values))
    (hidden_a, kl_a, rkl_a), (hidden_b, kl_b, rkl_b) = results
    torch.testing.assert_close(hidden_b, hidden_a, atol=1e-5, rtol=0)
    assert kl_a.max() > 1e-4 and rkl_a.max() > 1e-4  # both edits move the distribution
    assert kl_b == pytest.approx(kl_a, abs=1e-5)
    assert rkl_b == pytest.approx(rkl_a, abs=1e-5)


def test_onloaded_brings_offloaded_weights_in_and_out_again(models):
    from spectral_edit.hf.devices import offload_hooks, onloaded

    memory, dispatched, tokenizer = models
    assert offload_hooks(memory) == []
    names = {n for n, p in dispatched.named_parameters() if p.device.type == "meta"}
    with onloaded(dispatched):
        state = dispatched.state_dict()
        dispatched(**tokenizer(TEXTS[:1], return_tensors="pt"))  # a forward pass inside
        assert all(v.device.type == "cpu" for v in dispatched.state_dict().values())
    for key, value in memory.state_dict().items():
        assert torch.equal(state[key], value), key
    assert {n for n, p in dispatched.named_parameters() if p.device.type == "meta"} == names
    torch.testing.assert_close(_logits(dispatched, tokenizer), _logits(memory, tokenizer))


# ------------------------------------------------------------------- more commands
def _where(tmp_path: Path, name: str = "off") -> list[str]:
    return ["--device-map", json.dumps(DEVICE_MAP), "--offload-folder", str(tmp_path / name)]


def test_sea_capture_with_an_offloaded_model(tmp_path: Path, model_dir: Path):
    from spectral_edit.demos.activations_file import load_activations

    demos = write_demos(tmp_path / "demos.jsonl", DEMOS)
    args = ["capture", "--model", str(model_dir), "--demos", str(demos), "--neutral", "prompt"]
    for name, extra in (("memory", []), ("offload", _where(tmp_path))):
        result = CliRunner().invoke(app, [*args, *extra, "--out", str(tmp_path / f"{name}.st")])
        assert result.exit_code == 0, result.output
    (alone, _), (spread, _) = (
        load_activations(tmp_path / f"{n}.st") for n in ("memory", "offload")
    )
    for part in ("neutral", "positive", "negative"):
        torch.testing.assert_close(getattr(spread, part), getattr(alone, part), atol=1e-5, rtol=0)


def test_sea_export_of_an_offloaded_model_equals_the_in_memory_export(
    tmp_path: Path, model_dir: Path, models
):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from spectral_edit.editors.sea_fit import fit_from_arrays

    memory, _, tokenizer = models
    g = torch.Generator().manual_seed(3)
    neutral, positive, negative = (3 * torch.randn(12, 2, 32, generator=g) for _ in "abc")
    editor = fit_from_arrays(
        neutral, positive, negative + 2.0, merge="mean", site="mlp", pos_rank=3, neg_rank=3,
        alpha=1.5, layers=[0, 1], num_layers=2,
    ).with_options(center_edit=True)  # fmt: skip
    editor.save(tmp_path / "editor.safetensors")
    args = ["export", "--model", str(model_dir), "--editor", str(tmp_path / "editor.safetensors")]
    for name, extra in (("memory", []), ("offload", _where(tmp_path))):
        result = CliRunner().invoke(app, [*args, *extra, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert "max |Δlogit|" in result.output
    alone, spread = (load_file(tmp_path / n / "model.safetensors") for n in ("memory", "offload"))
    assert set(spread) == set(alone) and "model.layers.0.mlp.down_proj.bias" in alone
    for key, value in alone.items():  # layer 0 (folded) was on disk when it was exported
        torch.testing.assert_close(spread[key], value, atol=1e-6, rtol=0, msg=key)
    with editor.apply(memory):
        hooked = _logits(memory, tokenizer)
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "offload", dtype=torch.float32)
    torch.testing.assert_close(_logits(exported, tokenizer), hooked, atol=1e-4, rtol=0)


def _numbers(value, path=""):
    """Every number of a JSON value by its path, but timings (and costs in time)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not any(word in key for word in ("second", "time", "overhead", "_ms")):
                out.update(_numbers(item, f"{path}/{key}"))
        return out
    if isinstance(value, list):
        out = {}
        for index, item in enumerate(value):
            out.update(_numbers(item, f"{path}/{index}"))
        return out
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return {}
    return {path: float(value)}


def test_sea_compare_with_an_offloaded_model_finds_what_the_in_memory_model_finds(
    tmp_path: Path, model_dir: Path
):
    import shutil

    from tests.cli_runs import FIXTURES, compare_args

    data = tmp_path / "data"
    shutil.copytree(FIXTURES, data)
    demos = write_demos(tmp_path / "demos.jsonl", DEMOS)
    reports = []
    for name, extra in (("memory", []), ("offload", _where(tmp_path))):
        out = tmp_path / name
        args = [str(a) for a in compare_args(model_dir, demos, data, out)]
        result = CliRunner().invoke(app, [*args, "--dtype", "float32", *extra])
        assert result.exit_code == 0, result.output
        reports.append(json.loads((out / "report.json").read_text()))
    alone, spread = (_numbers(r) for r in reports)
    assert len(alone) > 5 and set(spread) == set(alone), sorted(alone)
    # the held-out figures of an edited model are compared, not only the unedited ones
    assert alone["/methods/mean-diff/mc2"] != alone["/methods/none/mc2"]
    for key, value in alone.items():
        assert spread[key] == pytest.approx(value, abs=1e-5, nan_ok=True), key
    assert reports[1]["methods"].keys() == reports[0]["methods"].keys()


def _commands(group, prefix=()):
    """``(path, click command)`` of every command of the ``sea`` app (groups recursed)."""
    for name, command in group.commands.items():
        if getattr(command, "commands", None):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def test_every_command_with_a_device_map_takes_an_offload_folder(tmp_path: Path, model_dir: Path):
    import typer.main

    params = {
        path: {p.name for p in c.params} for path, c in _commands(typer.main.get_command(app))
    }
    with_map = {path for path, names in params.items() if "device_map" in names}
    assert {("tune",), ("compare",), ("export",), ("sweep",), ("capture",), ("demo",)} <= with_map
    assert {("eval", "truthfulqa"), ("fit",), ("generate",)} <= with_map
    assert [path for path in with_map if "offload_folder" not in params[path]] == []
    # sea demo reads the JSON map (it once passed the text on as it was)
    demo = ["demo", "--model", str(model_dir), "--out", str(tmp_path / "demo")]
    missing = CliRunner().invoke(app, [*demo, "--device-map", json.dumps(DEVICE_MAP)])
    assert missing.exit_code == 2 and "--offload-folder" in missing.output, missing.output
    bad = CliRunner().invoke(app, [*demo, "--device-map", "{model: disk}"])
    assert bad.exit_code == 2 and "not valid JSON" in bad.output, bad.output
