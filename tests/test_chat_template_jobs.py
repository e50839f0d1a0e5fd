"""Chat templates through the long jobs (issue #13 item 2): the baselines' trainers, ``sea
compare``, ``sea tune`` and ``sea demo`` put every demonstration and every evaluation in
the same prompt format, record it, and key their stored results by it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from spectral_edit.data import load_fold, load_mc_task
from spectral_edit.data.truthfulqa import split_mc_by_fold
from spectral_edit.demos.format import Demonstration, write_demos
from spectral_edit.demos.prompts import PLAIN, chat_format, describe_prompts
from spectral_edit.editors.baselines.iti import ITIEditor
from spectral_edit.editors.baselines.iti_train import head_activations, head_projections
from spectral_edit.editors.baselines.lora_train import answer_example, positive_answer_loss
from spectral_edit.evaluate.control import evaluate_control
from spectral_edit.evaluate.truthfulqa import evaluate_truthfulqa
from spectral_edit.experiments.compare import run_compare
from spectral_edit.experiments.compare_results import CompareOptions
from spectral_edit.experiments.overhead import tokens_processed
from spectral_edit.experiments.tune import run_tune
from spectral_edit.experiments.tune_results import TuneOptions
from spectral_edit.experiments.tune_targets import TruthfulQATarget
from spectral_edit.hf.layers import attention_head_shape
from spectral_edit.hf.tokens import encode_pair
from tests.cli_runs import compare_args
from tests.failures.refusals import assert_ok, assert_refused, run_cli
from tests.test_chat_template import TEMPLATE, by_hand, chat_model_dir  # noqa: F401 - fixture
from tests.test_tune import TEXTS
from tests.test_tune import data_dir as tune_data_dir  # noqa: F401 - fixture
from tests.tiny_models import make_tiny_model, make_tiny_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "data"
DEMOS = [
    Demonstration(f"Is item {i} red?", f"Yes, item {i} is red.", f"No, item {i} is blue.")
    for i in range(8)
]


def _quiet(message: str) -> None:
    """No progress messages."""


@pytest.fixture(scope="module")
def chat():
    """A tiny llama whose tokenizer carries :data:`TEMPLATE`, and its chat format."""
    tokenizer = make_tiny_tokenizer()
    tokenizer.chat_template = TEMPLATE
    return make_tiny_model("llama"), tokenizer, chat_format(tokenizer, "Be brief.")


def _folds():
    questions = load_mc_task(FIXTURES / "truthfulqa" / "mc_task.json")
    return {f: split_mc_by_fold(questions, load_fold(f, FIXTURES)) for f in (1, 2)}


# --------------------------------------------------------------------------- trainers


def test_lora_trains_on_the_answer_after_the_template(chat) -> None:
    """The LoRA example of a demonstration is the rendered user turn (system turn first),
    then the stripped answer, with the loss on the answer's tokens only; its loss is the
    answer's negative log-likelihood after the template, computed here by hand."""
    model, tokenizer, fmt = chat
    demo = DEMOS[0]
    ids, labels = answer_example(tokenizer, demo.prompt, "  " + demo.positive + " ", fmt)
    context, answer = encode_pair(tokenizer, by_hand(demo.prompt, "Be brief."), demo.positive)
    assert ids == context + answer
    assert labels == [-100] * len(context) + answer
    assert (ids, labels) != answer_example(tokenizer, demo.prompt, demo.positive)  # plain
    # an already rendered prompt is kept (as `sea demos --chat-template` writes them)
    rendered = by_hand(demo.prompt, "Be brief.")
    assert answer_example(tokenizer, rendered, demo.positive, fmt) == (ids, labels)

    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    start = len(context)
    by_hand_nll = -sum(float(logp[t - 1, ids[t]]) for t in range(start, len(ids)))
    loss = positive_answer_loss(model, tokenizer, DEMOS[:1], prompt_format=fmt)
    assert loss == pytest.approx(by_hand_nll / len(answer), rel=1e-5)
    assert loss != pytest.approx(positive_answer_loss(model, tokenizer, DEMOS[:1]), rel=1e-3)


