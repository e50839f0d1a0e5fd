"""lm-evaluation-harness under an edit: the ``spectral-edit`` lm-eval model and ``sea lm-eval``.

Everything runs on tiny models and a local multiple-choice task on hand-written data (no
Hub). The loglikelihoods lm-eval gets (its own ``HFLM`` batching: right-padded full
sequences) are checked against our scorer (KV-cache sharing) under the same editor.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval", reason="needs the lmeval extra")

import lm_eval  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from spectral_edit import fit_from_arrays  # noqa: E402
from spectral_edit.demos.prompts import PLAIN, chat_format  # noqa: E402
from spectral_edit.editors.baselines import MeanDifferenceEditor  # noqa: E402
from spectral_edit.editors.file_format import EditorFileError, EditorPromptWarning  # noqa: E402
from spectral_edit.evaluate.scorer import ChoiceRequest, score_requests  # noqa: E402
from spectral_edit.hf.layers import find_decoder_layers  # noqa: E402
from spectral_edit.hf.models import load_model  # noqa: E402
from spectral_edit.integrations import lm_eval as integration  # noqa: E402
from spectral_edit.integrations.lm_eval import (  # noqa: E402
    MODEL_NAME,
    SpectralEditLM,
    UnsupportedEditorError,
    cli_arguments,
)
from spectral_edit.util.extras import MissingExtraError  # noqa: E402
from tests.failures.refusals import assert_ok, assert_refused, run_cli  # noqa: E402
from tests.tiny_models import make_tiny_model, make_tiny_tokenizer  # noqa: E402

TASK = "sea_tiny_mc"
DOCS = [  # hand-written; choices of different token lengths, shared words, a long one
    {"question": "is the sky blue", "choices": ["yes", "no", "the sky is blue and the sea"]},
    {"question": "what is a cat", "choices": ["a cat", "true", "false", "an answer"]},
    {"question": "Où est la gare ?", "choices": ["à gauche", "no", "in the question"]},
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Hub: the local task must not need it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a local lm-eval task (``dataset_path: json``) on :data:`DOCS`."""
    folder = tmp_path_factory.mktemp("lmeval-task")
    data = folder / "docs.jsonl"
    data.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in DOCS), "utf-8")
    (folder / f"{TASK}.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        f"  data_files:\n    test: {json.dumps(str(data))}\n"
        f"  cache_dir: {json.dumps(str(folder / 'datasets-cache'))}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "Q: {{question}}\\nA:"\n'
        "doc_to_target: 0\n"
        'doc_to_choice: "{{choices}}"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n",
        "utf-8",
    )
    return folder


@pytest.fixture(scope="module")
def task_manager(task_dir: Path) -> TaskManager:
    return TaskManager(include_path=str(task_dir), include_defaults=False)


def _blocks(model) -> int:
    return len(find_decoder_layers(model))


def _width(model) -> int:
    return model.config.get_text_config().hidden_size


def _sea_editor(model, seed: int = 0, **options):
    """A strong SEA editor fitted on random activations of the model's width (with
    ``options`` changed, e.g. ``positions``)."""
    gen = torch.Generator().manual_seed(seed)
    n, layers = 40, _blocks(model)
    h, hp, hn = (torch.randn(n, layers, _width(model), generator=gen) for _ in range(3))
    editor = fit_from_arrays(h, hp, hn, pos_rank=3, neg_rank=4, num_layers=layers)
    return editor.with_options(**options) if options else editor


def _mean_diff_editor(model):
    gen = torch.Generator().manual_seed(1)
    layers = _blocks(model)
    pos, neg = (torch.randn(20, layers, _width(model), generator=gen) for _ in range(2))
    return MeanDifferenceEditor.fit(
        pos, neg, alpha=4.0, layers=list(range(layers)), num_layers=layers
    )


