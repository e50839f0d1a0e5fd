"""Tests for spectral_edit.hf.models / model_names and the tiny test models/tokenizer.

The GGUF conversion cache is tested in test_gguf_cache.py; one ``real_model`` test here
exercises the real embedded Gemma 3 270M (conversion, cache and logits).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from spectral_edit.hf import gguf_cache, models
from spectral_edit.hf.gguf_cache import converted_model_dir
from spectral_edit.hf.model_names import (
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    HubUnreachableError,
    ModelLoadError,
    ModelNotFoundError,
)
from spectral_edit.hf.models import load_model, model_name_of, parse_dtype, resolve_revision
from tests.tiny_models import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    TINY_ARCHS,
    TINY_VOCAB_SIZE,
    make_tiny_model,
    make_tiny_tokenizer,
)

TEXTS = [
    "Q: Is the sky green?\nA: no, it is blue on a clear day",
    "Hello",
    "the answer is yes",
]


def _state_equal(a: PreTrainedModel, b: PreTrainedModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- tiny models


def test_tiny_model_properties(tiny_model: PreTrainedModel, tiny_arch: str) -> None:
    config = tiny_model.config
    assert config.model_type == {"gemma3": "gemma3_text"}.get(tiny_arch, tiny_arch)
    assert config.vocab_size == TINY_VOCAB_SIZE >= len(make_tiny_tokenizer())
    assert config._attn_implementation == "eager"
    assert not tiny_model.training
    assert all(p.dtype == torch.float32 for p in tiny_model.parameters())
    assert 2 <= config.num_hidden_layers <= 4
    assert 32 <= config.hidden_size <= 64


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_tiny_model_padded_batch_matches_single_sequences(
    tiny_model: PreTrainedModel, padding_side: str
) -> None:
    tok = make_tiny_tokenizer(padding_side=padding_side)
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    mask = batch["attention_mask"]
    assert len({int(n) for n in mask.sum(1)}) == len(TEXTS)  # really different lengths
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        padded = tiny_model(**batch, position_ids=positions).logits
        for row, text in enumerate(TEXTS):
            ids = tok(text, return_tensors="pt")["input_ids"]
            single = tiny_model(input_ids=ids).logits[0]
            real = mask[row].bool()
            assert torch.isfinite(padded[row, real]).all()
            torch.testing.assert_close(padded[row, real], single, atol=1e-5, rtol=1e-5)


def test_make_tiny_model_is_deterministic_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = make_tiny_model("llama", seed=0)
    assert torch.equal(torch.rand(3), expected_next)
    assert _state_equal(a, make_tiny_model("llama", seed=0))
    assert not _state_equal(a, make_tiny_model("llama", seed=1))


def test_unknown_tiny_arch_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown tiny architecture"):
        make_tiny_model("transformer-xl")


def test_tiny_archs_cover_the_supported_families() -> None:
    expected = {"llama", "mistral", "gemma2", "gemma3", "qwen2", "qwen3", "phi3", "gpt2"}
    assert expected | {"gpt_neox", "opt"} == set(TINY_ARCHS)


# --------------------------------------------------------------------------- tiny tokenizer


@pytest.mark.parametrize(
    "text",
    ["Hello world", "Q: What is 2+2?\nA: 4", "  leading  and trailing  ", "naïve café ☃ 日本", ""],
)
def test_tiny_tokenizer_round_trip_and_bos(
    tiny_tokenizer: PreTrainedTokenizerBase, text: str
) -> None:
    ids = tiny_tokenizer(text)["input_ids"]
    assert ids[0] == BOS_ID
    assert EOS_ID not in ids
    assert tiny_tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tiny_tokenizer(text, add_special_tokens=False)["input_ids"] == ids[1:]
    assert max(ids) < len(tiny_tokenizer) <= TINY_VOCAB_SIZE


def test_tiny_tokenizer_specials_words_and_padding() -> None:
    tok = make_tiny_tokenizer()
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (PAD_ID, BOS_ID, EOS_ID)
    assert tok.unk_token == "<unk>"
    # a few whole words are single tokens, so joint and separate tokenisation differ
    assert len(tok(" the", add_special_tokens=False)["input_ids"]) == 1
    assert len(tok(" xq", add_special_tokens=False)["input_ids"]) == 3
    right = tok(["a", "abc def"], padding=True)["input_ids"]
    assert right[0][-1] == PAD_ID and right[0][0] == BOS_ID
    left = make_tiny_tokenizer(padding_side="left")(["a", "abc def"], padding=True)["input_ids"]
    assert left[0][0] == PAD_ID and left[0][-1] != PAD_ID
    with pytest.raises(ValueError, match="padding_side"):
        make_tiny_tokenizer(padding_side="middle")


def test_tiny_tokenizer_survives_save_and_reload(tmp_path: Path) -> None:
    tok = make_tiny_tokenizer(padding_side="left")
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS:
        assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.padding_side == "left"
    assert again.pad_token_id == PAD_ID


# --------------------------------------------------------------------------- dtype


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("float32", torch.float32),
        ("fp32", torch.float32),
        ("bfloat16", torch.bfloat16),
        ("BF16", torch.bfloat16),
        ("float16", torch.float16),
        ("fp16", torch.float16),
        ("torch.float16", torch.float16),
        ("auto", "auto"),
        (torch.bfloat16, torch.bfloat16),
        (None, torch.float32),
    ],
)
def test_parse_dtype(given: object, expected: object) -> None:
    assert parse_dtype(given) == expected  # type: ignore[arg-type]


def test_parse_dtype_default_depends_on_device_map() -> None:
    assert parse_dtype(None, device_map="cpu") == torch.float32
    assert parse_dtype(None, device_map={"": "cpu"}) == torch.float32
    assert parse_dtype(None, device_map={"": "cuda:0"}) == "auto"
    assert parse_dtype("fp32", device_map="cuda") == torch.float32


@pytest.mark.parametrize("bad", ["float8", "int8", "", torch.int64])
def test_parse_dtype_rejects_unknown(bad: object) -> None:
    with pytest.raises(ValueError, match="dtype"):
        parse_dtype(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- local folders


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PreTrainedModel]:
    """A tiny gemma3 (tied embeddings) saved as an HF folder, tokenizer without a pad token."""
    folder = tmp_path_factory.mktemp("tiny_gemma3")
    model = make_tiny_model("gemma3", seed=3)
    model.save_pretrained(folder)
    tok = make_tiny_tokenizer()
    tok.pad_token = None
    tok.save_pretrained(folder)
    return folder, model


def test_load_model_local_folder_gives_identical_weights(
    saved_tiny: tuple[Path, PreTrainedModel],
) -> None:
    folder, original = saved_tiny
    model, tok = load_model(str(folder))
    assert _state_equal(model, original)
    assert not model.training
    assert model.dtype == torch.float32
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tok.pad_token == tok.eos_token == "<eos>"  # pad set from eos
    assert model_name_of(model) == str(folder.resolve())
    assert resolve_revision(model) is None
    ids = tok(TEXTS[0], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**ids).logits, original(**ids).logits)


def test_load_model_local_folder_in_bfloat16(saved_tiny: tuple[Path, PreTrainedModel]) -> None:
    folder, original = saved_tiny
    model, _ = load_model(str(folder), dtype="bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    key = "model.embed_tokens.weight"
    assert torch.equal(model.state_dict()[key], original.state_dict()[key].to(torch.bfloat16))


def test_local_folder_needs_no_gguf_extra(
    saved_tiny: tuple[Path, PreTrainedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "gguf", None)
    monkeypatch.setitem(sys.modules, BUILTIN_MODELS[DEFAULT_MODEL].package, None)
    folder, original = saved_tiny
    model, _ = load_model(str(folder))
    assert _state_equal(model, original)


def test_model_name_of_unsaved_model_falls_back_to_type() -> None:
    assert model_name_of(make_tiny_model("gpt2")) == "gpt2"


# --------------------------------------------------------------------------- errors


def test_missing_local_folder_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(ModelNotFoundError, match="no such model folder") as info:
        load_model(str(missing))
    assert str(missing) in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ModelNotFoundError, match=r"\./relative-missing"):
        load_model("./relative-missing")


def test_missing_gguf_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="GGUF file not found") as info:
        load_model(str(tmp_path / "weights.gguf"))
    assert "weights.gguf" in str(info.value)


def test_plain_file_and_invalid_hub_id_are_rejected(tmp_path: Path) -> None:
    plain = tmp_path / "notes.txt"
    plain.write_text("x", encoding="utf-8")
    with pytest.raises(ModelNotFoundError, match="not a model folder"):
        load_model(str(plain))
    with pytest.raises(ModelNotFoundError, match="not a Hugging Face Hub id"):
        load_model("not a valid id!")


def test_folder_without_model_files_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot load a model from the folder") as info:
        load_model(str(tmp_path))
    assert str(tmp_path.resolve()) in str(info.value)


def test_revision_only_for_hub_ids(saved_tiny: tuple[Path, PreTrainedModel]) -> None:
    with pytest.raises(ValueError, match="Hub ids only"):
        load_model(str(saved_tiny[0]), revision="main")


def test_unreachable_hub_gives_clear_error() -> None:
    start = time.perf_counter()
    with pytest.raises(HubUnreachableError) as info:
        load_model("nobody-xyz/surely-not-a-cached-model", local_files_only=True)
    message = str(info.value)
    assert "Hub cannot be reached" in message
    assert "surely-not-a-cached-model" in message
    assert DEFAULT_MODEL in message and "local model folder" in message
    assert time.perf_counter() - start < 10


def test_translate_hub_error_maps_missing_repo_and_leaves_others() -> None:
    from types import SimpleNamespace

    from huggingface_hub.errors import RepositoryNotFoundError

    response: Any = SimpleNamespace(headers={}, request=None, status_code=404)
    try:
        try:
            raise RepositoryNotFoundError("404", response=response)
        except RepositoryNotFoundError as inner:
            raise OSError("wrapped") from inner
    except OSError as outer:
        error = models._translate_hub_error("owner/name", outer)
    assert isinstance(error, ModelNotFoundError)
    assert "owner/name" in str(error) and "not a model on the Hugging Face Hub" in str(error)
    assert models._translate_hub_error("owner/name", KeyError("unrelated")) is None


# --------------------------------------------------------------------------- real model


@pytest.mark.real_model
def test_builtin_gemma_converts_once_and_cached_logits_match_gguf() -> None:
    """Loads gemma-3-270m twice (convert if needed, then cache), compares with the GGUF."""
    start = time.perf_counter()
    load_model(DEFAULT_MODEL)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    model, tok = load_model(DEFAULT_MODEL)
    cached_s = time.perf_counter() - start
    marker = json.loads(
        (converted_model_dir(DEFAULT_MODEL) / gguf_cache.MARKER_FILE).read_text(encoding="utf-8")
    )
    print(f"\nfirst load {first_s:.1f} s, cached load {cached_s:.1f} s")
    print(f"conversion timings (when it was converted): {marker['timings_s']}")
    assert cached_s < 15
    assert model_name_of(model) == DEFAULT_MODEL
    builtin = BUILTIN_MODELS[DEFAULT_MODEL]
    assert resolve_revision(model) == f"sha256:{builtin.source_sha256()}"

    start = time.perf_counter()
    gguf_model, gguf_tok = gguf_cache.load_gguf_uncached(builtin.gguf_path())
    print(f"direct GGUF load {time.perf_counter() - start:.1f} s")
    prompt = "The capital of France is Paris, and the capital of Italy is"
    ids = tok(prompt, return_tensors="pt")
    assert torch.equal(ids["input_ids"], gguf_tok(prompt, return_tensors="pt")["input_ids"])
    assert ids["input_ids"][0, 0] == tok.bos_token_id
    with torch.no_grad():
        cached = model(**ids).logits
        reference = gguf_model(**ids).logits
    max_diff = (cached - reference).abs().max().item()
    print(f"max |cached - gguf| logit difference: {max_diff:.3g}; bit-identical: {max_diff == 0}")
    assert max_diff <= 1e-5