def test_iti_probes_the_heads_at_the_answer_after_the_template(chat) -> None:
    """ITI's head activations under a template are the attention output projection's
    input at the last token of rendered prompt + stripped answer (read here with a
    forward pre-hook on one full forward pass), and the fitted editor records the format."""
    model, tokenizer, fmt = chat
    num_heads, head_dim = attention_head_shape(model)
    layer = 1
    modules = head_projections(model, [layer], num_heads, head_dim)
    positive, negative = head_activations(model, tokenizer, DEMOS[:2], modules, prompt_format=fmt)
    seen: list[torch.Tensor] = []
    handle = modules[layer].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        for demo in DEMOS[:2]:
            for answer, got in ((demo.positive, positive), (demo.negative, negative)):
                context, tokens = encode_pair(tokenizer, by_hand(demo.prompt, "Be brief."), answer)
                with torch.no_grad():
                    model(torch.tensor([context + tokens]))
                row = DEMOS.index(demo)
                torch.testing.assert_close(got[row, 0], seen.pop()[0, -1].float())
    finally:
        handle.remove()
    plain, _ = head_activations(model, tokenizer, DEMOS[:2], modules)
    assert not torch.allclose(plain, positive)
    editor = ITIEditor.fit_model(model, tokenizer, DEMOS, top_k=2, prompt_format=fmt)
    assert editor.metadata["chat_template"] == fmt.record()["chat_template"]
    assert editor.metadata["system_prompt"] == "Be brief."


# --------------------------------------------------------------------------- sea compare


def test_compare_scores_and_fits_in_the_template_and_keys_by_it(chat, tmp_path) -> None:
    """Under a template the unedited model's units are exactly the benchmark scored in
    the template; the report records the format; a plain run into the same folder
    recomputes (the keys differ) and gives the plain figures."""
    model, tokenizer, fmt = chat
    folds = _folds()
    data = tmp_path / "data"
    shutil.copytree(FIXTURES, data)
    options = CompareOptions(
        methods=("none", "sea", "mean-diff"),
        control_tasks=("arc_easy",),
        control_limit=2,
        neutral="prompt",
        harm_texts=2,
        harm_gen_tokens=3,
        harm_qa_prompts=1,
        overhead_questions=1,
    )
    out = tmp_path / "cmp"

    def run(prompt_format):
        return run_compare(
            model,
            tokenizer,
            DEMOS,
            folds,
            options,
            out,
            data_dir=data,
            model_name="tiny",
            echo=_quiet,
            prompt_format=prompt_format,
        )

    def stored(name: str) -> dict:
        return json.loads((out / "units" / "none" / name).read_text())

    def unit(name: str) -> dict:
        return stored(name)["result"]

    report = run(fmt)
    expected = evaluate_truthfulqa(model, tokenizer, folds[1], prompt_format=fmt).summary
    plain = evaluate_truthfulqa(model, tokenizer, folds[1]).summary
    got = unit("default--truthfulqa-fold1.json")["summary"]
    for metric in ("mc1", "mc2", "mc3"):
        assert got[metric] == pytest.approx(expected[metric], abs=1e-9)
    chat_key = stored("default--truthfulqa-fold1.json")["key"]
    control = evaluate_control(
        model, tokenizer, ["arc_easy"], data_dir=data, limit=2, prompt_format=fmt
    ).summary
    got_control = unit("default--control.json")["tasks"]["arc_easy"]
    for metric in ("n", "acc", "acc_norm"):
        assert got_control[metric] == control["tasks"]["arc_easy"][metric]

    written = json.loads((out / "report.json").read_text())
    assert written["prompts"] == fmt.record()
    assert describe_prompts(fmt.record()) in (out / "report.md").read_text()
    assert written["tokens_scored"]["1"] == tokens_processed(tokenizer, folds[1], fmt)
    assert written["tokens_scored"]["1"] != tokens_processed(tokenizer, folds[1])
    harm = json.loads((out / "units" / "mean-diff").glob("*--harm.json").__next__().read_text())
    qa = [s for s in harm["result"]["samples"] if s["kind"] == "qa"]
    assert qa and all(s["prompt"].startswith("<bos><|system|>\nBe brief.\n<|user|>\n") for s in qa)
    assert report.prompts == fmt.record()

    again = run(PLAIN)
    assert stored("default--truthfulqa-fold1.json")["key"] != chat_key  # recomputed
    got = unit("default--truthfulqa-fold1.json")["summary"]
    assert got["mc2"] == pytest.approx(plain["mc2"], abs=1e-9)
    assert again.prompts == PLAIN.record()
    assert json.loads((out / "report.json").read_text())["prompts"]["chat_template"] == "none"


# --------------------------------------------------------------------------- sea tune