def _run(lm, task_manager) -> list[tuple[str, str, float]]:
    """``(context, continuation, loglikelihood)`` of every request lm-eval made."""
    results = lm_eval.simple_evaluate(
        model=lm, tasks=[TASK], task_manager=task_manager, log_samples=True, bootstrap_iters=0
    )
    rows = []
    for sample in sorted(results["samples"][TASK], key=lambda s: s["doc_id"]):
        for (context, continuation), resp in zip(sample["arguments"], sample["resps"], strict=True):
            rows.append((context, continuation, float(resp[0][0])))
    assert len(rows) == sum(len(d["choices"]) for d in DOCS)
    return rows


def _ours(model, tokenizer, rows, editor) -> list[float]:
    """Our scorer's loglikelihoods of the same (context, continuation) pairs."""
    requests = [ChoiceRequest(context, (continuation,)) for context, continuation, _ in rows]
    with editor.apply(model):
        scores = score_requests(model, tokenizer, requests, batch_size=3)
    return [s[0].logprob for s in scores]


def _hooks(model) -> list[str]:
    return [
        name
        for name, module in model.named_modules()
        if module._forward_hooks or module._forward_pre_hooks
    ]


def _logits(model, tokenizer) -> torch.Tensor:
    ids = torch.tensor([tokenizer("the question is a cat")["input_ids"]])
    with torch.no_grad():
        return model(ids).logits


# ----------------------------------------------------------------- the lm-eval model


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("kind", ["sea", "mean-diff"])
def test_lm_eval_loglikelihoods_under_an_editor_equal_our_scorer(arch, kind, task_manager):
    model, tokenizer = make_tiny_model(arch), make_tiny_tokenizer()
    editor = _sea_editor(model) if kind == "sea" else _mean_diff_editor(model)
    plain = _run(SpectralEditLM(model, tokenizer=tokenizer, batch_size=4), task_manager)
    rows = _run(SpectralEditLM(model, editor, tokenizer=tokenizer, batch_size=4), task_manager)
    ours = _ours(model, tokenizer, rows, editor)
    theirs = [ll for *_, ll in rows]
    assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) < 1e-4
    # the edit is strong enough that an editor left out would be caught
    assert max(abs(a[2] - b[2]) for a, b in zip(plain, rows, strict=True)) > 1e-2
    assert _hooks(model) == []


def test_alpha_zero_equals_lm_evals_plain_hf_model_exactly(tiny_model_dir, task_manager, tmp_path):
    model, _ = load_model(str(tiny_model_dir))
    editor_file = _sea_editor(model).save(tmp_path / "e.safetensors")
    common = {"pretrained": str(tiny_model_dir), "device": "cpu", "batch_size": 2}
    hf = lm_eval.simple_evaluate(
        model="hf", model_args={**common, "dtype": "float32"}, tasks=[TASK],
        task_manager=task_manager, log_samples=True, bootstrap_iters=0,
    )  # fmt: skip
    hf_rows = [s["resps"] for s in sorted(hf["samples"][TASK], key=lambda s: s["doc_id"])]
    for alpha, expect_equal in ((0.0, True), (1.0, False)):
        ours = lm_eval.simple_evaluate(
            model=MODEL_NAME,
            model_args={**common, "editor": str(editor_file), "alpha": alpha},
            tasks=[TASK], task_manager=task_manager, log_samples=True, bootstrap_iters=0,
        )  # fmt: skip
        rows = [s["resps"] for s in sorted(ours["samples"][TASK], key=lambda s: s["doc_id"])]
        assert (rows == hf_rows) is expect_equal, alpha


def test_hooks_are_removed_after_the_run_and_after_an_error(task_manager, monkeypatch):
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    before = _logits(model, tokenizer)
    lm = SpectralEditLM(model, _sea_editor(model), tokenizer=tokenizer)
    seen: list[list[str]] = []
    original = integration.HFLM._loglikelihood_tokens

    def spy(self, *args, **kwargs):
        seen.append(_hooks(model))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(integration.HFLM, "_loglikelihood_tokens", spy)
    _run(lm, task_manager)
    assert seen and all(seen), "the editor's hooks were not attached during the requests"
    assert _hooks(model) == []
    assert torch.equal(_logits(model, tokenizer), before)

    def broken(self, *args, **kwargs):
        seen.append(_hooks(model))
        raise RuntimeError("interrupted mid-run")

    monkeypatch.setattr(integration.HFLM, "_loglikelihood_tokens", broken)
    with pytest.raises(RuntimeError, match="interrupted mid-run"):
        _run(lm, task_manager)
    assert seen[-1], "the editor's hooks were not attached when the error came"
    assert _hooks(model) == []
    assert torch.equal(_logits(model, tokenizer), before)


