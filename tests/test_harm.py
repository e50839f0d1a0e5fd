"""Harm measures: KL(edited ‖ unedited) on neutral text and free-generation quality, on
tiny models (and the ``sea eval harm`` command on a tiny model folder)."""

import json
import math
import shutil

import pytest
import torch
from typer.testing import CliRunner

from spectral_edit.cli.app import app
from spectral_edit.data import DataFormatError
from spectral_edit.data.halueval import load_halueval_general
from spectral_edit.editors.baselines.mean_diff import MeanDifferenceEditor
from spectral_edit.evaluate import harm as harm_module
from spectral_edit.evaluate.harm import (
    OPEN_PROMPTS,
    HarmPrompt,
    build_harm_reference,
    default_prompts,
    evaluate_harm,
    harm_prompts,
    neutral_texts,
)
from spectral_edit.evaluate.kl import KL_CHUNK, build_kl_reference, measure_kl
from spectral_edit.evaluate.scorer import ChoiceRequest, score_requests
from spectral_edit.hf.heads import decoder_and_head
from spectral_edit.hf.layers import find_decoder_layers
from spectral_edit.hf.tokens import encode
from tests.test_editor import _random_editor
from tests.tiny_models import make_tiny_model, make_tiny_tokenizer

FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures" / "data"

TEXTS = [
    "the cat sat on the mat and looked at the door for a long time",
    "a b",
    "Photosynthesis turns light, water and air into sugar; it is how plants grow.",
    "no",
    "The answer to the question is in the book of the library in town, on a shelf "
    "near the window, next to the old atlas and a map of the river.",
]

GENERAL = [
    {"ID": "1", "user_query": "q1", "chatgpt_response": "First response.", "hallucination": "no"},
    {"ID": "2", "user_query": "q2", "chatgpt_response": "   ", "hallucination": "no"},
    {"ID": "3", "user_query": "q3", "chatgpt_response": "Third, longer.", "hallucination": "yes"},
    {"ID": "4", "chatgpt_response": "Fourth.", "hallucination_label": "no"},
]


def _mean_diff(model, *, alpha=1.0, scale=1.0, zero=False, seed=0):
    blocks = len(find_decoder_layers(model))
    d = model.config.get_text_config().hidden_size
    gen = torch.Generator().manual_seed(seed)
    vectors = tuple(
        torch.zeros(d) if zero else scale * torch.randn(d, generator=gen) for _ in range(blocks)
    )
    return MeanDifferenceEditor(
        layers=tuple(range(blocks)),
        vectors=vectors,
        hidden_size=d,
        num_layers=blocks,
        alpha=alpha,
    )


def _direct_kl(model, tokenizer, editor, texts, max_tokens):
    """Per-text KL(edited ‖ unedited) from two full forward passes per text (no padding)."""
    out = []
    for text in texts:
        ids = torch.tensor([encode(tokenizer, text)[:max_tokens]])
        with torch.no_grad():
            plain = torch.log_softmax(model(ids).logits[0].double(), -1)
            with editor.apply(model):
                edited = torch.log_softmax(model(ids).logits[0].double(), -1)
        out.append((edited.exp() * (edited - plain)).sum(-1))
    return out


@pytest.fixture(scope="module")
def tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture(scope="module")
def llama():
    return make_tiny_model("llama")


def _write_general(folder, records=GENERAL):
    path = folder / "halueval" / "general_data.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- KL


