"""Real-model tests on the embedded Gemma 3 270M (select with --real-model)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from spectral_edit import SpectralEditor, read_demos
from spectral_edit.cli.app import app
from spectral_edit.core.options import SeaOptions
from spectral_edit.data import load_crows_pairs
from spectral_edit.evaluate.scorer import ChoiceRequest, score_requests
from spectral_edit.experiments.demo_job import shipped_demos_path
from spectral_edit.experiments.pipeline import fit_editor
from spectral_edit.hf.generation import generate_greedy
from spectral_edit.hf.tokens import encode_pair
from tests.cli_runs import CROWS_FIXTURE, eval_bbq_fixture, eval_crows_fixture

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def shipped_editor(real_model):
    model, tokenizer = real_model
    demos = read_demos(shipped_demos_path())
    return fit_editor(
        model,
        tokenizer,
        demos,
        SeaOptions(
            layers="last-8", neutral="generate", centered=True, pos_ratio=0.99, neg_ratio=0.99
        ),
    )


def _full_forward_logprob(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context) from one plain forward pass, in float64."""
    ctx, cont = encode_pair(tokenizer, context, continuation)
    logprobs = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].double(), -1)
    return sum(logprobs[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont))


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
                expected = _full_forward_logprob(model, tokenizer, request.context, continuation)
                assert abs(score.logprob - expected) < 1e-4


def test_sea_demo_command(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app,
        # 8 centred demonstrations span 7 directions: ratios below 1 keep fewer, so that the
        # positive and negative subspaces differ (at 0.99 both keep all 7: an identity edit,
        # which the fit refuses)
        ["demo", "--n-demos", "8", "--limit", "4", "--layers", "last-4"]
        + ["--pos-ratio", "0.9", "--neg-ratio", "0.9", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert (out / "editor.safetensors").is_file() and (out / "demos.jsonl").is_file()
    if (out / "report.json").is_file():  # TruthfulQA found in the data directory
        report = json.loads((out / "report.json").read_text())
        assert report["n_questions"] == 4
        assert "MC1" in (out / "report.md").read_text()
    else:
        assert "TruthfulQA is not available" in result.output


def test_baselines_and_dola_on_gemma(real_model):
    """ITI finds Gemma 3's wide heads (4 × 256 in a 640-wide stream); LoRA trains on a
    copy and its hooks reproduce the trained copy; DoLa's final norm maps the last layer
    to the model's own final state."""
    from spectral_edit.editors.baselines import ITIEditor, LoRAEditor
    from spectral_edit.evaluate.readout import DoLaReadout
    from spectral_edit.hf.heads import final_norm
    from spectral_edit.hf.hooks import hooked
    from spectral_edit.hf.layers import find_decoder_layers

    model, tokenizer = real_model
    demos = read_demos(shipped_demos_path())[:8]
    prompt = demos[0].prompt
    plain = _last_logits(model, tokenizer, prompt)

    iti = ITIEditor.fit_model(model, tokenizer, demos, layers="16,17", top_k=2, alpha=10.0)
    assert (iti.num_heads, iti.head_dim) == (4, 256) and len(iti.heads) == 2
    with iti.apply(model):
        assert not torch.allclose(_last_logits(model, tokenizer, prompt), plain, atol=1e-3)
    with iti.with_options(alpha=0.0).apply(model):
        assert torch.equal(_last_logits(model, tokenizer, prompt), plain)

    before = {k: v.clone() for k, v in list(model.state_dict().items())[:4]}
    lora = LoRAEditor.train(model, tokenizer, demos, layers=[17], steps=2, batch_size=4)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert len(lora.metadata["loss_curve"]) == 2
    with lora.apply(model):
        assert not torch.equal(_last_logits(model, tokenizer, prompt), plain)
    assert torch.equal(_last_logits(model, tokenizer, prompt), plain)

    ids = tokenizer(prompt, return_tensors="pt").input_ids
    seen = {}
    with hooked({0: find_decoder_layers(model)[-1]}, lambda k, h: seen.update(raw=h)):
        final = model.base_model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(final_norm(model)(seen["raw"]), final, atol=1e-4, rtol=1e-4)
    request = [ChoiceRequest(prompt, (" " + demos[0].positive, " " + demos[0].negative))]
    dola = score_requests(model, tokenizer, request, readout=DoLaReadout((0, 3, 6)))
    base = score_requests(model, tokenizer, request)
    assert [s.logprob for s in dola[0]] != [s.logprob for s in base[0]]


def test_bias_evaluations_on_gemma(real_model, tmp_path):
    """`sea eval crows-pairs` and `sea eval bbq` run on the embedded model (hand-written
    fixtures: the real CrowS-Pairs file is not available here). Each CrowS-Pairs sentence
    score is the total log-probability after the start token, checked against one plain
    forward pass; the preference is read off those scores."""
    model, tokenizer = real_model
    summary, rows = eval_crows_fixture(tmp_path / "crows", [])
    assert len(rows) >= 5
    assert summary["overall"]["pct_more"] == pytest.approx(
        100 * sum(r["prefers_more"] for r in rows) / len(rows)
    )
    pairs = load_crows_pairs(CROWS_FIXTURE)
    for pair, row in zip(pairs[:2], rows, strict=False):
        assert encode_pair(tokenizer, "", pair.sent_more)[0] == [tokenizer.bos_token_id]
        for sentence, key in ((pair.sent_more, "logprob_more"), (pair.sent_less, "logprob_less")):
            assert abs(row[key] - _full_forward_logprob(model, tokenizer, "", sentence)) < 1e-4
        assert row["prefers_more"] == (row["logprob_more"] > row["logprob_less"])
    summary = eval_bbq_fixture(tmp_path / "bbq", [])
    assert sum(cell["n"] for cell in summary["overall"].values()) > 0
