"""ICD and CD: the contrast readout of the one scorer equals a direct full-sequence
computation of both models' log-probabilities, the contrast and the plausibility mask;
β = 0 is the plain model exactly; ICD's weak model is LoRA trained on the negative answers;
CD takes an amateur with the same tokenizer and refuses another."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from spectral_edit.data import load_fold, load_mc_task
from spectral_edit.data.truthfulqa import split_mc_by_fold
from spectral_edit.demos.format import Demonstration
from spectral_edit.editors.baselines.induced import negatives_as_targets, train_induced
from spectral_edit.editors.baselines.lora_train import positive_answer_loss
from spectral_edit.evaluate.contrast import Companion, ContrastReadout, check_same_tokenizer
from spectral_edit.evaluate.kl import build_kl_reference, measure_readout_kl
from spectral_edit.evaluate.scorer import ChoiceRequest, score_requests
from spectral_edit.experiments.calibrate import Budget
from spectral_edit.experiments.compare import run_compare
from spectral_edit.experiments.compare_results import CompareOptions
from spectral_edit.experiments.methods import (
    CONTRAST_GRID,
    METHODS,
    FitContext,
    with_amateur,
    without_amateur,
)
from spectral_edit.experiments.settings import setting_id
from spectral_edit.experiments.tune import TUNE_CONFIGS, _strength, run_tune
from spectral_edit.experiments.tune_results import TuneOptions
from spectral_edit.experiments.tune_targets import TruthfulQATarget
from spectral_edit.hf.tokens import encode_pair

from .tiny_models import make_tiny_model, make_tiny_tokenizer, tiny_config

FIXTURES = Path(__file__).parent / "fixtures" / "data"
TEXTS = [
    "The river runs past the old mill and on into the valley below.",
    "Bread needs flour, water, salt and a little yeast, then time.",
    "Trains leave the north station every hour on weekdays.",
    "The museum opens at nine in the morning and closes at five.",
]
PREFIX = "q: what is it\na: it is a cat\n\n"
REQUESTS = [
    ChoiceRequest(PREFIX + "q: where is the dog\na:", (" in the house", " no", " on the mat")),
    ChoiceRequest("unrelated context", (" one", " two three")),
    ChoiceRequest(PREFIX.rstrip(), (" q: next",)),
    ChoiceRequest("", ("the answer is yes",)),
]
DEMOS = [
    Demonstration(f"q: is thing {i} true\na:", f"yes it is {i}", f"no the moon is cheese {i}")
    for i in range(6)
]


def _wider_llama(seed: int = 7):
    """A tiny Llama of hidden size 48 (the other tiny models have 32): an amateur of
    another width, with the tiny tokenizer's vocabulary."""
    config = tiny_config("llama")
    config.hidden_size, config.head_dim = 48, 12
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(
            config, attn_implementation="eager", dtype=torch.float32
        )
    return model.eval()


@torch.no_grad()
def _direct(model, companion, tokenizer, request, beta, plausibility):
    """Per continuation: (score, greedy, masked tokens), from full-sequence forward passes
    of both models, written independently of the readout."""
    out = []
    for continuation in request.continuations:
        context, target = encode_pair(tokenizer, request.context, continuation)
        ids = torch.tensor([context + target])
        rows = range(len(context) - 1, len(context) + len(target) - 1)
        lp_m = torch.log_softmax(model(ids).logits[0].double(), -1)[list(rows)]
        with companion.active():
            lp_a = torch.log_softmax(companion.model(ids).logits[0].double(), -1)[list(rows)]
        contrast = (1 + beta) * lp_m - beta * lp_a
        floor = lp_m.max(-1, keepdim=True).values + (
            math.log(plausibility) if plausibility > 0 else -math.inf
        )
        plausible = lp_m >= floor
        score = torch.where(plausible, contrast, lp_m)
        t = torch.tensor(target)
        picked = score[torch.arange(len(t)), t]
        greedy = contrast.masked_fill(~plausible, -math.inf).argmax(-1) == t
        masked = int((~plausible[torch.arange(len(t)), t]).sum())
        out.append((float(picked.sum()), bool(greedy.all()), masked))
    return out