def test_reference_truncates_and_keeps_every_position(llama, tokenizer):
    reference = build_kl_reference(llama, tokenizer, TEXTS, max_tokens=20, batch_size=2)
    d = llama.config.hidden_size
    for text, ids, hidden in zip(TEXTS, reference.token_ids, reference.hidden, strict=True):
        full = encode(tokenizer, text)
        assert ids.tolist() == full[:20] and ids.dtype == torch.long
        assert hidden.shape == (len(ids), d) and hidden.dtype == torch.float32
        assert hidden.device.type == "cpu"
    assert reference.n_tokens == sum(min(len(encode(tokenizer, t)), 20) for t in TEXTS)
    result = measure_kl(llama, reference)
    assert [len(v) for v in result.per_text] == [len(ids) for ids in reference.token_ids]
    assert result.summary["tokens"] == reference.n_tokens
    assert result.summary["texts"] == len(TEXTS)
    with pytest.raises(ValueError):
        build_kl_reference(llama, tokenizer, [])


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gemma3", "gpt2"])
def test_kl_is_exactly_zero_for_alpha_zero_and_identity(arch, tokenizer):
    model = make_tiny_model(arch)
    reference = build_kl_reference(model, tokenizer, TEXTS, max_tokens=24, batch_size=2)
    editors = [
        None,
        _mean_diff(model, scale=5.0).with_options(alpha=0),
        _mean_diff(model, zero=True),
        _random_editor(model).with_options(alpha=0.0),
    ]
    for editor in editors:
        summary = measure_kl(model, reference, editor).summary
        assert summary["kl_mean"] == 0.0 and summary["kl_max"] == 0.0, editor
        assert summary["kl_p95"] == 0.0


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])
def test_kl_equals_direct_computation_with_padding(arch, tokenizer):
    """Batched with right padding of different lengths (and Gemma 2's soft-capping), the KL
    equals the one from full forward passes of each text alone."""
    model = make_tiny_model(arch)
    reference = build_kl_reference(model, tokenizer, TEXTS, max_tokens=24, batch_size=3)
    for editor in (_mean_diff(model, scale=0.5), _random_editor(model)):
        result = measure_kl(model, reference, editor)
        expected = _direct_kl(model, tokenizer, editor, TEXTS, 24)
        for got, want in zip(result.per_text, expected, strict=True):
            assert got.dtype == torch.float64
            torch.testing.assert_close(got, want, rtol=2e-6, atol=1e-9)
        values = torch.cat(result.per_text)
        assert (values >= 0).all() and values.mean() > 1e-4
        summary = result.summary
        assert summary["kl_mean"] == pytest.approx(float(values.mean()))
        assert summary["kl_max"] == pytest.approx(float(values.max()))
        assert summary["kl_p95"] == pytest.approx(float(torch.quantile(values, 0.95)))
        assert summary["kl_p95"] <= summary["kl_max"]


def test_reference_is_computed_once_and_logits_only_in_chunks(llama, tokenizer):
    """Measuring runs the base model once per batch (the edited side only), never the full
    model forward, and the LM head on at most KL_CHUNK tokens at a time."""
    base, head = decoder_and_head(llama)
    calls = {"base": 0, "model": 0, "head_rows": []}
    handles = [
        base.register_forward_pre_hook(lambda m, a: calls.__setitem__("base", calls["base"] + 1)),
        llama.register_forward_pre_hook(
            lambda m, a: calls.__setitem__("model", calls["model"] + 1)
        ),
        head.register_forward_pre_hook(lambda m, a: calls["head_rows"].append(a[0].shape[0])),
    ]
    try:
        reference = build_kl_reference(llama, tokenizer, TEXTS, max_tokens=40, batch_size=2)
        assert calls["base"] == 3 and not calls["head_rows"]  # 5 texts in batches of 2
        first = measure_kl(llama, reference, _mean_diff(llama, scale=0.5))
        second = measure_kl(llama, reference, _random_editor(llama))
        assert calls["base"] == 3 + 3 + 3  # one edited pass per batch per editor
        assert calls["model"] == 0
        assert max(calls["head_rows"]) <= KL_CHUNK
        # both sides through the head once per changed token, for both editors
        assert sum(calls["head_rows"]) == 2 * 2 * reference.n_tokens
        assert reference.n_tokens > KL_CHUNK
        assert first.summary["kl_mean"] != second.summary["kl_mean"]
    finally:
        for handle in handles:
            handle.remove()


# ----------------------------------------------------------------------- data


