"""Real-model tests on the embedded Gemma 3 270M (select with --real-model)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from spectral_edit import SpectralEditor, read_demos
from spectral_edit.cli import app
from spectral_edit.evaluate.scorer import ChoiceRequest, score_requests
from spectral_edit.generation import generate_greedy
from spectral_edit.jobs import shipped_demos_path
from spectral_edit.pipeline import fit_editor
from spectral_edit.tokens import encode_pair

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def shipped_editor(real_model):
    model, tokenizer = real_model
    demos = read_demos(shipped_demos_path())
    return fit_editor(
        model,
        tokenizer,
        demos,
        layers="last-8",
        neutral="generate",
        centered=True,
        pos_ratio=0.99,
        neg_ratio=0.99,
    )


def _last_logits(model, tokenizer, text):
    ids = tokenizer(text, return_tensors="pt").input_ids
    return model(ids, logits_to_keep=1).logits[0, -1]


def test_fit_apply_generate_round_trip(real_model, shipped_editor, tmp_path):
    model, tokenizer = real_model
    editor = shipped_editor
    assert editor.layers == tuple(range(10, 18)) and editor.hidden_size == 640
    assert editor.metadata["model"] == "gemma-3-270m"
    assert all(1 <= k <= 640 for pair in editor.ranks.values() for k in pair)
    prompt = read_demos(shipped_demos_path())[0].prompt
    plain = _last_logits(model, tokenizer, prompt)
    with editor.apply(model):
        edited = _last_logits(model, tokenizer, prompt)
        text = generate_greedy(model, tokenizer, [prompt], max_new_tokens=12)[0]
    assert not torch.allclose(plain, edited, atol=1e-3)
    assert torch.equal(plain, _last_logits(model, tokenizer, prompt))
    assert isinstance(text, str)
    loaded = SpectralEditor.load(editor.save(tmp_path / "e.safetensors"), model)
    with loaded.apply(model):
        assert torch.equal(_last_logits(model, tokenizer, prompt), edited)


@pytest.mark.parametrize("share_contexts", [True, False])
@pytest.mark.parametrize("edited", [False, True])
def test_scorer_matches_full_forward(real_model, shipped_editor, share_contexts, edited):
    model, tokenizer = real_model
    demos = read_demos(shipped_demos_path())[:3]
    primer = demos[0].prompt.rsplit("\n\nQ:", 1)[0]
    requests = [ChoiceRequest(d.prompt, (" " + d.positive, " " + d.negative)) for d in demos]
    editor = shipped_editor.with_options(alpha=1.0 if edited else 0.0)
    with editor.apply(model):
        scores = score_requests(
            model, tokenizer, requests, shared_prefix=primer, share_contexts=share_contexts
        )
        for request, row in zip(requests, scores, strict=True):
            for continuation, score in zip(request.continuations, row, strict=True):
                ctx, cont = encode_pair(tokenizer, request.context, continuation)
                logits = model(torch.tensor([ctx + cont])).logits[0].double()
                logprobs = torch.log_softmax(logits, -1)
                expected = sum(logprobs[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont))
                assert abs(score.logprob - expected) < 1e-4


def test_sea_demo_command(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app, ["demo", "--n-demos", "8", "--limit", "4", "--layers", "last-4", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (out / "editor.safetensors").is_file() and (out / "demos.jsonl").is_file()
    if (out / "report.json").is_file():  # TruthfulQA found in the data directory
        report = json.loads((out / "report.json").read_text())
        assert report["n_questions"] == 4
        assert "MC1" in (out / "report.md").read_text()
    else:
        assert "TruthfulQA is not available" in result.output
