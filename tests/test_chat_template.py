"""Chat templates (issue #13 item 2): prompts through a tokenizer's chat template, an exact
context/continuation split with one BOS, the template recorded in a fitted editor, and a
warning when an editor is evaluated in another prompt format (issue #16's case)."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from spectral_edit.core.options import Neutral, SeaOptions
from spectral_edit.data.bbq import BBQItem
from spectral_edit.data.truthfulqa import QA_PRIMER
from spectral_edit.demos.activations import capture_demos
from spectral_edit.demos.format import Demonstration, write_demos
from spectral_edit.demos.prompts import (
    NO_TEMPLATE,
    PLAIN,
    ChatTemplateError,
    answer_text,
    bbq_prompt,
    chat_format,
    qa_prompt,
)
from spectral_edit.editors.file_format import EditorPromptWarning, warn_if_other_prompt_format
from spectral_edit.editors.sea import SpectralEditor
from spectral_edit.evaluate.scorer import ChoiceRequest, score_requests
from spectral_edit.experiments.pipeline import fit_editor
from spectral_edit.hf.capture import capture
from spectral_edit.hf.tokens import encode, encode_pair
from tests.failures.refusals import assert_ok, assert_refused, run_cli
from tests.tiny_models import BOS_ID, make_tiny_model, make_tiny_tokenizer

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""A small chat template: BOS, then role markers; the generation prompt ends in a newline."""

FIXTURES = Path(__file__).parent / "fixtures" / "data"
DEMOS = [
    Demonstration(f"Is item {i} red?", f"Yes, item {i} is red.", f"No, item {i} is blue.")
    for i in range(6)
]


def by_hand(user: str, system: str | None = None) -> str:
    """What :data:`TEMPLATE` renders, written out without Jinja."""
    turns = ([("system", system)] if system else []) + [("user", user)]
    return "<bos>" + "".join(f"<|{r}|>\n{c}\n" for r, c in turns) + "<|assistant|>\n"


@pytest.fixture
def chat_tokenizer() -> PreTrainedTokenizerBase:
    tokenizer = make_tiny_tokenizer()
    tokenizer.chat_template = TEMPLATE
    return tokenizer


def log_probs_by_hand(model, ids: list[int], start: int) -> float:
    """Sum of log p(ids[t] | ids[:t]) for t >= start, from one plain forward pass."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return float(sum(logp[t - 1, ids[t]] for t in range(start, len(ids))))


def test_prompts_are_the_template_applied_by_hand(chat_tokenizer) -> None:
    fmt = chat_format(chat_tokenizer, "Be truthful.")
    assert qa_prompt("  Where is Paris? ", fmt) == by_hand("Where is Paris?", "Be truthful.")
    # bbq_prompt reads only the context and the question of an item
    item = cast(BBQItem, SimpleNamespace(context=" A man and a boy talked. ", question="Who? "))
    plain = chat_format(chat_tokenizer)
    assert bbq_prompt(item, plain) == by_hand("A man and a boy talked.\nWho?")
    # the apply_chat_template call of the brief, verbatim
    messages = [{"role": "user", "content": "Q?"}]
    expected = chat_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert qa_prompt("Q?", plain) == expected
    assert plain.answer("  Paris. ") == "Paris."
    # plain prompts unchanged
    assert qa_prompt(" Q? ") == f"{QA_PRIMER}\n\nQ: Q?\nA:"
    assert PLAIN.answer(" Paris. ") == answer_text("Paris.") == " Paris."


def test_split_is_exact_with_one_bos(chat_tokenizer) -> None:
    fmt = chat_format(chat_tokenizer, "Be brief.")
    context, answer = qa_prompt("Where is Paris?", fmt), fmt.answer(" In France.")
    ctx, cont = encode_pair(chat_tokenizer, context, answer)
    raw_context = chat_tokenizer(context, add_special_tokens=False)["input_ids"]
    raw_whole = chat_tokenizer(context + answer, add_special_tokens=False)["input_ids"]
    assert raw_context[0] == BOS_ID and raw_context.count(BOS_ID) == 1
    assert ctx == raw_context  # the template's own BOS, no second one
    assert raw_whole[: len(raw_context)] == raw_context
    assert cont == raw_whole[len(raw_context) :]
    assert chat_tokenizer.decode(cont) == "In France."  # the answer's tokens, nothing else
    assert encode(chat_tokenizer, context).count(BOS_ID) == 1
    # plain text still gets the tokenizer's BOS added
    assert encode(chat_tokenizer, "Hello") == [BOS_ID, *chat_tokenizer("Hello")["input_ids"][1:]]


def test_scorer_scores_the_answer_after_the_template(chat_tokenizer) -> None:
    model = make_tiny_model("llama")
    fmt = chat_format(chat_tokenizer)
    context = qa_prompt("Where is Paris?", fmt)
    answers = (fmt.answer("In France."), fmt.answer("On the Moon."))
    shared = fmt.shared_prefix(QA_PRIMER)
    assert shared == "<bos><|user|>\n" and context.startswith(shared)
    for share in (True, False):
        scores = score_requests(
            model,
            chat_tokenizer,
            [ChoiceRequest(context, answers)],
            shared_prefix=shared,
            share_contexts=share,
        )[0]
        ctx_ids = chat_tokenizer(context, add_special_tokens=False)["input_ids"]
        for answer, score in zip(answers, scores, strict=True):
            whole = chat_tokenizer(context + answer, add_special_tokens=False)["input_ids"]
            assert score.n_tokens == len(whole) - len(ctx_ids)
            assert score.logprob == pytest.approx(
                log_probs_by_hand(model, whole, len(ctx_ids)), abs=1e-4
            )


def test_capture_puts_plain_prompts_in_the_template(chat_tokenizer) -> None:
    model = make_tiny_model("llama")
    fmt = chat_format(chat_tokenizer)
    demos = DEMOS[:3]
    rendered = [fmt.adopt(d.prompt) for d in demos]
    assert rendered == [by_hand(d.prompt) for d in demos]
    assert [fmt.adopt(p) for p in rendered] == rendered  # already rendered: kept
    got = capture_demos(
        model, chat_tokenizer, demos, layers=[0, 1], neutral=Neutral.PROMPT, prompt_format=fmt
    )
    want = capture(model, chat_tokenizer, rendered, [d.positive for d in demos], layers=[0, 1])
    assert torch.equal(got.positive, want)


def test_no_template_is_a_clear_error(tiny_tokenizer) -> None:
    with pytest.raises(ChatTemplateError, match="--chat-template.*tiny-base"):
        chat_format(tiny_tokenizer, model="tiny-base")


def test_editor_records_template_and_warns_in_another_format(chat_tokenizer) -> None:
    """Issue #16's case: an editor fitted under a chat template used without it warns."""
    model = make_tiny_model("llama")
    options = SeaOptions(layers="last-1", neutral="prompt", pos_ratio=0.9, neg_ratio=0.9)
    fmt = chat_format(chat_tokenizer, "Be truthful.")
    editor = fit_editor(model, chat_tokenizer, DEMOS, options, prompt_format=fmt)
    sha = hashlib.sha256(TEMPLATE.encode()).hexdigest()
    assert editor.metadata["chat_template"] == sha
    assert editor.metadata["system_prompt"] == "Be truthful."
    plain_editor = fit_editor(model, chat_tokenizer, DEMOS, options)
    assert plain_editor.metadata["chat_template"] == NO_TEMPLATE

    def warned(metadata, prompts) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warn_if_other_prompt_format("e.safetensors", metadata, prompts)
        return [str(w.message) for w in caught if issubclass(w.category, EditorPromptWarning)]

    assert warned(editor.metadata, fmt) == []
    assert warned(plain_editor.metadata, PLAIN) == []
    assert any("--chat-template" in m for m in warned(editor.metadata, PLAIN))
    assert any("plain prompts" in m for m in warned(plain_editor.metadata, fmt))
    assert any("--system-prompt" in m for m in warned(editor.metadata, chat_format(chat_tokenizer)))
    assert warned({}, fmt) == []  # editors recording no format are not checked