def test_neutral_texts_skip_blank_in_file_order(tmp_path):
    _write_general(tmp_path)
    assert neutral_texts(tmp_path, None) == [
        "First response.",
        "Third, longer.",
        "Fourth.",
    ]
    assert neutral_texts(tmp_path, 2) == ["First response.", "Third, longer."]
    assert neutral_texts(tmp_path, 2, offset=2) == ["Fourth."]
    records = load_halueval_general(tmp_path / "halueval" / "general_data.json")
    assert [r.hallucination for r in records] == ["no", "no", "yes", "no"]
    assert records[3].user_query == "" and records[0].user_query == "q1"
    bad = _write_general(tmp_path / "bad", [GENERAL[0], {"ID": "2", "user_query": "x"}])
    with pytest.raises(DataFormatError, match="chatgpt_response") as info:
        load_halueval_general(bad)
    assert "line 2" in str(info.value) or ":2" in str(info.value)


def test_default_prompts_are_qa_then_open():
    prompts = default_prompts(FIXTURES, 2, mc_file="mc_task.json")
    assert [p.kind for p in prompts] == ["qa", "qa"] + ["open"] * len(OPEN_PROMPTS)
    assert prompts[0].text.endswith("\nA:") and "Q: What colour is the sky" in prompts[0].text
    assert prompts[0].shown.startswith("Q: What colour")
    assert [p.text for p in prompts[2:]] == list(OPEN_PROMPTS)
    assert prompts[0].stops and prompts[-1].stops == ()


# ------------------------------------------------------------------ evaluate_harm


PROMPTS = harm_prompts(["Is the sky blue?", "What is the answer?"], OPEN_PROMPTS[:2])


@pytest.fixture(scope="module")
def harm_reference(llama, tokenizer):
    return build_harm_reference(
        llama, tokenizer, texts=TEXTS, prompts=PROMPTS, max_tokens=24, gen_tokens=10, batch_size=2
    )