def test_a_position_restricted_editor_is_refused(tmp_path):
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    for positions in ("answer", "generated"):
        editor = _sea_editor(model, positions=positions)
        with pytest.raises(UnsupportedEditorError, match=f"'{positions}' positions"):
            SpectralEditLM(model, editor, tokenizer=tokenizer)
        path = editor.save(tmp_path / f"{positions}.safetensors")
        with pytest.raises(UnsupportedEditorError, match=str(path)):
            SpectralEditLM(model, path, tokenizer=tokenizer)
    assert _hooks(model) == []


def test_a_name_is_loaded_by_our_loader_the_built_in_model_by_default(monkeypatch):
    model, tokenizer = make_tiny_model("gemma3"), make_tiny_tokenizer()
    calls: list[tuple[str, dict]] = []

    def fake_load(name, **kwargs):
        calls.append((name, kwargs))
        return model, tokenizer

    monkeypatch.setattr(integration, "load_model", fake_load)
    lm = SpectralEditLM(batch_size=2)
    assert calls[0][0] == "gemma-3-270m"
    assert lm.model is model and lm.tokenizer is tokenizer and lm.editor is None
    SpectralEditLM("some.gguf", dtype="bfloat16", device="cpu")
    assert calls[1] == (
        "some.gguf",
        {"dtype": "bfloat16", "revision": None, "trust_remote_code": False},
    )


def test_bad_arguments_are_refused_with_their_names(tmp_path):
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    with pytest.raises(ValueError, match="peft"):
        SpectralEditLM(model, tokenizer=tokenizer, peft="adapter")
    with pytest.raises(ValueError, match="no_such_option"):
        SpectralEditLM(model, tokenizer=tokenizer, no_such_option=1)
    with pytest.raises(ValueError, match="without an editor"):
        SpectralEditLM(model, tokenizer=tokenizer, alpha=1.0)
    other = _sea_editor(make_tiny_model("gemma3")).save(tmp_path / "other.safetensors")
    with pytest.raises(EditorFileError, match="other.safetensors"):
        SpectralEditLM(model, other, tokenizer=tokenizer)


def test_cli_arguments_add_the_model_and_merge_the_editor():
    args = cli_arguments(["--tasks", "x", "--model_args", "pretrained=m"], "a,b/e.safetensors", 2)
    assert args[:4] == ["--tasks", "x", "--model_args", "pretrained=m"]
    assert args[4:6] == ["--model", MODEL_NAME]
    assert json.loads(args[7]) == {"editor": "a,b/e.safetensors", "alpha": 2.0}
    assert cli_arguments(["-M", MODEL_NAME]) == ["-M", MODEL_NAME]
    for other in (["--model", "hf"], ["--model=hf"], ["-Mvllm"]):
        with pytest.raises(ValueError, match="--model"):
            cli_arguments(other)


def test_without_the_extra_the_message_names_it(monkeypatch):
    monkeypatch.delitem(sys.modules, "spectral_edit.integrations.lm_eval")
    monkeypatch.setitem(sys.modules, "lm_eval.models.huggingface", None)
    with pytest.raises(MissingExtraError, match=r"spectral-edit\[lmeval\]"):
        import spectral_edit.integrations.lm_eval  # noqa: F401
    assert_refused(run_cli(["lm-eval", "--tasks", TASK]), "spectral-edit[lmeval]")


# ----------------------------------------------------------------- sea lm-eval