def test_tune_scores_in_the_template(chat, tmp_path, tune_data_dir) -> None:  # noqa: F811
    """The unedited model's tuning target under a template is TruthfulQA scored in it;
    every probe's key records the format; the report names it."""
    model, tokenizer, fmt = chat
    folds = _folds()
    options = TuneOptions(
        methods=("mean-diff",),
        evaluations=2,
        control_tasks=("arc_easy",),
        control_limit=1,
        kl_texts=2,
        neutral="prompt",
        batch_size=8,
    )
    out = tmp_path / "tune"
    report = run_tune(
        model,
        tokenizer,
        DEMOS,
        TruthfulQATarget(tuple(folds[1]), tuple(folds[2])),
        options,
        out,
        texts=TEXTS,
        data_dir=tune_data_dir,
        model_name="tiny",
        echo=_quiet,
        prompt_format=fmt,
    )
    expected = evaluate_truthfulqa(model, tokenizer, folds[1], prompt_format=fmt).summary
    assert report.baseline.tune_target["mc2"] == pytest.approx(expected["mc2"], abs=1e-9)
    probes = list((out / "units" / "mean-diff").glob("*--tune.json"))
    assert probes
    for probe in probes:
        assert json.loads(probe.read_text())["options"]["prompts"] == fmt.record()
    written = json.loads((out / "report.json").read_text())
    assert written["prompts"] == fmt.record()
    assert "chat template" in (out / "report.md").read_text()


# --------------------------------------------------------------------------- the CLI


def test_cli_compare_tune_and_demo_with_chat_template(
    chat_model_dir: Path,  # noqa: F811
    tiny_model_dir: Path,
    tmp_path: Path,
    tune_data_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    demos = write_demos(tmp_path / "demos.jsonl", DEMOS)
    args = compare_args(chat_model_dir, demos, FIXTURES, tmp_path / "cmp")
    assert_ok(run_cli([*args, "--chat-template", "--system-prompt", "Be brief."]))
    report = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert report["prompts"]["system_prompt"] == "Be brief."
    assert report["prompts"]["chat_template"] != "none"

    tune = ["tune", "--model", chat_model_dir, "--demos", demos, "--methods", "mean-diff"]
    tune += ["--mc-file", "mc_task.json", "--data-dir", tune_data_dir, "--control-tasks"]
    tune += ["arc_easy", "--control-limit", "1", "--kl-texts", "2", "--evaluations", "2"]
    tune += ["--neutral", "prompt", "--out", tmp_path / "tune", "--chat-template"]
    assert_ok(run_cli(tune))
    tuned = json.loads((tmp_path / "tune" / "report.json").read_text())
    assert tuned["prompts"]["chat_template"] == report["prompts"]["chat_template"]

    monkeypatch.setenv("SEA_OFFLINE", "1")
    data = tmp_path / "demo-data"
    (data / "halueval").mkdir(parents=True)
    shutil.copy(FIXTURES / "halueval" / "qa_data.json", data / "halueval" / "qa_one-turn_data.json")
    shutil.copytree(FIXTURES / "truthfulqa", data / "truthfulqa")
    shutil.copy(data / "truthfulqa" / "mc_task.json", data / "truthfulqa" / "mc_task_v0.json")
    demo = ["demo", "--model", chat_model_dir, "--n-demos", "3", "--limit", "2", "--layers"]
    demo += ["last-1", "--neutral", "prompt", "--pos-ratio", "0.9", "--neg-ratio", "0.9"]
    demo += ["--data-dir", data, "--batch-size", "4", "--chat-template"]
    assert_ok(run_cli([*demo, "--out", tmp_path / "demo"]))
    built = [json.loads(line) for line in (tmp_path / "demo" / "demos.jsonl").open()]
    assert all(d["prompt"].startswith("<bos><|user|>\n") for d in built)
    done = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert done["editor"]["chat_template"] == report["prompts"]["chat_template"]
    assert "chat template" in (tmp_path / "demo" / "report.md").read_text()

    # refusals: a system prompt alone, and a tokenizer without a template
    plain_args = compare_args(tiny_model_dir, demos, FIXTURES, tmp_path / "refused")
    refused = run_cli([*plain_args, "--system-prompt", "x"])
    assert_refused(refused, "--system-prompt", "--chat-template")
    assert_refused(run_cli([*plain_args, "--chat-template"]), "no chat template")
    assert not (tmp_path / "refused" / "report.json").exists()
    no_template = [*demo[:2], tiny_model_dir, *demo[3:], "--out", tmp_path / "demo-refused"]
    assert_refused(run_cli(no_template), "--chat-template", "no chat template")