def test_alpha_zero_reproduces_the_unedited_side(llama, tokenizer, harm_reference, tmp_path):
    editor = _mean_diff(llama, scale=3.0).with_options(alpha=0)
    result = evaluate_harm(llama, tokenizer, editor, harm_reference)
    s = result.summary
    assert s["kl_mean"] == 0.0 and s["kl_p95"] == 0.0 and s["kl_max"] == 0.0
    assert result.generations == harm_reference.generations and s["changed"] == 0
    for key in ("repeat4", "distinct2", "fluency_ppl", "mean_words", "empty"):
        assert s[key] == s[f"unedited_{key}"], key
    assert s["n_texts"] == len(TEXTS) and s["n_prompts"] == len(PROMPTS)
    assert set(s["by_kind"]) == {"qa", "open"} and s["by_kind"]["qa"]["n"] == 2
    assert s["fluency_ppl"] is not None and s["fluency_ppl"] > 1
    for key in ("kl_seconds", "generation_seconds", "fluency_seconds"):
        assert s[key] >= 0 and s["reference_seconds"][key] >= 0

    folder = result.write(tmp_path / "out", {"model": "tiny"})
    assert sorted(p.name for p in folder.iterdir()) == [
        "generations.jsonl",
        "report.md",
        "summary.json",
    ]  # nothing else: no temporaries left behind
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["model"] == "tiny" and summary["kl_mean"] == 0.0
    rows = [json.loads(line) for line in (folder / "generations.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [p.text for p in PROMPTS]
    assert all(r["edited"] == r["unedited"] for r in rows)
    assert set(rows[0]["edited_measures"]) >= {"repeat4", "distinct2", "nll", "tokens", "ppl"}
    report = (folder / "report.md").read_text()
    assert "| prompt | unedited | edited |" in report and "Q: Is the sky blue?" in report
    assert "The history of the bicycle begins" in report


def test_fluency_is_the_unedited_models_perplexity(llama, tokenizer, harm_reference):
    """A strong edit changes the generations; their fluency is scored by the unedited
    model (outside the hooks), against the unedited ones computed once."""
    editor = _mean_diff(llama, scale=4.0)
    result = evaluate_harm(llama, tokenizer, editor, harm_reference)
    s = result.summary
    assert s["kl_mean"] > 0.01 and s["changed"] >= 1
    total_nll = total_tokens = 0.0
    for prompt, text, measure in zip(PROMPTS, result.generations, result.measures, strict=True):
        if not text:
            assert measure.tokens == 0 and measure.ppl is None
            continue
        [[score]] = score_requests(llama, tokenizer, [ChoiceRequest(prompt.text, (text,))])
        assert measure.nll == pytest.approx(-score.logprob, rel=1e-5)
        assert measure.tokens == score.n_tokens
        total_nll += measure.nll
        total_tokens += measure.tokens
    assert s["fluency_ppl"] == pytest.approx(math.exp(total_nll / total_tokens))
    # the unedited figures are the reference's, not recomputed under the edit
    assert s["unedited_fluency_ppl"] == harm_reference.summary["fluency_ppl"]
    assert [r["unedited"] for r in result.records] == list(harm_reference.generations)


def test_open_prompts_have_no_stop_strings(llama, tokenizer, harm_reference):
    """An open prompt's continuation runs past blank lines (QA answers stop there)."""
    for prompt, text in zip(PROMPTS, harm_reference.generations, strict=True):
        if prompt.kind == "qa":
            assert "\n\n" not in text and "\nQ:" not in text
    assert HarmPrompt("x").stops == () and HarmPrompt("x", "qa").stops


def test_write_leaves_no_summary_when_the_report_fails(
    llama, tokenizer, harm_reference, tmp_path, monkeypatch
):
    result = evaluate_harm(llama, tokenizer, None, harm_reference)

    def broken(path, text):
        raise OSError("disk full")

    monkeypatch.setattr(harm_module, "atomic_write_text", broken)
    with pytest.raises(OSError, match="disk full"):
        result.write(tmp_path / "out")
    assert not (tmp_path / "out" / "summary.json").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["generations.jsonl"]


# ------------------------------------------------------------------------- CLI


def test_cli_eval_harm(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    _write_general(data)
    shutil.copytree(FIXTURES / "truthfulqa", data / "truthfulqa")
    editor_path = tmp_path / "md.safetensors"
    _mean_diff(make_tiny_model("gemma3"), scale=2.0).save(editor_path)
    runner = CliRunner()
    common = ["eval", "harm", "--model", str(tiny_model_dir), "--limit", "2"]
    common += ["--max-tokens", "16", "--gen-tokens", "4", "--mc-file", "mc_task.json"]
    common += ["--data-dir", str(data)]
    for name, extra in {"plain": [], "edited": ["--editor", str(editor_path)]}.items():
        out = tmp_path / name
        result = runner.invoke(app, [*common, *extra, "--out", str(out)])
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        assert summary["n_texts"] == 2 and summary["n_prompts"] == 2 + len(OPEN_PROMPTS)
        assert "kl_mean" in summary and "kl_p95" in summary and "KL mean" in result.output
        assert (out / "generations.jsonl").exists() and (out / "report.md").exists()
        if name == "plain":
            assert summary["kl_mean"] == 0.0 and summary["editor"] is None
        else:
            # the editor by its shareable name, never the local path
            assert summary["kl_mean"] > 0 and summary["editor"] == editor_path.name
            assert str(tmp_path) not in (out / "summary.json").read_text()
    (tmp_path / "nowhere").mkdir()  # exists, without the file
    missing = runner.invoke(app, [*common[:-1], str(tmp_path / "nowhere"), "--out", str(out)])
    assert missing.exit_code == 2 and "general_data.json" in missing.output


@pytest.mark.real_model
def test_real_model_kl_matches_full_forward(real_model):
    """Gemma 3 270M (262k vocabulary, soft-capped logits): exactly 0 at α = 0, and the
    chunked KL of a padded batch equals the one from full forward passes."""
    model, tokenizer = real_model
    texts = ["The capital of France is Paris, a city on the river Seine.", "Water boils."]
    reference = build_kl_reference(model, tokenizer, texts, max_tokens=16, batch_size=2)
    editor = _mean_diff(model, scale=2.0, seed=1)
    assert measure_kl(model, reference, editor.with_options(alpha=0)).summary["kl_max"] == 0.0
    result = measure_kl(model, reference, editor)
    expected = _direct_kl(model, tokenizer, editor, texts, 16)
    for got, want in zip(result.per_text, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    assert result.summary["kl_mean"] > 0