def test_sea_lm_eval_runs_a_local_task_under_the_editor(tiny_model_dir, task_dir, tmp_path):
    model, tokenizer = load_model(str(tiny_model_dir))
    editor = _sea_editor(model)
    path = editor.save(tmp_path / "e.safetensors")
    out = tmp_path / "out"
    result = run_cli([
        "lm-eval", "--editor", path, "--alpha", "0.5",
        "--model_args", f"pretrained={tiny_model_dir}", "--include_path", task_dir,
        "--tasks", TASK, "--device", "cpu", "--batch_size", "2",
        "--output_path", out, "--log_samples",
    ])  # fmt: skip
    assert_ok(result)
    (samples_file,) = out.rglob(f"samples_{TASK}_*.jsonl")
    samples = sorted(
        (json.loads(line) for line in samples_file.read_text("utf-8").splitlines()),
        key=lambda s: s["doc_id"],
    )
    rows = [  # the samples file holds {"gen_args_i": {"arg_0": context, "arg_1": ...}}
        (args["arg_0"], args["arg_1"], float(resp[0][0]))
        for s in samples
        for args, resp in zip(s["arguments"].values(), s["resps"], strict=True)
    ]
    assert len(rows) == sum(len(d["choices"]) for d in DOCS)
    ours = _ours(model, tokenizer, rows, editor.with_options(alpha=0.5))
    assert max(abs(a - r[2]) for a, r in zip(ours, rows, strict=True)) < 1e-4


def test_sea_lm_eval_refusals(tiny_model_dir, tmp_path):
    model, _ = load_model(str(tiny_model_dir))
    restricted = _sea_editor(model, positions="answer").save(tmp_path / "answer.safetensors")
    missing = tmp_path / "missing.safetensors"
    assert_refused(run_cli(["lm-eval", "--alpha", "1", "--tasks", TASK]), "--alpha needs --editor")
    assert_refused(
        run_cli(["lm-eval", "--editor", missing, "--tasks", TASK]), "missing.safetensors"
    )
    assert_refused(
        run_cli(["lm-eval", "--editor", restricted, "--tasks", TASK]),
        "answer.safetensors", "positions 'all'",
    )  # fmt: skip
    good = _sea_editor(model).save(tmp_path / "e.safetensors")
    assert_refused(run_cli(["lm-eval", "--editor", good, "--model", "hf"]), "--model hf")
    assert_refused(run_cli(["lm-eval", "--alpha", "nan"]), "alpha")
    # what neither command knows is refused by lm-eval's own parser, naming it
    assert_refused(run_cli(["lm-eval", "--no-such-option", "--tasks", TASK]), "--no-such-option")


def test_the_editors_prompt_format_is_checked_against_lm_evals(task_manager):
    """An editor fitted under a chat template (with a system prompt) runs silently under
    lm-eval's ``apply_chat_template`` with that system instruction, and is warned about,
    naming lm-eval's options, without it or with another system instruction."""
    from tests.test_chat_template import TEMPLATE

    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    tokenizer.chat_template = TEMPLATE
    fitted = chat_format(tokenizer, "Be brief.")
    base = _sea_editor(model)
    editor = dataclasses.replace(base, metadata={**base.metadata, **fitted.record()})

    def run(**options) -> list[str]:
        lm = SpectralEditLM(model, editor, tokenizer=tokenizer)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lm_eval.simple_evaluate(
                model=lm, tasks=[TASK], task_manager=task_manager, bootstrap_iters=0, **options
            )
        assert lm.prompt_format() == (
            chat_format(tokenizer, options.get("system_instruction"))
            if options.get("apply_chat_template")
            else PLAIN
        )
        return [str(w.message) for w in caught if issubclass(w.category, EditorPromptWarning)]

    assert run(apply_chat_template=True, system_instruction="Be brief.") == []
    (plain,) = run()
    assert "plain prompts" in plain and "--apply_chat_template" in plain
    (other,) = run(apply_chat_template=True, system_instruction="Be long.")
    assert "--system_instruction" in other
    assert _hooks(model) == []