def _check_direct(model, companion, tokenizer, beta, plausibility, name="cd"):
    readout = ContrastReadout(companion, beta, plausibility, name=name)
    masked = 0
    for share in (True, False):  # contexts shared, or packed with their continuations
        got = score_requests(
            model,
            tokenizer,
            REQUESTS,
            shared_prefix=PREFIX,
            batch_size=2,
            share_contexts=share,
            readout=readout,
        )
        for request, scores in zip(REQUESTS, got, strict=True):
            want = _direct(model, companion, tokenizer, request, beta, plausibility)
            for score, (value, greedy, n_masked) in zip(scores, want, strict=True):
                assert score.logprob == pytest.approx(value, abs=2e-4)
                assert score.is_greedy == greedy
                masked += n_masked
    return masked


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_cd_readout_equals_direct_contrast_and_mask(arch):
    model, tokenizer = make_tiny_model(arch), make_tiny_tokenizer()
    amateur = Companion(make_tiny_model(arch, seed=3))
    masked = _check_direct(model, amateur, tokenizer, beta=1.5, plausibility=0.1)
    _check_direct(model, amateur, tokenizer, beta=0.7, plausibility=0.0)
    assert masked > 0  # the plausibility mask acted on some continuation tokens


def test_cd_with_an_amateur_of_another_width():
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    _check_direct(model, Companion(_wider_llama()), tokenizer, beta=1.0, plausibility=0.1)


def test_mask_is_active_in_a_constructed_case():
    """λ near 1 leaves only the expert's arg-max plausible: a continuation none of whose
    tokens is the arg-max scores exactly its plain log-probability, whatever β; without
    the constraint the contrast moves it."""
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    amateur = Companion(make_tiny_model("llama", seed=5))
    requests = [ChoiceRequest("q: is it", (" the answer is no", " yes", " in the house"))]
    plain = score_requests(model, tokenizer, requests)[0]
    strict = score_requests(
        model, tokenizer, requests, readout=ContrastReadout(amateur, 3.0, 0.999)
    )[0]
    free = score_requests(model, tokenizer, requests, readout=ContrastReadout(amateur, 3.0, 0.0))
    want = _direct(model, amateur, tokenizer, requests[0], 3.0, 0.999)
    fully_masked = 0
    for got, unmasked, base, (value, _, n_masked) in zip(strict, free[0], plain, want, strict=True):
        assert got.logprob == pytest.approx(value, abs=2e-4)
        if n_masked == got.n_tokens:
            fully_masked += 1
            assert got.logprob == base.logprob  # the expert's own log-probabilities
            assert abs(unmasked.logprob - base.logprob) > 1e-3
    assert fully_masked > 0


@pytest.mark.parametrize("plausibility", [0.1, 0.0, 0.9])
def test_beta_zero_is_the_plain_model_exactly(plausibility):
    model, tokenizer = make_tiny_model("gemma3"), make_tiny_tokenizer()
    readout = ContrastReadout(Companion(make_tiny_model("gemma3", seed=2)), 0.0, plausibility)
    for share in (True, False):
        kwargs = {"shared_prefix": PREFIX, "batch_size": 3, "share_contexts": share}
        plain = score_requests(model, tokenizer, REQUESTS, **kwargs)
        contrast = score_requests(model, tokenizer, REQUESTS, readout=readout, **kwargs)
        assert contrast == plain  # every logprob, n_tokens and is_greedy, bit for bit


def test_icd_trains_on_the_negatives_and_contrasts_with_the_hooked_model():
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    negatives = negatives_as_targets(DEMOS)
    assert [d.positive for d in negatives] == [d.negative for d in DEMOS]
    before = positive_answer_loss(model, tokenizer, negatives)
    induced = train_induced(model, tokenizer, DEMOS, rank=4, steps=30, lr=3e-2, batch_size=3)
    assert induced.metadata["answers"] == "negative"
    with induced.apply(model):
        after = positive_answer_loss(model, tokenizer, negatives)
    assert after < 0.7 * before  # the weak model has learnt the negative answers
    # ICD scores against the same module with the adapters' hooks in its second pass
    companion = Companion(model, induced, "induced model")
    _check_direct(model, companion, tokenizer, beta=1.0, plausibility=0.1, name="icd")
    plain = score_requests(model, tokenizer, REQUESTS)
    assert score_requests(model, tokenizer, REQUESTS) == plain  # no hook left behind