@pytest.fixture
def chat_model_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """The tiny model folder, copied, its tokenizer given :data:`TEMPLATE`."""
    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "models" / "tiny-chat"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


def test_cli_fit_and_eval_with_chat_template(chat_model_dir: Path, tmp_path: Path) -> None:
    demos = write_demos(tmp_path / "demos.jsonl", DEMOS)
    editor = tmp_path / "editor.safetensors"
    fit = ["fit", "--model", chat_model_dir, "--demos", demos, "--out", editor]
    fit += ["--layers", "last-1", "--neutral", "prompt", "--pos-ratio", "0.9"]
    fit += ["--neg-ratio", "0.9", "--chat-template", "--system-prompt", "Be truthful."]
    assert_ok(run_cli(fit))
    metadata = SpectralEditor.load(editor).metadata
    assert metadata["chat_template"] == hashlib.sha256(TEMPLATE.encode()).hexdigest()
    assert metadata["system_prompt"] == "Be truthful."
    base = ["eval", "truthfulqa", "--model", chat_model_dir, "--editor", editor, "--limit", "2"]
    base += ["--mc-file", "mc_task.json", "--data-dir", FIXTURES]
    chat = ["--chat-template", "--system-prompt", "Be truthful."]
    same = run_cli([*base, "--out", tmp_path / "a", *chat])
    assert "warning" not in assert_ok(same)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["chat_template"] == metadata["chat_template"]
    plain = assert_ok(run_cli([*base, "--out", tmp_path / "b"]))
    assert "warning:" in plain and "--chat-template" in plain


def test_cli_refusals(tiny_model_dir: Path, tmp_path: Path) -> None:
    base = ["eval", "truthfulqa", "--model", tiny_model_dir, "--limit", "1"]
    base += ["--mc-file", "mc_task.json", "--data-dir", FIXTURES, "--out", tmp_path / "o"]
    assert_refused(run_cli([*base, "--system-prompt", "x"]), "--system-prompt", "--chat-template")
    assert_refused(run_cli([*base, "--chat-template"]), "--chat-template", "no chat template")


def test_cli_demos_and_generate_with_chat_template(chat_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "demos.jsonl"
    args = ["demos", "truthfulqa", "--fold", "1", "--limit", "2", "--data-dir", FIXTURES]
    assert_ok(run_cli([*args, "--out", out, "--chat-template", "--model", chat_model_dir]))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines and all(line["prompt"].startswith("<bos><|user|>\n") for line in lines)
    assert all(line["prompt"].endswith("\n<|assistant|>\n") for line in lines)
    assert all(QA_PRIMER not in line["prompt"] for line in lines)
    gen = ["generate", "Hi", "--model", chat_model_dir, "--max-new-tokens", "2", "--chat-template"]
    assert_ok(run_cli(gen))