def test_icd_method_prepares_the_induced_model_and_configures_the_readout(monkeypatch):
    import spectral_edit.experiments.methods as methods

    monkeypatch.setitem(methods.LORA_BUDGET, "steps", 3)
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    ctx = FitContext(model, tokenizer, DEMOS)
    spec = METHODS["icd"]
    assert len(spec.grid) == len(METHODS["dola"].grid) == len(METHODS["lora"].grid)
    state = spec.prepare(ctx)
    assert state.metadata["answers"] == "negative" and state.metadata["steps"] == 3
    intervention = spec.configure(state, CONTRAST_GRID[0], ctx)
    readout = intervention.readout
    assert intervention.editor is None and readout.companion.model is model
    assert (readout.beta, readout.plausibility) == (CONTRAST_GRID[0].beta, 0.1)
    # sea tune calibrates β as α
    run = type("Run", (), {"intervention": lambda self, c: (intervention, 0.0)})()
    probe = _strength(run, TUNE_CONFIGS["icd"][0], 3.5)
    assert probe.readout.beta == 3.5 and probe.readout.companion is readout.companion


def test_cd_registry_with_an_amateur_sharing_the_tokenizer():
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    amateur = make_tiny_model("llama", seed=9)
    registry = with_amateur(METHODS, model, tokenizer, amateur, make_tiny_tokenizer(), "tiny")
    spec = registry["cd"]
    assert spec.key["amateur"] and spec.grid == CONTRAST_GRID
    ctx = FitContext(model, tokenizer, DEMOS)
    readout = spec.configure(spec.prepare(ctx), CONTRAST_GRID[1], ctx).readout
    assert readout.companion.model is amateur and readout.name == "cd"
    _check_direct(model, readout.companion, tokenizer, readout.beta, readout.plausibility)
    other = with_amateur(
        METHODS, model, tokenizer, make_tiny_model("llama", 1), tokenizer, "t"
    )  # another amateur, another key
    assert other["cd"].key != spec.key
    # the registry's own cd without an amateur says what it needs
    with pytest.raises(ValueError, match="amateur"):
        METHODS["cd"].prepare(ctx)


def test_cd_refuses_an_amateur_with_another_tokenizer():
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    amateur, other = make_tiny_model("llama", seed=9), make_tiny_tokenizer()
    other.add_tokens(["zzzq"])
    with pytest.raises(ValueError, match="--amateur tiny: its tokenizer differs"):
        with_amateur(METHODS, model, tokenizer, amateur, other, "tiny")
    config = tiny_config("llama")
    config.vocab_size += 16
    wider_vocab = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with pytest.raises(ValueError, match="LM head has 336 outputs"):
        check_same_tokenizer(tokenizer, make_tiny_tokenizer(), model, wider_vocab, "x")


def test_without_amateur_skips_cd_and_says_why():
    names, why = without_amateur(["none", "icd", "cd"], "gemma-3-270m")
    assert names == ["none", "icd"]
    assert why is not None and "--amateur" in why and "gemma-3-270m" in why and "icd" in why
    assert without_amateur(["none", "sea"], "gemma-3-270m") == (["none", "sea"], None)
    _, why = without_amateur(["cd"], "some/model")
    assert why is not None and "gemma" not in why


def test_readout_kl_is_zero_at_beta_zero_and_matches_a_direct_kl():
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    companion = Companion(make_tiny_model("llama", seed=4))
    texts = ["the cat is on the mat", "a question of yes and no", "one"]
    reference = build_kl_reference(model, tokenizer, texts, batch_size=2)
    zero = measure_readout_kl(model, reference, ContrastReadout(companion, 0.0, 0.1))
    assert all(bool((t == 0).all()) for t in zero.per_text)
    readout = ContrastReadout(companion, 1.5, 0.1)
    got = measure_readout_kl(model, reference, readout)
    with torch.no_grad():
        for ids, values in zip(reference.token_ids, got.per_text, strict=True):
            lp_m = torch.log_softmax(model(ids[None]).logits[0].double(), -1)
            lp_a = torch.log_softmax(companion.model(ids[None]).logits[0].double(), -1)
            plausible = lp_m >= lp_m.max(-1, keepdim=True).values + math.log(0.1)
            s = torch.where(plausible, 2.5 * lp_m - 1.5 * lp_a, lp_m)
            log_c = torch.log_softmax(s, -1)
            want = (log_c.exp() * (log_c - lp_m)).sum(-1)
            torch.testing.assert_close(values, want, atol=1e-5, rtol=1e-4)
    assert got.summary["kl_mean"] > 0


def test_contrast_readout_checks_its_settings():
    companion = Companion(make_tiny_model("llama"))
    with pytest.raises(ValueError, match="β"):
        ContrastReadout(companion, beta=-1.0)
    with pytest.raises(ValueError, match="λ"):
        ContrastReadout(companion, plausibility=1.0)
    assert ContrastReadout(companion).with_options(alpha=2.0).beta == 2.0


def _fixture_data(tmp_path):
    """The test fixtures plus hand-written HaluEval general records (neutral texts)."""
    folder = tmp_path / "data"
    shutil.copytree(FIXTURES, folder)
    records = [
        {"ID": i, "user_query": f"Tell me {i}.", "chatgpt_response": t, "hallucination": "no"}
        for i, t in enumerate(TEXTS)
    ]
    path = folder / "halueval" / "general_data.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return folder


def _folds():
    questions = load_mc_task(FIXTURES / "truthfulqa" / "mc_task.json")
    return {f: tuple(split_mc_by_fold(questions, load_fold(f, FIXTURES))) for f in (1, 2)}


def test_icd_and_cd_join_sea_compare_and_sea_tune(tmp_path, monkeypatch):
    import spectral_edit.experiments.methods as methods

    monkeypatch.setitem(methods.LORA_BUDGET, "steps", 4)
    data_dir = _fixture_data(tmp_path)
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer()
    amateur = make_tiny_model("llama", seed=11)
    registry = with_amateur(METHODS, model, tokenizer, amateur, make_tiny_tokenizer(), "tiny-am")
    folds = _folds()
    options = CompareOptions(
        methods=("none", "icd", "cd"),
        control_tasks=("arc_easy",),
        control_limit=2,
        neutral="prompt",
        harm_texts=2,
    )
    report = run_compare(
        model,
        tokenizer,
        DEMOS,
        folds,
        options,
        tmp_path / "compare",
        data_dir=data_dir,
        model_name="tiny",
        registry=registry,
        echo=lambda m: None,
    )
    assert not report.failed
    for name in ("icd", "cd"):
        result = report.methods[name]
        assert set(result.units) == {setting_id(s) for s in CONTRAST_GRID}  # the whole grid
        assert result.harm is None  # a readout: no hooks to generate with
    assert (tmp_path / "compare" / "units" / "icd" / "prepared.safetensors").exists()
    tune_options = TuneOptions(
        methods=("icd", "cd"),
        budget=Budget(kl_nats=5.0),
        evaluations=4,
        control_tasks=("arc_easy",),
        control_limit=1,
        kl_texts=2,
        neutral="prompt",
        batch_size=8,
    )
    tuned = run_tune(
        model,
        tokenizer,
        DEMOS,
        TruthfulQATarget(folds[1], folds[2]),
        tune_options,
        tmp_path / "tune",
        texts=TEXTS,
        data_dir=data_dir,
        model_name="tiny",
        registry=registry,
        echo=lambda m: None,
    )
    assert not tuned.failed
    for name in ("icd", "cd"):
        calibrations = tuned.methods[name].calibrations
        assert set(calibrations) == {setting_id(c) for c in TUNE_CONFIGS[name]}
        assert sum(c.used for c in calibrations.values()) == 4  # the same budget as others
        probes = [p for c in calibrations.values() for p in c.probes]
        assert all(p.harms["kl_nats"] > 0 for p in probes)  # the readout's KL, measured
